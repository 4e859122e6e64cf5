//! `asap-sim`: one simulated run from the command line, for exploring and soaking.
//!
//! ```text
//! cargo run --release -p asap-tests --bin asap-sim -- --nodes 64 --topology one-peer-exp \
//!     --rounds 100 --loss 0.1 --straggler 3:4 --partition 100:2500:0,1,2 --seed 7 --json
//! ```

use std::process::ExitCode;
use std::time::Instant as WallClock;

use asap_core::topology::Family;
use asap_core::{Duration, Instant, Wait};
use asap_tests::sim::{self, Crash, Join, Leave, Network, Partition, Scenario, Workload};
use clap::Parser;
use serde_json::json;

#[derive(Parser)]
#[command(name = "asap-sim", about = "Deterministic simulation of an ASAP cluster")]
struct Args {
    /// Nodes.
    #[arg(long, default_value_t = 16)]
    nodes: u32,
    /// Graph family (see `asap topology`).
    #[arg(long, default_value = "one-peer-exp", value_parser = parse_family)]
    topology: Family,
    /// Degree, for families that take one.
    #[arg(long)]
    degree: Option<u32>,
    /// Rounds every node must finish.
    #[arg(long, default_value_t = 100)]
    rounds: u32,
    /// Model values per node.
    #[arg(long, default_value_t = 1_000)]
    model: usize,
    /// Largest frame in bytes.
    #[arg(long, default_value_t = 1_400)]
    max_frame: usize,
    /// Wait policy: all, none, barrier, or a number k (at least k in-neighbours).
    #[arg(long, default_value = "all", value_parser = parse_wait)]
    wait: Wait,
    /// Bounded staleness: no node starts a round more than this many rounds ahead of an
    /// in-neighbour.
    #[arg(long)]
    staleness: Option<u32>,
    /// One-way latency in microseconds.
    #[arg(long, default_value_t = 200)]
    latency_us: u64,
    /// Extra uniform delay up to this many microseconds (reorders frames).
    #[arg(long, default_value_t = 0)]
    reorder_us: u64,
    /// Frame loss probability.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Frame duplication probability.
    #[arg(long, default_value_t = 0.0)]
    dup: f64,
    /// Sender link rate in bytes per second.
    #[arg(long)]
    bandwidth: Option<u64>,
    /// Local compute per round, in microseconds.
    #[arg(long, default_value_t = 1_000)]
    compute_us: u64,
    /// RANK:FACTOR — that node computes FACTOR times slower (repeatable).
    #[arg(long, value_parser = parse_straggler)]
    straggler: Vec<(u32, f64)>,
    /// START_MS:END_MS:N,N,... — those nodes are cut off from the others (repeatable).
    #[arg(long, value_parser = parse_partition)]
    partition: Vec<Partition>,
    /// NODE:AT_MS:DOWN_MS — that node crashes and restarts (repeatable).
    #[arg(long, value_parser = parse_crash)]
    crash: Vec<Crash>,
    /// Elastic membership on every node (on with any --join or --leave).
    #[arg(long)]
    elastic: bool,
    /// NODE:AT_MS — that node is absent until then, and joins the running cluster
    /// (repeatable).
    #[arg(long, value_parser = parse_join)]
    join: Vec<Join>,
    /// NODE:AT_MS — that node leaves the cluster for good then (repeatable).
    #[arg(long, value_parser = parse_leave)]
    leave: Vec<Leave>,
    /// Seed of every random choice (ASAP_SIM_SEED overrides it).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Consensus target for `time_to_target`.
    #[arg(long, default_value_t = 1e-5)]
    target: f64,
    /// Workload between rounds: `average`, or `logistic` (SGD on per-node shards).
    #[arg(long, default_value = "average")]
    workload: String,
    /// Logistic workload: samples per node.
    #[arg(long, default_value_t = 200)]
    samples: u32,
    /// Logistic workload: samples a step (at most 64).
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Logistic workload: learning rate.
    #[arg(long, default_value_t = 0.5)]
    learning_rate: f32,
    /// Also run this baseline on the same links, faults and workload: `allreduce`.
    #[arg(long)]
    baseline: Option<String>,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    json: bool,
}

