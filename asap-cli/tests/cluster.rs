//! Real clusters: `asap node` processes on loopback UDP ports average their seeded
//! replicas to the exact mean.

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    spawn_cluster_on(&[], &free_ports(world), topology, rounds, model, extra)
}

/// Starts one worker per port, each through the `launcher` prefix (empty: directly).
fn spawn_cluster_on(
    launcher: &[&str],
    ports: &[u16],
    topology: &str,
    rounds: u32,
    model: usize,
    extra: &[&str],
) -> Vec<Child> {
    let world = ports.len();
    let peers: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    (0..world)
        .map(|rank| {
            let mut command = match launcher.split_first() {
                Some((program, args)) => {
                    let mut c = Command::new(program);
                    c.args(args).arg(env!("CARGO_BIN_EXE_asap"));
                    c
                }
                None => Command::new(env!("CARGO_BIN_EXE_asap")),
            };
            command
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
    results(spawn_cluster(world, topology, rounds, model, &[]))
}

/// Every worker's JSON result; each must exit 0.
fn results(children: Vec<Child>) -> Vec<serde_json::Value> {
    results_and_logs(children).into_iter().map(|(r, _)| r).collect()
}

/// Every worker's JSON result and what it logged on stderr; each must exit 0.
fn results_and_logs(children: Vec<Child>) -> Vec<(serde_json::Value, String)> {
    let outputs = wait_all(children, Duration::from_secs(120));
    outputs
        .iter()
        .enumerate()
        .map(|(rank, out)| {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "rank {rank} failed ({:?}): {stderr}", out.status);
            let result = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("rank {rank}: {e}: {stderr}"));
            (result, stderr.into_owned())
        })
        .collect()
}

/// The exact mean of the seeded replicas `asap node` starts from.
fn initial_mean(world: usize, model: usize) -> Vec<f64> {
    let initial: Vec<Vec<f32>> = (0..world as u32)
        .map(|r| asap_fed::seeded::vector(1, r, model))
        .collect();
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
        // The worker's own report of the same distance agrees (up to the f32 text round trip).
        let reported = r["max_error_to_mean"].as_f64().expect("max_error_to_mean");
        assert!(
            (reported - err).abs() <= 1e-7,
            "rank {rank}: reported {reported:e}, measured {err:e}"
        );
    }
}

#[test]
fn four_processes_reach_the_exact_mean() {
    assert_exact_mean(&run_cluster(4, "exp", 40, 500), 40, 500);
}

#[test]
fn federated_training_ends_with_one_model_as_accurate_as_training_on_all_shards() {
    // 20 training rounds of 4 local steps on shards that differ, then 30 averaging rounds.
    let children = spawn_cluster(4, "exp", 20, 1_024, &["--workload", "federated"]);
    let results = results(children);
    let first = final_replica(&results[0]);
    for (rank, r) in results.iter().enumerate() {
        assert_eq!(r["rounds"], 50, "rank {rank}");
        let values = final_replica(r);
        assert_eq!(values.len(), 1_024);
        let spread = values
            .iter()
            .zip(&first)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(spread <= 1e-5, "rank {rank}: {spread:e} from rank 0's model");
        let f = &r["federated"];
        let (accuracy, reference) = (
            f["test_accuracy"].as_f64().unwrap(),
            f["reference_accuracy"].as_f64().unwrap(),
        );
        assert!(reference > 0.85, "rank {rank}: reference accuracy {reference}");
        assert!(
            (accuracy - reference).abs() <= 0.01,
            "rank {rank}: {accuracy} vs reference {reference}"
        );
    }
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

/// Skips (with the reason on stderr) unless `programs` are installed and we are root.
fn have_root_and(programs: &[&str]) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let missing: Vec<&&str> = programs
        .iter()
        .filter(|p| {
            Command::new("sh")
                .args(["-c", &format!("command -v {p}")])
                .output()
                .map_or(true, |o| !o.status.success())
        })
        .collect();
    if !root || !missing.is_empty() {
        eprintln!("SKIPPED: needs root and {programs:?} (scripts/setup installs them as root); missing {missing:?}");
        return false;
    }
    true
}

