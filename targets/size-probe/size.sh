#!/usr/bin/env bash
# Flash/RAM size of asap-core on thumbv7em-none-eabihf (Cortex-M4F).
# Builds the probe firmware twice (with asap-core, and `--features baseline` without)
# and prints one JSON line on stdout; section tables and top symbols go to stderr.
# Sizes are Berkeley `llvm-size`: text = .vector_table + .text + .rodata (flash).
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TARGET_DIR="$PWD/target"
TARGET=thumbv7em-none-eabihf

rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET" >&2
BIN="$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin"
[ -x "$BIN/llvm-size" ] || rustup component add llvm-tools >&2

ELF="$CARGO_TARGET_DIR/$TARGET/release/asap-size-probe"
cargo build --release -j2 --target "$TARGET" >&2
cp "$ELF" "$CARGO_TARGET_DIR/asap.elf"
cargo build --release -j2 --target "$TARGET" --features baseline >&2
cp "$ELF" "$CARGO_TARGET_DIR/baseline.elf"
cargo build --release -j2 --target "$TARGET" --features small-flash >&2
cp "$ELF" "$CARGO_TARGET_DIR/small.elf"

for v in asap small baseline; do
    echo "== $v" >&2
    "$BIN/llvm-size" -A "$CARGO_TARGET_DIR/$v.elf" >&2
done
echo "== asap: top 15 flash symbols" >&2
"$BIN/llvm-nm" --size-sort -C -S "$CARGO_TARGET_DIR/asap.elf" | grep -E ' [tTrR] ' | tail -15 >&2

# Berkeley format, second line: text data bss dec hex filename
read -r t d b _ < <("$BIN/llvm-size" "$CARGO_TARGET_DIR/asap.elf" | sed -n 2p)
read -r bt _ _ _ < <("$BIN/llvm-size" "$CARGO_TARGET_DIR/baseline.elf" | sed -n 2p)
read -r st _ _ _ < <("$BIN/llvm-size" "$CARGO_TARGET_DIR/small.elf" | sed -n 2p)
printf '{"text":%d,"data":%d,"bss":%d,"baseline_text":%d,"asap_core_text":%d,"asap_core_text_small_flash":%d}\n' \
    "$t" "$d" "$b" "$bt" "$((t - bt))" "$((st - bt))"
