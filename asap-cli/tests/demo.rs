//! The README's main job, `asap demo`, as a new user runs it (smaller, so it is quick):
//! both runs train, ASAP matches all-reduce's loss with fewer bytes, and the table's
//! files are written.

use std::process::Command;

fn asap(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_asap"))
        .args(args)
        .output()
        .expect("asap runs")
}

/// A small demo (4 workers, 40 rounds, a 2,000-feature problem) writing to `out_dir`,
/// with `extra` flags.
fn small_demo(out_dir: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "demo",
        "--workers",
        "4",
        "--rounds",
        "40",
        "--features",
        "2000",
        "--rows",
        "2000",
        "--compute-ms",
        "1",
        "--rate",
        "16",
        "--quiet",
        "--json",
        "--out",
        out_dir,
    ];
    args.extend_from_slice(extra);
    asap(&args)
}

#[test]
fn demo_trains_with_asap_and_all_reduce_and_writes_its_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_dir = dir.path().to_str().expect("utf-8 path");
    let out = small_demo(out_dir, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let runs = summary["runs"].as_array().expect("runs");
    let engines: Vec<&str> = runs.iter().map(|r| r["engine"].as_str().unwrap()).collect();
    assert_eq!(engines, ["asap", "allreduce"]);
    let loss = |r: &serde_json::Value| r["final_loss"].as_f64().unwrap();
    for r in runs {
        assert_eq!(r["rounds"], 40, "{r}");
        assert!(loss(r) < std::f64::consts::LN_2 - 0.02, "no learning: {r}");
        assert!(r["time_to_target_s"].as_f64().is_some(), "target not reached: {r}");
        assert!(r["curve"].as_array().unwrap().len() > 40);
    }
    // The same SGD, reduced two ways: close losses. One-peer-exp sends one model a
    // round, the ring 2(n-1)/n = 1.5.
    assert!((loss(&runs[0]) - loss(&runs[1])).abs() < 0.02, "{summary}");
    let bytes = |r: &serde_json::Value| r["bytes_per_worker"].as_f64().unwrap();
    assert!(bytes(&runs[0]) < 0.85 * bytes(&runs[1]), "{summary}");
    let png = std::fs::read(dir.path().join("loss.png")).expect("loss.png written");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("summary.json")).expect("summary.json")).unwrap();
    assert_eq!(written, summary);
}

#[test]
fn demo_compares_compressed_runs_by_bytes_to_the_target() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = small_demo(dir.path().to_str().expect("utf-8 path"), &["--compress", "q8,topk:0.1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let runs = summary["runs"].as_array().expect("runs");
    let kinds: Vec<(&str, &str, &str)> = runs
        .iter()
        .map(|r| {
            (
                r["engine"].as_str().unwrap(),
                r["compression"].as_str().unwrap(),
                r["topology"].as_str().unwrap(),
            )
        })
        .collect();
    // Every ASAP run on the demo's graph, one-peer-exp (compressed: over a period's
    // union, mixed once a period).
    assert_eq!(
        kinds,
        [
            ("asap", "none", "one-peer-exp"),
            ("asap", "q8", "one-peer-exp"),
            ("asap", "topk:0.1", "one-peer-exp"),
            ("allreduce", "none", "ring all-reduce")
        ]
    );
    let loss = |r: &serde_json::Value| r["final_loss"].as_f64().unwrap();
    let bytes = |r: &serde_json::Value| r["bytes_per_worker"].as_f64().unwrap();
    let (f32_run, q8) = (&runs[0], &runs[1]);
    // q8: the same final loss (within 1%) with at most 0.3 of f32's bytes.
    assert!((loss(q8) - loss(f32_run)).abs() <= 0.01 * loss(f32_run), "{summary}");
    assert!(bytes(q8) <= 0.3 * bytes(f32_run), "{summary}");
    for r in runs {
        assert!(r["bytes_to_target"].as_f64().is_some(), "target not reached: {r}");
    }
}

#[test]
fn demo_configuration_errors_are_one_line_and_exit_2() {
    for args in [
        &["demo", "--workers", "4", "--straggler", "4:2"][..],
        &["demo", "--straggler", "1:0.5"],
        &["demo", "--straggler", "one"],
        &["demo", "--workers", "1"],
        &["demo", "--data", "/nonexistent/asap.libsvm"],
        &["demo", "--topology", "moebius"],
        &["demo", "--wait", "sometimes"],
        &["demo", "--rate", "-1"],
        &["demo", "--compress", "q4"],
        &["demo", "--compress", "topk:2"],
    ] {
        let out = asap(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}
