"""Shared helpers: start members as processes (each a Python interpreter running a
small script), with torchrun's environment variables, and read their JSON lines."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NETNS = REPO / "scripts" / "netns"


def free_base_port(world: int) -> int:
    """A base port whose `world` consecutive UDP and TCP ports are free right now."""
    import socket

    for _ in range(100):
        base = random.randrange(20_000, 40_000)
        taken = []
        try:
            for port in range(base, base + world):
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    s = socket.socket(socket.AF_INET, kind)
                    taken.append(s)
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in taken:
                s.close()
    raise RuntimeError("no free range of ports found")


def spawn(script: str, world: int, *, args=(), env_extra=None, env_per_rank=None, wrap=None, base_port=None):
    """Starts `world` interpreters running `script` (code text) with RANK, WORLD_SIZE,
    MASTER_ADDR and MASTER_PORT set; `wrap(rank)` may prefix each command (e.g. a
    network namespace). Returns the Popen objects."""
    base = base_port if base_port is not None else free_base_port(world)
    procs = []
    for rank in range(world):
        env = dict(os.environ)
        env.update(
            RANK=str(rank),
            WORLD_SIZE=str(world),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(base - 1),
            PYTHONUNBUFFERED="1",
        )
        env.update(env_extra or {})
        env.update(env_per_rank(rank) if env_per_rank else {})
        cmd = [sys.executable, "-c", script, *map(str, args)]
        if wrap is not None:
            cmd = wrap(rank) + cmd
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def results(procs, timeout=120):
    """Waits for every process; returns (returncode, last JSON line or None, stderr)."""
    out = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        lines = [l for l in stdout.splitlines() if l.startswith("{")]
        out.append((p.returncode, json.loads(lines[-1]) if lines else None, stderr))
    return out


def netns_available() -> str:
    """'' when network namespaces can be made here, else why not."""
    r = subprocess.run([str(NETNS), "check"], capture_output=True, text=True)
    return "" if r.returncode == 0 else (r.stdout + r.stderr).strip()


@pytest.fixture
def netns():
    """A network of namespaces the test brings up with `up(n, *options)`; removed after."""
    why = netns_available()
    if why:
        pytest.skip(f"network namespaces: {why}")

    def up(n, *options):
        subprocess.run([str(NETNS), "up", str(n), *options], check=True, capture_output=True)

    yield up
    subprocess.run([str(NETNS), "down"], check=False)
