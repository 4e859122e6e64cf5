//! The `asap` command.

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use asap_cli::demo::{self, Line, Run};
use asap_cli::worker::{self, Engine, Stop, Transport, WorkerError, WorkerSpec, Workload};
use asap_cli::{config_file, netns, plot, report};
use asap_core::topology::{Family, TopologySpec, DEFAULT_MIN_GAP};
use asap_core::Compression;
use asap_core::Wait;
use asap_fed::sparse::{self, Dataset, Synthetic};
use clap::{CommandFactory, Parser, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use transport_mio::launch;
use transport_mio::member::MemberSpec;

#[derive(Parser)]
#[command(
    name = "asap",
    version,
    about = "Asynchronous approximate data-parallel training (ASAP)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// What to log on stderr: a level (error, warn, info, debug, trace) or filters in
    /// RUST_LOG's syntax (e.g. `info,transport_mio::udp=debug`); adds to RUST_LOG.
    /// Default: warn (peers going down, refused frames, at most one line per 10 s
    /// each); info adds peers coming back, restarts and address moves.
    #[arg(long, global = true, value_name = "LEVEL")]
    log: Option<String>,
}

/// Sends the `log` facade's lines to stderr, each as `[LEVEL who +SECONDS] message`
/// (seconds since the process started, so lines of several workers line up).
fn init_log(flag: Option<&str>, who: String) {
    use std::io::Write;
    let start = std::time::Instant::now();
    let mut builder = env_logger::Builder::new();
    builder.filter_level(log::LevelFilter::Warn);
    if let Ok(env) = std::env::var("RUST_LOG") {
        builder.parse_filters(&env);
    }
    if let Some(flag) = flag {
        builder.parse_filters(flag);
    }
    builder.format(move |buf, record| {
        writeln!(
            buf,
            "[{} {who} +{:.3}s] {}",
            record.level(),
            start.elapsed().as_secs_f64(),
            record.args()
        )
    });
    // Only fails if a logger is set already (never: once per process).
    let _ = builder.try_init();
}

#[derive(Subcommand)]
enum Command {
    /// What a communication graph costs and buys: degree, spectral gap, rounds and bytes
    /// to 1e-6 consensus, beside a ring all-reduce.
    Topology(TopologyArgs),
    /// One worker of a cluster: averages a seeded replica with its neighbours over UDP
    /// (or trains logistic regression, --workload logistic) for a number of rounds, then
    /// prints its result. Rank and world size come from the flags or from torchrun
    /// (RANK, WORLD_SIZE), Slurm (SLURM_PROCID, SLURM_NTASKS) or Open MPI
    /// (OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE).
    Node(NodeArgs),
    /// The main job: N worker processes on this machine train logistic regression with
    /// ASAP, then with a ring all-reduce; prints a comparison, draws the loss curves.
    Demo(DemoArgs),
    /// Print a new random cluster key (64 hex digits) for --key-file; with --node FILE,
    /// write a new node secret (per-node identities) to FILE and print its public key
    /// for the membership file.
    Keygen(KeygenArgs),
    /// Print the public key of a node secret (written by `asap keygen --node`).
    Pubkey {
        /// The node secret's file.
        file: PathBuf,
    },
}

#[derive(clap::Args)]
struct KeygenArgs {
    /// Write a node secret to this file (created, owner-only, never overwritten) and
    /// print its public key, instead of printing a cluster key.
    #[arg(long, value_name = "FILE")]
    node: Option<PathBuf>,
}

/// The AEAD of `--encrypt` (`asap_core::CipherSuite`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Cipher {
    /// AES-256-GCM: several times faster on CPUs with AES instructions (every current
    /// server); boards built without asap-core's `aes-gcm` feature cannot open it.
    #[value(name = "aes-256-gcm")]
    Aes256Gcm,
    /// XChaCha20-Poly1305: what boards speak; pick it for clusters with boards.
    #[value(name = "xchacha20-poly1305")]
    XChaCha20Poly1305,
}

impl Cipher {
    fn suite(self) -> asap_core::CipherSuite {
        match self {
            Cipher::Aes256Gcm => asap_core::CipherSuite::Aes256Gcm,
            Cipher::XChaCha20Poly1305 => asap_core::CipherSuite::XChaCha20Poly1305,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Cipher::Aes256Gcm => "aes-256-gcm",
            Cipher::XChaCha20Poly1305 => "xchacha20-poly1305",
        }
    }
}

/// What a worker does between rounds.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum WorkloadKind {
    /// Average seeded replicas (the result is checkable: the exact mean).
    Average,
    /// SGD on logistic regression (synthetic data, or --data FILE).
    Logistic,
    /// Federated training (the problem boards run too, `asap-fed`): local SGD steps on
    /// this rank's shard before each of --rounds rounds, then --consensus-rounds rounds
    /// of averaging; prints the held-out accuracy and a reference trained on all shards.
    Federated,
}

/// The federated workload's knobs (`--workload federated`; the model length is --model).
#[derive(clap::Args, Clone, Debug)]
struct FedArgs {
    /// Federated: SGD steps on the local shard before each training round.
    #[arg(long, default_value_t = asap_fed::Plan::DEFAULT.local_steps)]
    local_steps: u32,
    /// Federated: averaging-only rounds after the --rounds training rounds, so that every
    /// member ends with the same model.
    #[arg(long, default_value_t = asap_fed::Plan::DEFAULT.consensus_rounds)]
    consensus_rounds: u32,
    /// Federated: SGD learning rate.
    #[arg(long, default_value_t = asap_fed::Plan::DEFAULT.lr)]
    fed_rate: f32,
    /// Federated: samples a step (at most 64).
    #[arg(long, default_value_t = asap_fed::Plan::DEFAULT.batch)]
    fed_batch: usize,
    /// Federated: training samples per rank.
    #[arg(long, default_value_t = asap_fed::Problem::new(0, 0, 0).shard_len)]
    shard: u32,
    /// Federated: held-out samples.
    #[arg(long, default_value_t = asap_fed::Problem::new(0, 0, 0).test_len)]
    test_samples: u32,
}

