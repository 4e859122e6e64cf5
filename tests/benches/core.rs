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
use asap_core::wire::{self, Encoding, F32Le, Header, Integrity, Kind, NodeId};
use criterion::{BenchmarkId, Criterion, Throughput};

/// Values in the model: 4 MiB of `f32`.
const MODEL_LEN: usize = 1 << 20;
/// Bytes in the model.
const MODEL_BYTES: u64 = (MODEL_LEN * 4) as u64;
/// A frame that fits an Ethernet MTU with room for UDP/IP headers.
const SMALL_FRAME: usize = 1_400;

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

/// Prints the header overhead of a realistic 1,400-byte update frame as one JSON line.
fn print_header_overhead() {
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
    let trailer_bytes = Integrity::Crc32.trailer_len();
    assert_eq!(frame_len, header_len + payload_bytes + trailer_bytes);
    let overhead_pct = (frame_len - payload_bytes) as f64 / frame_len as f64 * 100.0;
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
            b.iter(|| encode_decode_all(black_box(&model), chunk_len, buf));
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
