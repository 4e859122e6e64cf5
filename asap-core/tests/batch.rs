//! Batched transmit (`poll_transmit_batch`): frames for one peer back to back, each
//! `segment_size` bytes but the last, delivered as the kernel's GRO would hand them to
//! the receiver (split at the segment size, padding included). Batching changes how
//! frames are packed, never what the nodes compute: each run ends bit for bit where the
//! one-frame-a-call run ends, plain, keyed, encrypted and compressed, with and without
//! loss.

mod common;

use asap_core::auth::Key;
use asap_core::compress::Compression;
use asap_core::wire;
use asap_core::{AllReduce, AllReduceBuffers, Config, Duration, Instant, Node, NodeId, PeerSpec, Reducer};
use common::Mem;

/// 345 chunks of 116 values at 512-byte frames: chunk indices cross the varint boundary
/// at 128, so frames of equal data differ in length by a byte within a batch.
const MODEL: usize = 40_000;
const ROUNDS: u32 = 6;

/// What a run's batches looked like.
#[derive(Debug, Default)]
struct Seen {
    batches: u64,
    segments: u64,
    /// Segments longer than the frame they carry (zero-padded).
    padded: u64,
    /// Batches whose segments are longer than their first frame: a later frame was a
    /// byte longer (a varint grew) and the batch widened.
    widened: u64,
}

/// A change to the default configuration.
type Tweak = fn(&mut Config);

fn config(id: u16, tweak: Tweak) -> Config {
    let mut c = Config {
        max_frame: 512,
        ..Config::new(7, NodeId(id), MODEL)
    };
    tweak(&mut c);
    c
}

fn initial(id: u16) -> Vec<f32> {
    (0..MODEL)
        .map(|k| ((k * 7 + usize::from(id) * 13) % 101) as f32 / 50.0 - 1.0)
        .collect()
}

/// Drives `engines` for `ROUNDS` rounds; every frame crosses as the receiver's GRO would
/// split it. `loss`: every `loss`-th segment is dropped (0: none). Returns the replicas.
fn run(engines: &mut [&mut dyn Reducer], max_segments: usize, loss: u64, seen: &mut Seen) -> Vec<Vec<f32>> {
    let n = engines.len();
    let mut params: Vec<Vec<f32>> = (0..n as u16).map(initial).collect();
    let mut done = vec![0u32; n];
    let max_frame = engines[0].config().max_frame;
    let mut buf = vec![0u8; max_frame * max_segments];
    let mut now = Instant::from_millis(1);
    let mut count = 0u64;
    for _ in 0..1_000_000 {
        if done.iter().all(|&d| d >= ROUNDS) {
            return params;
        }
        let mut progress = false;
        for i in 0..n {
            let start = done[i] < ROUNDS;
            let advance = engines[i].advance_round(now, &mut params[i], start).unwrap();
            if advance.finished.is_some() {
                done[i] += 1;
                progress = true;
            }
            while let Some(t) = engines[i].poll_transmit_batch(now, &mut buf, max_segments).unwrap() {
                progress = true;
                seen.batches += 1;
                if t.segments() > 1 && frame_len(&buf[..t.len]) < t.segment_size {
                    seen.widened += 1;
                }
                for segment in t.frames(&buf) {
                    seen.segments += 1;
                    count += 1;
                    let frame_len = frame_len(segment);
                    assert!(frame_len <= segment.len(), "a frame is never cut");
                    if frame_len < segment.len() {
                        seen.padded += 1;
                        assert!(segment[frame_len..].iter().all(|&b| b == 0), "padding is zeros");
                    }
                    if loss != 0 && count.is_multiple_of(loss) {
                        continue;
                    }
                    let mut copy = segment.to_vec();
                    let _ = engines[usize::from(t.to.0)].handle_frame_mut(now, &mut copy);
                }
            }
        }
        if !progress {
            let next = engines.iter().filter_map(|e| e.poll_timeout()).min();
            now = next
                .unwrap_or(now + Duration::from_millis(1))
                .max(now + Duration::from_micros(1));
            for e in engines.iter_mut() {
                if e.poll_timeout().is_some_and(|t| t <= now) {
                    e.handle_timeout(now);
                }
            }
        }
    }
    panic!("rounds not done: {done:?}");
}

/// Length of the frame at the front of `bytes`.
fn frame_len(bytes: &[u8]) -> usize {
    let (h, header_len) = wire::peek(bytes).unwrap();
    header_len + usize::from(h.payload_len) + h.integrity.trailer_len()
}

/// Two ASAP nodes averaging with each other.
fn pair(tweak: Tweak, max_segments: usize, loss: u64, seen: &mut Seen) -> Vec<Vec<f32>> {
    let (ca, cb) = (config(0, tweak), config(1, tweak));
    let (mut ma, mut mb) = (Mem::new(&ca, 1), Mem::new(&cb, 1));
    let t0 = Instant::from_millis(1);
    let mut a = Node::<2>::new(ca, &[PeerSpec::both(NodeId(1), 0.5)], ma.buffers(), t0).unwrap();
    let mut b = Node::<2>::new(cb, &[PeerSpec::both(NodeId(0), 0.5)], mb.buffers(), t0).unwrap();
    run(&mut [&mut a, &mut b], max_segments, loss, seen)
}

fn keyed(c: &mut Config) {
    c.key = Some(Key::new([3; 32]));
}

