//! Writes the seed corpus under `corpus/` (run by hand, then commit the files):
//! `cargo test --test seeds -- --ignored`.
//!
//! `decode` gets real frames of every kind from `wire::encode`. The structured targets
//! get inputs picked from pseudo-random byte strings by what they reach (rounds
//! finished, chunks folded, each topology family built), so libFuzzer starts from
//! inputs that already get deep.

use std::path::{Path, PathBuf};

use asap_core::wire::{self, Encoding, Header, Integrity, Kind};
use asap_core::NodeId;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn dir(target: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    std::fs::write(dir(target).join(name), bytes).unwrap();
}

fn frame(kind: Kind, round: u32, values: &[f32]) -> Vec<u8> {
    let header = Header {
        version: wire::VERSION,
        integrity: Integrity::Crc32,
        cluster: 9,
        from: NodeId(0),
        incarnation: 0,
        to: NodeId(1),
        round,
        kind,
        payload_len: 0,
    };
    let mut buf = vec![0u8; 1_024];
    let n = wire::encode(header, values, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn decode_seeds() {
    let values: Vec<f32> = (0..116).map(|i| i as f32 * 0.25 - 3.0).collect();
    let update = |chunk, weight| Kind::Update {
        chunk,
        chunks: 3,
        weight,
        encoding: Encoding::F32Le,
    };
    let hello = Kind::Hello {
        model_len: 300,
        chunk_len: 116,
        encoding: asap_core::wire::Encoding::F32Le,
        reply: false,
    };
    let seeds = [
        ("hello", frame(hello, 0, &[])),
        ("update", frame(update(0, 0.5), 4, &values)),
        ("update-last", frame(update(2, 0.5), 4, &values[..68])),
        (
            "update-nan-weight",
            frame(update(1, f32::NAN), 4, &[f32::INFINITY, -0.0]),
        ),
        ("notify", frame(Kind::Notify { chunks: 3 }, 4, &[])),
        ("ack", frame(Kind::Ack, 4, &[])),
        ("missing", frame(Kind::Missing { base: 1, mask: 0b101 }, 4, &[])),
        ("heartbeat", frame(Kind::Heartbeat, u32::MAX, &[])),
        ("barrier", frame(Kind::Barrier, 7, &[])),
        ("leave", frame(Kind::Leave, 7, &[])),
    ];
    for (name, bytes) in &seeds {
        asap_fuzz::decode::run(bytes);
        write("decode", name, bytes);
    }
    // Two frames back to back (a stream) and one with trailing garbage.
    let mut two = seeds[5].1.clone();
    two.extend_from_slice(&seeds[4].1);
    write("decode", "ack-notify", &two);
    let mut tail = seeds[0].1.clone();
    tail.extend_from_slice(&[0xee; 5]);
    write("decode", "hello-trailing", &tail);
}

/// Keeps, for each of `metrics`, the input of `tries` random ones that maximises it.
fn pick<const M: usize>(
    target: &str,
    names: [&str; M],
    tries: usize,
    len: std::ops::Range<usize>,
    seed: u64,
    metrics: impl Fn(&[u8]) -> [u64; M],
) {
    let mut rng = Rng(seed);
    let mut best: [(u64, Vec<u8>); M] = std::array::from_fn(|_| (0, Vec::new()));
    for _ in 0..tries {
        let n = len.start + (rng.next() as usize) % (len.end - len.start);
        let bytes = rng.bytes(n);
        // An input that fails is a finding, not a seed: keep it aside and go on.
        let Ok(m) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| metrics(&bytes))) else {
            let failed = Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts").join(target);
            std::fs::create_dir_all(&failed).unwrap();
            std::fs::write(failed.join(format!("seed-search-failure-{seed}-{n}")), &bytes).unwrap();
            continue;
        };
        for k in 0..M {
            if m[k] > best[k].0 {
                best[k] = (m[k], bytes.clone());
            }
        }
    }
    for (k, (score, bytes)) in best.iter().enumerate() {
        if !bytes.is_empty() {
            eprintln!("{target}/{}: {score}", names[k]);
            write(target, names[k], bytes);
        }
    }
}

