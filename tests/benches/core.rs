//! Criterion benchmarks of the hot paths of a node, each against a `memcpy` of the same
//! 4 MiB (1,048,576 `f32`) model:
//!
//! * `fold_4MiB`: [`reduce::fold_le`] of a little-endian update into the accumulator, in
//!   chunks of a 1,400-byte frame and as one slice;
//! * `frames_4MiB`: [`wire::encode`] + [`wire::decode`] of the whole model, frame by frame,
//!   for 1,400- and 65,536-byte frames.
//!
//! Before the timed groups it prints (once, to stderr) the header overhead of a realistic
//! 1,400-byte update frame as one JSON line. The `ratios` bench measures the same
//! operations with plain timers and prints their ratios to `memcpy` from one run.

use core::hint::black_box;

use asap_core::reduce;
mod common;

use asap_core::wire::{self, Integrity, Sealing};
use common::*;
use criterion::{BenchmarkId, Criterion, Throughput};

/// Bytes in the model.
const MODEL_BYTES: u64 = (MODEL_LEN * 4) as u64;

/// Prints the header overhead of a realistic 1,400-byte update frame as one JSON line.
fn print_header_overhead() {
    let (overhead_pct, frame_len, header_len, payload_bytes) = header_overhead();
    let trailer_bytes = Integrity::Crc32.trailer_len();
    assert_eq!(frame_len, header_len + payload_bytes + trailer_bytes);
    eprintln!(
        "{{\"frame_bytes\":{SMALL_FRAME},\"frame_len\":{frame_len},\"header_bytes\":{header_len},\
         \"trailer_bytes\":{trailer_bytes},\"payload_bytes\":{payload_bytes},\
         \"overhead_pct\":{overhead_pct:.3}}}"
    );
}

fn bench_fold(c: &mut Criterion) {
    let src = model();
    let bytes: Vec<u8> = src.iter().flat_map(|v| v.to_le_bytes()).collect();
    let (values, rest) = bytes.as_chunks::<4>();
    assert!(rest.is_empty());
    let mut acc = vec![0.0f32; MODEL_LEN];
    let chunk_len = wire::chunk_len_for_frame(SMALL_FRAME, Integrity::Crc32);

    let mut group = c.benchmark_group("fold_4MiB");
    group.throughput(Throughput::Bytes(MODEL_BYTES));
    group.bench_function(BenchmarkId::new("fold_le_chunked", chunk_len), |b| {
        b.iter(|| {
            for (a, v) in acc.chunks_mut(chunk_len).zip(values.chunks(chunk_len)) {
                reduce::fold_le(a, 0.5, black_box(v)).expect("finite");
            }
            black_box(&mut acc);
        });
    });
    group.bench_function("fold_le_whole", |b| {
        b.iter(|| {
            reduce::fold_le(&mut acc, 0.5, black_box(values)).expect("finite");
            black_box(&mut acc);
        });
    });
    group.bench_function("memcpy", |b| {
        b.iter(|| {
            acc.copy_from_slice(black_box(&src));
            black_box(&mut acc);
        });
    });
    group.finish();
}

fn bench_frames(c: &mut Criterion) {
    let model = model();
    let mut copy = vec![0.0f32; MODEL_LEN];
    let mut buf = vec![0u8; wire::MAX_FRAME_LEN];

    let mut group = c.benchmark_group("frames_4MiB");
    group.throughput(Throughput::Bytes(MODEL_BYTES));
    for frame_len in [SMALL_FRAME, wire::MAX_FRAME_LEN] {
        let chunk_len = wire::chunk_len_for_frame(frame_len, Integrity::Crc32);
        let buf = &mut buf[..frame_len];
        group.bench_function(BenchmarkId::new("encode_decode", frame_len), |b| {
            b.iter(|| encode_decode_all(black_box(&model), chunk_len, buf, Sealing::Crc));
        });
    }
    group.bench_function("memcpy", |b| {
        b.iter(|| {
            copy.copy_from_slice(black_box(&model));
            black_box(&mut copy);
        });
    });
    group.finish();
}

fn main() {
    print_header_overhead();
    let mut c = Criterion::default().configure_from_args();
    bench_fold(&mut c);
    bench_frames(&mut c);
    c.final_summary();
}