fn parse_family(s: &str) -> Result<Family, String> {
    Family::from_name(s).ok_or_else(|| format!("unknown topology `{s}`"))
}

fn parse_wait(s: &str) -> Result<Wait, String> {
    match s {
        "all" => Ok(Wait::All),
        "none" => Ok(Wait::None),
        "barrier" => Ok(Wait::Barrier),
        k => k
            .parse()
            .map(Wait::AtLeast)
            .map_err(|_| format!("wait: all, none, barrier or a number, not `{k}`")),
    }
}

fn parse_straggler(s: &str) -> Result<(u32, f64), String> {
    let (rank, factor) = s.split_once(':').ok_or("RANK:FACTOR")?;
    Ok((rank.parse().map_err(|_| "RANK")?, factor.parse().map_err(|_| "FACTOR")?))
}

fn parse_partition(s: &str) -> Result<Partition, String> {
    let mut parts = s.splitn(3, ':');
    let mut ms = |what| {
        parts
            .next()
            .ok_or(what)
            .and_then(|v| v.parse::<u64>().map_err(|_| what))
    };
    let (start, end) = (ms("START_MS")?, ms("END_MS")?);
    let side = parts
        .next()
        .ok_or("NODES")?
        .split(',')
        .map(|n| n.parse().map_err(|_| "NODES"))
        .collect::<Result<_, _>>()?;
    Ok(Partition {
        start: Instant::from_millis(start),
        end: Instant::from_millis(end),
        side,
    })
}

fn parse_crash(s: &str) -> Result<Crash, String> {
    let v: Vec<u64> = s
        .split(':')
        .map(|x| x.parse().map_err(|_| "NODE:AT_MS:DOWN_MS"))
        .collect::<Result<_, _>>()?;
    let [node, at, down] = v[..] else {
        return Err("NODE:AT_MS:DOWN_MS".into());
    };
    let node = u32::try_from(node).map_err(|_| "NODE")?;
    Ok(Crash {
        node,
        at: Instant::from_millis(at),
        down_for: Duration::from_millis(down),
    })
}

/// NODE:AT_MS, of a join or a leave.
fn parse_node_at(s: &str) -> Result<(u32, Instant), String> {
    let (node, at) = s.split_once(':').ok_or("NODE:AT_MS")?;
    Ok((
        node.parse().map_err(|_| "NODE")?,
        Instant::from_millis(at.parse().map_err(|_| "AT_MS")?),
    ))
}

fn parse_join(s: &str) -> Result<Join, String> {
    parse_node_at(s).map(|(node, at)| Join { node, at })
}