impl FedArgs {
    /// The problem and plan of a federated cluster of `world` with `model` parameters and
    /// `rounds` training rounds.
    fn build(
        &self,
        seed: u64,
        model: usize,
        world: u32,
        rounds: u32,
    ) -> Result<(asap_fed::Problem, asap_fed::Plan), String> {
        if model < 2 {
            return Err(format!("--model {model}: the federated model needs at least 2 values"));
        }
        if world as usize > asap_fed::MAX_WORLD {
            return Err(format!("federated workload: at most {} workers", asap_fed::MAX_WORLD));
        }
        if !(1..=asap_fed::MAX_BATCH).contains(&self.fed_batch) {
            return Err(format!(
                "--fed-batch {}: must be in 1..={}",
                self.fed_batch,
                asap_fed::MAX_BATCH
            ));
        }
        if !(self.fed_rate.is_finite() && self.fed_rate > 0.0) {
            return Err(format!("--fed-rate {}: must be a positive number", self.fed_rate));
        }
        if self.shard == 0 || self.test_samples == 0 {
            return Err("--shard and --test-samples must be at least 1".into());
        }
        let problem = asap_fed::Problem {
            shard_len: self.shard,
            test_len: self.test_samples,
            ..asap_fed::Problem::new(seed, model, world)
        };
        let plan = asap_fed::Plan {
            train_rounds: rounds,
            local_steps: self.local_steps,
            consensus_rounds: self.consensus_rounds,
            lr: self.fed_rate,
            batch: self.fed_batch,
        };
        rounds
            .checked_add(self.consensus_rounds)
            .ok_or("--rounds plus --consensus-rounds overflows")?;
        Ok((problem, plan))
    }
}

/// The training problem (shared by `node` and `demo`).
#[derive(clap::Args, Clone, Debug)]
struct TrainArgs {
    /// Train on this LIBSVM file instead of synthetic data (every tenth row is the test set).
    #[arg(long, value_name = "FILE")]
    data: Option<PathBuf>,
    /// Synthetic data: features (the model's length).
    #[arg(long, default_value_t = 20_000)]
    features: usize,
    /// Synthetic data: training rows per worker.
    #[arg(long, default_value_t = 10_000)]
    rows: usize,
    /// Synthetic data: mean non-zeros a row.
    #[arg(long, default_value_t = 75)]
    nonzeros: usize,
    /// Rows per SGD step.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// SGD learning rate (rows have unit L2 norm, so their values are small: ~0.1).
    #[arg(long, default_value_t = 128.0)]
    rate: f32,
    /// Evaluate the replica on the test set every this many rounds.
    #[arg(long, default_value_t = 1)]
    eval_every: u32,
}

impl TrainArgs {
    fn problem(&self, seed: u64) -> Result<Synthetic, String> {
        if self.features == 0 || self.features > sparse::MAX_FEATURES {
            return Err(format!(
                "--features {}: must be in 1..={}",
                self.features,
                sparse::MAX_FEATURES
            ));
        }
        if self.rows == 0 || self.nonzeros == 0 || self.batch == 0 {
            return Err("--rows, --nonzeros and --batch must be at least 1".into());
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err(format!("--rate {}: must be a positive number", self.rate));
        }
        Ok(Synthetic {
            features: self.features,
            rows_per_worker: self.rows,
            nonzeros: self.nonzeros,
            ..Synthetic::new(seed)
        })
    }

