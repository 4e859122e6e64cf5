//! One member of a federated-training cluster on a polled smoltcp loop, whatever the
//! board: given an Ethernet `phy::Device`, a millisecond clock and a text sink, it joins
//! the cluster build.rs describes ([`crate::cluster`]), trains its own shard of
//! `asap_fed`'s problem between rounds, averages at the end, evaluates, prints, and says
//! whether it passed ([`crate::fed`]: what it shares with the embassy board,
//! nucleo-f767zi). Used by qemu-fed-m4 (Cortex-M4F, LAN9118) and qemu-virt-a53
//! (Cortex-A53, virtio-net).
//!
//! A board that was stopped and started again joins as a new incarnation (the caller
//! passes one that grew since its last start, see [`fed::fresh_incarnation`]): its peers
//! forget what they had from its previous life, it learns from their frames how far the
//! cluster went while it was away and skips to that round (asap-core's catch-up), and it
//! takes its local steps for the round it is in. It prints `progress` lines as rounds
//! finish and, at the end, its counters (frames refused, and why) beside the model.

use core::fmt::Write;

use asap_core::Reducer;
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketSet, SocketStorage};
use smoltcp::phy::Device;
use smoltcp::socket::udp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};
use static_cell::ConstStaticCell;
use transport_smoltcp::{Driver, Step};

use crate::fed::{self, Training, FRAME, LINGER};

/// UDP payloads each socket buffer holds, each way (frames keep arriving while the
/// board computes its local steps).
const RX_FRAMES: usize = 16;
const TX_FRAMES: usize = 4;
/// The address slirp (`-nic user`) gives the guest, and the host as the guest sees it.
const OWN_IP: [u8; 4] = [10, 0, 2, 15];
const GATEWAY: [u8; 4] = [10, 0, 2, 2];
/// Give up when the run takes longer (milliseconds).
const DEADLINE_MS: i64 = 240_000;

static STORAGE: ConstStaticCell<[SocketStorage<'static>; 1]> = ConstStaticCell::new([SocketStorage::EMPTY]);
static RX_META: ConstStaticCell<[udp::PacketMetadata; RX_FRAMES]> =
    ConstStaticCell::new([udp::PacketMetadata::EMPTY; RX_FRAMES]);
static RX_DATA: ConstStaticCell<[u8; RX_FRAMES * FRAME]> = ConstStaticCell::new([0; RX_FRAMES * FRAME]);
static TX_META: ConstStaticCell<[udp::PacketMetadata; TX_FRAMES]> =
    ConstStaticCell::new([udp::PacketMetadata::EMPTY; TX_FRAMES]);
static TX_DATA: ConstStaticCell<[u8; TX_FRAMES * FRAME]> = ConstStaticCell::new([0; TX_FRAMES * FRAME]);

/// Runs this member to the end on `device` (MAC address `mac`) as `incarnation` (new at
/// every start of the board); `clock` reads monotonic time. Returns whether it passed.
pub fn run<D: Device>(
    device: &mut D,
    mac: [u8; 6],
    clock: fn() -> Instant,
    incarnation: u32,
    out: &mut dyn Write,
) -> bool {
    run_with(device, mac, clock, incarnation, out, |start, out| {
        fed::node(incarnation, start, out)
    })
}

/// [`run`] with the engine that `engine` builds (given the time the loop starts at and
/// the text sink; `None`: it could not, having said why) in place of [`fed::node`]:
/// qemu-fed-m4's size probe measures asap-core's share with a stand-in `Reducer`.
pub fn run_with<D: Device, R: Reducer>(
    device: &mut D,
    mac: [u8; 6],
    clock: fn() -> Instant,
    incarnation: u32,
    out: &mut dyn Write,
    engine: impl FnOnce(Instant, &mut dyn Write) -> Option<R>,
) -> bool {
    let mut iface = Interface::new(
        IfaceConfig::new(HardwareAddress::Ethernet(EthernetAddress(mac))),
        device,
        clock(),
    );
    let [a, b, c, d] = OWN_IP;
    iface.update_ip_addrs(|addrs| {
        let _ = addrs.push(IpCidr::new(IpAddress::v4(a, b, c, d), 24));
    });
    let [a, b, c, d] = GATEWAY;
    let _ = iface.routes_mut().add_default_ipv4_route(Ipv4Address::new(a, b, c, d));

    let storage = STORAGE.take();
    let rx_meta = RX_META.take();
    let rx_data = RX_DATA.take();
    let tx_meta = TX_META.take();
    let tx_data = TX_DATA.take();
    let mut sockets = SocketSet::new(&mut storage[..]);
    let mut socket = udp::Socket::new(
        udp::PacketBuffer::new(&mut rx_meta[..], &mut rx_data[..]),
        udp::PacketBuffer::new(&mut tx_meta[..], &mut tx_data[..]),
    );
    if socket.bind(fed::own_port()).is_err() {
        let _ = writeln!(out, "cannot bind port {}", fed::own_port());
        return false;
    }
    let handle = sockets.add(socket);

    let Some(node) = engine(clock(), out) else {
        return false;
    };
    let Ok(mut driver) = Driver::new(node, handle, fed::peers(), fed::tx()) else {
        let _ = writeln!(out, "driver: bad buffers");
        return false;
    };
    let params = fed::params();
    let mut training = Training::new(params, clock);
    let mut linger_until = None;
    loop {
        let t = clock();
        driver.poll(t, &mut iface, device, &mut sockets);
        if !training.done() {
            let step = match driver.step(t, params) {
                Ok(step) => step,
                Err(e) => {
                    let _ = writeln!(out, "round {}: {:?}", driver.engine().round() + 1, e);
                    break;
                }
            };
            if step == Step::Finished {
                let engine = driver.engine();
                let (round, skipped) = (engine.round(), engine.stats().rounds_skipped);
                training.finished_round(params, round, skipped, out);
                if training.done() {
                    linger_until = Some(clock() + LINGER);
                }
            }
        }
        if linger_until.is_some_and(|end| t >= end) || t.total_millis() > DEADLINE_MS {
            break;
        }
    }
    let finished = clock() - LINGER;
    let stats = *driver.engine().stats();
    training.report(params, incarnation, &stats, driver.stats(), finished, out)
}
