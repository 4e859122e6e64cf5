"""Flash of a firmware ELF by origin: sums `llvm-nm --print-size` of the symbols below
RAM (0x20000000), grouped by the crate their (demangled) name starts with. With LTO most
of the driver, the trainer and some of smoltcp are inlined into `main`, which is counted
apart: the shares are lower bounds.  Usage: size.py LLVM_NM ELF"""
import re
import subprocess
import sys

GROUPS = [
    ("asap-core (+ its CRC, BLAKE3, ChaCha, postcard, heapless)",
     r"asap_core|blake3|cipher|chacha|poly1305|crc|postcard|heapless|constant_time_eq|serde"),
    ("transport-smoltcp driver", r"transport_smoltcp"),
    ("smoltcp", r"smoltcp"),
    ("LAN9118 driver", r"lan9118"),
    ("asap-fed (trainer)", r"asap_fed"),
    ("libm", r"libm"),
    ("main (inlined: driver loop, trainer, set-up)", r"__cortex_m_rt_main|main$"),
    ("core/compiler-builtins (formatting, float printing, memcpy)", r"core|compiler_builtins|__aeabi|mem"),
]

nm, elf = sys.argv[1], sys.argv[2]
out = subprocess.run([nm, "--print-size", "-C", elf], capture_output=True, text=True, check=True).stdout
totals = {name: 0 for name, _ in GROUPS}
other = total = 0
for line in out.splitlines():
    parts = line.split(None, 3)
    if len(parts) < 4 or parts[2] not in "tTrR":
        continue
    addr, size, name = int(parts[0], 16), int(parts[1], 16), parts[3]
    if addr >= 0x2000_0000:
        continue
    total += size
    for group, pattern in GROUPS:
        if re.search(pattern, name.split("::")[0] if "::" in name else name) or (
            group.startswith("main") and re.search(pattern, name)
        ):
            totals[group] += size
            break
    else:
        other += size
for group, _ in GROUPS:
    print(f"  {group}: {totals[group]} B ({100 * totals[group] / max(total, 1):.0f}%)")
print(f"  other (vectors, cortex-m-rt, panic, anonymous constants): {other} B ({100 * other / max(total, 1):.0f}%)")
print(f"  sized symbols in flash: {total} B")
