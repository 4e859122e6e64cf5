//! The `asap` command.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::process::ExitCode;
use std::time::Duration;

use asap_core::topology::{Family, Topology, TopologySpec, DEFAULT_MIN_GAP};
use asap_core::{Buffers, Config, Node, NodeId, Wait};
use clap::{Parser, Subcommand};
use transport_mio::report;
use transport_mio::runtime::{initial_vector, UdpRuntime, MAX_PEERS};

#[derive(Parser)]
#[command(
    name = "asap",
    version,
    about = "Asynchronous approximate data-parallel training (ASAP)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// What a communication graph costs and buys: degree, spectral gap, rounds and bytes
    /// to 1e-6 consensus, beside a ring all-reduce.
    Topology(TopologyArgs),
    /// One worker of a cluster: averages a seeded replica with its neighbours over UDP
    /// for a number of rounds, then prints its result. Rank and world size come from
    /// the flags or from torchrun (RANK, WORLD_SIZE), Slurm (SLURM_PROCID, SLURM_NTASKS)
    /// or Open MPI (OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE).
    Node(NodeArgs),
}

#[derive(clap::Args)]
struct NodeArgs {
    /// This worker's rank, 0..world.
    #[arg(long)]
    rank: Option<u32>,
    /// Workers in the cluster.
    #[arg(long)]
    world: Option<u32>,
    /// Every worker's address, in rank order: HOST:PORT,HOST:PORT,...
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// Without --peers: worker r listens on HOST:(BASE_PORT + r).
    #[arg(long, default_value_t = 47_000)]
    base_port: u16,
    /// Host for --base-port addressing.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Graph family (see `asap topology`).
    #[arg(long, default_value = "exp", value_parser = parse_family)]
    topology: Family,
    /// Degree, for families that take one.
    #[arg(long)]
    degree: Option<u32>,
    /// Rounds to run.
    #[arg(long, default_value_t = 50)]
    rounds: u32,
    /// Model values.
    #[arg(long, default_value_t = 1_000)]
    model: usize,
    /// Seed of the replicas and of random graphs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Cluster id (frames of other clusters are refused).
    #[arg(long, default_value_t = 0xa5a9)]
    cluster: u32,
    /// Give up on a round after this many seconds.
    #[arg(long, default_value_t = 30)]
    round_timeout: u64,
    /// Local compute per round in milliseconds (emulated by sleeping between rounds:
    /// a stand-in for the training step until `asap demo` brings one).
    #[arg(long, default_value_t = 0)]
    compute_ms: u64,
    /// After the last round, keep answering peers this many milliseconds.
    #[arg(long, default_value_t = 500)]
    linger_ms: u64,
    /// Print one JSON object (with the final replica) instead of a summary.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct TopologyArgs {
    /// Graph family: ring, torus, hypercube, exp, one-peer-exp, expander, complete,
    /// halton, chord, all, random.
    #[arg(long, value_parser = parse_family)]
    kind: Family,
    /// Nodes in the cluster.
    #[arg(long)]
    nodes: u32,
    /// Degree, for expander, halton, chord, all and random (default ⌈log2 n⌉; expander 4).
    #[arg(long)]
    degree: Option<u32>,
    /// Send to only the first K entries of each send list (bandwidth limit).
    #[arg(long, value_name = "K")]
    max_send: Option<u32>,
    /// Seed of the random families.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Model size the byte figures assume.
    #[arg(long, default_value_t = 4 << 20)]
    model_bytes: u64,
    /// Refuse graphs whose spectral gap is below this.
    #[arg(long, default_value_t = DEFAULT_MIN_GAP)]
    min_gap: f64,
    /// Print one JSON object instead of the table.
    #[arg(long, conflicts_with = "dot")]
    json: bool,
    /// Print the graph in Graphviz DOT instead of the table.
    #[arg(long)]
    dot: bool,
}

fn parse_family(s: &str) -> Result<Family, String> {
    Family::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = Family::ALL.iter().map(|f| f.name()).collect();
        format!("unknown topology `{s}`; one of: {}", names.join(", "))
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Topology(args) => topology(args),
        Command::Node(args) => match node(args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("asap node: {e}");
                ExitCode::from(2)
            }
        },
    }
}

/// Rank and world size from the flags, else from the conventions of launchers.
fn rank_and_world(args: &NodeArgs) -> Result<(u32, u32), String> {
    let env = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok())
            .map(|v| v.parse::<u32>().map_err(|_| format!("bad {names:?}: {v}")))
    };
    let rank = match args.rank {
        Some(r) => r,
        None => env(&["RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK"])
            .ok_or("no --rank (nor RANK, SLURM_PROCID, OMPI_COMM_WORLD_RANK)")??,
    };
    let world = match args.world {
        Some(w) => w,
        None => env(&["WORLD_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"])
            .ok_or("no --world (nor WORLD_SIZE, SLURM_NTASKS, OMPI_COMM_WORLD_SIZE)")??,
    };
    if world < 2 {
        return Err(format!("world size {world}: need at least 2 workers"));
    }
    if rank >= world {
        return Err(format!("rank {rank} is not below world size {world}"));
    }
    Ok((rank, world))
}

