"""NumPy arrays averaged by processes on loopback (and in network namespaces with loss,
where root allows): every member ends at the exact mean."""

import subprocess

import numpy as np
import pytest

import asap
from conftest import NETNS, free_base_port, results, spawn

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
                  "head": x[:16].tolist(), "peers_down": s["peers_down"],
                  "auth_failures": s["auth_failures"]}))
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
    with pytest.raises(ValueError, match="RELATIVE"):
        asap.init(rank=0, world=2, clip="half")
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


def test_a_member_with_another_members_id_is_refused(tmp_path):
    """Per-node keys: four members list their public keys in a membership file; a fifth
    process claims member 2's id with its own key (and its own address). Every frame it
    sends is refused and counted; the four real members reach their exact mean."""
    import json

    base = free_base_port(5)
    publics = [asap.keygen(str(tmp_path / f"node{k}.key")) for k in range(4)]
    members = tmp_path / "members.txt"
    members.write_text("".join(f"{k} {publics[k]} 127.0.0.1:{base + k}\n" for k in range(4)))
    # The impostor's view: member 2 is itself, at its own port.
    fake_public = asap.keygen(str(tmp_path / "fake.key"))
    forged = tmp_path / "forged.txt"
    forged.write_text(
        "".join(
            f"{k} {fake_public if k == 2 else publics[k]} 127.0.0.1:{base + 4 if k == 2 else base + k}\n"
            for k in range(4)
        )
    )
    assert asap.public_key(str(tmp_path / "fake.key")) == fake_public
    real = spawn(
        AVERAGE.replace("with asap.init(**options)", "with asap.init(node_key_file=os.environ['KEY'], **options)"),
        4,
        args=(20_000, 4, json.dumps({"members": str(members), "round_timeout": 20.0})),
        env_per_rank=lambda r: {"KEY": str(tmp_path / f"node{r}.key")},
    )
    impostor = spawn(
        IMPOSTOR,
        1,
        args=(20_000, json.dumps({"members": str(forged), "rank": 2, "node_key_file": str(tmp_path / "fake.key")})),
    )
    out = results(real)
    impostor[0].kill()
    impostor[0].communicate()
    for code, line, err in out:
        assert code == 0, err
        assert line["error"] < 1e-5, (line, err)
    # Its out-neighbours on one-peer-exp (3 and 0) refused its frames as unauthentic.
    assert sum(line["auth_failures"] for _, line, _ in out) > 0, out


# A process claiming a member's id: averages its own (huge) values until killed.
IMPOSTOR = r"""
import json, sys
import numpy as np
import asap
n, options = int(sys.argv[1]), json.loads(sys.argv[2])
asap.init(round_timeout=1.0, **options)
x = np.full(n, 1e6, np.float32)
while True:
    try:
        asap.average_(x)
    except asap.AsapError:
        pass
"""


# Elastic membership: ranks 0-3 found the cluster; rank 4 starts half a second later and
# joins it. Each prints its distance to the founders' exact mean, and the joiner also
# that distance right after its first `average_` (which fetches the model).
ELASTIC = r"""
import json, os, sys, time
import numpy as np
import asap

n, rounds = int(sys.argv[1]), int(sys.argv[2])
join = os.environ["RANK"] == "4"
if join:
    time.sleep(0.5)
    rounds //= 5
with asap.init(elastic=True, join=join) as cluster:
    start = lambda r: np.random.default_rng(r).standard_normal(n).astype(np.float32)
    x = start(cluster.rank)
    founders = np.mean([start(r).astype(np.float64) for r in range(4)], axis=0)
    first = None
    for _ in range(rounds):
        asap.average_(x)
        if first is None:
            first = float(np.max(np.abs(x - founders)))
        time.sleep(0.005)
    events = [kind for kind, _ in asap.events()]
print(json.dumps({"rank": cluster.rank, "error": float(np.max(np.abs(x - founders))),
                  "first": first, "joined": "joined" in events}))
"""


def test_a_member_joins_a_running_cluster_with_its_model():
    out = results(spawn(ELASTIC, 5, args=(10_000, 300)))
    for code, line, err in out:
        assert code == 0, err
        assert line["error"] < 1e-5, (line, err)
    joiner = out[4][1]
    # Its first average_ is its in-neighbours' replicas, which are the founders' mean
    # once they have converged (a busy machine may start them late: within 1e-3 then).
    assert joiner["first"] < 1e-3, joiner
    assert joiner["joined"], joiner
