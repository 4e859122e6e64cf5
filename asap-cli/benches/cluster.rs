//! Real clusters on loopback, ASAP against the ring all-reduce baseline, each pair
//! measured in one run so machine noise hits both (run with
//! `cargo bench -p asap-cli --bench cluster`; prints one JSON object per case).
//!
//! * `round-time`: 8 processes, a 1M-float model (4 MB), no compute: wall time per round
//!   of ASAP on the one-peer exponential graph and on a degree-2 expander, against the
//!   ring all-reduce; bytes per node per round.
//! * `straggler`: 8 processes train the demo's logistic regression with 10 ms of compute
//!   a round and one worker 4x slower: time to the target loss (1% above the worse final
//!   loss of the pair) and the final losses, ASAP waiting for all in-neighbours and
//!   ASAP asynchronous (`--wait none`).

use std::process::Command;

use serde_json::{json, Value};

fn demo(args: &[&str]) -> Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_asap"))
        .args([
            "demo",
            "--quiet",
            "--json",
            "--out",
            dir.path().to_str().expect("utf-8"),
        ])
        .args(args)
        .output()
        .expect("asap demo runs");
    assert!(
        out.status.success(),
        "asap demo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON summary")
}

fn compare(case: &str, args: &[&str]) {
    let s = demo(args);
    let (asap, ring) = (&s["runs"][0], &s["runs"][1]);
    let f = |r: &Value, k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    let rounds = f(asap, "rounds").max(1.0);
    let report = json!({
        "case": case,
        "args": args.join(" "),
        "graph": asap["topology"],
        "asap_ms_per_round": f(asap, "ms_per_round"),
        "allreduce_ms_per_round": f(ring, "ms_per_round"),
        "round_time_speedup": f(ring, "ms_per_round") / f(asap, "ms_per_round"),
        "target_loss": s["target_loss"],
        "asap_s_to_target": asap["time_to_target_s"],
        "allreduce_s_to_target": ring["time_to_target_s"],
        "time_to_target_speedup": f(ring, "time_to_target_s") / f(asap, "time_to_target_s"),
        "asap_final_loss": f(asap, "final_loss"),
        "allreduce_final_loss": f(ring, "final_loss"),
        "asap_mb_per_node_round": f(asap, "bytes_per_worker") / rounds / 1e6,
        "allreduce_mb_per_node_round": f(ring, "bytes_per_worker") / f(ring, "rounds").max(1.0) / 1e6,
        "bytes_ratio": f(asap, "bytes_per_worker") / f(ring, "bytes_per_worker"),
    });
    println!("{report}");
}

fn main() {
    // `cargo bench` passes --bench; a filter argument picks cases by name.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let wanted = |case: &str| filter.as_deref().is_none_or(|f| case.contains(f));
    let big = [
        "--features",
        "1000000",
        "--rows",
        "2000",
        "--compute-ms",
        "0",
        "--rounds",
        "40",
        "--max-frame",
        "65000",
    ];
    if wanted("round-time") {
        compare("round-time", &[&big[..], &["--topology", "one-peer-exp"]].concat());
        compare(
            "round-time",
            &[&big[..], &["--topology", "expander", "--degree", "2"]].concat(),
        );
        compare(
            "round-time-1400B-frames",
            &[&big[..8], &["--max-frame", "1400"]].concat(),
        );
    }
    if wanted("straggler") {
        compare("straggler", &["--straggler", "3:4"]);
        compare("straggler", &["--straggler", "3:4", "--wait", "none"]);
    }
}
