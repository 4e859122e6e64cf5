"""asap: asynchronous approximate data-parallel training (ASAP, Kadav & Kruus, arXiv
1612.08608) for NumPy and PyTorch.

Each process is one member of a cluster. Instead of an all-reduce behind a barrier, a
member averages its model with a few neighbours on a sparse graph (stochastic reduce)
under per-edge flow control (NOTIFY-ACK); every replica still converges to the average
an all-reduce would give. The network work happens in Rust, on a thread of its own,
with the GIL released; models cross by the buffer protocol, never as copies.

    import asap
    asap.init()                     # rank and world from torchrun, Slurm or Open MPI
    asap.average_(array)            # one round of stochastic reduce, in place
    opt = asap.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model)

`init`'s options are named as the `asap node` flags.
"""

from __future__ import annotations

import atexit
from typing import Any, Sequence

import numpy as np

from . import _asap
from ._asap import AsapError, Handle, keygen, public_key

__all__ = [
    "AsapError",
    "Cluster",
    "DistributedOptimizer",
    "Handle",
    "average_",
    "average_async",
    "events",
    "init",
    "is_initialized",
    "keygen",
    "public_key",
    "rank",
    "shutdown",
    "stats",
    "world",
]

#: The options `init` takes, as `asap node` names its flags (dashes as underscores).
OPTIONS = (
    "rank",
    "world",
    "peers",
    "hosts",
    "members",
    "node_key_file",
    "host",
    "base_port",
    "topology",
    "degree",
    "wait",
    "engine",
    "transport",
    "key_file",
    "encrypt",
    "cipher",
    "compress",
    "consensus_step",
    "max_frame",
    "clip",
    "pace",
    "seed",
    "cluster",
    "round_timeout",
    "linger",
    "elastic",
    "join",
    "period",
)

_period = 1
_atexit_registered = False


class Cluster:
    """What `init` returns: this member's rank and the world size; as a context manager
    it shuts the member down on leaving the block (also on an exception or Ctrl+C)."""

    def __init__(self, rank: int, world: int) -> None:
        self.rank = rank
        self.world = world

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc: Any) -> None:
        shutdown()

    def __repr__(self) -> str:
        return f"asap.Cluster(rank={self.rank}, world={self.world})"


def init(**options: Any) -> Cluster:
    """Starts this process's member of the cluster and returns a `Cluster`.

    Rank and world size come from `rank=`/`world=`, else from torchrun (`RANK`,
    `WORLD_SIZE`), Slurm (`SLURM_PROCID`, `SLURM_NTASKS`) or Open MPI
    (`OMPI_COMM_WORLD_RANK`, `OMPI_COMM_WORLD_SIZE`). Peers: `peers=["host:port", ...]`
    in rank order, or `hosts="file"` (one address a line), else every member on one host
    (`host=`, default `MASTER_ADDR` or 127.0.0.1) at consecutive ports from `base_port`
    (default `MASTER_PORT + 1`, or 47000). Or per-node identities: `members="file"` (one
    `ID PUBLIC_KEY HOST:PORT` a line) and `node_key_file=` (else ASAP_NODE_KEY_FILE),
    this member's secret from `asap.keygen(path)`: every pair of members then has its
    own link key, and no member can speak for another.

    Options, named as the `asap node` flags: `topology` ("one-peer-exp"; see
    `asap topology`), `degree`, `wait` ("all", "none", "barrier" or a number k),
    `engine` ("asap" or "allreduce", the ring baseline), `transport` ("udp" or "tcp"),
    `key_file` (else ASAP_KEY_FILE / ASAP_KEY), `encrypt`, `cipher` ("aes-256-gcm" or
    "xchacha20-poly1305"), `compress` ("none", "f16", "bf16", "q8", "topk:F"),
    `consensus_step`, `max_frame` (bytes; 1,400 over UDP), `clip` (relative, a
    (relative, absolute) pair, or "RELATIVE[:ABSOLUTE]" as the command spells it),
    `pace` (Mbit/s), `seed`, `cluster` (id), `round_timeout` and `linger` (seconds),
    `elastic` (members may be absent at the start, join later and leave: run every
    member of such a cluster with it), `join` (this member joins a running elastic
    cluster: its first `average_` fetches the model from its neighbours, so
    `DistributedOptimizer`, which averages once at construction, starts from the
    cluster's model), and `period`: the default `every` of `DistributedOptimizer`.

    Raises `ValueError` for a bad option (with the same one-line message as the
    command), `AsapError` if the member cannot start (e.g. its port is taken).
    """
    global _period, _atexit_registered
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)}; asap.init takes: {', '.join(OPTIONS)}")
    period = options.pop("period", 1)
    if not isinstance(period, int) or period < 1:
        raise ValueError(f"period {period!r}: a whole number of steps, at least 1")
    clip = options.get("clip")
    if isinstance(clip, (int, float)):
        options["clip"] = (float(clip), 0.0)
    elif isinstance(clip, str):  # the command's spelling, RELATIVE[:ABSOLUTE]
        try:
            relative, _, absolute = clip.partition(":")
            options["clip"] = (float(relative), float(absolute or 0.0))
        except ValueError:
            raise ValueError(
                f"clip `{clip}`: expected RELATIVE[:ABSOLUTE], positive numbers, e.g. 0.5 or 0.5:0.01"
            ) from None
    if options.get("peers") is not None:
        options["peers"] = [str(p) for p in options["peers"]]
    for path in ("hosts", "members", "key_file", "node_key_file"):
        if options.get(path) is not None:
            options[path] = str(options[path])
    try:
        rank_, world_ = _asap.init(**options)
    except TypeError as e:  # a value of the wrong type
        raise ValueError(str(e)) from None
    except OverflowError as e:
        raise ValueError(str(e)) from None
    _period = period
    if not _atexit_registered:
        atexit.register(shutdown)
        _atexit_registered = True
    return Cluster(rank_, world_)


