"""Checks a federated cluster run: every member ran ROUNDS rounds and ends with the same
model (to 1e-5, value by value), and every held-out accuracy is within 1% of the
reference trained on all shards together.
Usage: check.py ROUNDS [--restarted] [--peers-down N] [--garbage FILE] board:NAME=OUTPUT... host:NAME=JSON...
A board's OUTPUT is what it printed (`model OFFSET HEX...` lines, its report, which
must say PASS, and its counters); a host's JSON is `asap node --workload federated
--json`'s summary.
  --restarted     boards are a second life that rejoined a running cluster: each must
                  have skipped rounds to catch up (and still have reached ROUNDS)
  --peers-down N  every host must have declared at least N peers down
  --garbage FILE  boards were sent garbage (FILE: what `faults.py garbage` printed): each
                  board's decode_errors, frames_refused and auth_failures must be above
                  0 and at most what was sent of their kinds, and together all the
                  frames it refused (no frame of a member was refused)"""
import json
import re
import struct
import sys

rounds = int(sys.argv[1])
args = sys.argv[2:]
restarted = "--restarted" in args
args = [a for a in args if a != "--restarted"]
peers_down = 0
if "--peers-down" in args:
    k = args.index("--peers-down")
    peers_down = int(args[k + 1])
    del args[k:k + 2]
garbage = None
if "--garbage" in args:
    k = args.index("--garbage")
    for line in open(args[k + 1]):
        if line.startswith("garbage sent "):
            words = line.split()[2:]
            garbage = {words[i]: int(words[i + 1]) for i in range(0, len(words), 2)}
    del args[k:k + 2]
    if garbage is None:
        sys.exit(f"{args[k + 1]}: no 'garbage sent' line")
models, ok = {}, True


def counters(line):
    """`name value` pairs of a board's counters line."""
    pairs = (item.strip().rsplit(" ", 1) for item in line.split("counters: ", 1)[1].split(","))
    return {k.replace(" ", "_"): int(v) for k, v in pairs}


for arg in args:
    kind, rest = arg.split(":", 1)
    name, path = rest.split("=", 1)
    if kind == "board":
        values, passed, count = {}, False, None
        for line in open(path, errors="replace"):
            if line.startswith("model "):
                _, offset, digits = line.split()
                for k in range(0, len(digits), 8):
                    bits = int(digits[k:k + 8], 16)
                    values[int(offset) + k // 8] = struct.unpack("<f", struct.pack("<I", bits))[0]
            elif line.startswith("board rank ") and line.rstrip().endswith(": PASS"):
                passed = True
            elif line.startswith("board rank ") and ": counters: " in line:
                count = counters(line.rstrip())
        if not passed:
            print(f"{name}: no PASS line")
            ok = False
        if restarted:
            skipped = (count or {}).get("rounds_skipped", 0)
            good = skipped > 0
            print(f"{name}: incarnation {(count or {}).get('incarnation')}, rejoined: skipped {skipped} rounds the "
                  f"cluster ran without it, finished {(count or {}).get('rounds_finished')} itself"
                  f"{'' if good else ': FAIL (no catch-up)'}")
            ok &= good
        if garbage is not None:
            c = count or {}
            seen = {k: c.get(k, 0) for k in garbage}
            good = (all(0 < seen[k] <= garbage[k] for k in garbage)
                    and sum(seen.values()) == c.get("driver_refused", -1))
            print(f"{name}: garbage counted: " + ", ".join(f"{k} {seen[k]} of {garbage[k]} sent" for k in garbage)
                  + f" ({sum(seen.values())} of {sum(garbage.values())} reached the node); frames it refused in all: "
                  f"{c.get('driver_refused')}{'' if good else ': FAIL'}")
            ok &= good
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
        good = (s["rounds"] == rounds and abs(f["test_accuracy"] - f["reference_accuracy"]) <= 0.01
                and s["peers_down"] >= peers_down)
        ok &= good
        print(f"{name}: {s['rounds']} rounds in {s['elapsed_s']:.2f} s, held-out accuracy "
              f"{f['test_accuracy']:.4f}, reference {f['reference_accuracy']:.4f}, own shard "
              f"{f['shard_accuracy']:.4f}, peers down {s['peers_down']}{'' if good else ': FAIL'}")
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
