#!/usr/bin/env bash
# Builds the firmware and runs it on QEMU's mps2-an386 (Cortex-M4F). The firmware runs
# ASAP rounds between four nodes and exits through semihosting: 0 when every replica is
# within 1e-5 of the exact average. Installs qemu-system-arm (Debian) and the Rust
# target when missing. Prints the firmware's line and its size (llvm-size).
set -euo pipefail
cd "$(dirname "$0")"
TARGET=thumbv7em-none-eabihf

if ! command -v qemu-system-arm >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "qemu-cortex-m: installing qemu-system-arm" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q --no-install-recommends qemu-system-arm >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends qemu-system-arm >/dev/null; }
    else
        echo "qemu-cortex-m: qemu-system-arm missing and cannot be installed (need root and apt-get)" >&2
        exit 1
    fi
fi
[ "${1:-}" = --install-only ] && exit 0
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET" >&2

cargo build --release >&2
ELF="target/$TARGET/release/asap-qemu-cortex-m"
out=$(timeout 120 qemu-system-arm -M mps2-an386 -nographic \
    -semihosting-config enable=on,target=native -kernel "$ELF") || {
    status=$?
    echo "$out"
    echo "qemu-cortex-m: firmware failed (exit $status)" >&2
    exit 1
}
echo "$out"
grep -q "PASS" <<<"$out" || { echo "qemu-cortex-m: no PASS line" >&2; exit 1; }
BIN="$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin"
if [ -x "$BIN/llvm-size" ]; then
    "$BIN/llvm-size" "$ELF" | sed -n 2p | awk '{ printf "firmware: text %d B (flash), data %d B, bss %d B\n", $1, $2, $3 }'
fi
