#!/usr/bin/env bash
# A board in a server cluster: builds this firmware (64 KiB of RAM, one 4,096-value
# node on QEMU's emulated LAN9118) and the `asap` command, starts three `asap node`
# processes on 127.0.0.1:47201-47203, boots the board on mps2-an386 with `-nic user`
# forwarding 127.0.0.1:47200 to it, and checks that the board and every host process
# end within 1e-5 of the exact mean. Installs qemu-system-arm when missing.
set -euo pipefail
cd "$(dirname "$0")"
TARGET=thumbv7em-none-eabihf
ROOT=$(cd ../.. && pwd)

if ! command -v qemu-system-arm >/dev/null 2>&1; then
    ../qemu-cortex-m/run.sh --install-only
fi
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET" >&2
cargo build --release >&2
(cd "$ROOT" && cargo build --release -j2 -p transport-mio --bin asap >&2)
ELF="target/$TARGET/release/asap-qemu-lan9118"
ASAP="$ROOT/target/release/asap"

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

peers=127.0.0.1:47200,127.0.0.1:47201,127.0.0.1:47202,127.0.0.1:47203
for r in 1 2 3; do
    "$ASAP" node --rank "$r" --world 4 --peers "$peers" --rounds 30 --model 4096 \
        --round-timeout 60 --linger-ms 1000 --json >"$work/host$r.json" 2>"$work/host$r.err" &
    pids+=($!)
done
status=0
board=$(timeout 150 qemu-system-arm -M mps2-an386 -nographic \
    -semihosting-config enable=on,target=native \
    -nic user,model=lan9118,hostfwd=udp:127.0.0.1:47200-10.0.2.15:7000 \
    -kernel "$ELF" 2>"$work/qemu.err") || status=$?
echo "$board"
for p in "${pids[@]}"; do wait "$p" || status=1; done
pids=()
for r in 1 2 3; do
    line=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["rounds"], r["max_error_to_mean"])' \
        "$work/host$r.json" 2>/dev/null) || { status=1; cat "$work/host$r.err" >&2; continue; }
    read -r rounds err <<<"$line"
    echo "host rank $r: $rounds rounds, max error $err"
    python3 -c 'import sys; sys.exit(0 if int(sys.argv[1]) == 30 and float(sys.argv[2]) <= 1e-5 else 1)' \
        "$rounds" "$err" || status=1
done
grep -q PASS <<<"$board" || status=1
if [ "$status" != 0 ]; then
    echo "qemu-lan9118: FAILED (qemu stderr below)" >&2
    grep -v 'Failed to send packet' "$work/qemu.err" | tail -20 >&2
    exit 1
fi
BIN="$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin"
if [ -x "$BIN/llvm-size" ]; then
    "$BIN/llvm-size" "$ELF" | sed -n 2p | awk '{ printf "firmware: text %d B (flash), data %d B, bss %d B of 65536 B RAM\n", $1, $2, $3 }'
fi