fn parse_leave(s: &str) -> Result<Leave, String> {
    parse_node_at(s).map(|(node, at)| Leave { node, at })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let seed = std::env::var("ASAP_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(args.seed);
    let mut scenario = Scenario::new(seed, args.nodes, args.topology);
    scenario.degree = args.degree;
    scenario.rounds = args.rounds;
    scenario.model_len = args.model;
    scenario.max_frame = args.max_frame;
    scenario.wait = args.wait;
    scenario.staleness = args.staleness;
    scenario.network = Network {
        latency: Duration::from_micros(args.latency_us),
        jitter: Duration::from_micros(args.reorder_us),
        loss: args.loss,
        duplicate: args.dup,
        bandwidth: args.bandwidth,
    };
    scenario.compute = Duration::from_micros(args.compute_us);
    scenario.stragglers = args.straggler;
    scenario.partitions = args.partition;
    scenario.crashes = args.crash;
    scenario.elastic = args.elastic || !args.join.is_empty() || !args.leave.is_empty();
    scenario.joins = args.join;
    scenario.leaves = args.leave;
    scenario.workload = match args.workload.as_str() {
        "average" => Workload::Average,
        "logistic" => Workload::Logistic {
            samples: args.samples,
            batch: args.batch,
            rate: args.learning_rate,
        },
        other => {
            eprintln!("asap-sim: workload `{other}`: average or logistic");
            return ExitCode::from(2);
        }
    };
    let description = scenario.to_string();
    let mut runs = vec![("asap", scenario.clone())];
    if args.baseline.as_deref() == Some("allreduce") {
        runs.push((
            "allreduce",
            Scenario {
                allreduce: true,
                ..scenario
            },
        ));
    } else if let Some(other) = &args.baseline {
        eprintln!("asap-sim: baseline `{other}`: only `allreduce`");
        return ExitCode::from(2);
    }
    let mut json = serde_json::Map::new();
    json.insert("seed".into(), seed.into());
    json.insert("scenario".into(), description.clone().into());
    for (name, scenario) in runs {
        let wall = WallClock::now();
        let result = sim::run(scenario);
        let seconds = wall.elapsed().as_secs_f64();
        let report = match result {
            Ok(report) => report,
            Err(violation) => {
                eprintln!("asap-sim ({name}): {violation}\n  scenario: {description}");
                return ExitCode::FAILURE;
            }
        };
        let to_target = report.error_per_round.iter().position(|&e| e <= args.target);
        let time_to_target = to_target
            .and_then(|r| r.checked_sub(1))
            .and_then(|r| report.time_per_round.get(r));
        let seconds_of = |t: &Duration| t.total_micros() as f64 / 1e6;
        let out = json!({
            "rounds": report.rounds,
            "consensus_error_per_round": report.error_per_round,
            "loss_per_round": report.loss_per_round,
            "time_per_round_s": report.time_per_round.iter().map(seconds_of).collect::<Vec<_>>(),
            "rounds_to_target": to_target,
            "time_to_target_s": time_to_target.map(seconds_of),
            "bytes_per_node": report.bytes_per_node,
            "bytes_per_node_per_round": report.bytes_per_node / f64::from(report.rounds.max(1)),
            "simulated_s": seconds_of(&report.time),
            "events": report.events,
            "events_per_wall_s": report.events as f64 / seconds,
            "wall_s": seconds,
            "dropped": report.dropped,
            "peers_down": report.peers_down,
            "departures": report.departures,
            "longest_round_s": seconds_of(&report.longest_round),
            "final_spread": report.spread,
        });
        if !args.json && !report.loss_per_round.is_empty() {
            let (first, last) = (
                report.loss_per_round[0],
                report.loss_per_round[report.loss_per_round.len() - 1],
            );
            println!(
                "{name:>9}: rounds {}  loss {first:.4} -> {last:.4}  simulated {:.3}s  bytes/node/round {:.0}",
                report.rounds,
                seconds_of(&report.time),
                report.bytes_per_node / f64::from(report.rounds.max(1)),
            );
        } else if !args.json {
            println!(
                "{name:>9}: rounds {}  final error {:.3e}  rounds to {:e}: {}  time to it {}  simulated {:.3}s  bytes/node/round {:.0}  events {} ({:.0}/s wall)",
                report.rounds,
                report.error_per_round.last().copied().unwrap_or(f64::NAN),
                args.target,
                to_target.map_or("not reached".to_string(), |r| r.to_string()),
                time_to_target.map_or("-".to_string(), |t| format!("{:.4}s", seconds_of(t))),
                seconds_of(&report.time),
                report.bytes_per_node / f64::from(report.rounds.max(1)),
                report.events,
                report.events as f64 / seconds
            );
        }
        json.insert(name.into(), out);
    }
    if args.json {
        println!("{}", serde_json::Value::Object(json));
    } else {
        println!("{description}");
    }
    ExitCode::SUCCESS
}
