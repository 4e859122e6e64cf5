#!/usr/bin/env bash
# A board in a server cluster: builds this firmware (64 KiB of RAM, one 4,096-value
# node on QEMU's emulated LAN9118) and the `asap` command, boots the board on
# mps2-an386 with `-nic user` forwarding 127.0.0.1:47200 to it and, once it runs (it
# takes up to a second at boot to pick a new incarnation), three `asap node` processes
# on 127.0.0.1:47201-47203; checks that the board and every host process end within
# 1e-5 of the exact mean. Installs qemu-system-arm when missing.
#   run.sh           frames with a CRC-32
#   run.sh --keyed   frames with keyed BLAKE3 tags under the test key in test.key (the
#                    firmware's `keyed` feature; the hosts get --key-file test.key)
#   run.sh --join    the three hosts start an elastic cluster first; the board boots
#                    1.5 s later and joins it (the firmware's `join` feature): it
#                    fetches their model, trains 30 rounds, and every replica must end
#                    within 1e-5 of the hosts' mean
set -euo pipefail
cd "$(dirname "$0")"
TARGET=thumbv7em-none-eabihf
ROOT=$(cd ../.. && pwd)
features=() key=() join=0 hostflags=(--rounds 30)
if [ "${1-}" = --keyed ]; then
    features=(--features keyed) key=(--key-file "$PWD/test.key")
elif [ "${1-}" = --join ]; then
    # The hosts outlast the board's boot (about 2.5 s) and its 30 rounds.
    features=(--features join) join=1 hostflags=(--elastic --rounds 250 --compute-ms 20)
fi

if ! command -v qemu-system-arm >/dev/null 2>&1; then
    ../qemu-cortex-m/run.sh --install-only
fi
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET" >&2
cargo build --release "${features[@]}" >&2
(cd "$ROOT" && cargo build --release -j2 -p asap-cli --bin asap >&2)
ELF="target/$TARGET/release/asap-qemu-lan9118"
ASAP="$ROOT/target/release/asap"

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

status=0
peers=127.0.0.1:47200,127.0.0.1:47201,127.0.0.1:47202,127.0.0.1:47203
start_hosts() {
    for r in 1 2 3; do
        "$ASAP" node --rank "$r" --world 4 --peers "$peers" "${hostflags[@]}" --model 4096 "${key[@]}" \
            --round-timeout 60 --linger-ms 1000 --json >"$work/host$r.json" 2>"$work/host$r.err" &
        pids+=($!)
    done
}
if [ "$join" = 1 ]; then
    start_hosts
    sleep 1.5
fi
timeout 150 qemu-system-arm -M mps2-an386 -nographic \
    -semihosting-config enable=on,target=native \
    -nic user,model=lan9118,hostfwd=udp:127.0.0.1:47200-10.0.2.15:7000 \
    -kernel "$ELF" >"$work/board.out" 2>"$work/qemu.err" &
board=$!
pids+=($board)
deadline=$((SECONDS + 20))
until grep -q '^board: incarnation' "$work/board.out" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ] || ! kill -0 "$board" 2>/dev/null; then
        echo "qemu-lan9118: FAILED: the board did not start" >&2
        cat "$work/board.out" "$work/qemu.err" >&2
        exit 1
    fi
    sleep 0.05
done
if [ "$join" = 0 ]; then
    start_hosts
fi
for p in "${pids[@]}"; do wait "$p" || status=1; done
pids=()
cat "$work/board.out"
for r in 1 2 3; do
    line=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["rounds"], r["max_error_to_mean"], r["auth_failures"], r["replays"])' \
        "$work/host$r.json" 2>/dev/null) || { status=1; cat "$work/host$r.err" >&2; continue; }
    read -r rounds err auth replays <<<"$line"
    echo "host rank $r: $rounds rounds, max error $err, $auth auth failures, $replays replays"
    if [ "$join" = 0 ]; then
        python3 -c 'import sys; sys.exit(0 if int(sys.argv[1]) == 30 and float(sys.argv[2]) <= 1e-5 else 1)' \
            "$rounds" "$err" || status=1
    fi
done
if [ "$join" = 1 ]; then
    # "max error" above is to the mean of all four starts; the cluster's is the hosts'.
    # Their final replicas must agree with each other (the board checked its own).
    python3 - "$work" <<'PY' || status=1
import json, sys
finals = [json.load(open(f"{sys.argv[1]}/host{r}.json"))["final"] for r in (1, 2, 3)]
spread = max(max(v) - min(v) for v in zip(*finals))
print(f"hosts: final replicas within {spread:.2e} of each other")
sys.exit(0 if spread <= 1e-5 else 1)
PY
fi
grep -q PASS "$work/board.out" || status=1
if [ "$status" != 0 ]; then
    echo "qemu-lan9118: FAILED (qemu stderr below)" >&2
    grep -v 'Failed to send packet' "$work/qemu.err" | tail -20 >&2
    exit 1
fi
BIN="$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin"
if [ -x "$BIN/llvm-size" ]; then
    "$BIN/llvm-size" "$ELF" | sed -n 2p | awk '{ printf "firmware: text %d B (flash), data %d B, bss %d B of 65536 B RAM\n", $1, $2, $3 }'
fi