fn addresses(args: &NodeArgs, world: u32) -> Result<Vec<SocketAddr>, String> {
    if args.peers.is_empty() {
        return (0..world)
            .map(|r| {
                let port = u32::from(args.base_port) + r;
                let port = u16::try_from(port)
                    .map_err(|_| format!("base port {} + rank {r} exceeds 65535", args.base_port))?;
                resolve(&format!("{}:{port}", args.host))
            })
            .collect();
    }
    if args.peers.len() != world as usize {
        return Err(format!(
            "--peers lists {} addresses for a world of {world}",
            args.peers.len()
        ));
    }
    args.peers.iter().map(|p| resolve(p)).collect()
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("address {addr}: {e}"))?
        .next()
        .ok_or(format!("address {addr}: nothing to connect to"))
}

fn node(args: NodeArgs) -> Result<ExitCode, String> {
    let (rank, world) = rank_and_world(&args)?;
    let peers = addresses(&args, world)?;
    let spec = TopologySpec {
        degree: args.degree,
        seed: args.seed,
        ..TopologySpec::new(args.topology, world)
    };
    let topology = Topology::new(spec, &mut vec![0.0; 3 * world as usize]).map_err(|e| format!("topology: {e}"))?;
    let config = Config {
        cluster: args.cluster,
        wait: Wait::All,
        ..Config::new(args.cluster, NodeId(rank as u16), args.model)
    };
    let peer_count = topology.peers_of(rank).count();
    let layout = config.layout(peer_count).map_err(|e| e.to_string())?;
    let (mut snapshot, mut acc) = (vec![0.0; layout.model_len], vec![0.0; layout.model_len]);
    let (mut weights, mut bits) = (vec![0.0; layout.chunks], vec![0; layout.bitmap_words]);
    let buffers = Buffers {
        snapshot: &mut snapshot,
        accumulator: &mut acc,
        chunk_weights: &mut weights,
        chunk_bits: &mut bits,
    };
    let node = Node::<MAX_PEERS>::with_topology(config, &topology, buffers, asap_core::Instant::ZERO)
        .map_err(|e| e.to_string())?;
    let bind = peers[rank as usize];
    let socket = UdpSocket::bind(bind).map_err(|e| format!("cannot listen on {bind}: {e}"))?;
    let mut runtime = UdpRuntime::new(node, socket, peers).map_err(|e| e.to_string())?;
    let mut params = initial_vector(args.seed, rank, args.model);
    for round in 0..args.rounds {
        if args.compute_ms > 0 {
            std::thread::sleep(Duration::from_millis(args.compute_ms));
        }
        if let Err(e) = runtime.run_round(&mut params, Duration::from_secs(args.round_timeout)) {
            eprintln!("asap node {rank}: round {round}: {e}");
            return Ok(ExitCode::FAILURE);
        }
    }
    runtime
        .finish(Duration::from_millis(args.linger_ms))
        .map_err(|e| e.to_string())?;
    let stats = runtime.node().stats();
    let socket = runtime.stats();
    if args.json {
        let out = serde_json::json!({
            "rank": rank,
            "world": world,
            "topology": args.topology.name(),
            "rounds": stats.rounds,
            "bytes_sent": stats.bytes_sent,
            "frames_sent": stats.frames_sent,
            "chunks_resent": stats.chunks_resent,
            "peers_down": stats.peers_down,
            "datagrams_refused": socket.refused,
            "final": params,
        });
        println!("{out}");
    } else {
        println!(
            "rank {rank}/{world}: {} rounds on {}, {} bytes sent, {} chunks resent, {} peers down",
            stats.rounds, args.topology, stats.bytes_sent, stats.chunks_resent, stats.peers_down
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn topology(args: TopologyArgs) -> ExitCode {
    let spec = TopologySpec {
        degree: args.degree,
        max_send: args.max_send,
        seed: args.seed,
        min_gap: args.min_gap,
        ..TopologySpec::new(args.kind, args.nodes)
    };
    let (t, r) = match report::report(spec, args.model_bytes, 1_000_000) {
        Ok(ok) => ok,
        Err(e) => {
            eprintln!("asap topology: {e}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        match serde_json::to_string(&r) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("asap topology: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else if args.dot {
        print!("{}", report::dot(&t));
    } else {
        print!("{}", report::table(&r));
    }
    ExitCode::SUCCESS
}
