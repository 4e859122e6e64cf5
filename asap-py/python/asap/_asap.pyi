"""Type stubs of the extension module (the Rust half of the package)."""

from typing import Any, Optional, Sequence

class AsapError(RuntimeError):
    """A round failed (timed out, or the cluster refused it), or the member stopped."""

class Handle:
    """A round in progress: its array must not be touched until `wait()` returns."""

    def wait(self) -> None: ...
    def done(self) -> bool: ...

def init(
    *,
    rank: Optional[int] = None,
    world: Optional[int] = None,
    peers: Optional[Sequence[str]] = None,
    hosts: Optional[str] = None,
    members: Optional[str] = None,
    node_key_file: Optional[str] = None,
    host: Optional[str] = None,
    base_port: Optional[int] = None,
    topology: str = "one-peer-exp",
    degree: Optional[int] = None,
    wait: str = "all",
    engine: str = "asap",
    transport: str = "udp",
    key_file: Optional[str] = None,
    encrypt: bool = False,
    cipher: str = "aes-256-gcm",
    compress: str = "none",
    consensus_step: Optional[float] = None,
    max_frame: Optional[int] = None,
    clip: Optional[tuple[float, float]] = None,
    pace: Optional[float] = None,
    seed: int = 1,
    cluster: int = 0xA5A9,
    round_timeout: float = 30.0,
    linger: float = 0.5,
    elastic: bool = False,
    join: bool = False,
) -> tuple[int, int]: ...
def average_(array: Any) -> None: ...
def average_async(array: Any) -> Handle: ...
def rank_world() -> tuple[int, int]: ...
def stats() -> dict[str, Optional[int]]: ...
def events() -> list[tuple[str, Optional[int]]]: ...
def shutdown() -> None: ...
def is_initialized() -> bool: ...
def keygen(path: str) -> str:
    """Writes a new node secret to `path` (owner-only, never overwriting); returns its public key."""
def public_key(path: str) -> str:
    """The public key of the node secret in `path`."""
