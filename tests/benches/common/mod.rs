//! Helpers both benches share: the model, a realistic update header, the frame loop and
//! the header overhead.

use core::hint::black_box;

use asap_core::wire::{self, Encoding, F32Le, Header, Integrity, Kind, NodeId, Sealing};

/// Values in the model: 4 MiB of `f32`.
pub(crate) const MODEL_LEN: usize = 1 << 20;
/// A frame that fits an Ethernet MTU with room for UDP/IP headers.
pub(crate) const SMALL_FRAME: usize = 1_400;

/// A model of ordinary, finite, normal values.
pub(crate) fn model() -> Vec<f32> {
    (0..MODEL_LEN)
        .map(|i| ((i % 1_000) as f32 - 500.0) * 1e-3 + 1e-4)
        .collect()
}

/// The header of an update chunk as a busy node sends it.
pub(crate) fn update_header(chunk: u32, chunks: u32) -> Header {
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

/// Encodes every chunk of `model` into one reused frame buffer and decodes it again,
/// authenticated with `key` if given (sealed with its tag, verified on decoding).
pub(crate) fn encode_decode_all(model: &[f32], chunk_len: usize, buf: &mut [u8], sealing: Sealing<'_>) {
    let chunks = u32::try_from(model.len().div_ceil(chunk_len)).expect("chunk count fits u32");
    for (i, range) in model.chunks(chunk_len).enumerate() {
        let chunk = u32::try_from(i).expect("chunk index fits u32");
        let mut header = update_header(chunk, chunks);
        header.integrity = sealing.integrity(i as u64);
        let len = wire::seal(header, range, buf, sealing).expect("frame fits");
        let (frame, _) = wire::open(&mut buf[..len], sealing).expect("frame decodes");
        black_box(F32Le::new(frame.payload).expect("whole values").raw());
    }
}

/// A full update frame at [`SMALL_FRAME`] with realistic header values:
/// `(overhead in percent of the frame, frame length, header length, payload bytes)`.
pub(crate) fn header_overhead() -> (f64, usize, usize, usize) {
    let chunk_len = wire::chunk_len_for_frame(SMALL_FRAME, Integrity::Crc32);
    let chunks = u32::try_from(MODEL_LEN.div_ceil(chunk_len)).expect("chunk count fits u32");
    let kind = Kind::Update {
        chunk: 2_000,
        chunks,
        weight: 0.5,
        encoding: Encoding::F32Le,
    };
    let header = Header {
        cluster: 0x5eed,
        round: 123_456,
        kind,
        ..update_header(0, 1)
    };
    let mut buf = vec![0u8; SMALL_FRAME];
    let frame_len = wire::encode(header, &vec![0.25f32; chunk_len], &mut buf).expect("frame fits");
    let (_, header_len) = wire::peek(&buf[..frame_len]).expect("header parses");
    let payload_bytes = chunk_len * 4;
    let pct = (frame_len - payload_bytes) as f64 / frame_len as f64 * 100.0;
    (pct, frame_len, header_len, payload_bytes)
}
