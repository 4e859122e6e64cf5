//! `asap._asap`: the Rust half of the Python package `asap`. A binding only, in the
//! manner of polars and tokenizers: options are read into a
//! [`MemberSpec`](transport_mio::member::MemberSpec) and the work is
//! [`transport_mio::member::Member`]'s. Models cross by the buffer protocol (a NumPy
//! array, or a CPU tensor's `.numpy()` view): the member thread reads and writes the
//! caller's memory, never a copy, and the GIL is released while the network works.
//!
//! The package's Python half (`python/asap/__init__.py`) turns tensors and lists into
//! buffers and adds `DistributedOptimizer`.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use asap_core::topology::{Family, TopologySpec};
use asap_core::{CipherSuite, Clip, Compression, Event, Wait};
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use transport_mio::launch;
use transport_mio::member::{Bound as Socket, Engine, Member, MemberError, MemberSpec, Ticket, Transport};

pyo3::create_exception!(
    _asap,
    AsapError,
    PyRuntimeError,
    "A round failed (timed out, or the cluster refused it), or the member stopped."
);

/// The member of this process: one a process, as with `torch.distributed`.
static MEMBER: Mutex<Option<Member>> = Mutex::new(None);

/// How often a waiting call looks for Ctrl+C.
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

fn member_lock() -> std::sync::MutexGuard<'static, Option<Member>> {
    MEMBER.lock().unwrap_or_else(|p| p.into_inner())
}

fn value_error(message: impl Into<String>) -> PyErr {
    PyValueError::new_err(message.into())
}

fn asap_error(e: MemberError) -> PyErr {
    AsapError::new_err(e.to_string())
}

