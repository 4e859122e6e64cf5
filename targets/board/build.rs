//! With the `fed` feature, writes the cluster a federated board joins into
//! `$OUT_DIR/cluster.rs` (the `cluster` module), from environment variables read at build
//! time (rebuild after changing them):
//!
//! | variable | meaning |
//! |---|---|
//! | `ASAP_FED_RANK` [0] | this board's rank (node id) |
//! | `ASAP_FED_PEERS` [`10.0.2.15:7000,10.0.2.2:47301,10.0.2.2:47302,10.0.2.2:47303`] | every member's address as this board reaches it, in rank order (its own entry: the port it listens on); the world size is their number |
//! | `ASAP_FED_CLUSTER` [0xa5a9] | cluster id (`asap node --cluster`) |
//! | `ASAP_FED_SEED` [1] | seed of the data and of random graphs (`asap node --seed`) |
//! | `ASAP_FED_MODEL` [4096] | model values (`asap node --model`) |
//! | `ASAP_FED_ROUNDS` [30] | training rounds (`asap node --rounds`) |
//! | `ASAP_FED_LOCAL_STEPS` [4] | SGD steps before each training round (`--local-steps`) |
//! | `ASAP_FED_CONSENSUS_ROUNDS` [30] | averaging rounds at the end (`--consensus-rounds`) |
//!
//! A firmware with other defaults sets them in its `.cargo/config.toml` (`[env]`, not
//! forced, so the caller's environment still wins): nucleo-f767zi's LAN addresses.
//!
//! It also trains the centralised reference on this machine (`asap_fed::Plan::reference`,
//! the same the servers compute) and bakes its held-out accuracy in, so the board can
//! check its own result against it. The cluster lives here, not in each firmware's
//! build.rs, because `fed` sizes its static memory by it: Rust statics cannot be generic.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "fed")]
    cluster::write(&std::path::PathBuf::from(std::env::var_os("OUT_DIR").unwrap()));
}

#[cfg(feature = "fed")]
mod cluster {
    fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
        println!("cargo:rerun-if-env-changed={name}");
        match std::env::var(name) {
            Ok(v) => {
                let v = v.trim();
                let parsed = match v.strip_prefix("0x") {
                    Some(hex) => u64::from_str_radix(hex, 16)
                        .ok()
                        .and_then(|n| n.to_string().parse().ok()),
                    None => v.parse().ok(),
                };
                parsed.unwrap_or_else(|| panic!("{name}={v}: not a valid value"))
            }
            Err(_) => default,
        }
    }

    fn endpoint(text: &str) -> ([u8; 4], u16) {
        let bad = || -> ! { panic!("ASAP_FED_PEERS: `{text}` is not IPv4:PORT") };
        let Some((ip, port)) = text.trim().split_once(':') else {
            bad()
        };
        let octets: Vec<u8> = ip.split('.').map(|o| o.parse().unwrap_or_else(|_| bad())).collect();
        let Ok(ip) = <[u8; 4]>::try_from(octets) else { bad() };
        (ip, port.parse().unwrap_or_else(|_| bad()))
    }

    /// Writes `$OUT_DIR/cluster.rs`: the constants `fed` and the firmwares use.
    pub(super) fn write(out: &std::path::Path) {
        use std::fmt::Write as _;
        let rank: u16 = var("ASAP_FED_RANK", 0);
        let peers: String = var(
            "ASAP_FED_PEERS",
            "10.0.2.15:7000,10.0.2.2:47301,10.0.2.2:47302,10.0.2.2:47303".to_string(),
        );
        let peers: Vec<([u8; 4], u16)> = peers.split(',').map(endpoint).collect();
        let world = peers.len() as u32;
        assert!(
            (2..=asap_fed::MAX_WORLD as u32).contains(&world),
            "ASAP_FED_PEERS: {world} members; 2..={} supported",
            asap_fed::MAX_WORLD
        );
        assert!(
            u32::from(rank) < world,
            "ASAP_FED_RANK {rank}: not below the world size {world}"
        );
        let cluster: u32 = var("ASAP_FED_CLUSTER", 0xa5a9);
        let seed: u64 = var("ASAP_FED_SEED", 1);
        let model: usize = var("ASAP_FED_MODEL", 4096);
        assert!(model >= 2, "ASAP_FED_MODEL {model}: at least 2");
        let plan = asap_fed::Plan {
            train_rounds: var("ASAP_FED_ROUNDS", asap_fed::Plan::DEFAULT.train_rounds),
            local_steps: var("ASAP_FED_LOCAL_STEPS", asap_fed::Plan::DEFAULT.local_steps),
            consensus_rounds: var("ASAP_FED_CONSENSUS_ROUNDS", asap_fed::Plan::DEFAULT.consensus_rounds),
            ..asap_fed::Plan::DEFAULT
        };
        let problem = asap_fed::Problem::new(seed, model, world);
        let mut reference = vec![0.0f32; model];
        plan.reference(&problem, &mut reference);
        let reference = problem.evaluate(&reference);

        let mut code = String::new();
        writeln!(code, "/// This board's rank.\npub const RANK: u16 = {rank};").unwrap();
        writeln!(code, "/// Members.\npub const WORLD: usize = {world};").unwrap();
        writeln!(code, "/// Cluster id.\npub const CLUSTER: u32 = {cluster:#x};").unwrap();
        writeln!(code, "/// Seed of the data.\npub const SEED: u64 = {seed};").unwrap();
        writeln!(code, "/// Model values.\npub const MODEL: usize = {model};").unwrap();
        writeln!(
            code,
            "/// Every member's address from here, in rank order.\npub const PEERS: [([u8; 4], u16); {world}] = {peers:?};"
        )
        .unwrap();
        writeln!(
            code,
            "/// The run.\npub const PLAN: asap_fed::Plan = asap_fed::Plan {{ train_rounds: {}, local_steps: {}, \
             consensus_rounds: {}, ..asap_fed::Plan::DEFAULT }};",
            plan.train_rounds, plan.local_steps, plan.consensus_rounds
        )
        .unwrap();
        writeln!(
            code,
            "/// Held-out accuracy of the centralised reference (computed by build.rs).\n\
             pub const REFERENCE_ACCURACY: f64 = {:?};",
            reference.accuracy
        )
        .unwrap();
        std::fs::write(out.join("cluster.rs"), code).unwrap();
    }
}