#[test]
fn mpirun_launches_a_cluster() {
    if !have_root_and(&["mpirun"]) {
        return;
    }
    let (world, rounds, model) = (4usize, 20u32, 300usize);
    let dir = tempfile::tempdir().expect("temp dir");
    let peers: Vec<String> = free_ports(world).iter().map(|p| format!("127.0.0.1:{p}")).collect();
    // No --rank/--world: each process reads OMPI_COMM_WORLD_RANK / _SIZE.
    let status = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-np", &world.to_string()])
        .args(["--output-filename", dir.path().to_str().unwrap()])
        .arg(env!("CARGO_BIN_EXE_asap"))
        .args(["node", "--peers", &peers.join(","), "--rounds", &rounds.to_string()])
        .args(["--model", &model.to_string(), "--json"])
        .stdout(Stdio::null())
        .status()
        .expect("mpirun runs");
    assert!(status.success(), "mpirun: {status}");
    let results: Vec<serde_json::Value> = (0..world)
        .map(|rank| {
            let out = dir.path().join(format!("1/rank.{rank}/stdout"));
            let text = std::fs::read_to_string(&out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
            serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("rank {rank}: {e}: {text}"))
        })
        .collect();
    assert_exact_mean(&results, rounds, model);
}

/// A network namespace of the test's own, with loopback up; deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Self {
        let ns = Netns(format!("asap-{tag}-{}", std::process::id()));
        ns.ip(&["netns", "add", &ns.0]);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// A namespace with an empty nftables input chain (`inet asap input`) to add rules to.
    fn with_input_chain(tag: &str) -> Self {
        let ns = Netns::new(tag);
        ns.nft("add table inet asap");
        ns.nft("add chain inet asap input { type filter hook input priority 0 ; }");
        ns
    }

    fn ip(&self, args: &[&str]) {
        let out = Command::new("ip").args(args).output().expect("ip runs");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn exec(&self, args: &[&str]) {
        self.ip(&[&["netns", "exec", &self.0][..], args].concat());
    }

    /// One nftables command inside the namespace.
    fn nft(&self, rule: &str) {
        let words: Vec<&str> = rule.split_whitespace().collect();
        self.exec(&[&["nft"][..], &words].concat());
    }

    fn launcher(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.0]
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn fifteen_percent_loss_between_processes_still_gives_the_exact_mean() {
    if !have_root_and(&["ip", "nft"]) {
        return;
    }
    let ns = Netns::with_input_chain("loss");
    // On the receiver's input: dropping on output would fail the sender's sendto.
    ns.nft("add rule inet asap input udp dport 40000-40099 numgen random mod 100 < 15 drop");
    let (rounds, model) = (30u32, 5_000usize);
    let ports: Vec<u16> = (40_000..40_004).collect();
    let results = results(spawn_cluster_on(&ns.launcher(), &ports, "exp", rounds, model, &[]));
    assert_exact_mean(&results, rounds, model);
    let resent: u64 = results.iter().map(|r| r["chunks_resent"].as_u64().unwrap()).sum();
    assert!(resent > 0, "the loss rule dropped nothing");
}

#[test]
fn a_healed_partition_costs_time_not_the_exact_mean() {
    if !have_root_and(&["ip", "nft"]) {
        return;
    }
    let ns = Netns::with_input_chain("partition");
    let (rounds, model) = (80u32, 500usize);
    let ports: Vec<u16> = (40_100..40_104).collect();
    let children = spawn_cluster_on(&ns.launcher(), &ports, "exp", rounds, model, &["--compute-ms", "10"]);
    // Cut worker 0 off both ways for 0.8 s (shorter than the 2 s peer timeout), mid-run.
    std::thread::sleep(Duration::from_millis(200));
    ns.nft("add rule inet asap input udp dport 40100 drop");
    ns.nft("add rule inet asap input udp sport 40100 drop");
    std::thread::sleep(Duration::from_millis(800));
    ns.nft("flush chain inet asap input");
    let results = results(children);
    assert_exact_mean(&results, rounds, model);
    // 80 rounds of 10 ms compute take 0.8 s; every worker waits for worker 0 (the
    // 4-node exponential graph is complete), so the cut adds its 0.8 s to everyone.
    for r in &results {
        let elapsed = r["elapsed_s"].as_f64().unwrap();
        assert!(
            elapsed >= 1.4,
            "rank {}: {elapsed} s: the partition did not stall the round",
            r["rank"]
        );
    }
}

#[test]
fn tcp_cluster_reaches_the_exact_mean() {
    let (rounds, model) = (30u32, 3_000usize);
    let children = spawn_cluster(4, "exp", rounds, model, &["--transport", "tcp"]);
    assert_exact_mean(&results(children), rounds, model);
}

#[test]
fn tcp_workers_reconnect_to_a_peer_that_starts_late() {
    // Workers 0-2 start at once and find worker 3's port closed (connection refused);
    // they retry, and every frame they owe it arrives once it listens.
    let (world, rounds, model) = (4usize, 20u32, 1_000usize);
    let ports = free_ports(world);
    let peers: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let spawn = |rank: usize| {
        Command::new(env!("CARGO_BIN_EXE_asap"))
            .args(["node", "--rank", &rank.to_string(), "--world", &world.to_string()])
            .args(["--peers", &peers.join(","), "--transport", "tcp", "--topology", "exp"])
            .args(["--rounds", &rounds.to_string(), "--model", &model.to_string(), "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("asap node starts")
    };
    let mut children: Vec<Child> = (0..3).map(spawn).collect();
    std::thread::sleep(Duration::from_millis(400));
    children.push(spawn(3));
    let results = results(children);
    assert_exact_mean(&results, rounds, model);
    let retried: u64 = results[..3].iter().map(|r| r["reconnects"].as_u64().unwrap()).sum();
    assert!(
        retried >= 1,
        "no worker had to reconnect: the late start did not happen"
    );
}

#[test]
fn a_shared_config_file_and_hosts_file_describe_the_cluster() {
    let (world, rounds, model) = (4usize, 12u32, 400usize);
    let dir = tempfile::tempdir().expect("temp dir");
    let hosts = dir.path().join("hosts");
    let lines: Vec<String> = free_ports(world)
        .iter()
        .enumerate()
        .map(|(rank, p)| format!("127.0.0.1:{p}   # worker {rank}"))
        .collect();
    std::fs::write(&hosts, format!("# the cluster\n{}\n", lines.join("\n"))).unwrap();
    let config = dir.path().join("cluster.toml");
    std::fs::write(
        &config,
        format!(
            "world = {world}\nhosts = {:?}\ntopology = \"one-peer-exp\"\nrounds = 99\nmodel = {model}\njson = true\n",
            hosts.to_str().unwrap()
        ),
    )
    .unwrap();
    let children = (0..world)
        .map(|rank| {
            Command::new(env!("CARGO_BIN_EXE_asap"))
                .args([
                    "node",
                    "--config",
                    config.to_str().unwrap(),
                    "--rank",
                    &rank.to_string(),
                ])
                // The command line wins over the file.
                .args(["--rounds", &rounds.to_string()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("asap node starts")
        })
        .collect();
    assert_exact_mean(&results(children), rounds, model);
    // A key that is not a flag is refused by name.
    std::fs::write(&config, "colour = \"blue\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_asap"))
        .args(["node", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`colour` is not a flag of `asap node`"));
}

/// `n` consecutive free loopback UDP ports (the base-port rule needs them).
fn free_consecutive_ports(n: u16) -> u16 {
    let start = free_ports(1)[0] % 20_000 + 20_000;
    (0..200u16)
        .map(|i| start + i * (n + 1))
        .find(|&base| {
            let held: Vec<_> = (0..n)
                .filter_map(|k| UdpSocket::bind(("127.0.0.1", base + k)).ok())
                .collect();
            held.len() == usize::from(n)
        })
        .expect("consecutive free ports")
}

#[test]
fn torchrun_variables_alone_describe_a_single_machine_cluster() {
    let (world, rounds, model) = (4u16, 40u32, 300usize);
    let base = free_consecutive_ports(world);
    let children = (0..world)
        .map(|rank| {
            Command::new(env!("CARGO_BIN_EXE_asap"))
                .args([
                    "node",
                    "--rounds",
                    &rounds.to_string(),
                    "--model",
                    &model.to_string(),
                    "--json",
                ])
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                // Workers listen from MASTER_PORT + 1 on.
                .env("MASTER_PORT", (base - 1).to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("asap node starts")
        })
        .collect();
    assert_exact_mean(&results(children), rounds, model);
}

/// A key file with `byte` repeated (64 hex digits).
fn key_file(dir: &std::path::Path, name: &str, byte: u8) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{}\n", format!("{byte:02x}").repeat(32))).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn an_authenticated_cluster_reaches_the_exact_mean() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "cluster.key", 0x3c);
    let (rounds, model) = (30u32, 500usize);
    let results = results(spawn_cluster(4, "exp", rounds, model, &["--key-file", &key]));
    assert_exact_mean(&results, rounds, model);
    for r in &results {
        assert_eq!(
            (r["auth_failures"].as_u64(), r["replays"].as_u64()),
            (Some(0), Some(0)),
            "{r}"
        );
    }
}

/// Paced senders (a token bucket; `--pace`) still reach the exact mean, with both cipher
/// suites (AES-256-GCM is the command's default; XChaCha20-Poly1305 is what boards
/// speak), over UDP and TCP; a rate of 0 is refused.
#[test]
fn paced_and_either_cipher_clusters_reach_the_exact_mean() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "cluster.key", 0x3c);
    let (rounds, model) = (10u32, 2_000usize);
    for (transport, cipher) in [("udp", "aes-256-gcm"), ("tcp", "xchacha20-poly1305")] {
        let extra = [
            "--pace",
            "80",
            "--key-file",
            &key,
            "--encrypt",
            "--cipher",
            cipher,
            "--transport",
            transport,
        ];
        let results = results(spawn_cluster(3, "exp", rounds, model, &extra));
        assert_exact_mean(&results, rounds, model);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_asap"))
        .args(["node", "--rank", "0", "--world", "2", "--pace", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("a rate in Mbit/s above 0"));
}

#[test]
fn an_encrypting_cluster_reaches_the_exact_mean_over_udp_and_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "cluster.key", 0x5a);
    let (rounds, model) = (20u32, 500usize);
    for transport in ["udp", "tcp"] {
        let extra = ["--key-file", &key, "--encrypt", "--transport", transport];
        let results = results(spawn_cluster(4, "exp", rounds, model, &extra));
        assert_exact_mean(&results, rounds, model);
        for r in &results {
            assert_eq!(
                (r["auth_failures"].as_u64(), r["replays"].as_u64()),
                (Some(0), Some(0)),
                "{transport}: {r}"
            );
        }
    }
    // Encryption without a key is a one-line setup error.
    let out = Command::new(env!("CARGO_BIN_EXE_asap"))
        .args(["node", "--rank", "0", "--world", "2", "--encrypt"])
        .env_remove("ASAP_KEY")
        .env_remove("ASAP_KEY_FILE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--encrypt needs a cluster key") && err.trim().lines().count() == 1,
        "{err}"
    );
}

#[test]
fn a_compressed_cluster_reaches_the_exact_mean_and_async_compression_is_refused() {
    let (rounds, model) = (60u32, 3_000usize);
    for compression in ["f16", "q8"] {
        let results = results(spawn_cluster(4, "ring", rounds, model, &["--compress", compression]));
        assert_exact_mean(&results, rounds, model);
        for r in &results {
            assert_eq!(r["compression"], compression, "{r}");
        }
    }
    for (args, message) in [
        (&["--compress", "q8", "--wait", "none"][..], "wait all or barrier"),
        (&["--compress", "q8", "--topology", "random"], "doubly stochastic"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_asap"))
            .args(["node", "--rank", "0", "--world", "4"])
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(message) && err.trim().lines().count() == 1,
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_worker_with_another_key_is_shut_out_and_the_others_agree() {
    let dir = tempfile::tempdir().unwrap();
    let (good, bad) = (
        key_file(dir.path(), "good.key", 0x11),
        key_file(dir.path(), "bad.key", 0x22),
    );
    // Rounds wait for rank 3 until it is declared down (2 s); then ranks 0-2 go on alone.
    let (world, rounds, model) = (4usize, 60u32, 200usize);
    let peers: Vec<String> = free_ports(world).iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let children = (0..world)
        .map(|rank| {
            Command::new(env!("CARGO_BIN_EXE_asap"))
                .args(["node", "--rank", &rank.to_string(), "--world", &world.to_string()])
                .args(["--peers", &peers.join(","), "--rounds", &rounds.to_string()])
                .args(["--model", &model.to_string(), "--json"])
                // Rank 3 holds the wrong key; the flag, not a variable, says so for it.
                .args(["--key-file", if rank == 3 { &bad } else { &good }])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("asap node starts")
        })
        .collect();
    let (results, logs): (Vec<_>, Vec<_>) = results_and_logs(children).into_iter().unzip();
    for r in &results {
        assert!(
            r["auth_failures"].as_u64().unwrap() > 0,
            "everyone refused someone: {r}"
        );
        assert!(r["peers_down"].as_u64().unwrap() >= 1, "{r}");
    }
    // Each says so on stderr at the default level, in a line or two however many frames
    // it refused (at most one line per 10 s), and that rank 3 is down.
    for (rank, log) in logs[..3].iter().enumerate() {
        let refusals = log.lines().filter(|l| l.contains("refused")).count();
        assert!(
            (1..=3).contains(&refusals),
            "rank {rank} logged {refusals} refusal lines: {log}"
        );
        assert!(log.contains("authentication tag mismatch"), "rank {rank}: {log}");
        assert!(
            log.contains("[WARN node") && log.contains("node 3 is down"),
            "rank {rank}: {log}"
        );
    }
    // Ranks 0-2 mixed only each other's replicas: they agree, whatever rank 3 sent.
    let finals: Vec<Vec<f64>> = results[..3].iter().map(final_replica).collect();
    for k in 0..model {
        let (lo, hi) = finals
            .iter()
            .map(|f| f[k])
            .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
        assert!(hi - lo <= 1e-5, "value {k}: ranks 0-2 disagree by {:e}", hi - lo);
    }
    // A bad key file is a one-line setup error.
    std::fs::write(dir.path().join("short.key"), "abcd").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_asap"))
        .args(["node", "--rank", "0", "--world", "2", "--key-file"])
        .arg(dir.path().join("short.key"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("64 hexadecimal digits") && err.trim().lines().count() == 1,
        "{err}"
    );
}

#[test]
fn topology_auto_picks_the_predicted_winner_and_says_so() {
    // A tiny model (1.2 KB): sending it to all 7 others once (the complete graph, exact
    // in one round) beats 3 rounds of one-peer-exp, whose round trips dominate. (At
    // 80 KB one-peer-exp wins; `asap topology --rank` shows both.)
    let (world, rounds, model) = (8usize, 6u32, 300usize);
    let children = spawn_cluster(world, "auto", rounds, model, &[]);
    let outputs = wait_all(children, Duration::from_secs(60));
    for (rank, out) in outputs.iter().enumerate() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "rank {rank}: {stderr}");
        assert!(
            stderr.contains("topology auto: complete for 8 nodes"),
            "rank {rank}: {stderr}"
        );
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(r["topology"], "complete");
        assert!(r["max_error_to_mean"].as_f64().unwrap() <= 1e-5, "{r}");
    }
}

/// `asap keygen --node FILE`: writes a secret, prints its public key (as `asap pubkey`).
fn node_key(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, String) {
    let path = dir.join(name);
    let out = Command::new(env!("CARGO_BIN_EXE_asap"))
        .args(["keygen", "--node"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let public = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let again = Command::new(env!("CARGO_BIN_EXE_asap"))
        .arg("pubkey")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(again.stdout).unwrap().trim(), public);
    (path, public)
}

#[test]
fn with_per_node_keys_a_fifth_process_cannot_speak_for_member_two() {
    let dir = tempfile::tempdir().unwrap();
    let (world, rounds, model) = (4usize, 40u32, 300usize);
    let ports = free_ports(world + 1);
    let keys: Vec<_> = (0..world)
        .map(|r| node_key(dir.path(), &format!("node{r}.key")))
        .collect();
    let (fake_key, fake_public) = node_key(dir.path(), "fake.key");
    let line = |id: usize, public: &str, port: u16| format!("{id} {public} 127.0.0.1:{port}\n");
    let members: String = (0..world).map(|r| line(r, &keys[r].1, ports[r])).collect();
    // The impostor's own view: member 2 is itself, listening elsewhere.
    let forged: String = (0..world)
        .map(|r| match r {
            2 => line(2, &fake_public, ports[world]),
            _ => line(r, &keys[r].1, ports[r]),
        })
        .collect();
    std::fs::write(dir.path().join("members.txt"), members).unwrap();
    std::fs::write(dir.path().join("forged.txt"), forged).unwrap();
    let node = |rank: usize, file: &str, key: &std::path::Path, rounds: u32| {
        Command::new(env!("CARGO_BIN_EXE_asap"))
            .args(["node", "--rank", &rank.to_string(), "--members"])
            .arg(dir.path().join(file))
            .arg("--node-key")
            .arg(key)
            .args(["--topology", "one-peer-exp", "--rounds", &rounds.to_string()])
            .args(["--model", &model.to_string(), "--json", "--round-timeout", "5"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("asap node starts")
    };
    let mut impostor = node(2, "forged.txt", &fake_key, 1_000);
    let real: Vec<Child> = (0..world).map(|r| node(r, "members.txt", &keys[r].0, rounds)).collect();
    let results = results(real);
    let _ = impostor.kill();
    let _ = impostor.wait();
    // No replica moved toward what the impostor sent: the four reach their exact mean.
    assert_exact_mean(&results, rounds, model);
    // Its out-neighbours on one-peer-exp refused its frames as not from member 2.
    let refused: u64 = results.iter().map(|r| r["auth_failures"].as_u64().unwrap()).sum();
    assert!(refused > 0, "{results:?}");
    // Misuse is a one-line setup error.
    let out = Command::new(env!("CARGO_BIN_EXE_asap"))
        .args(["node", "--rank", "0", "--members"])
        .arg(dir.path().join("members.txt"))
        .arg("--node-key")
        .arg(&keys[1].0)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("membership lists") && err.trim().lines().count() == 1,
        "{err}"
    );
}

/// Starts worker `rank` of `peers` (loopback ports) with `flags`.
fn spawn_member(rank: usize, ports: &[u16], flags: &[&str]) -> Child {
    let peers: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    Command::new(env!("CARGO_BIN_EXE_asap"))
        .args(["node", "--rank", &rank.to_string(), "--world", &ports.len().to_string()])
        .args(["--peers", &peers.join(","), "--json"])
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("asap node starts")
}

/// Elastic membership: four members of a five-member cluster start without the fifth
/// (they do not wait for it), which joins 0.4 s later with `--join`: it fetches the
/// model from its neighbours and trains from it. The join does not move the average:
/// every replica, the joiner's too, ends within 1e-5 of the four founders' initial mean.
#[test]
fn a_member_joins_a_running_cluster_and_takes_its_model() {
    let (model, ports) = (100usize, free_ports(5));
    let founders: Vec<Child> = (0..4)
        .map(|rank| {
            let flags = ["--elastic", "--rounds", "300", "--compute-ms", "5", "--model", "100"];
            spawn_member(rank, &ports, &flags)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    let joiner = spawn_member(
        4,
        &ports,
        &[
            "--join",
            "--rounds",
            "60",
            "--compute-ms",
            "5",
            "--model",
            "100",
            "--log",
            "info",
        ],
    );
    let mut children = founders;
    children.push(joiner);
    let done = results_and_logs(children);
    let founders_mean = initial_mean(4, model);
    for (rank, (r, log)) in done.iter().enumerate() {
        let values = final_replica(r);
        let err = values
            .iter()
            .zip(&founders_mean)
            .map(|(x, m)| (x - m).abs())
            .fold(0.0, f64::max);
        assert!(err <= 1e-5, "rank {rank}: {err:e} from the founders' mean\n{log}");
        if rank == 4 {
            assert!(log.contains("joined: the model arrived"), "{log}");
            // 60 training rounds, after the round(s) that fetched the model.
            assert!(r["rounds"].as_u64().unwrap() > 60, "{r}");
        }
    }
}

/// Elastic membership: a member that leaves (its rounds done, it says goodbye) stops
/// counting at once: the others neither wait out a peer timeout for it nor lose their
/// agreement, and end on the average (reached before it left, as it was present).
#[test]
fn a_member_that_leaves_stops_counting_and_the_rest_agree() {
    let (model, ports) = (100usize, free_ports(5));
    let children: Vec<Child> = (0..5)
        .map(|rank| {
            let rounds = if rank == 2 { "40" } else { "200" };
            let flags = ["--elastic", "--rounds", rounds, "--compute-ms", "5", "--model", "100"];
            spawn_member(rank, &ports, &flags)
        })
        .collect();
    let done = results_and_logs(children);
    let mean = initial_mean(5, model);
    for (rank, (r, log)) in done.iter().enumerate() {
        let values = final_replica(r);
        let err = values.iter().zip(&mean).map(|(x, m)| (x - m).abs()).fold(0.0, f64::max);
        assert!(err <= 1e-5, "rank {rank}: {err:e} from the mean\n{log}");
        // 200 rounds of 5 ms: a wait of the 2 s peer timeout for the leaver would show.
        let elapsed = r["elapsed_s"].as_f64().expect("elapsed_s");
        assert!(elapsed < 1.9 + 0.005 * 200.0, "rank {rank}: {elapsed} s\n{log}");
    }
}