/// Starts this process's member of the cluster. See the package's `init` for the
/// options (named as the `asap node` flags).
#[pyfunction]
#[pyo3(signature = (
    *, rank=None, world=None, peers=None, hosts=None, members=None, node_key_file=None,
    host=None, base_port=None,
    topology="one-peer-exp", degree=None, wait="all", engine="asap", transport="udp",
    key_file=None, encrypt=false, cipher="aes-256-gcm", compress="none",
    consensus_step=None, max_frame=None, clip=None, pace=None, seed=1, cluster=0xa5a9,
    round_timeout=30.0, linger=0.5, elastic=false, join=false,
))]
#[allow(clippy::too_many_arguments)]
fn init(
    py: Python<'_>,
    rank: Option<u32>,
    world: Option<u32>,
    peers: Option<Vec<String>>,
    hosts: Option<PathBuf>,
    members: Option<PathBuf>,
    node_key_file: Option<PathBuf>,
    host: Option<String>,
    base_port: Option<u16>,
    topology: &str,
    degree: Option<u32>,
    wait: &str,
    engine: &str,
    transport: &str,
    key_file: Option<PathBuf>,
    encrypt: bool,
    cipher: &str,
    compress: &str,
    consensus_step: Option<f32>,
    max_frame: Option<usize>,
    clip: Option<(f32, f32)>,
    pace: Option<f64>,
    seed: u64,
    cluster: u32,
    round_timeout: f64,
    linger: f64,
    elastic: bool,
    join: bool,
) -> PyResult<(u32, u32)> {
    let mut member = member_lock();
    if member.is_some() {
        return Err(AsapError::new_err(
            "asap is already initialised in this process: call asap.shutdown() first",
        ));
    }
    let located = launch::locate(&launch::Placement {
        rank,
        world,
        peers: peers.as_deref().unwrap_or_default(),
        hosts: hosts.as_deref(),
        members: members.as_deref(),
        node_key: node_key_file.as_deref(),
        key_file: key_file.as_deref(),
        host: host.as_deref(),
        base_port,
    })
    .map_err(value_error)?;
    let (rank, world) = (located.rank, located.peers.len() as u32);
    let launch::Located {
        peers, key, identity, ..
    } = located;
    let family = Family::from_name(topology).ok_or_else(|| {
        let names: Vec<&str> = Family::ALL.iter().map(|f| f.name()).collect();
        value_error(format!("unknown topology `{topology}`; one of: {}", names.join(", ")))
    })?;
    let wait: Wait = wait.parse().map_err(|e| value_error(format!("wait `{wait}`: {e}")))?;
    let engine = match engine {
        "asap" => Engine::Asap,
        "allreduce" => Engine::Allreduce,
        other => return Err(value_error(format!("engine `{other}`: asap or allreduce"))),
    };
    let transport = match transport {
        "udp" => Transport::Udp,
        "tcp" => Transport::Tcp,
        other => return Err(value_error(format!("transport `{other}`: udp or tcp"))),
    };
    let cipher = match cipher {
        "aes-256-gcm" => CipherSuite::Aes256Gcm,
        "xchacha20-poly1305" => CipherSuite::XChaCha20Poly1305,
        other => {
            return Err(value_error(format!(
                "cipher `{other}`: aes-256-gcm or xchacha20-poly1305"
            )))
        }
    };
    let compression: Compression = compress
        .parse()
        .map_err(|e| value_error(format!("compress `{compress}`: {e}")))?;
    let clip = match clip {
        None => None,
        Some((relative, absolute))
            if relative.is_finite() && absolute.is_finite() && relative >= 0.0 && absolute >= 0.0 =>
        {
            Some(Clip { relative, absolute })
        }
        Some(_) => return Err(value_error("clip: (relative, absolute), finite numbers at least 0")),
    };
    let seconds = |name: &str, s: f64| {
        if s.is_finite() && s > 0.0 {
            Ok(Duration::from_secs_f64(s))
        } else {
            Err(value_error(format!("{name} {s}: seconds above 0")))
        }
    };
    let pace = match pace {
        None => None,
        Some(mbit) if mbit.is_finite() && mbit > 0.0 => Some((mbit * 1e6 / 8.0) as u64),
        Some(mbit) => return Err(value_error(format!("pace {mbit}: Mbit/s above 0"))),
    };
    if encrypt && key.is_none() && identity.is_none() {
        return Err(value_error(
            "encrypt needs a cluster key: key_file, ASAP_KEY_FILE or ASAP_KEY",
        ));
    }
    let spec = MemberSpec {
        rank,
        peers,
        engine,
        transport,
        topology: TopologySpec {
            degree,
            seed,
            ..TopologySpec::new(family, world)
        },
        wait,
        cluster,
        max_frame: max_frame.unwrap_or(transport.default_max_frame()),
        pace,
        round_timeout: seconds("round_timeout", round_timeout)?,
        linger: seconds("linger", linger)?,
        key,
        encrypt,
        cipher,
        compression,
        consensus_step,
        incarnation: py.detach(launch::fresh_incarnation),
        clip,
        identity,
        elastic,
        join,
    };
    spec.check().map_err(value_error)?;
    let socket = Socket::listen(transport, spec.peers[rank as usize]).map_err(AsapError::new_err)?;
    *member = Some(Member::start(spec, socket).map_err(value_error)?);
    Ok((rank, world))
}

/// The model of one call: a writable, C-contiguous float32 buffer.
fn model_buffer(array: &Bound<'_, PyAny>) -> PyResult<PyBuffer<f32>> {
    let buffer = PyBuffer::<f32>::get(array)
        .map_err(|_| value_error("expected a float32 NumPy array or CPU tensor (or a list of them)"))?;
    if buffer.readonly() {
        return Err(value_error("the array is read-only: asap averages in place"));
    }
    if !buffer.is_c_contiguous() {
        return Err(value_error(
            "the array is not contiguous: pass a contiguous one (np.ascontiguousarray, tensor.contiguous())",
        ));
    }
    Ok(buffer)
}

/// Hands `buffer` to the member for one round.
fn submit(buffer: &PyBuffer<f32>) -> PyResult<Ticket> {
    let member = member_lock();
    let member = member
        .as_ref()
        .ok_or_else(|| AsapError::new_err("asap is not initialised: call asap.init() first"))?;
    // SAFETY: the buffer stays acquired (its memory alive) while the ticket lives:
    // `average_` waits before it returns, and `Handle` owns both and drops the ticket
    // (which waits) first. The caller promised not to touch the array meanwhile.
    unsafe { member.submit(buffer.buf_ptr().cast::<f32>(), buffer.item_count()) }.map_err(asap_error)
}

