//! Per-node identities (`Config::identities`): every pair of members seals its frames
//! with its own link key, so a member claiming another's id is refused by everyone, is
//! counted, and moves no replica; the real members still reach their exact mean.

use asap_core::auth::Key;
use asap_core::wire;
use asap_core::{AllReduce, AllReduceBuffers, Config, ConfigError, FrameError, Instant, Node, NodeId, PeerSpec};

mod common;
use common::Mem;

const MODEL: usize = 300;

/// The key of the link between members `a` and `b` (any distinct bytes a pair: in a
/// real cluster, X25519 between their static keys).
fn link(a: u16, b: u16) -> Key {
    let (lo, hi) = (a.min(b) as u8, a.max(b) as u8);
    Key::new([lo * 16 + hi + 1; 32])
}

fn config(id: u16, encrypt: bool) -> Config {
    Config {
        max_frame: 512,
        identities: true,
        encrypt,
        incarnation: 1,
        ..Config::new(9, NodeId(id), MODEL)
    }
}

/// Member `id` of the complete graph on 0, 1, 2 (weights 1/3), with link keys from `key`.
fn member<'m>(id: u16, encrypt: bool, mem: &'m mut Mem, key: impl Fn(u16, u16) -> Key) -> Node<'m, 4> {
    let others: Vec<u16> = (0..3).filter(|&j| j != id).collect();
    let peers: Vec<PeerSpec> = others.iter().map(|&j| PeerSpec::both(NodeId(j), 1.0 / 3.0)).collect();
    let mut node = Node::new(config(id, encrypt), &peers, mem.buffers(), Instant::ZERO).unwrap();
    for &j in &others {
        node.set_link_key(NodeId(j), key(id, j)).unwrap();
    }
    node
}

fn replica(id: u16) -> Vec<f32> {
    (0..MODEL).map(|k| id as f32 + k as f32 / 100.0).collect()
}

/// Runs members 0..3 (and, if given, an impostor sending as member 1 to the others)
/// `rounds` rounds on a lossless network; returns the real members' replicas.
fn run<'m>(nodes: &mut [Node<'m, 4>], mut impostor: Option<&mut Node<'m, 4>>, rounds: u32) -> Vec<Vec<f32>> {
    let mut params: Vec<Vec<f32>> = (0..3).map(replica).collect();
    // The impostor's replica is far away: mixing any of it would show.
    let mut forged = vec![1.0e6f32; MODEL];
    let mut done = [0u32; 3];
    let mut buf = vec![0u8; 512];
    for ms in 0..20_000u64 {
        let now = Instant::from_millis(ms);
        for (i, n) in nodes.iter_mut().enumerate() {
            if done[i] < rounds && !n.is_started() && n.can_start_round().is_ok() {
                n.start_round(now, &params[i]).unwrap();
            }
            if n.is_ready() {
                n.finish_round(now, &mut params[i]).unwrap();
                done[i] += 1;
            }
        }
        if let Some(fake) = impostor.as_deref_mut() {
            if !fake.is_started() && fake.can_start_round().is_ok() {
                fake.start_round(now, &forged).unwrap();
            }
            if fake.is_ready() {
                fake.finish_round(now, &mut forged).unwrap();
            }
        }
        let mut wire_frames = Vec::new();
        for n in nodes.iter_mut().chain(impostor.as_deref_mut()) {
            while let Some(t) = n.poll_transmit(now, &mut buf).unwrap() {
                wire_frames.push(buf[..t.len].to_vec());
            }
        }
        for mut bytes in wire_frames {
            let to = wire::peek(&bytes).unwrap().0.to.0 as usize;
            let _ = nodes[to].handle_frame_mut(now, &mut bytes);
        }
        for n in nodes.iter_mut().chain(impostor.as_deref_mut()) {
            if n.poll_timeout().is_some_and(|t| t <= now) {
                n.handle_timeout(now);
            }
        }
        if done.iter().all(|&d| d >= rounds) {
            return params;
        }
    }
    panic!("rounds not done: {done:?}");
}

fn max_error_to_mean(params: &[Vec<f32>]) -> f32 {
    (0..MODEL)
        .map(|k| {
            let mean = (0..3).map(|i| replica(i as u16)[k]).sum::<f32>() / 3.0;
            params.iter().map(|p| (p[k] - mean).abs()).fold(0.0, f32::max)
        })
        .fold(0.0, f32::max)
}

