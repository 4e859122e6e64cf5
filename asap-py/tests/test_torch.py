"""PyTorch: the same training script (examples/digits.py, a 1.1M-parameter MLP on
scikit-learn's digits) launched by torchrun on 4 processes, once with
asap.DistributedOptimizer and once with torch DDP (gloo), the same seeds: ASAP's final
held-out accuracy is within 1% of DDP's."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import free_base_port

pytest.importorskip("torch")
pytest.importorskip("sklearn")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits.py"


def torchrun(*args, world=4):
    port = free_base_port(world + 1)
    cmd = [
        sys.executable, "-m", "torch.distributed.run",
        "--nproc-per-node", str(world), "--master-port", str(port),
        str(EXAMPLE), *args,
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    assert lines, r.stdout[-2000:] + r.stderr[-2000:]
    return json.loads(lines[-1])


def test_asap_trains_as_well_as_ddp():
    epochs = "10"
    ddp = torchrun("--engine", "ddp", "--epochs", epochs)
    ours = torchrun("--engine", "asap", "--epochs", epochs)
    assert ours["parameters"] >= 1_000_000
    assert ddp["final_accuracy"] > 0.9, ddp
    assert abs(ours["final_accuracy"] - ddp["final_accuracy"]) <= 0.01, (ours, ddp)
    # ASAP's model went over the network: about one model a step (one-peer exp).
    assert ours["bytes_sent"] > 0.5 * 4 * ours["parameters"] * 12 * int(epochs)