/// Waits for a round with the GIL released, looking for Ctrl+C now and then: `Err` is
/// the interrupt (the round goes on: `ticket` keeps it, and dropping it waits), `Ok` the
/// round's outcome.
fn wait(py: Python<'_>, ticket: &mut Ticket) -> PyResult<Result<(), MemberError>> {
    loop {
        if let Some(done) = py.detach(|| ticket.wait_for(SIGNAL_CHECK)) {
            return Ok(done);
        }
        py.check_signals()?;
    }
}

/// Averages `array` (a float32 buffer) with the cluster, in place: one round.
#[pyfunction]
fn average_(py: Python<'_>, array: &Bound<'_, PyAny>) -> PyResult<()> {
    let buffer = model_buffer(array)?;
    let mut ticket = submit(&buffer)?;
    let done = wait(py, &mut ticket);
    // The ticket first: on an interrupt, dropping it waits for the round to let go of
    // the buffer.
    drop(ticket);
    drop(buffer);
    done?.map_err(asap_error)
}

/// Where a round handed out by `average_async` is.
enum Round {
    /// Running: the ticket, then the buffer it lends (fields drop in this order, so
    /// the buffer is released only after the round let go of it).
    Running { ticket: Ticket, _lent: PyBuffer<f32> },
    /// Over, with its outcome.
    Over(Result<(), MemberError>),
}

/// A round in progress: its array must not be touched until `wait()` returns.
#[pyclass(module = "asap._asap")]
struct Handle {
    round: Mutex<Round>,
}

impl Handle {
    fn lock(&self) -> std::sync::MutexGuard<'_, Round> {
        self.round.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[pymethods]
impl Handle {
    /// Waits for the round; the averaged values are then in the array. Raises
    /// `AsapError` if the round failed (again on every later call).
    fn wait(&self, py: Python<'_>) -> PyResult<()> {
        let mut round = self.lock();
        if let Round::Running { ticket, .. } = &mut *round {
            let outcome = wait(py, ticket)?;
            *round = Round::Over(outcome);
        }
        match &*round {
            Round::Over(outcome) => outcome.clone().map_err(asap_error),
            Round::Running { .. } => unreachable!("set just above"),
        }
    }

    /// Whether the round is over (`wait()` then returns at once).
    fn done(&self) -> bool {
        let mut round = self.lock();
        if let Round::Running { ticket, .. } = &mut *round {
            match ticket.wait_for(Duration::ZERO) {
                Some(outcome) => *round = Round::Over(outcome),
                None => return false,
            }
        }
        true
    }
}

/// Starts averaging `array` in place and returns at once with a `Handle`.
#[pyfunction]
fn average_async(array: &Bound<'_, PyAny>) -> PyResult<Handle> {
    let buffer = model_buffer(array)?;
    let ticket = submit(&buffer)?;
    Ok(Handle {
        round: Mutex::new(Round::Running { ticket, _lent: buffer }),
    })
}

/// This process's rank and the world size.
#[pyfunction]
fn rank_world() -> PyResult<(u32, u32)> {
    let member = member_lock();
    let member = member
        .as_ref()
        .ok_or_else(|| AsapError::new_err("asap is not initialised: call asap.init() first"))?;
    Ok((member.spec().rank, member.spec().world()))
}

/// The counters now, as a dict.
#[pyfunction]
fn stats<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
    let member = member_lock();
    let member = member
        .as_ref()
        .ok_or_else(|| AsapError::new_err("asap is not initialised: call asap.init() first"))?;
    let s = member.stats();
    let (e, k) = (s.engine, s.socket);
    let d = PyDict::new(py);
    for (name, value) in [
        ("rounds", e.rounds),
        ("bytes_sent", e.bytes_sent),
        ("frames_sent", e.frames_sent),
        ("bytes_received", e.bytes_received),
        ("frames_received", e.frames_received),
        ("chunks_sent", e.chunks_sent),
        ("chunks_resent", e.chunks_resent),
        ("chunks_folded", e.chunks_folded),
        ("peers_down", e.peers_down),
        ("updates_rejected", e.updates_rejected),
        ("decode_errors", e.decode_errors),
        ("frames_refused", e.frames_refused),
        ("auth_failures", e.auth_failures),
        ("replays", e.replays),
        ("chunks_clipped", e.chunks_clipped),
        ("rounds_skipped", e.rounds_skipped),
        ("datagrams_sent", k.sent),
        ("datagrams_received", k.received),
        ("datagrams_refused", k.refused),
        ("send_errors", k.send_errors),
        ("reconnects", k.reconnects),
        ("events_dropped", s.events_dropped + k.events_dropped),
    ] {
        d.set_item(name, value)?;
    }
    d.set_item("kernel_drops", s.kernel_drops)?;
    Ok(d)
}

