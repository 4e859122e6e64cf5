//! Real clusters: `asap node` processes on loopback UDP ports average their seeded
//! replicas to the exact mean.

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use transport_mio::runtime::initial_vector;

/// Free loopback UDP ports (bound, noted, released; the race with other programs is
/// accepted).
fn free_ports(n: usize) -> Vec<u16> {
    let sockets: Vec<UdpSocket> = (0..n).map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind")).collect();
    sockets.iter().map(|s| s.local_addr().expect("addr").port()).collect()
}

/// Waits for every child, killing them all past `limit`. Returns their outputs.
fn wait_all(children: Vec<Child>, limit: Duration) -> Vec<std::process::Output> {
    let deadline = Instant::now() + limit;
    let mut children: Vec<Option<Child>> = children.into_iter().map(Some).collect();
    loop {
        let running = children
            .iter_mut()
            .flatten()
            .filter_map(|c| c.try_wait().ok().filter(|s| s.is_none()))
            .count();
        if running == 0 {
            break;
        }
        if Instant::now() > deadline {
            for c in children.iter_mut().flatten() {
                let _ = c.kill();
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    children
        .iter_mut()
        .map(|c| c.take().expect("child").wait_with_output().expect("output"))
        .collect()
}

/// Starts `world` workers on free loopback ports with `extra` flags.
fn spawn_cluster(world: usize, topology: &str, rounds: u32, model: usize, extra: &[&str]) -> Vec<Child> {
    let ports = free_ports(world);
    let peers: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    (0..world)
        .map(|rank| {
            Command::new(env!("CARGO_BIN_EXE_asap"))
                .args(["node", "--rank", &rank.to_string(), "--world", &world.to_string()])
                .args(["--peers", &peers.join(","), "--topology", topology])
                .args(["--rounds", &rounds.to_string(), "--model", &model.to_string(), "--json"])
                .args(extra)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("asap node starts")
        })
        .collect()
}

fn run_cluster(world: usize, topology: &str, rounds: u32, model: usize) -> Vec<serde_json::Value> {
    let children = spawn_cluster(world, topology, rounds, model, &[]);
    let outputs = wait_all(children, Duration::from_secs(120));
    outputs
        .iter()
        .enumerate()
        .map(|(rank, out)| {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "rank {rank} failed ({:?}): {stderr}", out.status);
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("rank {rank}: {e}: {stderr}"))
        })
        .collect()
}

/// The exact mean of the seeded replicas `asap node` starts from.
fn initial_mean(world: usize, model: usize) -> Vec<f64> {
    let initial: Vec<Vec<f32>> = (0..world as u32).map(|r| initial_vector(1, r, model)).collect();
    (0..model)
        .map(|k| initial.iter().map(|v| f64::from(v[k])).sum::<f64>() / world as f64)
        .collect()
}

/// The final replica a worker printed.
fn final_replica(result: &serde_json::Value) -> Vec<f64> {
    result["final"]
        .as_array()
        .expect("final replica")
        .iter()
        .map(|v| v.as_f64().expect("a number"))
        .collect()
}

/// Every worker ran `rounds` rounds and ended within 1e-5 of the exact mean.
fn assert_exact_mean(results: &[serde_json::Value], rounds: u32, model: usize) {
    let mean = initial_mean(results.len(), model);
    for (rank, r) in results.iter().enumerate() {
        assert_eq!(r["rank"], rank);
        assert_eq!(r["rounds"], rounds);
        let values = final_replica(r);
        assert_eq!(values.len(), model);
        let err = values.iter().zip(&mean).map(|(x, m)| (x - m).abs()).fold(0.0, f64::max);
        assert!(err <= 1e-5, "rank {rank}: max error {err:e}");
    }
}

#[test]
fn four_processes_reach_the_exact_mean() {
    assert_exact_mean(&run_cluster(4, "exp", 40, 500), 40, 500);
}

#[test]
fn one_peer_exponential_cluster_is_exact_in_log_n_rounds() {
    // Three rounds (log2 8) give the exact average; run a few more periods.
    assert_exact_mean(&run_cluster(8, "one-peer-exp", 9, 200), 9, 200);
}

#[test]
fn configuration_errors_are_one_line_and_exit_2() {
    let asap = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_asap"))
            .args(args)
            .output()
            .expect("runs")
    };
    for args in [
        &["node", "--rank", "4", "--world", "4"][..],
        &[
            "node",
            "--rank",
            "0",
            "--world",
            "3",
            "--peers",
            "127.0.0.1:1,127.0.0.1:2",
        ],
        &[
            "node",
            "--rank",
            "0",
            "--world",
            "2",
            "--peers",
            "not-an-address,127.0.0.1:2",
        ],
        &["node", "--rank", "0", "--world", "12", "--topology", "hypercube"],
    ] {
        let out = asap(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(!err.contains("panicked"));
    }
    // A port already in use.
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = asap(&[
        "node",
        "--rank",
        "0",
        "--world",
        "2",
        "--peers",
        &format!("127.0.0.1:{port},127.0.0.1:9"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
}

#[test]
fn launcher_environment_gives_rank_and_world() {
    // torchrun's variables name the rank and world when the flags are absent; a bad
    // rank from the environment is refused like a bad flag.
    let out = Command::new(env!("CARGO_BIN_EXE_asap"))
        .args(["node"])
        .env("RANK", "5")
        .env("WORLD_SIZE", "4")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rank 5 is not below world size 4"));
}

#[test]
fn survivors_of_a_killed_worker_declare_it_down_and_agree() {
    let (world, model, rounds) = (4usize, 100usize, 120u32);
    // 10 ms of "compute" a round: the run lasts over a second, time enough to kill one.
    let mut children = spawn_cluster(world, "exp", rounds, model, &["--compute-ms", "10"]);
    std::thread::sleep(Duration::from_millis(300));
    let mut victim = children.pop().expect("rank 3");
    victim.kill().expect("SIGKILL");
    let _ = victim.wait();
    let outputs = wait_all(children, Duration::from_secs(120));
    let finals: Vec<Vec<f64>> = outputs
        .iter()
        .enumerate()
        .map(|(rank, out)| {
            assert!(
                out.status.success(),
                "rank {rank}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
            assert_eq!(r["rounds"], rounds, "rank {rank} finished every round");
            assert!(
                r["peers_down"].as_u64().unwrap() >= 1,
                "rank {rank} saw the victim go down"
            );
            final_replica(&r)
        })
        .collect();
    // The victim's mass is lost, so the target is no longer the initial mean; the
    // survivors must agree with each other.
    for k in 0..model {
        let (lo, hi) = finals
            .iter()
            .map(|f| f[k])
            .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
        assert!(hi - lo <= 1e-5, "value {k}: survivors disagree by {:e}", hi - lo);
    }
}