    /// The flags that reproduce these arguments (for the demo's workers).
    fn to_args(&self) -> Vec<String> {
        let mut a = vec![
            format!("--features={}", self.features),
            format!("--rows={}", self.rows),
            format!("--nonzeros={}", self.nonzeros),
            format!("--batch={}", self.batch),
            format!("--rate={}", self.rate),
            format!("--eval-every={}", self.eval_every),
        ];
        if let Some(d) = &self.data {
            a.push(format!("--data={}", d.display()));
        }
        a
    }
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Worker processes.
    #[arg(long, default_value_t = 8)]
    workers: u32,
    /// Rounds (one SGD step each).
    #[arg(long, default_value_t = 300)]
    rounds: u32,
    /// Instead of --rounds, the fair comparison: the workers of a run start together (1 s
    /// after their spawn) and train for this many seconds of wall-clock time, then leave
    /// (see `asap node --budget`), so workers that do not wait for a straggler keep
    /// working meanwhile. Times count from that start.
    #[arg(long, value_name = "SECS", value_parser = parse_budget, conflicts_with = "rounds")]
    budget: Option<f64>,
    /// A straggler sweep instead of one comparison: for each factor (e.g. 1,2,4,8) the
    /// last worker computes that many times slower, and ASAP waiting for all, for 1 and
    /// for no in-neighbour, and the ring all-reduce, each train for --budget (default 8
    /// s); writes sweep-time.png and sweep-bytes.png (time and bytes to the target loss
    /// against the factor) and sweep.json.
    #[arg(
        long,
        value_name = "FACTORS",
        value_delimiter = ',',
        value_parser = parse_factor,
        conflicts_with_all = ["rounds", "straggler", "wait", "compress"]
    )]
    sweep: Option<Vec<f64>>,
    /// ASAP's graph (see `asap topology`).
    #[arg(long, default_value = "one-peer-exp", value_parser = parse_graph)]
    topology: Graph,
    /// Degree, for families that take one.
    #[arg(long)]
    degree: Option<u32>,
    /// ASAP's wait policy: all, none (asynchronous), barrier, or a number k (at least k
    /// in-neighbours' updates).
    #[arg(long, default_value = "all", value_parser = parse_wait)]
    wait: Wait,
    /// Emulated compute a round, in milliseconds (a GPU step; the workers keep serving
    /// the network meanwhile).
    #[arg(long, default_value_t = 10.0)]
    compute_ms: f64,
    /// Slow one worker down: RANK:FACTOR multiplies its compute time.
    #[arg(long, value_parser = parse_straggler, value_name = "RANK:FACTOR")]
    straggler: Option<(u32, f64)>,
    /// Time both runs to this test loss (default: 1% above the worse final loss).
    #[arg(long)]
    target_loss: Option<f64>,
    /// Largest frame in bytes (default: 1,400 over UDP, what a 1,500-byte-MTU network
    /// carries whole; 65,000 over TCP, whose stream is not cut into datagrams).
    #[arg(long)]
    max_frame: Option<usize>,
    /// Hold each worker's sending to this many Mbit/s (see `asap node --pace`). With
    /// --netns the default is 95% of each worker's own link rate.
    #[arg(long, value_name = "MBIT", value_parser = parse_pace)]
    pace: Option<f64>,
    /// Network-bound runs: worker r runs in network namespace asap-n{r} and listens on
    /// 10.77.0.(r+1), so its frames cross that namespace's rate-limited link instead of
    /// loopback. Make the namespaces first (root): `scripts/netns up N --rate 100mbit
    /// [--slow RANK:RATE] [--loss RANK:PCT]`; the demo reads each link's rate from its
    /// qdisc to pace the worker (see --pace).
    #[arg(long)]
    netns: bool,
    /// How frames travel (both runs).
    #[arg(long, value_enum, default_value_t = Transport::Udp)]
    transport: Transport,
    /// Authenticate every frame with this cluster key (see `asap node --key-file`).
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// With a key: encrypt every payload too (see `asap node --encrypt`).
    #[arg(long)]
    encrypt: bool,
    /// With --encrypt: the cipher (see `asap node --cipher`).
    #[arg(long, value_enum, default_value_t = Cipher::Aes256Gcm)]
    cipher: Cipher,
    /// Also run ASAP with these compressions (comma-separated: f16,bf16,q8,topk:0.01;
    /// see `asap node --compress`) and compare bytes to the target. Compressed runs need
    /// doubly stochastic weights: a `random` --topology is replaced by `exp` for every
    /// ASAP run, so all compare on one graph.
    #[arg(long, value_delimiter = ',', value_parser = parse_compression)]
    compress: Vec<Compression>,
    /// Seed of the data, the SGD order and random graphs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Directory for loss.png (loss against time), loss-bytes.png (against bytes sent)
    /// and summary.json (--sweep: its plots and sweep.json).
    #[arg(long, default_value = "asap-demo")]
    out: PathBuf,
    /// Print the summary as JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
    /// Take flags from a TOML file (`workers = 4`, `straggler = "3:4"`); the command
    /// line wins.
    #[arg(long, value_name = "FILE.toml")]
    config: Option<PathBuf>,
    #[command(flatten)]
    train: TrainArgs,
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
    /// Every worker's address, one HOST:PORT a line in rank order (`#` comments).
    #[arg(long, value_name = "FILE", conflicts_with = "peers")]
    hosts: Option<PathBuf>,
    /// Take flags from a TOML file (`topology = "exp"`, `peers = [...]`); the command
    /// line wins.
    #[arg(long, value_name = "FILE.toml")]
    config: Option<PathBuf>,
    /// Without --peers or --hosts: worker r listens on HOST:(BASE_PORT + r). Default
    /// torchrun's MASTER_PORT + 1, else 47000.
    #[arg(long)]
    base_port: Option<u16>,
    /// Host for --base-port addressing (all workers on one machine). Default torchrun's
    /// MASTER_ADDR, else 127.0.0.1.
    #[arg(long)]
    host: Option<String>,
    /// Graph family (see `asap topology`).
    #[arg(long, default_value = "exp", value_parser = parse_graph)]
    topology: Graph,
    /// Degree, for families that take one.
    #[arg(long)]
    degree: Option<u32>,
    /// Rounds to run (federated workload: training rounds, before --consensus-rounds).
    #[arg(long, default_value_t = 50)]
    rounds: u32,
    /// Instead of --rounds: train for this many seconds of wall-clock time, then finish
    /// the running round and leave (ASAP neighbours stop waiting for a member that left;
    /// a ring all-reduce agrees on its last round in-band). The window opens at
    /// --budget-start.
    #[arg(long, value_name = "SECS", value_parser = parse_budget, conflicts_with = "rounds")]
    budget: Option<f64>,
    /// When the --budget window opens, in seconds since the Unix epoch (give every member
    /// the same: members on several machines need synchronised clocks). A node ready
    /// sooner waits for it, so all start their first round together. Default: when this
    /// node is ready.
    #[arg(long, value_name = "UNIX_SECS", requires = "budget")]
    budget_start: Option<f64>,
    /// Write the final replica to FILE as little-endian f32 values (what `asap demo`
    /// averages).
    #[arg(long, value_name = "FILE")]
    save_replica: Option<PathBuf>,
    /// ASAP, or the ring all-reduce baseline.
    #[arg(long, value_enum, default_value_t = Engine::Asap)]
    engine: Engine,
    /// How frames travel.
    #[arg(long, value_enum, default_value_t = Transport::Udp)]
    transport: Transport,
    /// ASAP's wait policy: all, none (asynchronous), barrier, or a number k (at least k
    /// in-neighbours' updates).
    #[arg(long, default_value = "all", value_parser = parse_wait)]
    wait: Wait,
    /// What to do between rounds.
    #[arg(long, value_enum, default_value_t = WorkloadKind::Average)]
    workload: WorkloadKind,
    /// Model values (average and federated workloads).
    #[arg(long, default_value_t = 1_000)]
    model: usize,
    /// Largest frame in bytes (default: 1,400 over UDP, what a 1,500-byte-MTU network
    /// carries whole; 65,000 over TCP, whose stream is not cut into datagrams). Every
    /// member must agree.
    #[arg(long)]
    max_frame: Option<usize>,
    /// Hold this node's sending to this many Mbit/s (a token bucket, bursts of one batch
    /// of datagrams) instead of bursting a whole update at once: for links slower than
    /// the host, or a receiver several in-neighbours send to. Default: as fast as the
    /// socket takes it.
    #[arg(long, value_name = "MBIT", value_parser = parse_pace)]
    pace: Option<f64>,
    /// Seed of the replicas and of random graphs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Cluster id (frames of other clusters are refused).
    #[arg(long, default_value_t = 0xa5a9)]
    cluster: u32,
    /// Give up on a round after this many seconds.
    #[arg(long, default_value_t = 30)]
    round_timeout: u64,
    /// Emulated compute a round in milliseconds (on top of the workload's own step; the
    /// worker keeps serving the network meanwhile).
    #[arg(long, default_value_t = 0.0)]
    compute_ms: f64,
    /// After the last round, keep answering peers until this node owes them nothing
    /// (its last update delivered), at most this many milliseconds.
    #[arg(long, default_value_t = 500)]
    linger_ms: u64,
    /// Print one JSON object (with the final replica, average workload) instead of a
    /// summary line.
    #[arg(long)]
    json: bool,
    /// Print one JSON line per evaluation (logistic workload) as it happens.
    #[arg(long)]
    progress: bool,
    /// The cluster key (64 hex digits, e.g. from `asap keygen`): frames are then
    /// authenticated and replays refused. Also ASAP_KEY_FILE, or ASAP_KEY holding the
    /// digits; never on the command line itself.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Per-node identities instead of a cluster key: the membership file, one member a
    /// line, `ID PUBLIC_KEY HOST:PORT` (public keys from `asap keygen --node`). Every
    /// pair of members then seals its frames with its own key, so no member can speak
    /// for another; the file also gives the addresses and the world size.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["peers", "hosts"])]
    members: Option<PathBuf>,
    /// With --members: this node's secret (from `asap keygen --node FILE`); also
    /// ASAP_NODE_KEY_FILE.
    #[arg(long, value_name = "FILE")]
    node_key: Option<PathBuf>,
    /// Elastic membership: members of the peer list (or membership file) absent at the
    /// start are not waited for, members may join later (--join) and leave, and the
    /// average of the members present is what converges (push-sum). Run every member
    /// of such a cluster with it. Not with --compress or the all-reduce.
    #[arg(long)]
    elastic: bool,
    /// Join a running elastic cluster (implies --elastic): the first rounds fetch the
    /// model from this node's neighbours; training starts from it.
    #[arg(long)]
    join: bool,
    /// With a key: encrypt every payload instead of only authenticating it (--cipher);
    /// update values are then hidden from the network (headers are not). Every member
    /// must agree. On servers also the fastest way to authenticate: AES-256-GCM seals a
    /// 1,400-byte frame several times faster than the keyed BLAKE3 tag alone.
    #[arg(long)]
    encrypt: bool,
    /// With --encrypt: the cipher this node seals with (it opens both).
    #[arg(long, value_enum, default_value_t = Cipher::Aes256Gcm)]
    cipher: Cipher,
    /// Compressed updates: none, f16, bf16, q8 (a byte a value) or topk:F (the largest
    /// fraction F of each chunk). Runs CHOCO-gossip (public copies, differences, error
    /// feedback); needs --wait all or barrier and a doubly stochastic graph (not
    /// random). Every member must agree.
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    compress: Compression,
    /// Compressed mode: the consensus step in (0, 1] (default: 1 for f16/bf16/q8;
    /// smaller for top-k, and on slowly mixing graphs).
    #[arg(long, value_name = "GAMMA")]
    consensus_step: Option<f32>,
    /// Poisoning guard: pull incoming update chunks to within RELATIVE × the local
    /// chunk's norm (or ABSOLUTE per value, if larger) before mixing.
    #[arg(long, value_name = "RELATIVE[:ABSOLUTE]", value_parser = parse_clip)]
    clip: Option<asap_core::Clip>,
    #[command(flatten)]
    train: TrainArgs,
    #[command(flatten)]
    fed: FedArgs,
}

