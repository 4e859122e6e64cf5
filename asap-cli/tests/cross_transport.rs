//! One cluster, two transports: a smoltcp node (the edge driver, `transport-smoltcp`)
//! on a TUN device and three `asap node` processes on the kernel's UDP sockets, in a
//! network namespace the test creates. Real frames cross between the two stacks, and
//! every node, whichever transport, reaches the same average.
//!
//! The outer test makes the namespace and the TUN device, then re-runs this binary's
//! inner test inside it (`ip netns exec`), so nothing touches the host's network.

use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant as WallClock};

use asap_core::topology::{Family, Topology, TopologySpec};
use asap_core::{Buffers, Config, Node, NodeId};
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketSet, SocketStorage};
use smoltcp::phy::{wait, Medium, TunTapInterface};
use smoltcp::socket::udp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint, Ipv4Address};
use transport_smoltcp::{Driver, Step};

const INNER: &str = "ASAP_CROSS_TRANSPORT_INNER";
const TUN: &str = "asap0";
const WORLD: usize = 4;
const ROUNDS: u32 = 40;
const MODEL: usize = 500;
const SMOLTCP_PORT: u16 = 7000;

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.0]);
    }
}

#[test]
fn smoltcp_and_mio_nodes_share_one_cluster() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root || !std::path::Path::new("/dev/net/tun").exists() || run("ip", &["-V"]).is_err() {
        eprintln!("SKIPPED: needs root, iproute2 and /dev/net/tun to make a namespace with a TUN device");
        return;
    }
    let ns = Netns(format!("asap-x-{}", std::process::id()));
    let exec = |args: &[&str]| run("ip", &[&["netns", "exec", &ns.0][..], args].concat());
    run("ip", &["netns", "add", &ns.0]).unwrap();
    exec(&["ip", "link", "set", "lo", "up"]).unwrap();
    exec(&["ip", "tuntap", "add", "dev", TUN, "mode", "tun"]).unwrap();
    exec(&["ip", "addr", "add", "10.9.0.1/24", "dev", TUN]).unwrap();
    exec(&["ip", "link", "set", TUN, "up"]).unwrap();
    let me = std::env::current_exe().unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(me)
        .args(["--exact", "inside_the_namespace", "--ignored", "--nocapture"])
        .env(INNER, "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "inner test failed:\n{text}");
    assert!(text.contains("1 passed"), "inner test did not run:\n{text}");
}

