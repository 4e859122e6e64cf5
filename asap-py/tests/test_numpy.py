"""NumPy arrays averaged by processes on loopback (and in network namespaces with loss,
where root allows): every member ends at the exact mean."""

import subprocess

import numpy as np
import pytest

import asap
from conftest import NETNS, results, spawn

# A member: averages its seeded vector ROUNDS times, prints its distance to the exact
# mean of every member's starting vector.
AVERAGE = r"""
import json, os, sys
import numpy as np
import asap

n, rounds, options = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
with asap.init(**options) as cluster:
    start = lambda r: np.random.default_rng(r).standard_normal(n).astype(np.float32)
    x = start(cluster.rank)
    mean = np.mean([start(r).astype(np.float64) for r in range(cluster.world)], axis=0)
    for _ in range(rounds):
        asap.average_(x)
    s = asap.stats()
print(json.dumps({"rank": cluster.rank, "error": float(np.max(np.abs(x - mean))),
                  "rounds": s["rounds"], "resent": s["chunks_resent"],
                  "head": x[:16].tolist(), "peers_down": s["peers_down"]}))
"""


def run_average(world, n, rounds, options, **kw):
    import json

    procs = spawn(AVERAGE, world, args=(n, rounds, json.dumps(options)), **kw)
    return results(procs)


@pytest.mark.parametrize(
    "options,rounds",
    [
        ({"topology": "one-peer-exp"}, 4),
        ({"topology": "exp"}, 30),
        ({"topology": "ring"}, 40),
        ({"topology": "hypercube", "transport": "tcp"}, 30),
        ({"engine": "allreduce"}, 2),
        ({"topology": "one-peer-exp", "compress": "q8"}, 60),
    ],
    ids=["one-peer-exp", "exp", "ring", "hypercube-tcp", "allreduce", "one-peer-exp-q8"],
)
def test_four_members_reach_the_exact_mean(options, rounds):
    for code, line, err in run_average(4, 50_000, rounds, options):
        assert code == 0, err
        assert line["error"] < 1e-5, (line, err)
        assert line["rounds"] == rounds


def test_exact_mean_with_ten_percent_loss(netns):
    """Namespaces on a bridge, every member losing 10% of what it receives."""
    netns(4, "--loss", "all:10")
    import json

    peers = [f"10.77.0.{k + 1}:7000" for k in range(4)]
    options = {"topology": "one-peer-exp", "peers": peers}
    wrap = lambda rank: [str(NETNS), "exec", str(rank)]
    out = results(spawn(AVERAGE, 4, args=(200_000, 4, json.dumps(options)), wrap=wrap))
    for code, line, err in out:
        assert code == 0, err
        assert line["error"] < 1e-5, (line, err)
    # The loss was real: chunks were sent again.
    assert sum(line["resent"] for _, line, _ in out) > 0


def test_a_bad_option_is_a_value_error():
    with pytest.raises(ValueError, match="unknown topology"):
        asap.init(rank=0, world=2, topology="moebius")
    with pytest.raises(ValueError, match="unknown option"):
        asap.init(rank=0, world=2, topolgy="ring")
    with pytest.raises(ValueError, match="not below"):
        asap.init(rank=2, world=2)
    with pytest.raises(ValueError, match="compress"):
        asap.init(rank=0, world=2, compress="q3")
    assert not asap.is_initialized()


def test_shutdown_twice_is_harmless_and_misuse_is_explained():
    asap.shutdown()
    with pytest.raises(asap.AsapError, match="not initialised"):
        asap.average_(np.zeros(4, np.float32))
    cluster = asap.init(rank=0, world=2, base_port=0 + 39_990)
    assert (cluster.rank, cluster.world) == (0, 2)
    assert asap.rank() == 0 and asap.world() == 2
    with pytest.raises(asap.AsapError, match="already initialised"):
        asap.init(rank=0, world=2)
    with pytest.raises(ValueError, match="float32"):
        asap.average_(np.zeros(4, np.float64))
    with pytest.raises(ValueError, match="read-only"):
        frozen = np.zeros(4, np.float32)
        frozen.flags.writeable = False
        asap.average_(frozen)
    asap.shutdown()
    asap.shutdown()
    assert not asap.is_initialized()


def test_a_member_killed_mid_run_does_not_stop_the_others():
    """Rank 3 dies (SIGKILL) after 5 rounds; the others finish their 40 and agree."""
    script = AVERAGE.replace(
        "    for _ in range(rounds):\n        asap.average_(x)\n",
        "    for i in range(rounds):\n"
        "        if cluster.rank == 3 and i == 5:\n"
        "            os.kill(os.getpid(), 9)\n"
        "        asap.average_(x)\n",
    )
    import json

    out = results(spawn(script, 4, args=(10_000, 40, json.dumps({"topology": "exp"}))))
    assert out[3][0] == -9
    for code, line, err in out[:3]:
        assert code == 0, err
        assert line["rounds"] == 40
        assert line["peers_down"] >= 1
    # The survivors went on averaging among themselves: they agree.
    heads = np.array([line["head"] for _, line, _ in out[:3]])
    assert np.max(heads.max(axis=0) - heads.min(axis=0)) < 1e-3, heads