/// The engine's events since the last call, oldest first, as `(kind, peer)` pairs
/// (`peer` the node id, or `None`): `peer-down`, `peer-up`, `peer-restarted`,
/// `peer-incompatible`, `update-rejected`, `joined` (a joining member received the
/// cluster's model).
#[pyfunction]
fn events() -> PyResult<Vec<(&'static str, Option<u16>)>> {
    let member = member_lock();
    let member = member
        .as_ref()
        .ok_or_else(|| AsapError::new_err("asap is not initialised: call asap.init() first"))?;
    Ok(member
        .take_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::PeerDown(p) => Some(("peer-down", Some(p.0))),
            Event::PeerUp(p) => Some(("peer-up", Some(p.0))),
            Event::PeerRestarted(p) => Some(("peer-restarted", Some(p.0))),
            Event::PeerIncompatible(p) => Some(("peer-incompatible", Some(p.0))),
            Event::UpdateRejected { peer, .. } => Some(("update-rejected", Some(peer.0))),
            Event::Joined { .. } => Some(("joined", None)),
            // Round progress is what the application's own calls return.
            _ => None,
        })
        .collect())
}

/// Leaves the cluster: finishes submitted rounds, delivers the last update, says
/// goodbye. Harmless when not initialised or called again.
#[pyfunction]
fn shutdown(py: Python<'_>) -> PyResult<()> {
    let member = member_lock().take();
    match member {
        None => Ok(()),
        Some(mut m) => py.detach(move || m.shutdown()).map_err(asap_error),
    }
}

/// Writes a new node secret (64 hex digits, from the system's CSPRNG) to `path`,
/// readable by its owner only, and returns its public key (for the membership file).
/// Refuses to overwrite a file.
#[pyfunction]
fn keygen(path: PathBuf) -> PyResult<String> {
    launch::write_node_secret(&path)
        .map(|public| public.to_string())
        .map_err(value_error)
}

/// The public key (64 hex digits) of the node secret in `path`.
#[pyfunction]
fn public_key(path: PathBuf) -> PyResult<String> {
    let secret = launch::node_secret(Some(&path))
        .map_err(value_error)?
        .ok_or_else(|| value_error("no node key"))?;
    Ok(secret.public_key().to_string())
}

/// Whether `init` has run (and `shutdown` has not).
#[pyfunction]
fn is_initialized() -> bool {
    member_lock().is_some()
}

#[pymodule]
fn _asap(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("AsapError", m.py().get_type::<AsapError>())?;
    m.add_class::<Handle>()?;
    for f in [
        wrap_pyfunction!(init, m)?,
        wrap_pyfunction!(average_, m)?,
        wrap_pyfunction!(average_async, m)?,
        wrap_pyfunction!(rank_world, m)?,
        wrap_pyfunction!(stats, m)?,
        wrap_pyfunction!(events, m)?,
        wrap_pyfunction!(shutdown, m)?,
        wrap_pyfunction!(is_initialized, m)?,
        wrap_pyfunction!(keygen, m)?,
        wrap_pyfunction!(public_key, m)?,
    ] {
        m.add_function(f)?;
    }
    Ok(())
}
