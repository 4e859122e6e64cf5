//! ASAP against what users already run, in one run: Open MPI's `MPI_Allreduce` of the
//! same model on the same processes (`benches/mpi_allreduce.c`, built with `mpicc`;
//! `scripts/setup` installs it), timed before and after ours so machine noise hits all.
//!
//! `cargo bench -p asap-cli --bench vs-mpi` prints one JSON line a case and a table: 8
//! processes on loopback, a 1M-float model, 1,400-byte datagrams (what a network with a
//! 1,500-byte MTU carries unfragmented), no compute. Ratios are to MPI over its TCP
//! transport (`--mca btl self,tcp`: what processes on different hosts use); MPI over
//! shared memory, which only processes of one host can use, is printed beside it.
//! Cases: ms a round of ASAP one-peer-exp
//! (plain; keyed with a BLAKE3 tag, and encrypted with AES-256-GCM, the fast way to
//! authenticate on servers; q8) and of our ring all-reduce, each as a ratio to MPI's.
//! Then the stream case: two `asap node` processes averaging the model (no training),
//! each one's goodput (GB/s of model sent) against a 4 MB memcpy.
//! `ASAP_BENCH_ROUNDS` (default 40) and `ASAP_BENCH_WORKERS` (default 8) change the run.
//!
//! ASAP's round includes one SGD step on 64 sparse rows (the demo's), which MPI's does
//! not: the comparison slightly favours MPI. Both average the model in place each round.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