fn encrypted(c: &mut Config) {
    keyed(c);
    c.encrypt = true;
    c.incarnation = 1;
}

fn aes(c: &mut Config) {
    encrypted(c);
    c.cipher = asap_core::CipherSuite::Aes256Gcm;
}

fn q8(c: &mut Config) {
    c.compression = Compression::Q8;
}

#[test]
fn batches_end_bit_for_bit_where_single_frames_end() {
    let tweaks: [(&str, Tweak); 5] = [
        ("plain", |_| {}),
        ("keyed", keyed),
        ("encrypted", encrypted),
        ("aes-256-gcm", aes),
        ("q8", q8),
    ];
    // AES-256-GCM where the build has it (feature `aes-gcm`, on in the workspace).
    let available = |t: &Tweak| config(0, *t).validate().is_ok();
    for (name, tweak) in tweaks.into_iter().filter(|(_, t)| available(t)) {
        let single = pair(tweak, 1, 0, &mut Seen::default());
        let mut seen = Seen::default();
        let batched = pair(tweak, 64, 0, &mut seen);
        assert!(single == batched, "{name}: batching changed the result");
        assert!(
            seen.segments > 4 * seen.batches,
            "{name}: frames went in batches: {seen:?}"
        );
    }
}

#[test]
fn equal_chunks_a_byte_apart_are_padded_into_one_batch() {
    // Chunk 128 is the first whose index takes two varint bytes: the batch holding
    // chunks 127 and 128 widens and pads the shorter frames (batches of 50, so one
    // holds both).
    let mut seen = Seen::default();
    pair(|_| {}, 50, 0, &mut seen);
    assert!(seen.padded > 0 && seen.widened > 0, "{seen:?}");
}

#[test]
fn lost_segments_are_recovered_as_lost_frames_are() {
    for tweak in [(|_| {}) as Tweak, keyed] {
        let reference = pair(tweak, 1, 0, &mut Seen::default());
        let lossy = pair(tweak, 64, 37, &mut Seen::default());
        // Loss changes nothing either: NOTIFY-ACK makes every update arrive whole.
        assert!(reference == lossy, "a lost segment cost exactness");
    }
}

#[test]
fn ring_allreduce_batches_its_segments_and_stays_exact() {
    let n = 3u32;
    let reduce = |max_segments: usize, seen: &mut Seen| {
        let configs: Vec<Config> = (0..n as u16).map(|i| config(i, |_| {})).collect();
        let mut work: Vec<Vec<f32>> = (0..n).map(|_| vec![0.0; MODEL]).collect();
        let mut bits: Vec<Vec<u32>> = configs.iter().map(|c| vec![0; AllReduce::bitmap_words(c, n)]).collect();
        let mut engines: Vec<AllReduce<'_>> = configs
            .into_iter()
            .zip(work.iter_mut().zip(bits.iter_mut()))
            .map(|(c, (work, chunk_bits))| AllReduce::new(c, n, AllReduceBuffers { work, chunk_bits }).unwrap())
            .collect();
        let mut refs: Vec<&mut dyn Reducer> = engines.iter_mut().map(|e| e as &mut dyn Reducer).collect();
        run(&mut refs, max_segments, 0, seen)
    };
    let single = reduce(1, &mut Seen::default());
    let mut seen = Seen::default();
    let batched = reduce(64, &mut seen);
    assert!(single == batched, "batching changed the all-reduce");
    assert!(seen.segments > 4 * seen.batches, "{seen:?}");
}

/// FNV-1a over the bits of every replica.
fn digest(replicas: &[Vec<f32>]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for byte in replicas.iter().flatten().flat_map(|v| v.to_bits().to_le_bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// A time-varying graph sends one period's compressed payload to a partner a round:
/// how the sender keeps that payload between rounds must not change a bit of what the
/// nodes compute. The digests were recorded before such a change (8 nodes on the
/// one-peer exponential graph, two periods, every 37th segment lost).
#[test]
fn compressed_one_peer_exponential_runs_end_as_recorded() {
    use asap_core::topology::{Family, Topology, TopologySpec};
    let spec = TopologySpec::new(Family::OnePeerExponential, 8);
    let topology = Topology::new(spec, &mut vec![0.0; spec.scratch_len()]).unwrap();
    let recorded = [
        (Compression::Q8, 0xd850_6515_61aa_4999u64),
        (Compression::F16, 0x20e5_3f05_6182_b158),
        (Compression::TopK { fraction: 0.1 }, 0x7980_5d16_20b6_a2bd),
    ];
    for (compression, expected) in recorded {
        let configs: Vec<Config> = (0..8)
            .map(|i| Config {
                compression,
                ..config(i, |_| {})
            })
            .collect();
        let peers = topology.peers_of(0).count();
        let mut mems: Vec<Mem> = configs.iter().map(|c| Mem::new(c, peers)).collect();
        let t0 = Instant::from_millis(1);
        let mut nodes: Vec<Node<'_, 8>> = configs
            .iter()
            .zip(mems.iter_mut())
            .map(|(c, m)| Node::with_topology(*c, &topology, m.buffers(), t0).unwrap())
            .collect();
        let mut refs: Vec<&mut dyn Reducer> = nodes.iter_mut().map(|n| n as &mut dyn Reducer).collect();
        let replicas = run(&mut refs, 16, 37, &mut Seen::default());
        assert_eq!(digest(&replicas), expected, "{compression:?}: {:#x}", digest(&replicas));
    }
}
