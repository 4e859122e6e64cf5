"""ASAP against torch DDP (gloo) on the same PyTorch training, in one run: 4 torchrun
processes train examples/digits.py (a 1.1M-parameter MLP), with and without one worker
4x slower; prints one JSON line a run and a table of time to the target accuracy, final
accuracy and bytes sent, each as a ratio to DDP's in the same setting.

    target/venv/bin/python asap-py/benches/vs_ddp.py [--epochs 20] [--target 0.95]

(scripts/python-env makes target/venv.) A benchmark, not a test: the machine's load
moves the times; compare the ratios of one run.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits.py"

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=20)
parser.add_argument("--target", type=float, default=0.95)
parser.add_argument("--world", type=int, default=4)
parser.add_argument("--slow-factor", type=float, default=4.0)
parser.add_argument("--port", type=int, default=29_400)
args = parser.parse_args()

CASES = [
    ("ddp", []),
    ("asap", ["--engine", "asap"]),
    ("asap q8", ["--engine", "asap", "--compress", "q8"]),
    ("asap wait=none", ["--engine", "asap", "--wait", "none"]),
    ("asap exp wait=1", ["--engine", "asap", "--topology", "exp", "--wait", "1"]),
]


def run(extra, slow):
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(args.world),
        "--master-port", str(args.port), str(EXAMPLE),
        "--epochs", str(args.epochs), "--target", str(args.target), *extra,
    ]
    if slow:
        cmd += ["--slow-rank", str(args.world - 1), "--slow-factor", str(args.slow_factor)]
    if "--engine" not in extra:
        cmd += ["--engine", "ddp"]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    if r.returncode != 0 or not lines:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return json.loads(lines[-1])


rows = []
for slow in (False, True):
    for label, extra in CASES:
        result = run(extra, slow)
        result["case"] = label
        print(json.dumps({k: v for k, v in result.items() if k != "curve"}), flush=True)
        rows.append((slow, label, result))

print()
print(f"{'case':<16} {'straggler':>9} {'s to ' + str(args.target):>10} {'x DDP':>7} {'final acc':>9} {'MB sent/node':>13} {'x DDP':>7}")
for slow in (False, True):
    base = next(r for s, l, r in rows if s == slow and l == "ddp")
    for s, label, r in rows:
        if s != slow:
            continue
        t, bt = r["time_to_target_s"], base["time_to_target_s"]
        ratio = f"{t / bt:.2f}" if t and bt else "-"
        print(
            f"{label:<16} {(str(args.slow_factor) + 'x') if slow else '-':>9} "
            f"{(f'{t:.2f}' if t else 'not reached'):>10} {ratio:>7} {100 * r['final_accuracy']:>8.1f}% "
            f"{r['bytes_sent'] / 1e6:>13.1f} {r['bytes_sent'] / base['bytes_sent']:>7.2f}"
        )
