//! Plain-timer companion of the `core` bench: times, in one run, folding, encoding +
//! decoding (plain, authenticated, encrypted, and each compressed encoding: encode +
//! fold), the round's snapshot of the parameters (checked, then copied; or both in one
//! pass) and `memcpy` of the same 4 MiB (1,048,576 `f32`) model and prints ONE JSON
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
mod common;

use asap_core::auth::Key;
use asap_core::compress::{self, Compression};
use asap_core::wire::{self, Integrity, Sealing};
use common::*;

/// Untimed runs of each operation before sampling.
const WARM_UP: usize = 5;
/// Timed samples of each operation.
const SAMPLES: usize = 31;
/// Back-to-back runs a sample times (it reports their mean).
const BATCH: u32 = 4;

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
    let key = Key::new([0x5a; 32]);
    let cipher = asap_core::auth::Cipher::from_key(&key, asap_core::auth::CipherSuite::XChaCha20Poly1305)
        .expect("built with encrypt");
    let aes =
        asap_core::auth::Cipher::from_key(&key, asap_core::auth::CipherSuite::Aes256Gcm).expect("built with aes-gcm");
    // Both keyed schemes have the same header bound and trailer, so the same chunks.
    let small_keyed = wire::chunk_len_for_frame(SMALL_FRAME, Integrity::Blake3 { seq: 0 });
    let large_keyed = wire::chunk_len_for_frame(wire::MAX_FRAME_LEN, Integrity::Blake3 { seq: 0 });
    let names = [
        "fold_chunked",
        "fold_whole",
        "frames_1400",
        "frames_65536",
        "init_chunked",
        "keyed_frames_1400",
        "keyed_frames_65536",
        "encrypted_frames_1400",
        "encrypted_frames_65536",
        "aes_gcm_frames_1400",
        "aes_gcm_frames_65536",
        "codec_f16",
        "codec_bf16",
        "codec_q8",
        "codec_topk_0.01",
        "snapshot_check_then_copy",
        "snapshot_copy_finite",
        "memcpy",
    ];
    let memcpy_op = names.len() - 1;
    let codecs = [
        Compression::F16,
        Compression::Bf16,
        Compression::Q8,
        Compression::TopK { fraction: 0.01 },
    ];
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
        2 => encode_decode_all(black_box(&src), small_chunk, &mut buf[..SMALL_FRAME], Sealing::Crc),
        3 => encode_decode_all(black_box(&src), large_chunk, &mut buf, Sealing::Crc),
        4 => {
            for (a, v) in acc.chunks_mut(small_chunk).zip(values.chunks(small_chunk)) {
                reduce::init_le(a, 0.5, black_box(v)).expect("finite");
            }
            black_box(&mut acc);
        }
        5 => encode_decode_all(
            black_box(&src),
            small_keyed,
            &mut buf[..SMALL_FRAME],
            Sealing::Tag(&key),
        ),
        6 => encode_decode_all(black_box(&src), large_keyed, &mut buf, Sealing::Tag(&key)),
        7 => encode_decode_all(
            black_box(&src),
            small_keyed,
            &mut buf[..SMALL_FRAME],
            Sealing::Encrypt(&cipher),
        ),
        8 => encode_decode_all(black_box(&src), large_keyed, &mut buf, Sealing::Encrypt(&cipher)),
        9 => encode_decode_all(
            black_box(&src),
            small_keyed,
            &mut buf[..SMALL_FRAME],
            Sealing::Encrypt(&aes),
        ),
        10 => encode_decode_all(black_box(&src), large_keyed, &mut buf, Sealing::Encrypt(&aes)),
        // The compressed payloads: encode the whole model chunk by chunk (64 KiB frames)
        // and fold each payload back (what sender and receiver do per update).
        11..=14 => {
            let compression = codecs[op - 11];
            let chunk = compression.chunk_values(wire::MAX_FRAME_LEN - 64);
            for (a, v) in acc.chunks_mut(chunk).zip(src.chunks(chunk)) {
                let len = compress::encode(compression, black_box(v), &mut buf).expect("finite");
                compress::fold(compression.encoding(), &buf[..len], 0.5, a).expect("finite");
            }
            black_box(&mut acc);
        }
        // A round's snapshot of the parameters, checked for non-finite values: a check
        // pass, then the copy; or both in one pass (what `Node::start_round` does).
        15 => {
            assert!(reduce::all_finite(black_box(&src)));
            copy.copy_from_slice(&src);
            black_box(&mut copy);
        }
        16 => {
            assert!(reduce::copy_finite(&mut copy, black_box(&src)));
            black_box(&mut copy);
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
    let (overhead_pct, frame_len, header_len, _) = header_overhead();

    let mut json = String::from("{");
    for (name, m) in names.iter().zip(&medians) {
        json.push_str(&format!("\"{name}_us\":{m:.1},"));
    }
    for (name, m) in names.iter().zip(&medians).take(memcpy_op) {
        json.push_str(&format!("\"{name}_vs_memcpy\":{:.3},", m / memcpy));
    }
    // What authentication and encryption cost: against CRC frames of the same size.
    json.push_str(&format!(
        "\"keyed_vs_plain_1400\":{:.3},\"keyed_vs_plain_65536\":{:.3},\
         \"encrypted_vs_plain_1400\":{:.3},\"encrypted_vs_plain_65536\":{:.3},",
        medians[5] / medians[2],
        medians[6] / medians[3],
        medians[7] / medians[2],
        medians[8] / medians[3]
    ));
    json.push_str(&format!(
        "\"memcpy_gib_s\":{:.2},\"samples\":{SAMPLES},\"batch\":{BATCH},\
         \"header_frame_len\":{frame_len},\"header_bytes\":{header_len},\
         \"header_overhead_pct\":{overhead_pct:.3}}}",
        (MODEL_LEN * 4) as f64 / (memcpy * 1e-6) / (1u64 << 30) as f64,
    ));
    println!("{json}");
}
