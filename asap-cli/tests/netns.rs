//! Network-bound runs (`asap demo --netns`, #20), small: 4 workers in network namespaces
//! whose links a token bucket holds to 100 Mbit/s, a 400 KB model, a 4 s budget a run.
//! Every run learns and reaches the target, and ASAP's advantage over the ring
//! all-reduce has the right sign: both ASAP runs (f32 and q8) get there sooner and send
//! fewer bytes to get there. No margin but the sign is asserted (CI is a noisy 2-core machine).
//!
//! Needs root (`scripts/netns check`); elsewhere the test says why and passes without
//! running. The namespaces are removed when it ends, whether it passed or not.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn asap(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_asap"))
        .args(args)
        .output()
        .expect("asap runs")
}

fn netns_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/netns")
}

/// The namespaces of one test: made by `up`, removed on drop (also when an assertion
/// fails, as the panic unwinds).
struct Network;

impl Network {
    /// `scripts/netns up ARGS`, or why namespaces cannot be made here.
    fn up(args: &[&str]) -> Result<Network, String> {
        let check = Command::new(netns_script())
            .arg("check")
            .output()
            .expect("scripts/netns runs");
        if !check.status.success() {
            return Err(String::from_utf8_lossy(&check.stdout).trim().to_string());
        }
        let up = Command::new(netns_script())
            .arg("up")
            .args(args)
            .output()
            .expect("scripts/netns runs");
        // Dropped at once if `up` failed half-way: nothing is left behind either way.
        let network = Network;
        assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
        Ok(network)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let down = Command::new(netns_script()).arg("down").status();
        if !matches!(down, Ok(s) if s.success()) {
            eprintln!("scripts/netns down failed ({down:?}): remove the asap-n* namespaces by hand");
        }
    }
}

fn number(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("{key} missing: {v}"))
}

#[test]
fn over_100_mbit_links_asap_reaches_the_target_sooner_than_the_ring_with_fewer_bytes() {
    let network = match Network::up(&["4", "--rate", "100mbit"]) {
        Ok(n) => n,
        Err(why) => {
            println!("skipped: network namespaces: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let out = asap(&[
        "demo",
        "--netns",
        "--workers",
        "4",
        "--budget",
        "4",
        "--features",
        "100000",
        "--batch",
        "256",
        "--compress",
        "q8",
        "--quiet",
        "--json",
        "--out",
        dir.path().to_str().expect("utf-8"),
    ]);
    drop(network);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    // The demo read every worker's link from its namespace (and paced it at 95 Mbit/s).
    assert_eq!(summary["links"], serde_json::json!([1e8, 1e8, 1e8, 1e8]), "{summary}");
    let runs = summary["runs"].as_array().expect("runs");
    let labels: Vec<(&str, &str)> = runs
        .iter()
        .map(|r| (r["engine"].as_str().unwrap(), r["compression"].as_str().unwrap()))
        .collect();
    assert_eq!(labels, [("asap", "none"), ("asap", "q8"), ("allreduce", "none")]);
    for r in runs {
        assert!(r["time_to_target_s"].as_f64().is_some(), "target not reached: {r}");
        assert!(
            number(&r["averaged_model"], "loss") < std::f64::consts::LN_2 - 0.02,
            "no learning: {r}"
        );
    }
    let (f32_run, q8, ring) = (&runs[0], &runs[1], &runs[2]);
    let time = |r: &Value| number(r, "time_to_target_s");
    let bytes = |r: &Value| number(r, "bytes_to_target");
    // Measured on 2 cores: q8 about 3.2x sooner with 0.18x the bytes, f32 about 1.5x
    // sooner with two thirds of them.
    assert!(time(q8) < time(ring) && time(f32_run) < time(ring), "{summary}");
    assert!(bytes(q8) < bytes(ring) && bytes(f32_run) < bytes(ring), "{summary}");
    // The ratios the table prints are in the summary too, and agree with the runs.
    let ratios = summary["against_ring"].as_array().expect("ratios");
    assert_eq!(ratios.len(), 2);
    assert!((number(&ratios[1], "speedup") - time(ring) / time(q8)).abs() < 1e-9);
    for png in ["loss.png", "loss-bytes.png"] {
        let bytes = std::fs::read(dir.path().join(png)).expect("plot written");
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{png}");
    }
}

#[test]
fn without_the_namespaces_the_demo_says_how_to_make_them() {
    // No run has 200 namespaces up: the demo stops before it starts a worker.
    let out = asap(&["demo", "--netns", "--workers", "200", "--budget", "1", "--quiet"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("asap-n199") && err.contains("not up"), "{err}");
    assert!(err.contains("scripts/netns up 200 --rate 100mbit"), "{err}");
    assert!(out.stdout.is_empty());
}
