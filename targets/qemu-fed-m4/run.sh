#!/usr/bin/env bash
# Federated training on a board among servers: builds this firmware (one member on
# QEMU's mps2-an386 with its emulated LAN9118) and the `asap` command, starts three
# `asap node --workload federated` processes on 127.0.0.1:47301-47303, boots the board
# as rank 0 with `-nic user` forwarding 127.0.0.1:47300 to it, and checks that
#   * every member ran every round and ends with the same model (to 1e-5), compared
#     value by value (the board prints its model in hex over semihosting);
#   * every member's held-out accuracy is within 1% of the reference, a single model
#     trained on all shards together with the same steps (the hosts compute it; the
#     board's build.rs too, and the board checks itself against it);
# then prints the firmware's flash (and its share by crate, size.py) and static RAM.
# Installs qemu-system-arm when missing.
set -euo pipefail
cd "$(dirname "$0")"
TARGET=thumbv7em-none-eabihf
ROOT=$(cd ../.. && pwd)
MODEL=4096 ROUNDS=30 LOCAL_STEPS=4 CONSENSUS_ROUNDS=30

if ! command -v qemu-system-arm >/dev/null 2>&1; then
    ../qemu-cortex-m/run.sh --install-only
fi
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET" >&2
ASAP_FED_RANK=0 ASAP_FED_PEERS=10.0.2.15:7000,10.0.2.2:47301,10.0.2.2:47302,10.0.2.2:47303 \
    ASAP_FED_MODEL=$MODEL ASAP_FED_ROUNDS=$ROUNDS ASAP_FED_LOCAL_STEPS=$LOCAL_STEPS \
    ASAP_FED_CONSENSUS_ROUNDS=$CONSENSUS_ROUNDS cargo build --release >&2
(cd "$ROOT" && cargo build --release -j2 -p transport-mio --bin asap >&2)
ELF="../qemu-lan9118/target/$TARGET/release/asap-qemu-fed-m4"
ASAP="$ROOT/target/release/asap"

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

peers=127.0.0.1:47300,127.0.0.1:47301,127.0.0.1:47302,127.0.0.1:47303
for r in 1 2 3; do
    "$ASAP" node --rank "$r" --world 4 --peers "$peers" --workload federated --model $MODEL \
        --rounds $ROUNDS --local-steps $LOCAL_STEPS --consensus-rounds $CONSENSUS_ROUNDS \
        --round-timeout 60 --linger-ms 1000 --json >"$work/host$r.json" 2>"$work/host$r.err" &
    pids+=($!)
done
status=0
timeout 300 qemu-system-arm -M mps2-an386 -nographic \
    -semihosting-config enable=on,target=native \
    -nic user,model=lan9118,hostfwd=udp:127.0.0.1:47300-10.0.2.15:7000 \
    -kernel "$ELF" >"$work/board.out" 2>"$work/qemu.err" || status=$?
grep -v '^model ' "$work/board.out" || true
for p in "${pids[@]}"; do wait "$p" || status=1; done
pids=()
python3 check.py $((ROUNDS + CONSENSUS_ROUNDS)) "board:board rank 0=$work/board.out" \
    "host:host rank 1=$work/host1.json" "host:host rank 2=$work/host2.json" "host:host rank 3=$work/host3.json" \
    || status=1
if [ "$status" != 0 ]; then
    echo "qemu-fed-m4: FAILED (qemu stderr below)" >&2
    grep -v 'Failed to send packet' "$work/qemu.err" | tail -20 >&2
    exit 1
fi
BIN="$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin"
if [ -x "$BIN/llvm-size" ]; then
    "$BIN/llvm-size" "$ELF" | sed -n 2p | awk '{ printf "firmware: text %d B (flash), data %d B, bss %d B (static RAM %d B)\n", $1, $2, $3, $2 + $3 }'
    echo "flash by origin (symbol sizes; what LTO inlined into main is counted apart):"
    python3 size.py "$BIN/llvm-nm" "$ELF"
fi
echo "qemu-fed-m4: PASS"
