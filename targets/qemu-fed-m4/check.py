"""Checks a federated cluster run: every member ran ROUNDS rounds and ends with the same
model (to 1e-5, value by value), and every held-out accuracy is within 1% of the
reference trained on all shards together.
Usage: check.py ROUNDS board:NAME=OUTPUT... host:NAME=JSON...
A board's OUTPUT is what it printed (`model OFFSET HEX...` lines and its report, which
must say PASS); a host's JSON is `asap node --workload federated --json`'s summary."""
import json
import struct
import sys

rounds = int(sys.argv[1])
models, ok = {}, True
for arg in sys.argv[2:]:
    kind, rest = arg.split(":", 1)
    name, path = rest.split("=", 1)
    if kind == "board":
        values, passed = {}, False
        for line in open(path, errors="replace"):
            if line.startswith("model "):
                _, offset, digits = line.split()
                for k in range(0, len(digits), 8):
                    bits = int(digits[k:k + 8], 16)
                    values[int(offset) + k // 8] = struct.unpack("<f", struct.pack("<I", bits))[0]
            elif line.startswith("board rank ") and line.rstrip().endswith(": PASS"):
                passed = True
        if not passed:
            print(f"{name}: no PASS line")
            ok = False
        models[name] = [values.get(i, float("nan")) for i in range(len(values))]
    else:
        try:
            s = json.load(open(path))
        except (OSError, ValueError) as e:
            print(f"{name}: no result ({e})")
            ok = False
            continue
        f = s["federated"]
        models[name] = s["final"]
        good = s["rounds"] == rounds and abs(f["test_accuracy"] - f["reference_accuracy"]) <= 0.01
        ok &= good
        print(f"{name}: {s['rounds']} rounds in {s['elapsed_s']:.2f} s, held-out accuracy "
              f"{f['test_accuracy']:.4f}, reference {f['reference_accuracy']:.4f}, own shard "
              f"{f['shard_accuracy']:.4f}{'' if good else ': FAIL'}")
names = list(models)
first = models[names[0]] if names else []
for name in names:
    m = models[name]
    spread = max((abs(a - b) for a, b in zip(m, first)), default=0.0) if len(m) == len(first) > 0 else float("inf")
    if spread != spread:  # NaN: a value missing
        spread = float("inf")
    print(f"{name}: {len(m)} values, largest distance to {names[0]}'s model {spread:.3g}")
    ok &= spread <= 1e-5
sys.exit(0 if ok else 1)