#[test]
fn members_with_link_keys_reach_the_exact_mean() {
    for encrypt in [false, true] {
        let mut mems: Vec<Mem> = (0..3).map(|id| Mem::new(&config(id, encrypt), 2)).collect();
        let mut nodes: Vec<Node<'_, 4>> = mems
            .iter_mut()
            .enumerate()
            .map(|(id, m)| member(id as u16, encrypt, m, link))
            .collect();
        let params = run(&mut nodes, None, 3);
        assert!(max_error_to_mean(&params) < 1e-5, "encrypt {encrypt}");
        assert!(nodes.iter().all(|n| n.stats().auth_failures == 0));
    }
}

#[test]
fn a_member_claiming_another_id_is_refused_and_moves_no_replica() {
    let mut mems: Vec<Mem> = (0..3).map(|id| Mem::new(&config(id, false), 2)).collect();
    let mut fake_mem = Mem::new(&config(1, false), 2);
    let mut nodes: Vec<Node<'_, 4>> = mems
        .iter_mut()
        .enumerate()
        .map(|(id, m)| member(id as u16, false, m, link))
        .collect();
    // Member 1's id, its own keys (it cannot know the real pairs' keys).
    let mut impostor = member(1, false, &mut fake_mem, |a, b| {
        Key::new([0xee ^ (a as u8) ^ (b as u8); 32])
    });
    let params = run(&mut nodes, Some(&mut impostor), 5);
    assert!(max_error_to_mean(&params) < 1e-5);
    // Members 0 and 2 received the impostor's frames and refused every one.
    for i in [0, 2] {
        assert!(nodes[i].stats().auth_failures > 0, "{:?}", nodes[i].stats());
    }
}

#[test]
fn a_peer_without_a_link_key_is_neither_heard_nor_sent_to() {
    let mut mem = Mem::new(&config(0, false), 1);
    let peers = [PeerSpec::both(NodeId(1), 0.5)];
    let mut node = Node::<4>::new(config(0, false), &peers, mem.buffers(), Instant::ZERO).unwrap();
    let mut buf = vec![0u8; 512];
    // Nothing goes out, not even a Hello, while the key is missing.
    assert!(node.poll_transmit(Instant::ZERO, &mut buf).unwrap().is_none());
    let mut other_mem = Mem::new(&config(1, false), 1);
    let mut other = Node::<4>::new(
        config(1, false),
        &[PeerSpec::both(NodeId(0), 0.5)],
        other_mem.buffers(),
        Instant::ZERO,
    )
    .unwrap();
    other.set_link_key(NodeId(0), link(0, 1)).unwrap();
    let t = other.poll_transmit(Instant::ZERO, &mut buf).unwrap().unwrap();
    let refused = node.handle_frame_mut(Instant::ZERO, &mut buf[..t.len]);
    assert_eq!(refused, Err(FrameError::UnknownPeer(NodeId(1))));
    assert_eq!(node.stats().frames_refused, 1);
    // Misuse is a typed error.
    assert_eq!(
        node.set_link_key(NodeId(7), link(0, 7)),
        Err(ConfigError::UnknownPeer(NodeId(7)))
    );
    node.set_link_key(NodeId(1), link(0, 1)).unwrap();
    assert!(node.poll_transmit(Instant::ZERO, &mut buf).unwrap().is_some());
}

#[test]
fn identities_exclude_a_cluster_key_and_the_all_reduce() {
    let both = Config {
        key: Some(Key::new([1; 32])),
        ..config(0, false)
    };
    let mut mem = Mem::new(&config(0, false), 1);
    let peers = [PeerSpec::both(NodeId(1), 0.5)];
    assert_eq!(
        Node::<4>::new(both, &peers, mem.buffers(), Instant::ZERO).err(),
        Some(ConfigError::IdentitiesWithClusterKey)
    );
    let (mut work, mut bits) = (vec![0.0; MODEL], vec![0; 64]);
    let ring = AllReduce::new(
        config(0, false),
        2,
        AllReduceBuffers {
            work: &mut work,
            chunk_bits: &mut bits,
        },
    );
    assert_eq!(ring.err(), Some(ConfigError::IdentitiesUnsupported));
    let plain = Config {
        identities: false,
        ..config(0, false)
    };
    let mut mem = Mem::new(&plain, 1);
    let mut node = Node::<4>::new(plain, &peers, mem.buffers(), Instant::ZERO).unwrap();
    assert_eq!(node.set_link_key(NodeId(1), link(0, 1)), Err(ConfigError::NoIdentities));
}