#[derive(clap::Args)]
struct TopologyArgs {
    /// Graph family: ring, torus, hypercube, exp, one-peer-exp, expander, complete,
    /// halton, chord, all, random.
    #[arg(long, value_parser = parse_family, required_unless_present_any = ["rank", "best"])]
    kind: Option<Family>,
    /// Rank every family (and degree up to --max-degree) by predicted time to 1e-6
    /// consensus for this cluster, model and network, beside a ring all-reduce.
    #[arg(long, conflicts_with_all = ["kind", "dot"])]
    rank: bool,
    /// Print only the winner of --rank.
    #[arg(long, conflicts_with_all = ["kind", "dot"])]
    best: bool,
    /// --rank: each node's link, e.g. 1Gbit, 10Gbit, 100Mbit, 125MB (bytes a second).
    #[arg(long, default_value = "1Gbit", value_parser = parse_bandwidth)]
    bandwidth: f64,
    /// --rank: one-way latency, e.g. 50us, 1ms.
    #[arg(long, default_value = "50us", value_parser = parse_seconds)]
    latency: f64,
    /// --rank: local compute a round, e.g. 20ms.
    #[arg(long, default_value = "0ms", value_parser = parse_seconds)]
    compute: f64,
    /// --rank: largest degree tried for families that take one.
    #[arg(long, default_value_t = 4)]
    max_degree: u32,
    /// --rank: only graphs that are the same every round (no one-peer exponential).
    #[arg(long)]
    static_only: bool,
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

fn parse_pace(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(mbit) if mbit.is_finite() && mbit > 0.0 => Ok(mbit),
        _ => Err(format!("'{s}': a rate in Mbit/s above 0 (e.g. 940)")),
    }
}

fn parse_family(s: &str) -> Result<Family, String> {
    Family::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = Family::ALL.iter().map(|f| f.name()).collect();
        format!("unknown topology `{s}`; one of: {}", names.join(", "))
    })
}

/// A graph family, or `auto`: the winner of `asap topology --best` for this cluster.
#[derive(Clone, Copy, Debug)]
enum Graph {
    Auto,
    Fixed(Family),
}

fn parse_graph(s: &str) -> Result<Graph, String> {
    if s == "auto" {
        return Ok(Graph::Auto);
    }
    parse_family(s).map(Graph::Fixed).map_err(|e| format!("{e}, or auto"))
}

/// The family (and degree) to run: as given, or for `auto` the ASAP graph `--rank`
/// predicts fastest for `nodes` workers, a model of `model_bytes` and `compute` seconds
/// a round on an assumed 1 Gbit/s, 50 µs network. The choice is logged on stderr.
fn choose_graph(
    graph: Graph,
    degree: Option<u32>,
    nodes: u32,
    model_bytes: f64,
    compute: f64,
) -> (Family, Option<u32>) {
    if let Graph::Fixed(family) = graph {
        return (family, degree);
    }
    let job = asap_cli::cost::Job { model_bytes, compute };
    let net = asap_cli::cost::Network {
        bandwidth: 1.25e8,
        latency: 50e-6,
    };
    let rows = report::rank(nodes, 4, false, 0, &job, &net);
    let best = rows
        .iter()
        .find(|r| r.refused.is_none() && r.kind != "ring all-reduce")
        .and_then(|r| Family::from_name(&r.kind).map(|f| (f, r.degree, r)));
    match best {
        Some((family, degree, r)) => {
            eprintln!(
                "topology auto: {}{} for {nodes} nodes — predicted {} rounds, {:.3} s to 1e-6 consensus \
                 (1 Gbit/s, 50 µs, {:.0} ms compute assumed; see `asap topology --rank`)",
                family.name(),
                degree.map_or(String::new(), |d| format!(" degree {d}")),
                r.rounds,
                r.seconds,
                compute * 1e3
            );
            (family, degree)
        }
        // Every n ≥ 2 has a ring; this is unreachable in practice.
        None => (Family::Ring, None),
    }
}

fn parse_compression(s: &str) -> Result<Compression, String> {
    s.parse().map_err(|e| format!("`{s}`: {e}"))
}

fn parse_wait(s: &str) -> Result<Wait, String> {
    s.parse().map_err(|e| format!("`{s}`: {e}"))
}