#[test]
#[ignore = "writes the seed corpus"]
fn write_seeds() {
    decode_seeds();

    pick(
        "node_frames",
        ["folded", "rounds", "received", "rejected", "sent"],
        400_000,
        64..2_048,
        1,
        |b| {
            use arbitrary::{Arbitrary, Unstructured};
            let Ok(ops) = Vec::<asap_fuzz::node_frames::Op>::arbitrary_take_rest(Unstructured::new(b)) else {
                return [0; 5];
            };
            let s = asap_fuzz::node_frames::run_ops(&ops);
            [
                s.chunks_folded,
                s.rounds,
                s.frames_received,
                s.updates_rejected,
                s.frames_sent,
            ]
        },
    );

    pick("pair", ["rounds", "rounds-a", "rounds-b"], 20_000, 32..4_096, 2, |b| {
        let r = asap_fuzz::pair::scenario(b);
        [r[0].min(r[1]), r[0], r[1]]
    });

    // One topology per family: family index in the first byte, then `NodesSpec::Any`
    // (4 bytes of variant, 2 of count) with 8..=40 nodes.
    let mut rng = Rng(3);
    for (f, family) in asap_core::Family::ALL.iter().enumerate() {
        for _ in 0..10_000 {
            let mut bytes = rng.bytes(48);
            bytes[0] = f as u8;
            let nodes = [8u16, 9, 12, 16, 25, 32, 40][(rng.next() % 7) as usize];
            bytes[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
            bytes[5..7].copy_from_slice(&nodes.to_le_bytes());
            use arbitrary::{Arbitrary, Unstructured};
            let input = asap_fuzz::topology::Input::arbitrary_take_rest(Unstructured::new(&bytes)).unwrap();
            if asap_fuzz::topology::check(&input, asap_fuzz::topology::large_measured(&bytes)) {
                write("topology", family.name(), &bytes);
                break;
            }
        }
    }

    let mut rng = Rng(4);
    for (name, len) in [("small", 24), ("medium", 96), ("large", 600)] {
        let bytes = rng.bytes(len);
        asap_fuzz::reduce::run(&bytes);
        write("reduce", name, &bytes);
    }
    // Equal lengths with special values: NaN, infinities, MAX, subnormals, -0.
    let specials: Vec<u8> = [1.0f32, f32::NAN, f32::INFINITY, f32::MAX, -f32::MAX, 1e-40, -0.0, 0.5]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let mut bytes = vec![1u8];
    for _ in 0..6 {
        bytes.extend_from_slice(&specials);
    }
    asap_fuzz::reduce::run(&bytes);
    write("reduce", "specials", &bytes);
}

/// Seeds of the targets added with compression and encryption, written without
/// rewriting the others: `cargo test --release --test seeds -- --ignored codec`.
#[test]
#[ignore = "writes the seed corpus"]
fn write_codec_and_encrypted_seeds() {
    use asap_core::auth::{Cipher, Key};
    use asap_core::compress::{self, Compression};
    use asap_core::wire::Sealing;
    // codec: a real payload of every encoding (selector, length, payload).
    let values: Vec<f32> = (0..40).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
    for (selector, c) in [
        (0u8, Compression::None),
        (1, Compression::F16),
        (2, Compression::Bf16),
        (3, Compression::Q8),
        (4, Compression::TopK { fraction: 0.2 }),
    ] {
        let mut buf = vec![0u8; c.payload_len(values.len())];
        let n = compress::encode(c, &values, &mut buf).unwrap();
        let mut bytes = vec![selector, values.len() as u8];
        bytes.extend_from_slice(&buf[..n]);
        asap_fuzz::codec::run(&bytes);
        write("codec", &format!("payload-{c}").replace(':', "-"), &bytes);
    }
    // keyed: frames of every kind encrypted under the cluster key (selector bit 1).
    let key = Key::new([0x5a; 32]);
    let cipher = Cipher::from_key(&key, asap_core::auth::CipherSuite::XChaCha20Poly1305).unwrap();
    let values: Vec<f32> = (0..116).map(|i| i as f32 * 0.25 - 3.0).collect();
    for (name, kind, payload) in [
        (
            "update",
            Kind::Update {
                chunk: 0,
                chunks: 3,
                weight: 0.5,
                encoding: Encoding::F32Le,
            },
            &values[..],
        ),
        ("ack", Kind::Ack, &[][..]),
        ("notify", Kind::Notify { chunks: 3 }, &[][..]),
    ] {
        let header = Header {
            version: wire::VERSION,
            integrity: Integrity::XChaCha20Poly1305 { seq: 7 },
            cluster: 9,
            from: NodeId(0),
            incarnation: 1,
            to: NodeId(1),
            round: 4,
            kind,
            payload_len: 0,
        };
        let mut buf = vec![0u8; 1_024];
        let n = wire::seal(header, payload, &mut buf, Sealing::Encrypt(&cipher)).unwrap();
        for selector in [2u8, 3] {
            let mut bytes = vec![selector];
            bytes.extend_from_slice(&buf[..n]);
            asap_fuzz::keyed::run(&bytes);
            write("keyed", &format!("encrypted-{name}-{selector}"), &bytes);
        }
    }
}