def rank() -> int:
    """This member's rank."""
    return _asap.rank_world()[0]


def world() -> int:
    """Members in the cluster."""
    return _asap.rank_world()[1]


def stats() -> dict:
    """The member's counters: rounds, bytes and frames sent and received, chunks
    resent, peers declared down, frames refused (by reason), kernel drops, ..."""
    return _asap.stats()


def events() -> list:
    """What happened to peers since the last call, oldest first: `(kind, peer)` pairs,
    kind one of "peer-down", "peer-up", "peer-restarted", "peer-incompatible",
    "update-rejected"."""
    return _asap.events()


def shutdown() -> None:
    """Leaves the cluster (finishes submitted rounds, delivers the last update, says
    goodbye). Harmless when not initialised or called again; also runs at exit."""
    _asap.shutdown()


def is_initialized() -> bool:
    """Whether `init` has run and `shutdown` has not."""
    return _asap.is_initialized()


def _as_buffer(x: Any) -> np.ndarray:
    """A float32 NumPy view of `x` (an array or a CPU tensor) sharing its memory."""
    if isinstance(x, np.ndarray):
        if x.dtype != np.float32:
            raise ValueError(f"a {x.dtype} array: asap averages float32")
        return x
    torch = _torch()
    if torch is not None and isinstance(x, torch.Tensor):
        if x.device.type != "cpu":
            raise ValueError(f"a tensor on {x.device}: asap averages CPU tensors (copy it with .cpu())")
        if x.dtype != torch.float32:
            raise ValueError(f"a {x.dtype} tensor: asap averages float32")
        # A view of the same memory (detach drops autograd, not the storage).
        return x.detach().numpy()
    raise ValueError(f"expected a float32 NumPy array or CPU tensor, or a list of them; got {type(x).__name__}")


def _torch() -> Any:
    import sys

    return sys.modules.get("torch")


class _Gathered:
    """A round over several arrays: averaged in one flat buffer, scattered back on
    `wait()`."""

    def __init__(self, parts: list, flat: np.ndarray, handle: Handle) -> None:
        self._parts = parts
        self._flat = flat
        self._handle = handle
        self._scattered = False

    def wait(self) -> None:
        self._handle.wait()
        if not self._scattered:
            offset = 0
            for part in self._parts:
                n = part.size
                np.copyto(part, self._flat[offset : offset + n].reshape(part.shape))
                offset += n
            self._scattered = True

    def done(self) -> bool:
        return self._handle.done()


def average_async(tensors: Any) -> Any:
    """Starts one round of stochastic reduce on `tensors` (a float32 array or CPU
    tensor, or a list of them) and returns a handle at once; `handle.wait()` returns
    when the averaged values are in place. Do not touch the arrays until then.

    One contiguous array is averaged where it lies; a list is gathered into one buffer
    (a copy each way). `DistributedOptimizer` lays a model out in one buffer once, so
    its rounds copy nothing."""
    if isinstance(tensors, (list, tuple)):
        parts = [_as_buffer(t) for t in tensors]
        if not parts:
            raise ValueError("an empty list: nothing to average")
        if len(parts) == 1 and parts[0].flags.c_contiguous:
            return _asap.average_async(parts[0])
        flat = np.concatenate([p.reshape(-1) for p in parts])
        return _Gathered(parts, flat, _asap.average_async(flat))
    return _asap.average_async(_as_buffer(tensors))


def average_(tensors: Any) -> Any:
    """One round of stochastic reduce on `tensors` (a float32 array or CPU tensor, or a
    list of them), in place; returns `tensors`. Every member must pass models of the
    same length, every round."""
    if isinstance(tensors, (list, tuple)):
        average_async(tensors).wait()
    else:
        _asap.average_(_as_buffer(tensors))
    return tensors


def __getattr__(name: str) -> Any:
    # torch is imported only by those who use it.
    if name == "DistributedOptimizer":
        from .optim import DistributedOptimizer

        return DistributedOptimizer
    raise AttributeError(f"module 'asap' has no attribute {name!r}")


def _default_period() -> int:
    return _period
