//! Plain-timer companion of the `core` bench: times, in one run, folding, encoding +
//! decoding and `memcpy` of the same 4 MiB (1,048,576 `f32`) model and prints ONE JSON
//! object with the medians (µs) and the ratios to `memcpy`, plus the header overhead of a
//! realistic 1,400-byte update frame.
//!
//! The operations are timed round-robin (one sample of each per repetition), so drift
//! in the machine's speed affects all of them alike and the ratios stay meaningful on a
//! noisy host. Each sample is the mean of a few back-to-back runs after one untimed run,
//! so every operation is timed with its buffers in cache (steady state, as criterion
//! measures it); timing a single run right after the other operations would charge
//! `memcpy` alone for refetching its destination and understate the ratios.

use core::hint::black_box;
use std::time::Instant;

use asap_core::reduce;
use asap_core::wire::{self, Encoding, F32Le, Header, Integrity, Kind, NodeId};

/// Values in the model: 4 MiB of `f32`.
const MODEL_LEN: usize = 1 << 20;
/// A frame that fits an Ethernet MTU with room for UDP/IP headers.
const SMALL_FRAME: usize = 1_400;
/// Untimed runs of each operation before sampling.
const WARM_UP: usize = 5;
/// Timed samples of each operation.
const SAMPLES: usize = 31;
/// Back-to-back runs a sample times (it reports their mean).
const BATCH: u32 = 4;

/// A model of ordinary, finite, normal values.
fn model() -> Vec<f32> {
    (0..MODEL_LEN)
        .map(|i| ((i % 1_000) as f32 - 500.0) * 1e-3 + 1e-4)
        .collect()
}

/// The header of an update chunk as a busy node sends it.
fn update_header(chunk: u32, chunks: u32) -> Header {
    Header {
        version: wire::VERSION,
        integrity: Integrity::Crc32,
        cluster: 7,
        from: NodeId(1),
        incarnation: 0,
        to: NodeId(2),
        round: 1000,
        kind: Kind::Update {
            chunk,
            chunks,
            weight: 0.5,
            encoding: Encoding::F32Le,
        },
        payload_len: 0,
    }
}

/// Header overhead, in percent of the frame, of a realistic 1,400-byte update frame,
/// with the frame's length and its header's length.
fn header_overhead() -> (f64, usize, usize) {
    let chunk_len = wire::chunk_len_for_frame(SMALL_FRAME, Integrity::Crc32);
    let chunks = MODEL_LEN.div_ceil(chunk_len);
    let header = Header {
        cluster: 0x5eed,
        round: 123_456,
        kind: Kind::Update {
            chunk: 2_000,
            chunks: u32::try_from(chunks).expect("chunk count fits u32"),
            weight: 0.5,
            encoding: Encoding::F32Le,
        },
        ..update_header(0, 1)
    };
    let values = vec![0.25f32; chunk_len];
    let mut buf = vec![0u8; SMALL_FRAME];
    let frame_len = wire::encode(header, &values, &mut buf).expect("frame fits");
    let (_, header_len) = wire::peek(&buf[..frame_len]).expect("header parses");
    let payload_bytes = chunk_len * 4;
    let pct = (frame_len - payload_bytes) as f64 / frame_len as f64 * 100.0;
    (pct, frame_len, header_len)
}

/// Encodes every chunk of `model` into one reused frame buffer and decodes it again.
fn encode_decode_all(model: &[f32], chunk_len: usize, buf: &mut [u8]) {
    let chunks = u32::try_from(model.len().div_ceil(chunk_len)).expect("chunk count fits u32");
    for (i, range) in model.chunks(chunk_len).enumerate() {
        let chunk = u32::try_from(i).expect("chunk index fits u32");
        let header = update_header(chunk, chunks);
        let len = wire::encode(header, range, buf).expect("frame fits");
        let (frame, _) = wire::decode(&buf[..len]).expect("frame decodes");
        let view = F32Le::new(frame.payload).expect("whole values");
        black_box(view.raw());
    }
}

/// Median of `samples` in microseconds.
fn median_us(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    let src = model();
    let bytes: Vec<u8> = src.iter().flat_map(|v| v.to_le_bytes()).collect();
    let (values, rest) = bytes.as_chunks::<4>();
    assert!(rest.is_empty());
    let mut acc = vec![0.0f32; MODEL_LEN];
    let mut copy = vec![0.0f32; MODEL_LEN];
    let mut buf = vec![0u8; wire::MAX_FRAME_LEN];
    let small_chunk = wire::chunk_len_for_frame(SMALL_FRAME, Integrity::Crc32);
    let large_chunk = wire::chunk_len_for_frame(wire::MAX_FRAME_LEN, Integrity::Crc32);

    // `init`: the first update into a chunk (scale + store + check in one pass); `fold`:
    // later ones (check, then add). A round on a degree-d graph does one init and d - 1
    // folds per chunk.
    let names = [
        "fold_chunked",
        "fold_whole",
        "frames_1400",
        "frames_65536",
        "init_chunked",
        "memcpy",
    ];
    let memcpy_op = names.len() - 1;
    let mut run = |op: usize| match op {
        0 => {
            for (a, v) in acc.chunks_mut(small_chunk).zip(values.chunks(small_chunk)) {
                reduce::fold_le(a, 0.5, black_box(v)).expect("finite");
            }
            black_box(&mut acc);
        }
        1 => {
            reduce::fold_le(&mut acc, 0.5, black_box(values)).expect("finite");
            black_box(&mut acc);
        }
        2 => encode_decode_all(black_box(&src), small_chunk, &mut buf[..SMALL_FRAME]),
        3 => encode_decode_all(black_box(&src), large_chunk, &mut buf),
        4 => {
            for (a, v) in acc.chunks_mut(small_chunk).zip(values.chunks(small_chunk)) {
                reduce::init_le(a, 0.5, black_box(v)).expect("finite");
            }
            black_box(&mut acc);
        }
        _ => {
            copy.copy_from_slice(black_box(&src));
            black_box(&mut copy);
        }
    };

    for _ in 0..WARM_UP {
        for op in 0..names.len() {
            run(op);
        }
    }
    let mut samples = vec![vec![0.0f64; SAMPLES]; names.len()];
    for rep in 0..SAMPLES {
        for (op, times) in samples.iter_mut().enumerate() {
            // One untimed run brings the operation's buffers back into cache after the
            // other operations evicted them, as criterion's back-to-back iterations do.
            run(op);
            let start = Instant::now();
            for _ in 0..BATCH {
                run(op);
            }
            times[rep] = start.elapsed().as_secs_f64() * 1e6 / BATCH as f64;
        }
    }
    let medians: Vec<f64> = samples.iter_mut().map(|s| median_us(s)).collect();
    let memcpy = medians[memcpy_op];
    let (overhead_pct, frame_len, header_len) = header_overhead();

    let mut json = String::from("{");
    for (name, m) in names.iter().zip(&medians) {
        json.push_str(&format!("\"{name}_us\":{m:.1},"));
    }
    for (name, m) in names.iter().zip(&medians).take(memcpy_op) {
        json.push_str(&format!("\"{name}_vs_memcpy\":{:.3},", m / memcpy));
    }
    json.push_str(&format!(
        "\"memcpy_gib_s\":{:.2},\"samples\":{SAMPLES},\"batch\":{BATCH},\
         \"header_frame_len\":{frame_len},\"header_bytes\":{header_len},\
         \"header_overhead_pct\":{overhead_pct:.3}}}",
        (MODEL_LEN * 4) as f64 / (memcpy * 1e-6) / (1u64 << 30) as f64,
    ));
    println!("{json}");
}