fn parse_clip(s: &str) -> Result<asap_core::Clip, String> {
    let bad = || format!("clip `{s}`: expected RELATIVE[:ABSOLUTE], positive numbers, e.g. 0.5 or 0.5:0.01");
    let (relative, absolute) = s.split_once(':').unwrap_or((s, "0"));
    let relative: f32 = relative.parse().map_err(|_| bad())?;
    let absolute: f32 = absolute.parse().map_err(|_| bad())?;
    if !(relative.is_finite() && absolute.is_finite() && relative >= 0.0 && absolute >= 0.0) {
        return Err(bad());
    }
    Ok(asap_core::Clip { relative, absolute })
}

fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp",
    }
}

fn parse_budget(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs <= 1e6 => Ok(secs),
        _ => Err(format!("budget `{s}`: expected seconds, more than 0 (e.g. 8 or 2.5)")),
    }
}

fn parse_factor(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() && f >= 1.0 => Ok(f),
        _ => Err(format!("straggler factor `{s}`: must be a number of at least 1")),
    }
}

fn parse_straggler(s: &str) -> Result<(u32, f64), String> {
    let bad = || format!("straggler `{s}`: expected RANK:FACTOR, e.g. 0:4");
    let (rank, factor) = s.split_once(':').ok_or_else(bad)?;
    let rank = rank.parse().map_err(|_| bad())?;
    let factor: f64 = factor.parse().map_err(|_| bad())?;
    if !(factor.is_finite() && factor >= 1.0) {
        return Err(format!("straggler factor {factor}: must be at least 1"));
    }
    Ok((rank, factor))
}

