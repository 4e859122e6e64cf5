//! `decode`: `wire::peek` and `wire::decode` on arbitrary bytes.
//!
//! Neither may panic; they must agree with each other; and a frame that decodes must
//! re-encode (`wire::seal_with` of its header and payload bytes, whatever the payload's
//! encoding) to exactly the bytes it was decoded from. Bytes are compared, not structs: an update's weight may be a NaN.

use asap_core::wire::{self, Header, Sealing, CRC_LEN, MAX_HEADER_LEN};

/// Encodes `header` alone (no payload) to compare two headers bit for bit.
fn header_bytes(header: Header) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_HEADER_LEN + CRC_LEN];
    let n = wire::encode(header, &[], &mut buf).expect("a header always fits MAX_HEADER_LEN");
    buf.truncate(n);
    buf
}

/// The target body.
pub fn run(data: &[u8]) {
    let peeked = wire::peek(data);
    if let Ok((_, header_len)) = peeked {
        assert!(
            header_len <= data.len(),
            "peek took {header_len} of {} bytes",
            data.len()
        );
    }
    let (frame, used) = match wire::decode(data) {
        Ok(decoded) => decoded,
        Err(e) => {
            // decode parses the header with peek first: a header error is peek's.
            if let Err(p) = peeked {
                assert_eq!(p, e, "peek and decode disagree");
            }
            return;
        }
    };
    let (peek_header, header_len) = peeked.expect("decode succeeded where peek failed");
    assert!(used <= data.len());
    assert_eq!(used, header_len + frame.payload.len() + CRC_LEN, "frame length");
    assert_eq!(usize::from(frame.header.payload_len), frame.payload.len());
    assert_eq!(
        header_bytes(peek_header),
        header_bytes(frame.header),
        "peek and decode read different headers"
    );

    // The payload as it came, whatever its encoding.
    let mut buf = vec![0u8; MAX_HEADER_LEN + frame.payload.len() + CRC_LEN];
    let n = wire::seal_with(frame.header, frame.payload.len(), &mut buf, Sealing::Crc, |out| {
        out.copy_from_slice(frame.payload)
    })
    .expect("re-encoding fits");
    let again = &buf[..n];
    let original = &data[..used];
    if crate::AVOID_KNOWN_BUGS && again != original && n < used {
        // Known bug: postcard accepts over-long varints, so a header has many encodings.
        // Check at least that the canonical one means the same and the payload is kept.
        let (canonical, m) = wire::decode(again).expect("the canonical encoding decodes");
        assert_eq!(m, n);
        assert_eq!(header_bytes(canonical.header), header_bytes(frame.header));
        assert_eq!(canonical.payload, frame.payload);
        assert_eq!(&again[n - frame.payload.len() - CRC_LEN..n - CRC_LEN], frame.payload);
        return;
    }
    assert!(
        again == original,
        "decode(bytes) re-encodes to other bytes\n  decoded:    {original:02x?}\n  re-encoded: {again:02x?}\n  header: {:?}",
        frame.header
    );
    assert!(header_len <= MAX_HEADER_LEN, "header of {header_len} bytes");
}
