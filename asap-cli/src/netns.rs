//! The demo's network-bound mode (`asap demo --netns`): worker r runs in the network
//! namespace `asap-n{r}` that `scripts/netns up N` makes, and listens on its address
//! 10.77.0.(r+1), so every frame crosses that worker's rate-limited link (a `tbf` qdisc
//! in each direction) instead of loopback.
//!
//! This module only names what the script made and reads it back: the namespaces, their
//! addresses, and each worker's link rate from its qdisc (so the demo can pace senders at
//! it). Making and removing the network stays the script's job (root, `ip`, `tc`, `nft`).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;

/// The port every worker listens on: each namespace has its own, so one suffices.
pub const PORT: u16 = 47_000;

/// Where `ip netns add` leaves a handle for each named namespace.
const NETNS_DIR: &str = "/run/netns";

/// The share of its link's rate a worker is paced at by default: the pacer counts UDP
/// payload, `tbf` whole Ethernet frames (28 bytes of IP and UDP header and 14 of
/// Ethernet on a 1,400-byte datagram, 3%), and a little headroom keeps the qdisc's queue
/// short.
pub const PACE_SHARE: f64 = 0.95;

/// Worker `rank`'s namespace.
pub fn namespace(rank: u32) -> String {
    format!("asap-n{rank}")
}

/// Worker `rank`'s address (`scripts/netns addr RANK`).
pub fn address(rank: u32) -> SocketAddr {
    let host = u8::try_from(rank + 1).expect("scripts/netns makes at most 250 workers");
    SocketAddr::from((Ipv4Addr::new(10, 77, 0, host), PORT))
}

/// `program` run in worker `rank`'s namespace (`ip netns exec` enters it and then
/// becomes the program, so the child's id is the worker's).
pub fn command(rank: u32, program: &Path) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &namespace(rank)]).arg(program);
    c
}

/// Each worker's link: what its namespace's `eth0` sends at, in bits a second (`None`
/// when it has no `tbf` qdisc, an unshaped link). Fails, saying how to make them, when
/// the namespaces of a `world`-worker run are not all there.
pub fn links(world: u32) -> Result<Vec<Option<f64>>, String> {
    let missing: Vec<String> = (0..world)
        .map(namespace)
        .filter(|ns| !Path::new(NETNS_DIR).join(ns).exists())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "--netns: network namespace{} {} not up; make them first (root): \
             scripts/netns up {world} --rate 100mbit",
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", "),
        ));
    }
    (0..world)
        .map(|rank| {
            let out = Command::new("ip")
                .args(["netns", "exec", &namespace(rank), "tc", "qdisc", "show", "dev", "eth0"])
                .output()
                .map_err(|e| format!("--netns: cannot run `ip netns exec` (root only): {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "--netns: cannot enter {} (root only): {}",
                    namespace(rank),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            Ok(tbf_rate(&String::from_utf8_lossy(&out.stdout)))
        })
        .collect()
}

/// The rate of the `tbf` qdisc in `tc qdisc show` output, in bits a second: tc prints
/// it as `rate 100Mbit` (`bit`, `Kbit`, `Mbit`, `Gbit`).
pub fn tbf_rate(tc_output: &str) -> Option<f64> {
    let line = tc_output.lines().find(|l| l.starts_with("qdisc tbf "))?;
    let mut words = line.split_whitespace();
    words.find(|w| *w == "rate")?;
    let rate = words.next()?;
    let digits = rate.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let scale = match &rate[digits..] {
        "bit" => 1.0,
        "Kbit" => 1e3,
        "Mbit" => 1e6,
        "Gbit" => 1e9,
        _ => return None,
    };
    let value: f64 = rate[..digits].parse().ok()?;
    Some(value * scale)
}

/// The pace (Mbit/s, as `asap node --pace` takes it) for a link of `bits_per_second`.
pub fn pace_for(bits_per_second: f64) -> f64 {
    PACE_SHARE * bits_per_second / 1e6
}

/// The links in a title: "links 100 Mbit/s", and the odd ones out by worker ("links 100
/// Mbit/s, worker 7's 50 Mbit/s"); the most common rate is the rule.
pub fn describe(links: &[Option<f64>]) -> String {
    let show = |l: Option<f64>| l.map_or("unshaped".to_string(), |b| format!("{} Mbit/s", b / 1e6));
    let shown: Vec<String> = links.iter().map(|l| show(*l)).collect();
    let Some(rule) = shown.iter().max_by_key(|s| shown.iter().filter(|t| t == s).count()) else {
        return "no links".into();
    };
    let mut out = format!("links {rule}");
    for (rank, s) in shown.iter().enumerate().filter(|(_, s)| *s != rule) {
        out += &format!(", worker {rank}'s {s}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tbf_rates_are_read_in_tcs_units() {
        let shown = "qdisc tbf 8001: root refcnt 2 rate 100Mbit burst 128Kb lat 50ms \n";
        assert_eq!(tbf_rate(shown), Some(1e8));
        assert_eq!(
            tbf_rate("qdisc tbf 8002: root refcnt 2 rate 1Gbit burst 1250000b lat 50ms"),
            Some(1e9)
        );
        assert_eq!(
            tbf_rate("qdisc tbf 1: root rate 2.5Mbit burst 128Kb lat 50ms"),
            Some(2.5e6)
        );
        assert_eq!(
            tbf_rate("qdisc tbf 1: root rate 800Kbit burst 128Kb lat 50ms"),
            Some(8e5)
        );
        // Unshaped, or a qdisc that is not a token bucket: no rate.
        assert_eq!(tbf_rate("qdisc noqueue 0: root refcnt 2 "), None);
        assert_eq!(tbf_rate(""), None);
        assert_eq!(tbf_rate("qdisc tbf 1: root rate fast"), None);
    }

    #[test]
    fn workers_are_named_and_addressed_as_the_script_makes_them() {
        assert_eq!(namespace(7), "asap-n7");
        assert_eq!(address(0).to_string(), "10.77.0.1:47000");
        assert_eq!(address(7).to_string(), "10.77.0.8:47000");
        let c = command(3, Path::new("/bin/asap"));
        let args: Vec<_> = c.get_args().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            (c.get_program().to_str(), &args[..]),
            (Some("ip"), &["netns", "exec", "asap-n3", "/bin/asap"][..])
        );
        assert!((pace_for(1e8) - 95.0).abs() < 1e-9);
    }

    #[test]
    fn a_title_names_the_common_rate_and_the_odd_links() {
        let links = [Some(1e8), Some(1e8), Some(1e8), Some(5e7)];
        assert_eq!(describe(&links), "links 100 Mbit/s, worker 3's 50 Mbit/s");
        assert_eq!(describe(&[Some(1e9), Some(1e9)]), "links 1000 Mbit/s");
        assert_eq!(
            describe(&[None, None, Some(2.5e6)]),
            "links unshaped, worker 2's 2.5 Mbit/s"
        );
    }
}
