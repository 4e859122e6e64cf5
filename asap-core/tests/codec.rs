//! Property tests of the frame codec: every kind round-trips; no byte string makes the
//! decoder panic or read past its input; corrupted frames are refused.

use asap_core::wire::{self, Encoding, Header, Integrity, Kind, NodeId, MAX_FRAME_LEN, MAX_HEADER_LEN};
use proptest::prelude::*;

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        (any::<u32>(), any::<u32>(), any::<bool>(), 0..5u8).prop_map(|(model_len, chunk_len, reply, e)| {
            let encoding = [
                Encoding::F32Le,
                Encoding::F16Le,
                Encoding::Bf16Le,
                Encoding::Q8,
                Encoding::TopK,
            ][e as usize];
            Kind::Hello {
                model_len,
                chunk_len,
                encoding,
                reply,
            }
        }),
        (any::<u32>(), any::<u32>(), any::<f32>()).prop_map(|(chunk, chunks, weight)| {
            Kind::Update {
                chunk,
                chunks,
                weight,
                encoding: Encoding::F32Le,
            }
        }),
        any::<u32>().prop_map(|chunks| Kind::Notify { chunks }),
        Just(Kind::Ack),
        (any::<u32>(), any::<u64>()).prop_map(|(base, mask)| Kind::Missing { base, mask }),
        Just(Kind::Heartbeat),
        Just(Kind::Barrier),
        Just(Kind::Leave),
    ]
}

fn header() -> impl Strategy<Value = Header> {
    (
        any::<u32>(),
        any::<u16>(),
        any::<u32>(),
        any::<u16>(),
        any::<u32>(),
        kind(),
    )
        .prop_map(|(cluster, from, incarnation, to, round, kind)| Header {
            version: wire::VERSION,
            integrity: Integrity::Crc32,
            cluster,
            from: NodeId(from),
            incarnation,
            to: NodeId(to),
            round,
            kind,
            payload_len: 0,
        })
}

/// A header and a payload that fits its kind (values only for updates).
fn frame() -> impl Strategy<Value = (Header, Vec<f32>)> {
    (header(), proptest::collection::vec(any::<f32>(), 1..400)).prop_map(|(h, values)| match h.kind {
        Kind::Update { .. } => (h, values),
        _ => (h, Vec::new()),
    })
}

fn encoded(h: Header, values: &[f32]) -> Vec<u8> {
    let mut buf = vec![0xa5; MAX_HEADER_LEN + 4 * values.len() + 4];
    let len = wire::encode(h, values, &mut buf).expect("buffer sized for the frame");
    buf.truncate(len);
    buf
}

proptest! {
    #[test]
    fn every_kind_round_trips((h, values) in frame()) {
        let bytes = encoded(h, &values);
        let (frame, used) = wire::decode(&bytes).expect("own frames decode");
        prop_assert_eq!(used, bytes.len());
        // Re-encoding compares bytes, so NaN weights and values compare too.
        let again = encoded(frame.header, &wire::F32Le::new(frame.payload).unwrap().iter().collect::<Vec<_>>());
        prop_assert_eq!(&again, &bytes);
        prop_assert_eq!(frame.header.payload_len as usize, 4 * values.len());
        prop_assert_eq!((frame.header.from, frame.header.to, frame.header.round), (h.from, h.to, h.round));
        for (got, want) in wire::F32Le::new(frame.payload).unwrap().iter().zip(&values) {
            prop_assert_eq!(got.to_bits(), want.to_bits());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2_000)) {
        if let Ok((frame, used)) = wire::decode(&bytes) {
            prop_assert!(used <= bytes.len());
            prop_assert!(frame.payload.len() <= used);
        }
        let _ = wire::peek(&bytes);
    }

    #[test]
    fn frames_with_a_version_byte_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut bytes = vec![wire::VERSION, 0];
        bytes.extend(tail);
        let _ = wire::decode(&bytes);
    }

    #[test]
    fn corrupted_frames_are_refused((h, values) in frame(), at in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let mut bytes = encoded(h, &values);
        let i = at.index(bytes.len());
        bytes[i] ^= flip;
        prop_assert!(wire::decode(&bytes).is_err(), "byte {} xor {:#x} went unnoticed", i, flip);
    }

    #[test]
    fn truncated_frames_are_refused((h, values) in frame(), cut in any::<prop::sample::Index>()) {
        let bytes = encoded(h, &values);
        let keep = cut.index(bytes.len());
        prop_assert!(wire::decode(&bytes[..keep]).is_err());
    }

    #[test]
    fn frames_concatenate_in_a_stream(a in frame(), b in frame()) {
        let mut stream = encoded(a.0, &a.1);
        let first = stream.len();
        stream.extend(encoded(b.0, &b.1));
        let (_, used) = wire::decode(&stream).unwrap();
        prop_assert_eq!(used, first);
        let (frame, used) = wire::decode(&stream[first..]).unwrap();
        prop_assert_eq!(used, stream.len() - first);
        prop_assert_eq!(frame.header.round, b.0.round);
    }
}

#[test]
fn largest_frame_fits_max_frame_len() {
    let n = wire::chunk_len_for_frame(MAX_FRAME_LEN, Integrity::Crc32);
    let h = Header {
        version: wire::VERSION,
        integrity: Integrity::Crc32,
        cluster: u32::MAX,
        from: NodeId(u16::MAX),
        incarnation: u32::MAX,
        to: NodeId(u16::MAX),
        round: u32::MAX,
        kind: Kind::Update {
            chunk: u32::MAX,
            chunks: u32::MAX,
            weight: 0.5,
            encoding: Encoding::F32Le,
        },
        payload_len: 0,
    };
    let bytes = encoded(h, &vec![1.0; n]);
    assert!(bytes.len() <= MAX_FRAME_LEN);
    assert!(wire::decode(&bytes).is_ok());
}
