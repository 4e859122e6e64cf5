#!/usr/bin/env bash
# The federated cluster of issue #11: three `asap node --workload federated` processes
# on 127.0.0.1:47402-47404, an mps2-an386 board (Cortex-M4F, LAN9118; rank 0, host port
# 47400) and this aarch64 virt image (Cortex-A53, virtio-net; rank 1, host port 47401),
# each board on its own slirp network (`-nic user` with a forwarded port; a board reaches
# the other through 10.0.2.2 and the other's forwarded port, peers are known by node id).
# Every member trains its own shard of asap-fed's problem; the check (check.py): every
# member ran every round, all five end with the same model (to 1e-5, value by value)
# and every held-out accuracy is within 1% of a model trained on all shards together.
# Prints both images' sizes. Installs qemu-system-arm (which has qemu-system-aarch64)
# and the Rust targets when missing.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(cd ../.. && pwd)
M4=../qemu-fed-m4
MODEL=4096 ROUNDS=30 LOCAL_STEPS=4 CONSENSUS_ROUNDS=30

if ! command -v qemu-system-aarch64 >/dev/null 2>&1; then
    ../qemu-cortex-m/run.sh --install-only
fi
for t in aarch64-unknown-none thumbv7em-none-eabihf; do
    rustup target list --installed | grep -qx "$t" || rustup target add "$t" >&2
done
export ASAP_FED_MODEL=$MODEL ASAP_FED_ROUNDS=$ROUNDS ASAP_FED_LOCAL_STEPS=$LOCAL_STEPS \
    ASAP_FED_CONSENSUS_ROUNDS=$CONSENSUS_ROUNDS
hosts=10.0.2.2:47402,10.0.2.2:47403,10.0.2.2:47404
(cd "$M4" && ASAP_FED_RANK=0 ASAP_FED_PEERS=10.0.2.15:7000,10.0.2.2:47401,$hosts cargo build --release >&2)
ASAP_FED_RANK=1 ASAP_FED_PEERS=10.0.2.2:47400,10.0.2.15:7000,$hosts cargo build --release >&2
(cd "$ROOT" && cargo build --release -j2 -p asap-cli --bin asap >&2)
M4_ELF="../qemu-lan9118/target/thumbv7em-none-eabihf/release/asap-qemu-fed-m4"
A53_ELF="../qemu-lan9118/target/aarch64-unknown-none/release/asap-qemu-virt-a53"
ASAP="$ROOT/target/release/asap"

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# The boards first (each takes up to a second at boot to pick a new incarnation, and a
# member declares a silent peer down after 2 s); the servers once both run.
timeout 300 qemu-system-arm -M mps2-an386 -nographic -semihosting-config enable=on,target=native \
    -nic user,model=lan9118,hostfwd=udp:127.0.0.1:47400-10.0.2.15:7000 \
    -kernel "$M4_ELF" >"$work/m4.out" 2>"$work/m4.err" &
pids+=($!)
timeout 300 qemu-system-aarch64 -machine virt -cpu cortex-a53 -nographic \
    -semihosting-config enable=on,target=native \
    -netdev user,id=n0,hostfwd=udp:127.0.0.1:47401-10.0.2.15:7000 -device virtio-net-device,netdev=n0 \
    -kernel "$A53_ELF" >"$work/a53.out" 2>"$work/a53.err" &
pids+=($!)
deadline=$((SECONDS + 20))
until grep -q '^board rank 0: incarnation' "$work/m4.out" 2>/dev/null && grep -q '^board rank 1: incarnation' "$work/a53.out" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "qemu-virt-a53: FAILED: the boards did not start within 20 s" >&2
        cat "$work/m4.out" "$work/a53.out" "$work/m4.err" "$work/a53.err" >&2
        exit 1
    fi
    sleep 0.05
done
peers=127.0.0.1:47400,127.0.0.1:47401,127.0.0.1:47402,127.0.0.1:47403,127.0.0.1:47404
for r in 2 3 4; do
    "$ASAP" node --rank "$r" --world 5 --peers "$peers" --workload federated --model $MODEL \
        --rounds $ROUNDS --local-steps $LOCAL_STEPS --consensus-rounds $CONSENSUS_ROUNDS \
        --round-timeout 60 --linger-ms 1000 --json >"$work/host$r.json" 2>"$work/host$r.err" &
    pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
pids=()
grep -h '^board rank\|^panic\|^virtio\|^no \|^round ' "$work/m4.out" "$work/a53.out" || true
python3 "$M4/check.py" $((ROUNDS + CONSENSUS_ROUNDS)) \
    "board:mps2-an386 (rank 0)=$work/m4.out" "board:virt cortex-a53 (rank 1)=$work/a53.out" \
    "host:host rank 2=$work/host2.json" "host:host rank 3=$work/host3.json" "host:host rank 4=$work/host4.json" \
    || status=1
if [ "$status" != 0 ]; then
    echo "qemu-virt-a53: FAILED (qemu and host stderr below)" >&2
    for f in m4.err a53.err host2.err host3.err host4.err; do
        grep -v 'Failed to send packet' "$work/$f" | tail -5 | sed "s/^/$f: /" >&2
    done
    exit 1
fi
BIN="$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin"
if [ -x "$BIN/llvm-size" ]; then
    for elf in "$M4_ELF" "$A53_ELF"; do
        "$BIN/llvm-size" "$elf" | sed -n 2p | awk -v n="$(basename "$elf")" \
            '{ printf "%s: text %d B, data %d B, bss %d B (static RAM %d B)\n", n, $1, $2, $3, $2 + $3 }'
    done
fi
echo "qemu-virt-a53: PASS"