#[test]
#[ignore = "runs inside the namespace smoltcp_and_mio_nodes_share_one_cluster makes"]
fn inside_the_namespace() {
    if std::env::var(INNER).is_err() {
        return;
    }
    // Rank 0 is smoltcp on the TUN device (10.9.0.2); ranks 1..4 are kernel sockets on 10.9.0.1.
    let peers: Vec<String> = std::iter::once(format!("10.9.0.2:{SMOLTCP_PORT}"))
        .chain((1..WORLD).map(|r| format!("10.9.0.1:{}", 7100 + r)))
        .collect();
    let children: Vec<_> = (1..WORLD)
        .map(|rank| {
            Command::new(env!("CARGO_BIN_EXE_asap"))
                .args(["node", "--rank", &rank.to_string(), "--world", &WORLD.to_string()])
                .args(["--peers", &peers.join(","), "--topology", "exp"])
                .args(["--rounds", &ROUNDS.to_string(), "--model", &MODEL.to_string(), "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("asap node starts")
        })
        .collect();

    let mut device = TunTapInterface::new(TUN, Medium::Ip).expect("open the TUN device");
    let fd = device.as_raw_fd();
    // One clock for smoltcp and the node, counted from the node's creation.
    let epoch = WallClock::now();
    let clock = || Instant::from_micros(epoch.elapsed().as_micros() as i64);
    let mut iface = Interface::new(IfaceConfig::new(HardwareAddress::Ip), &mut device, clock());
    iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::v4(10, 9, 0, 2), 24)).unwrap());
    iface
        .routes_mut()
        .add_default_ipv4_route(Ipv4Address::new(10, 9, 0, 1))
        .unwrap();
    let mut storage = [SocketStorage::EMPTY; 1];
    let mut sockets = SocketSet::new(&mut storage[..]);
    let (mut rx_meta, mut rx_data) = ([udp::PacketMetadata::EMPTY; 32], [0u8; 32 * 1500]);
    let (mut tx_meta, mut tx_data) = ([udp::PacketMetadata::EMPTY; 32], [0u8; 32 * 1500]);
    let mut socket = udp::Socket::new(
        udp::PacketBuffer::new(&mut rx_meta[..], &mut rx_data[..]),
        udp::PacketBuffer::new(&mut tx_meta[..], &mut tx_data[..]),
    );
    socket.bind(SMOLTCP_PORT).unwrap();
    let handle = sockets.add(socket);

    let topology = Topology::new(
        TopologySpec::new(Family::Exponential, WORLD as u32),
        &mut [0.0; 3 * WORLD],
    )
    .unwrap();
    let config = Config::new(0xa5a9, NodeId(0), MODEL);
    let layout = config.layout(topology.peers_of(0).count()).unwrap();
    let (mut snapshot, mut accumulator) = (vec![0.0; layout.model_len], vec![0.0; layout.model_len]);
    let (mut chunk_weights, mut chunk_bits) = (vec![0.0; layout.chunks], vec![0; layout.bitmap_words]);
    let buffers = Buffers {
        snapshot: &mut snapshot,
        accumulator: &mut accumulator,
        chunk_weights: &mut chunk_weights,
        chunk_mass: &mut vec![0.0; layout.chunk_mass],
        chunk_bits: &mut chunk_bits,
    };
    let node = Node::<8>::with_topology(config, &topology, buffers, asap_core::Instant::ZERO).unwrap();
    let mut endpoints: Vec<IpEndpoint> = peers
        .iter()
        .map(|p| {
            let a: std::net::SocketAddrV4 = p.parse().unwrap();
            IpEndpoint::new(IpAddress::Ipv4(*a.ip()), a.port())
        })
        .collect();
    let mut tx = vec![0u8; config.max_frame];
    let mut driver = Driver::new(node, handle, &mut endpoints, &mut tx).unwrap();

    // The same seeded replica `asap node` would start rank 0 from.
    let mut params = asap_fed::seeded::vector(1, 0, MODEL);
    let (mut rounds, start) = (0u32, WallClock::now());
    let mut linger_until = None;
    loop {
        let now = clock();
        let next = driver.poll(now, &mut iface, &mut device, &mut sockets);
        if rounds < ROUNDS && driver.step(now, &mut params).unwrap() == Step::Finished {
            rounds += 1;
            if rounds == ROUNDS {
                // Keep answering the peers' last retransmissions a while, as `asap node` does.
                linger_until = Some(WallClock::now() + Duration::from_millis(500));
            }
        }
        if linger_until.is_some_and(|t| WallClock::now() >= t) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "smoltcp node stuck at round {rounds}"
        );
        let delay = next
            .map(|at| at - now)
            .unwrap_or(smoltcp::time::Duration::from_millis(10));
        wait(fd, Some(delay.min(smoltcp::time::Duration::from_millis(10)))).unwrap();
    }

    let initial: Vec<Vec<f32>> = (0..WORLD as u32)
        .map(|r| asap_fed::seeded::vector(1, r, MODEL))
        .collect();
    let mean: Vec<f64> = (0..MODEL)
        .map(|k| initial.iter().map(|v| f64::from(v[k])).sum::<f64>() / WORLD as f64)
        .collect();
    let error =
        |values: &mut dyn Iterator<Item = f64>| values.zip(&mean).map(|(x, m)| (x - m).abs()).fold(0.0, f64::max);
    let smol_err = error(&mut params.iter().map(|&x| f64::from(x)));
    assert!(smol_err <= 1e-5, "smoltcp node: max error {smol_err:e}");
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "rank {}: {stderr}", i + 1);
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["rounds"], ROUNDS);
        let err = error(&mut r["final"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()));
        assert!(err <= 1e-5, "mio rank {}: max error {err:e}", i + 1);
    }
    assert!(driver.stats().received > 0 && driver.stats().sent > 0);
}
