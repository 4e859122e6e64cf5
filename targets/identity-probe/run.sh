#!/usr/bin/env bash
# What per-node identities cost a Cortex-M4F board (#22): builds the probe twice (with
# the X25519 link-key derivation, and `--features baseline` without), runs it on QEMU's
# mps2-an386 with `-icount shift=0` (instructions counted, not timed), and prints one
# JSON line: instructions for a public key and for a link key, painted stack used,
# and the flash the derivation adds. Exits non-zero unless the firmware prints PASS.
set -euo pipefail
cd "$(dirname "$0")"
TARGET=thumbv7em-none-eabihf
../qemu-cortex-m/run.sh --install-only
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET" >&2
BIN="$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin"
[ -x "$BIN/llvm-size" ] || rustup component add llvm-tools >&2

ELF="target/$TARGET/release/asap-identity-probe"
cargo build --release --features baseline >&2
read -r base _ _ _ < <("$BIN/llvm-size" "$ELF" | sed -n 2p)
cargo build --release >&2
read -r text data bss _ < <("$BIN/llvm-size" "$ELF" | sed -n 2p)
out=$(timeout 120 qemu-system-arm -M mps2-an386 -nographic -icount shift=0 \
    -semihosting-config enable=on,target=native -kernel "$ELF")
echo "$out" >&2
grep -qx PASS <<<"$out" || { echo "identity-probe: firmware failed" >&2; exit 1; }
value() { awk -v k="$1" '{ for (i = 1; i < NF; i++) if ($i == k) print $(i+1) }' <<<"$out"; }
printf '{"public_key_instructions":%d,"link_key_instructions":%d,"stack_bytes":%d,"text":%d,"baseline_text":%d,"identity_text":%d,"data":%d,"bss":%d}\n' \
    "$(value public_key_instructions)" "$(value link_key_instructions)" "$(value stack_bytes)" \
    "$text" "$base" "$((text - base))" "$data" "$bss"
