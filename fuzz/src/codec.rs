//! `codec`: the compressed payload encodings (`asap_core::compress`) on arbitrary bytes.
//!
//! The first byte picks the encoding, the second the chunk's length (0..=255 values);
//! the rest is the payload. Checks: nothing panics; `check`, `fold` and `decode` agree
//! on what they accept; a refused fold leaves the accumulator bit for bit as it was;
//! what decodes is finite; f16 and bf16 payloads re-encode to exactly their bytes. Then
//! the same bytes read as `f32` values: every compression encodes them (or refuses
//! non-finite ones before writing), the payload decodes, and folding the payload equals
//! `fold_quantized` of the values bit for bit (what the sender adds to its public copy
//! is what every receiver adds).

use asap_core::compress::{self, Compression};
use asap_core::wire::Encoding;

const ENCODINGS: [Encoding; 5] = [
    Encoding::F32Le,
    Encoding::F16Le,
    Encoding::Bf16Le,
    Encoding::Q8,
    Encoding::TopK,
];

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// The target body.
pub fn run(data: &[u8]) {
    let [selector, len, payload @ ..] = data else {
        return;
    };
    let encoding = ENCODINGS[usize::from(*selector) % ENCODINGS.len()];
    let len = usize::from(*len);

    // Arbitrary payloads.
    let checked = compress::check(encoding, payload, len);
    let start: Vec<f32> = (0..len).map(|k| k as f32 * 0.25 - 3.0).collect();
    let mut acc = start.clone();
    let folded = compress::fold(encoding, payload, 0.5, &mut acc);
    let mut out = vec![f32::NAN; len];
    let decoded = compress::decode(encoding, payload, &mut out);
    assert_eq!(checked.is_ok(), decoded.is_ok(), "check and decode disagree");
    match folded {
        Ok(()) => assert!(checked.is_ok(), "fold took what check refuses"),
        // Refused: nothing changed. (A fold may also refuse a payload check accepts,
        // when a sum overflows; not here, with small accumulators.)
        Err(_) => {
            assert_eq!(bits(&acc), bits(&start), "a refused fold changed the accumulator");
            assert!(checked.is_err(), "fold refused what check accepts");
        }
    }
    if decoded.is_ok() {
        assert!(out.iter().all(|v| v.is_finite()), "decoded a non-finite value");
        let again = match encoding {
            Encoding::F16Le => Some(Compression::F16),
            Encoding::Bf16Le => Some(Compression::Bf16),
            _ => None,
        };
        if let Some(c) = again {
            let mut buf = vec![0u8; payload.len()];
            let n = compress::encode(c, &out, &mut buf).expect("finite values encode");
            assert_eq!(&buf[..n], payload, "{c:?} payload re-encodes to other bytes");
        }
    }

    // The same bytes as values, through every compression.
    let (words, _) = payload.as_chunks::<4>();
    let values: Vec<f32> = words.iter().map(|w| f32::from_le_bytes(*w)).collect();
    let fraction = f32::from(len.max(1) as u8) / 255.0;
    for c in [
        Compression::None,
        Compression::F16,
        Compression::Bf16,
        Compression::Q8,
        Compression::TopK { fraction },
    ] {
        let mut buf = vec![0xa5u8; c.payload_len(values.len())];
        let Ok(n) = compress::encode(c, &values, &mut buf) else {
            assert!(values.iter().any(|v| !v.is_finite()), "{c:?} refused finite values");
            assert!(buf.iter().all(|b| *b == 0xa5), "{c:?} wrote before refusing");
            continue;
        };
        assert_eq!(n, buf.len());
        let zeros = vec![0.0f32; values.len()];
        let (mut by_payload, mut by_values) = (zeros.clone(), zeros);
        let a = compress::fold(c.encoding(), &buf, 1.0, &mut by_payload);
        let b = compress::fold_quantized(c, &values, 1.0, &mut by_values);
        assert_eq!(a, b, "{c:?}: payload and values fold differently");
        assert_eq!(bits(&by_payload), bits(&by_values), "{c:?}: the public copy would part");
    }
}
