//! `asap topology` as a user runs it.

use std::process::Command;

fn asap(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_asap"))
        .args(args)
        .output()
        .expect("asap runs")
}

#[test]
fn json_has_the_documented_keys_and_true_figures() {
    let out = asap(&["topology", "--kind", "one-peer-exp", "--nodes", "1024", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    for key in [
        "kind",
        "nodes",
        "degree",
        "spectral_gap",
        "rounds_to_1e-6_predicted",
        "rounds_to_1e-6_measured",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    assert_eq!(v["kind"], "one-peer-exp");
    assert_eq!(v["nodes"], 1024);
    assert_eq!(
        v["rounds_to_1e-6_predicted"], 10,
        "log2 1024 rounds to the exact average"
    );
    assert_eq!(v["rounds_to_1e-6_measured"], 10);
    // One peer per round: exactly one model per round, against 2(n-1)/n of it.
    assert_eq!(v["bytes_per_node_per_round"], 4 << 20);
    assert_eq!(v["allreduce_bytes_per_node_per_round"], 2 * 1023 * (4u64 << 20) / 1024);
}

#[test]
fn ring_gap_matches_its_closed_form() {
    let out = asap(&["topology", "--kind", "ring", "--nodes", "16", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected = 1.0 - (1.0 + 2.0 * (2.0 * std::f64::consts::PI / 16.0).cos()) / 3.0;
    assert!((v["spectral_gap"].as_f64().unwrap() - expected).abs() < 1e-12);
}

#[test]
fn dot_lists_every_edge() {
    let out = asap(&["topology", "--kind", "ring", "--nodes", "5", "--dot"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("digraph"));
    assert_eq!(text.matches("->").count(), 10);
    assert!(text.contains("0 -> 1") && text.contains("0 -> 4"));
}

#[test]
fn user_errors_are_one_line_and_exit_2() {
    for args in [
        &["topology", "--kind", "hypercube", "--nodes", "12"][..],
        &["topology", "--kind", "chord", "--nodes", "16", "--max-send", "2"],
        &["topology", "--kind", "nope", "--nodes", "4"],
        &["topology", "--kind", "ring", "--nodes", "1"],
    ] {
        let out = asap(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn rank_lists_every_candidate_by_predicted_time_and_best_prints_the_winner() {
    let args = [
        "topology",
        "--rank",
        "--nodes",
        "32",
        "--model-bytes",
        "100000000",
        "--bandwidth",
        "10Gbit",
    ];
    let out = asap(&[&args[..], &["--latency", "50us", "--compute", "20ms", "--json"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("a JSON array");
    let seconds: Vec<f64> = rows
        .iter()
        .filter(|r| r["refused"].is_null())
        .map(|r| r["seconds"].as_f64().unwrap())
        .collect();
    assert!(seconds.windows(2).all(|w| w[0] <= w[1]), "sorted by predicted time");
    assert!(rows.iter().any(|r| r["kind"] == "ring all-reduce"));
    assert!(rows.iter().any(|r| r["kind"] == "one-peer-exp" && r["rounds"] == 5));
    // Graphs that do not exist or do not mix at these parameters are listed, with why.
    assert!(rows.iter().any(|r| r["refused"].is_string()));
    let best = asap(&[&args[..], &["--best"]].concat());
    let text = String::from_utf8_lossy(&best.stdout);
    assert_eq!(text.lines().count(), 2, "header and the winner: {text}");
    assert!(text
        .lines()
        .nth(1)
        .unwrap()
        .starts_with(rows[0]["kind"].as_str().unwrap()));
    // Without --kind there must be --rank or --best; bad units are one-line errors.
    for bad in [
        &["topology", "--nodes", "8"][..],
        &["topology", "--rank", "--nodes", "8", "--bandwidth", "fast"],
        &["topology", "--rank", "--nodes", "8", "--latency", "soon"],
    ] {
        let out = asap(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
    }
}