fn main() -> ExitCode {
    let argv = match config_file::expand(std::env::args_os().collect(), &Cli::command()) {
        Ok(argv) => argv,
        Err(e) => {
            eprintln!("asap: {e}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(argv);
    // `asap node` names its rank in every line, once it knows it.
    if !matches!(cli.command, Command::Node(_)) {
        init_log(cli.log.as_deref(), "asap".into());
    }
    match cli.command {
        Command::Topology(args) => topology(args),
        Command::Demo(args) => match demo(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("asap demo: {e}");
                ExitCode::from(2)
            }
        },
        Command::Keygen(args) => match keygen(args.node.as_deref()) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("asap keygen: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Pubkey { file } => match launch::node_secret(Some(&file)) {
            Ok(Some(secret)) => {
                println!("{}", secret.public_key());
                ExitCode::SUCCESS
            }
            Ok(None) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("asap pubkey: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Node(args) => match node(args, cli.log.as_deref()) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("asap node: {e}");
                ExitCode::from(2)
            }
        },
    }
}

/// A new cluster key (printed), or with `node` a new node secret written to that file
/// (its public key printed): 32 bytes from the operating system's CSPRNG, as hex.
fn keygen(node: Option<&std::path::Path>) -> Result<String, String> {
    match node {
        None => Ok(launch::hex(&launch::random_secret()?)),
        Some(path) => launch::write_node_secret(path).map(|public| public.to_string()),
    }
}

/// The workload a `node` (or each of the demo's workers) runs.
fn workload(args: &NodeArgs, rank: u32, world: u32) -> Result<Workload, String> {
    let t = &args.train;
    let logistic = |(shard, test): (Dataset, Dataset)| Workload::Logistic {
        shard: Box::new(shard),
        test: Box::new(test),
        batch: t.batch,
        rate: t.rate,
        eval_every: t.eval_every.max(1),
    };
    if let Some(path) = &t.data {
        let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let split = sparse::read_libsvm(std::io::BufReader::new(file), rank, world)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok(logistic(split));
    }
    Ok(match args.workload {
        WorkloadKind::Average => Workload::Average { model: args.model },
        WorkloadKind::Logistic => {
            let problem = t.problem(args.seed)?;
            logistic((problem.shard(rank), problem.test_set()))
        }
        WorkloadKind::Federated => {
            let (problem, plan) = args.fed.build(args.seed, args.model, world, args.rounds)?;
            Workload::Federated { problem, plan }
        }
    })
}

fn node(args: NodeArgs, log: Option<&str>) -> Result<ExitCode, String> {
    let located = launch::locate(&launch::Placement {
        rank: args.rank,
        world: args.world,
        peers: &args.peers,
        hosts: args.hosts.as_deref(),
        members: args.members.as_deref(),
        node_key: args.node_key.as_deref(),
        key_file: args.key_file.as_deref(),
        host: args.host.as_deref(),
        base_port: args.base_port,
    })?;
    let (rank, world) = (located.rank, located.peers.len() as u32);
    init_log(log, format!("node {rank}"));
    let (family, degree) = choose_graph(
        args.topology,
        args.degree,
        world,
        4.0 * args.model as f64,
        args.compute_ms / 1e3,
    );
    let workload = workload(&args, rank, world)?;
    let launch::Located {
        peers, key, identity, ..
    } = located;
    if args.encrypt && key.is_none() && identity.is_none() {
        return Err("--encrypt needs a cluster key (--key-file, ASAP_KEY_FILE or ASAP_KEY) or --members".into());
    }
    let (start, stop) = match (&workload, args.budget) {
        (Workload::Federated { .. }, Some(_)) => {
            return Err("--budget: the federated workload runs a plan of rounds (--rounds, --consensus-rounds)".into())
        }
        (Workload::Federated { plan, .. }, None) => (None, Stop::Rounds(plan.rounds())),
        (_, Some(seconds)) => {
            let (opens, closes) = worker::window(seconds, args.budget_start);
            (Some(opens), Stop::Deadline(closes))
        }
        (_, None) => (None, Stop::Rounds(args.rounds)),
    };
    let member = MemberSpec {
        rank,
        peers,
        engine: args.engine.into(),
        transport: args.transport.into(),
        topology: TopologySpec {
            degree,
            seed: args.seed,
            ..TopologySpec::new(family, world)
        },
        wait: args.wait,
        cluster: args.cluster,
        max_frame: args.max_frame.unwrap_or(args.transport.default_max_frame()),
        pace: args.pace.map(|mbit| (mbit * 1e6 / 8.0) as u64),
        round_timeout: Duration::from_secs(args.round_timeout),
        linger: Duration::from_millis(args.linger_ms),
        key,
        encrypt: args.encrypt,
        cipher: args.cipher.suite(),
        compression: args.compress,
        consensus_step: args.consensus_step,
        incarnation: launch::fresh_incarnation(),
        clip: args.clip,
        identity,
        elastic: args.elastic,
        join: args.join,
    };
    let spec = WorkerSpec {
        member,
        stop,
        start,
        save_replica: args.save_replica.clone(),
        seed: args.seed,
        compute: Duration::from_micros((args.compute_ms * 1e3) as u64),
    };
    let progress = args.progress;
    let summary = worker::run(&spec, workload, |p| {
        if progress {
            println!(
                "{}",
                serde_json::to_string(&Line::Progress(p.clone())).expect("serialisable")
            );
        }
    });
    let summary = match summary {
        Ok(s) => s,
        Err(WorkerError::Setup(e)) => return Err(e),
        Err(WorkerError::Run(e)) => {
            eprintln!("asap node {rank}: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&Line::Done(Box::new(summary))).expect("serialisable")
        );
    } else {
        let mut loss = summary
            .last
            .as_ref()
            .and_then(|p| p.loss.zip(p.accuracy))
            .map_or(String::new(), |(l, a)| {
                format!(", test loss {l:.4}, accuracy {:.1}%", 100.0 * a)
            });
        if let Some(f) = &summary.federated {
            loss += &format!(
                " (reference on all shards: {:.1}%; own shard {:.1}%)",
                100.0 * f.reference_accuracy,
                100.0 * f.shard_accuracy
            );
        }
        println!(
            "rank {rank}/{world}: {} rounds of {} in {:.2} s, {} bytes sent, {} chunks resent, {} peers down{loss}",
            summary.rounds,
            summary.topology,
            summary.elapsed_s,
            summary.bytes_sent,
            summary.chunks_resent,
            summary.peers_down
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What every run of a demo shares: the program, ASAP's graph, the test set the final
/// replicas are scored on, where the workers leave them, and the progress bars.
struct Bench {
    exe: PathBuf,
    family: Family,
    degree: Option<u32>,
    test: Dataset,
    replicas: PathBuf,
    bars: MultiProgress,
    /// With --netns, each worker's link rate in bits a second (`None`: unshaped); empty
    /// on loopback.
    links: Vec<Option<f64>>,
}

/// One cluster run of a demo.
struct RunSpec {
    engine: Engine,
    compression: Compression,
    wait: Wait,
    straggler: Option<(u32, f64)>,
    /// The progress bar's name.
    name: String,
}

/// Seconds a budgeted run allows its workers to start (build their data, bind their
/// sockets) before its window opens: more than they take on a loaded 2-core machine. A
/// worker ready later starts late, and says so.
const START_UP_S: f64 = 1.0;

/// Runs of a sweep use this budget unless --budget says otherwise: 4 runs a factor, 4
/// factors, a couple of minutes on a 2-core machine.
const SWEEP_BUDGET_S: f64 = 8.0;

/// `asap demo`: the same training with ASAP and with the all-reduce baseline (or, with
/// --sweep, a straggler sweep).
fn demo(args: DemoArgs) -> Result<(), String> {
    if args.workers < 2 {
        return Err(format!("--workers {}: need at least 2", args.workers));
    }
    if let Some((rank, _)) = args.straggler.filter(|(rank, _)| *rank >= args.workers) {
        return Err(format!(
            "--straggler rank {rank} is not below --workers {}",
            args.workers
        ));
    }
    // Fail early on a bad key, a bad problem or a bad file rather than in every worker.
    if launch::cluster_key(args.key_file.as_deref())?.is_none() && args.encrypt {
        return Err("--encrypt needs a cluster key: --key-file, ASAP_KEY_FILE or ASAP_KEY".into());
    }
    let links = if args.netns {
        netns::links(args.workers)?
    } else {
        Vec::new()
    };
    let test = if let Some(path) = &args.train.data {
        let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (_, test) = sparse::read_libsvm(std::io::BufReader::new(file), 0, args.workers)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        test
    } else {
        args.train.problem(args.seed)?.test_set()
    };
    let replicas = args.out.join("replicas");
    std::fs::create_dir_all(&replicas).map_err(|e| format!("{}: {e}", replicas.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the asap executable: {e}"))?;
    let features = args.train.features as f64;
    let (family, degree) = choose_graph(
        args.topology,
        args.degree,
        args.workers,
        4.0 * features,
        args.compute_ms / 1e3,
    );
    let compressed: Vec<Compression> = args
        .compress
        .iter()
        .copied()
        .filter(|c| *c != Compression::None)
        .collect();
    // The compressed mode needs doubly stochastic weights (not push-sum): all ASAP runs
    // then share one graph, so their bytes compare.
    let (family, degree) = match family {
        Family::Random if !compressed.is_empty() => {
            if !args.quiet && !args.json {
                eprintln!(
                    "note: compressed runs need doubly stochastic weights; every ASAP run uses exp instead of random"
                );
            }
            (Family::Exponential, None)
        }
        other => (other, degree),
    };
    let bench = Bench {
        exe,
        family,
        degree,
        test,
        replicas,
        links,
        bars: MultiProgress::with_draw_target(if args.quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        }),
    };
    let result = match &args.sweep {
        Some(factors) => sweep(&args, &bench, factors),
        None => compare(&args, &bench, &compressed),
    };
    // The replicas were scored; the files are not the demo's output.
    let _ = std::fs::remove_dir_all(&bench.replicas);
    result
}

/// The demo proper: ASAP (and its compressed variants) against the ring all-reduce.
fn compare(args: &DemoArgs, bench: &Bench, compressed: &[Compression]) -> Result<(), String> {
    if args.budget.is_none() && args.straggler.is_some() && args.wait != Wait::All && !args.quiet && !args.json {
        eprintln!(
            "note: with --rounds, workers that do not wait for the straggler stop early; \
             --budget SECS compares both engines on the same wall-clock window"
        );
    }
    let specs: Vec<RunSpec> = std::iter::once(Compression::None)
        .chain(compressed.iter().copied())
        .map(|c| RunSpec {
            engine: Engine::Asap,
            compression: c,
            wait: args.wait,
            straggler: args.straggler,
            name: match c {
                Compression::None => format!("asap ({})", bench.family.name()),
                c => format!("asap ({}, {c})", bench.family.name()),
            },
        })
        .chain([RunSpec {
            engine: Engine::Allreduce,
            compression: Compression::None,
            wait: Wait::All,
            straggler: args.straggler,
            name: "allreduce (ring all-reduce)".into(),
        }])
        .collect();
    let runs = specs
        .iter()
        .map(|spec| run_one(args, bench, spec, args.budget))
        .collect::<Result<Vec<Run>, String>>()?;
    let target = args.target_loss.unwrap_or_else(|| demo::default_target(&runs, 0.01));
    let straggler = args.straggler;
    let title = format!(
        "{} workers, logistic regression ({} features){}{}",
        args.workers,
        args.train.features,
        straggler.map_or(String::new(), |(r, f)| format!(", worker {r} {f}x slower")),
        if args.netns {
            format!(", {}", netns::describe(&bench.links))
        } else {
            String::new()
        }
    );
    let png = args.out.join("loss.png");
    let bytes_png = args.out.join("loss-bytes.png");
    let plotted = [
        plot::loss_curves(&runs, target, &title, plot::Axis::Time, &png),
        plot::loss_curves(&runs, target, &title, plot::Axis::Bytes, &bytes_png),
    ];
    let summary = serde_json::json!({
        "workers": args.workers,
        "rounds": args.budget.is_none().then_some(args.rounds),
        "budget_s": args.budget,
        "compute_ms": args.compute_ms,
        "straggler": straggler.map(|(r, f)| serde_json::json!({"rank": r, "factor": f})),
        // --netns: each worker's link rate (bits a second, null: unshaped).
        "links": args.netns.then_some(&bench.links),
        "target_loss": target,
        "runs": runs.iter().map(|r| demo::run_json(r, target)).collect::<Vec<_>>(),
        // Each ASAP run's ratios to the ring (the last run), in the order of "runs".
        "against_ring": runs[..runs.len() - 1]
            .iter()
            .map(|a| demo::Ratios::of(a, &runs[runs.len() - 1], target))
            .collect::<Vec<_>>(),
    });
    let json_path = write_json(&args.out, "summary.json", &summary)?;
    if args.json {
        println!("{summary}");
        return Ok(());
    }
    let window = args
        .budget
        .map_or(String::new(), |b| format!("; each run trains for {b} s of wall time"));
    println!("{title}; {} ms of compute a round (emulated){window}", args.compute_ms);
    let origin = match args.budget {
        Some(_) => "the window's opening",
        None => "the workers' spawn",
    };
    println!("target loss {target:.4} (time from {origin})\n");
    print!("{}", demo::table(&runs, target));
    let (ring, asap_runs) = runs.split_last().expect("ASAP runs and the ring");
    println!();
    for line in asap_runs.iter().filter_map(|a| demo::against_ring(a, ring, target)) {
        println!("{line}");
    }
    if runs.iter().any(|r| r.final_loss >= std::f64::consts::LN_2) {
        println!("\nThe loss did not fall below its start (ln 2): the learning rate is too high for this data; lower --rate.");
    }
    for (png, plotted) in [&png, &bytes_png].into_iter().zip(&plotted) {
        match plotted {
            Ok(()) => println!("plot: {}", png.display()),
            Err(e) => println!("plot: not drawn: {e}"),
        }
    }
    println!("summary: {}", json_path.display());
    Ok(())
}

/// `--sweep`: for each straggler factor, ASAP waiting for all in-neighbours, for one,
/// for none, and the ring all-reduce, each for the same wall-clock budget; one target
/// for all; two plots against the factor.
fn sweep(args: &DemoArgs, bench: &Bench, factors: &[f64]) -> Result<(), String> {
    let budget = args.budget.unwrap_or(SWEEP_BUDGET_S);
    // The last rank is the straggler (every rank is alike on the graphs the demo uses).
    let slow = args.workers - 1;
    let mut points = Vec::new();
    for &factor in factors {
        let straggler = (factor > 1.0).then_some((slow, factor));
        let asap = |wait: Wait| RunSpec {
            engine: Engine::Asap,
            compression: Compression::None,
            wait,
            straggler,
            name: format!("{factor}x: asap wait {wait}"),
        };
        let specs = [
            asap(Wait::All),
            asap(Wait::AtLeast(1)),
            asap(Wait::None),
            RunSpec {
                engine: Engine::Allreduce,
                compression: Compression::None,
                wait: Wait::All,
                straggler,
                name: format!("{factor}x: allreduce"),
            },
        ];
        for spec in &specs {
            let run = run_one(args, bench, spec, Some(budget))?;
            points.push(demo::SweepPoint { factor, run });
        }
    }
    let target = args
        .target_loss
        .unwrap_or_else(|| demo::default_target(points.iter().map(|p| &p.run), 0.01));
    let title = format!("{} workers, worker {slow} slower, {budget} s a run", args.workers);
    let time_png = args.out.join("sweep-time.png");
    let bytes_png = args.out.join("sweep-bytes.png");
    let plotted = [
        plot::sweep(
            &points,
            |r| r.time_to(target),
            "seconds to the target loss",
            &title,
            &time_png,
        ),
        plot::sweep(
            &points,
            |r| r.bytes_to(target).map(|b| b / 1e6),
            "MB sent per worker to the target loss",
            &title,
            &bytes_png,
        ),
    ];
    let summary = serde_json::json!({
        "workers": args.workers,
        "budget_s": budget,
        "compute_ms": args.compute_ms,
        "straggler_rank": slow,
        "target_loss": target,
        "points": points.iter().map(|p| serde_json::json!({
            "factor": p.factor,
            "run": demo::run_json(&p.run, target),
        })).collect::<Vec<_>>(),
    });
    let json_path = write_json(&args.out, "sweep.json", &summary)?;
    if args.json {
        println!("{summary}");
        return Ok(());
    }
    println!(
        "{title}; {} ms of compute a round (emulated), target loss {target:.4}\n",
        args.compute_ms
    );
    print!("{}", demo::sweep_table(&points, target));
    for (png, plotted) in [&time_png, &bytes_png].into_iter().zip(&plotted) {
        match plotted {
            Ok(()) => println!("plot: {}", png.display()),
            Err(e) => println!("plot: not drawn: {e}"),
        }
    }
    println!("summary: {}", json_path.display());
    Ok(())
}

/// Writes `value` as `out/name`, pretty, and says where.
fn write_json(out: &std::path::Path, name: &str, value: &serde_json::Value) -> Result<PathBuf, String> {
    let path = out.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(value).expect("serialisable"))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// Runs one cluster (`args.workers` `asap node` processes) for `args.rounds` rounds, or
/// for `budget` seconds from a common start, and scores the workers' final replicas.
fn run_one(args: &DemoArgs, bench: &Bench, spec: &RunSpec, budget: Option<f64>) -> Result<Run, String> {
    let bar = bench.bars.add(ProgressBar::new(match budget {
        Some(b) => (b * 1e3) as u64,
        None => u64::from(args.rounds),
    }));
    let template = match budget {
        Some(_) => "{prefix:>28} [{bar:30}] {elapsed:>4} {msg}",
        None => "{prefix:>28} [{bar:30}] {pos:>4}/{len} rounds {elapsed:>4} {msg}",
    };
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("template")
            .progress_chars("=> "),
    );
    bar.set_prefix(spec.name.clone());
    let peers: Vec<String> = if args.netns {
        (0..args.workers).map(|r| netns::address(r).to_string()).collect()
    } else {
        let ports = free_ports(args.workers as usize).map_err(|e| format!("no free loopback ports: {e}"))?;
        ports.iter().map(|p| format!("127.0.0.1:{p}")).collect()
    };
    // The budget's window opens a start-up allowance after the spawn, the same instant
    // for every worker of the run: they start their first round together, and the time
    // to the target counts from there.
    let opens_after = budget.map_or(0.0, |_| START_UP_S);
    let opens = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs_f64()
        + opens_after;
    let replica = |rank: u32| bench.replicas.join(format!("rank-{rank}.f32"));
    let commands = (0..args.workers)
        .map(|rank| {
            let compute = match spec.straggler {
                Some((r, factor)) if r == rank => args.compute_ms * factor,
                _ => args.compute_ms,
            };
            let mut c = if args.netns {
                netns::command(rank, &bench.exe)
            } else {
                std::process::Command::new(&bench.exe)
            };
            // Paced at the link's rate unless the user said otherwise.
            let link_pace = bench.links.get(rank as usize).copied().flatten().map(netns::pace_for);
            c.args([
                "node",
                "--rank",
                &rank.to_string(),
                "--world",
                &args.workers.to_string(),
            ])
            .args(["--peers", &peers.join(","), "--engine", &spec.engine.to_string()])
            .args(["--topology", bench.family.name(), "--wait", &spec.wait.to_string()])
            .args(["--workload", "logistic"])
            .args(["--seed", &args.seed.to_string(), "--compute-ms", &compute.to_string()])
            .args(["--linger-ms", "300"])
            .arg("--save-replica")
            .arg(replica(rank))
            .args(args.max_frame.map(|f| format!("--max-frame={f}")))
            .args(["--transport", transport_name(args.transport)])
            .args(["--progress", "--json"])
            .args(args.pace.or(link_pace).map(|p| format!("--pace={p}")))
            .args(args.train.to_args());
            match budget {
                Some(b) => c.args([format!("--budget={b}"), format!("--budget-start={opens}")]),
                None => c.args(["--rounds", &args.rounds.to_string()]),
            };
            if let Some(d) = bench.degree {
                c.args(["--degree", &d.to_string()]);
            }
            if let Some(k) = &args.key_file {
                c.arg("--key-file").arg(k);
            }
            if args.encrypt {
                c.args(["--encrypt", "--cipher", args.cipher.name()]);
            }
            if spec.compression != Compression::None {
                c.args(["--compress", &spec.compression.to_string()]);
            }
            c
        })
        .collect();
    let engine = spec.engine;
    let spawned = std::time::Instant::now();
    let mut rounds_seen = vec![0u32; args.workers as usize];
    let mut run = demo::run_cluster(commands, std::f64::consts::LN_2, opens_after, |rank, p, loss| {
        rounds_seen[rank as usize] = p.round;
        let fewest = *rounds_seen.iter().min().unwrap_or(&0);
        match budget {
            Some(_) => {
                let trained = spawned.elapsed().as_secs_f64() - opens_after;
                bar.set_position((trained.max(0.0) * 1e3) as u64);
                bar.set_message(format!("round {fewest}, loss {loss:.4}"));
            }
            None => {
                bar.set_position(u64::from(fewest));
                bar.set_message(format!("loss {loss:.4}"));
            }
        }
    })
    .map_err(|e| format!("{engine}: {e}"))?;
    bar.finish();
    let replicas = (0..args.workers)
        .map(|rank| {
            let path = replica(rank);
            let values = worker::read_replica(&path).map_err(|e| format!("{engine}: worker {rank}'s replica: {e}"));
            let _ = std::fs::remove_file(&path);
            values
        })
        .collect::<Result<Vec<_>, _>>()?;
    run.models = Some(demo::FinalModels::score(&replicas, &bench.test).map_err(|e| format!("{engine}: {e}"))?);
    Ok(run)
}

/// Free loopback UDP ports (bound, noted, released: a race with other programs is
/// possible and reported by the worker as a port in use).
fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let sockets = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    sockets.iter().map(|s| s.local_addr().map(|a| a.port())).collect()
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    humantime::parse_duration(s)
        .map(|d| d.as_secs_f64())
        .map_err(|e| format!("`{s}`: {e} (e.g. 50us, 1ms, 0.5s)"))
}

fn parse_bandwidth(s: &str) -> Result<f64, String> {
    let bad = || format!("bandwidth `{s}`: e.g. 10Gbit, 100Mbit, 125MB");
    let digits = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let value: f64 = s[..digits].parse().map_err(|_| bad())?;
    let scale = match &s[digits..] {
        "Gbit" => 1e9 / 8.0,
        "Mbit" => 1e6 / 8.0,
        "Kbit" | "kbit" => 1e3 / 8.0,
        "GB" => 1e9,
        "MB" => 1e6,
        "KB" | "kB" => 1e3,
        "" | "B" => 1.0,
        _ => return Err(bad()),
    };
    let bytes = value * scale;
    if bytes.is_finite() && bytes > 0.0 {
        Ok(bytes)
    } else {
        Err(bad())
    }
}

fn rank(args: &TopologyArgs) -> ExitCode {
    let job = asap_cli::cost::Job {
        model_bytes: args.model_bytes as f64,
        compute: args.compute,
    };
    let net = asap_cli::cost::Network {
        bandwidth: args.bandwidth,
        latency: args.latency,
    };
    let rows = report::rank(args.nodes, args.max_degree, args.static_only, args.seed, &job, &net);
    let rows = if args.best { &rows[..1] } else { &rows[..] };
    if args.json {
        println!("{}", serde_json::to_string(rows).expect("serialisable"));
    } else {
        print!("{}", report::rank_table(rows));
    }
    ExitCode::SUCCESS
}

fn topology(args: TopologyArgs) -> ExitCode {
    let Some(kind) = args.kind.filter(|_| !(args.rank || args.best)) else {
        return rank(&args);
    };
    let spec = TopologySpec {
        degree: args.degree,
        max_send: args.max_send,
        seed: args.seed,
        min_gap: args.min_gap,
        ..TopologySpec::new(kind, args.nodes)
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