const MODEL: &str = "1000000";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// Builds the MPI program into `dir`; `None` (and why) when it cannot be.
fn build_mpi(dir: &Path) -> Result<std::path::PathBuf, String> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/mpi_allreduce.c");
    let exe = dir.join("mpi_allreduce");
    let out = Command::new("mpicc")
        .args(["-O2", "-o"])
        .arg(&exe)
        .arg(&source)
        .output()
        .map_err(|e| format!("mpicc: {e} (scripts/setup installs libopenmpi-dev)"))?;
    if !out.status.success() {
        return Err(format!("mpicc failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(exe)
}

/// MPI's ms a round; `tcp`: over its TCP transport (what processes on different hosts
/// use), else over whatever it picks (shared memory between processes of one host).
fn mpi(exe: &Path, workers: &str, rounds: &str, tcp: bool) -> f64 {
    let mut cmd = Command::new("mpirun");
    // Root in containers and fewer cores than processes are this bench's normal case.
    cmd.args(["--allow-run-as-root", "--oversubscribe", "-np", workers]);
    if tcp {
        cmd.args(["--mca", "btl", "self,tcp"]);
    }
    let out = cmd.arg(exe).args([MODEL, rounds]).output().expect("mpirun runs");
    assert!(out.status.success(), "mpirun: {}", String::from_utf8_lossy(&out.stderr));
    let line: Value = serde_json::from_slice(&out.stdout).expect("MPI program's JSON");
    line["ms_per_round"].as_f64().expect("ms_per_round")
}

/// `asap demo` on the big model with `extra` flags; its summary.
fn demo(workers: &str, rounds: &str, extra: &[&str]) -> Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_asap"))
        .args(["demo", "--quiet", "--json", "--out"])
        .arg(dir.path())
        .args(["--workers", workers, "--rounds", rounds, "--features", MODEL])
        .args(["--rows", "2000", "--compute-ms", "0", "--max-frame", "1400"])
        .args(["--topology", "one-peer-exp"])
        // Evaluate the model once, at the end: MPI's loop does no evaluation either.
        .args(["--eval-every", rounds])
        .args(extra)
        .output()
        .expect("asap demo runs");
    assert!(
        out.status.success(),
        "asap demo {extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON summary")
}

/// The run of `engine` with `compression` in a demo summary: (ms a round, MB a node a round).
fn pick(summary: &Value, engine: &str, compression: &str) -> (f64, f64) {
    let run = summary["runs"]
        .as_array()
        .and_then(|runs| {
            runs.iter()
                .find(|r| r["engine"] == engine && r["compression"] == compression)
        })
        .unwrap_or_else(|| panic!("no {engine}/{compression} run in {summary}"));
    let f = |k: &str| run[k].as_f64().unwrap_or(f64::NAN);
    (f("ms_per_round"), f("bytes_per_worker") / f("rounds").max(1.0) / 1e6)
}

/// Two `asap node` processes averaging a 1M-float model (no training) at 1,400-byte
/// datagrams: GB/s of model each sends a second (its goodput), and that of a 4 MB memcpy
/// on this machine, in one run.
fn stream(rounds: &str) -> Value {
    let base_port = "47600";
    let node = |rank: &str| {
        Command::new(env!("CARGO_BIN_EXE_asap"))
            .args(["node", "--rank", rank, "--world", "2", "--base-port", base_port])
            .args(["--workload", "average", "--model", MODEL, "--rounds", rounds])
            .args(["--max-frame", "1400", "--json"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("asap node starts")
    };
    let (a, b) = (node("0"), node("1"));
    let elapsed = |child: std::process::Child| {
        let out = child.wait_with_output().expect("asap node runs");
        assert!(out.status.success(), "asap node failed");
        let line: Value = serde_json::from_slice(&out.stdout).expect("node's JSON");
        line["elapsed_s"].as_f64().expect("elapsed_s")
    };
    let seconds = elapsed(a).max(elapsed(b));
    let model_bytes = 4.0 * MODEL.parse::<f64>().expect("model");
    let rounds: f64 = rounds.parse().expect("rounds");
    let goodput = model_bytes * rounds / seconds / 1e9;
    let src = vec![1.0f32; 1_000_000];
    let mut dst = vec![0.0f32; 1_000_000];
    let start = std::time::Instant::now();
    for _ in 0..200 {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
    }
    let memcpy = model_bytes * 200.0 / start.elapsed().as_secs_f64() / 1e9;
    json!({
        "case": "stream: 2 processes averaging a 4 MB model, 1,400-byte datagrams",
        "goodput_gb_s_per_node": goodput,
        "memcpy_gb_s": memcpy,
        "x_memcpy": goodput / memcpy,
        "ms_per_round": 1e3 * seconds / rounds,
    })
}

fn main() {
    let workers = env_or("ASAP_BENCH_WORKERS", "8");
    let rounds = env_or("ASAP_BENCH_ROUNDS", "40");
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = match build_mpi(dir.path()) {
        Ok(exe) => exe,
        Err(why) => {
            println!("{}", json!({ "skipped": why }));
            return;
        }
    };
    let before = mpi(&exe, &workers, &rounds, true);
    let shared_memory = mpi(&exe, &workers, &rounds, false);
    let key_file = dir.path().join("cluster.key");
    let key = Command::new(env!("CARGO_BIN_EXE_asap"))
        .arg("keygen")
        .output()
        .expect("asap keygen");
    std::fs::write(&key_file, &key.stdout).expect("key file");
    let key_path = key_file.to_str().expect("utf-8 path");
    let plain = demo(&workers, &rounds, &["--compress", "q8"]);
    let keyed = demo(&workers, &rounds, &["--key-file", key_path]);
    let aes = demo(
        &workers,
        &rounds,
        &["--key-file", key_path, "--encrypt", "--cipher", "aes-256-gcm"],
    );
    let after = mpi(&exe, &workers, &rounds, true);
    let stream = stream("200");
    let mpi_ms = (before + after) / 2.0;
    // MPI's ring all-reduce moves 2(n-1)/n models a node a round.
    let n: f64 = workers.parse().expect("workers");
    let mpi_mb = 2.0 * (n - 1.0) / n * 4.0;
    let cases = [
        ("Open MPI MPI_Allreduce (TCP)", (mpi_ms, mpi_mb)),
        (
            "Open MPI MPI_Allreduce (shared memory, one host only)",
            (shared_memory, mpi_mb),
        ),
        ("ASAP one-peer-exp", pick(&plain, "asap", "none")),
        ("ASAP one-peer-exp, keyed (BLAKE3 tag)", pick(&keyed, "asap", "none")),
        ("ASAP one-peer-exp, keyed (AES-256-GCM)", pick(&aes, "asap", "none")),
        ("ASAP one-peer-exp, q8", pick(&plain, "asap", "q8")),
        ("our ring all-reduce", pick(&plain, "allreduce", "none")),
    ];
    for (case, (ms, mb)) in cases {
        let line = json!({
            "case": case,
            "workers": n,
            "model_floats": 1_000_000,
            "max_frame": 1400,
            "ms_per_round": ms,
            "x_mpi": ms / mpi_ms,
            "mb_per_node_round": mb,
            "mpi_ms_before_after": [before, after],
        });
        println!("{line}");
    }
    println!("{stream}");
    eprintln!("\n| case | ms a round | × MPI | MB a node a round |\n|---|---:|---:|---:|");
    for (case, (ms, mb)) in cases {
        eprintln!("| {case} | {ms:.1} | {:.2} | {mb:.2} |", ms / mpi_ms);
    }
    let f = |k: &str| stream[k].as_f64().unwrap_or(f64::NAN);
    eprintln!(
        "\nstream, 2 processes: {:.2} GB/s of model a node ({:.1} ms a round); memcpy {:.1} GB/s",
        f("goodput_gb_s_per_node"),
        f("ms_per_round"),
        f("memcpy_gb_s")
    );
}
