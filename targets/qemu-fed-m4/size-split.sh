#!/usr/bin/env bash
# Flash and static RAM of this firmware (the federated member on mps2-an386, built for
# run.sh's cluster: ../board/build.rs's defaults) and the shares of asap-core, the
# LAN9118 driver and smoltcp, measured by building the firmware again with each part
# replaced by a stand-in (features probe-no-core, probe-no-nic, probe-no-smoltcp;
# src/probe.rs): a part's share is the full firmware's size minus its variant's. LTO
# inlines the drivers into `main`, so symbol sizes (size.py) cannot tell these shares.
# Leaves the full firmware built. Prints a table and, last, one JSON line.
set -euo pipefail
cd "$(dirname "$0")"
TARGET=thumbv7em-none-eabihf
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET" >&2
BIN="$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin"
[ -x "$BIN/llvm-size" ] || rustup component add llvm-tools >&2
ELF="../qemu-lan9118/target/$TARGET/release/asap-qemu-fed-m4"
# Build with the defaults whatever the caller's environment says.
unset ASAP_FED_RANK ASAP_FED_PEERS ASAP_FED_CLUSTER ASAP_FED_SEED ASAP_FED_MODEL ASAP_FED_ROUNDS \
    ASAP_FED_LOCAL_STEPS ASAP_FED_CONSENSUS_ROUNDS
declare -A text data bss
for variant in full probe-no-core probe-no-nic probe-no-smoltcp; do
    if [ "$variant" = full ]; then features=(); else features=(--features "$variant"); fi
    cargo build --release "${features[@]}" >&2
    read -r t d b _ < <("$BIN/llvm-size" "$ELF" | sed -n 2p)
    text[$variant]=$t data[$variant]=$d bss[$variant]=$b
done
cargo build --release >&2
row() { # NAME FLASH RAM
    printf '%-48s %9s B %9s B\n' "$1" "$2" "$3"
}
ram() { echo $((data[$1] + bss[$1])); }
flash() { echo $((text[$1] + data[$1])); }
printf '%-48s %11s %11s\n' "mps2-an386 federated firmware" "flash" "static RAM"
row "whole firmware" "$(flash full)" "$(ram full)"
row "asap-core (full - probe-no-core)" $(($(flash full) - $(flash probe-no-core))) $(($(ram full) - $(ram probe-no-core)))
row "LAN9118 driver (full - probe-no-nic)" $(($(flash full) - $(flash probe-no-nic))) $(($(ram full) - $(ram probe-no-nic)))
row "smoltcp + UDP driver (full - probe-no-smoltcp)" $(($(flash full) - $(flash probe-no-smoltcp))) $(($(ram full) - $(ram probe-no-smoltcp)))
printf '{"flash":{"full":%d,"no_core":%d,"no_nic":%d,"no_smoltcp":%d},"ram":{"full":%d,"no_core":%d,"no_nic":%d,"no_smoltcp":%d}}\n' \
    "$(flash full)" "$(flash probe-no-core)" "$(flash probe-no-nic)" "$(flash probe-no-smoltcp)" \
    "$(ram full)" "$(ram probe-no-core)" "$(ram probe-no-nic)" "$(ram probe-no-smoltcp)"
