//! The `asap` command.

use std::process::ExitCode;

use asap_core::topology::{Family, TopologySpec, DEFAULT_MIN_GAP};
use clap::{Parser, Subcommand};
use transport_mio::report;

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
    }
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
