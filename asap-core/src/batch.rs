//! Batches of datagrams: an engine's frames for one peer laid back to back in the
//! caller's buffer, each the same number of bytes but the last, so a transport hands the
//! kernel one buffer per peer per system call (Linux `UDP_SEGMENT`) instead of one per
//! frame: per-frame costs, not bytes, bound a round at the frame sizes a real network
//! needs. quinn-proto's `poll_transmit` does the same for QUIC packets.

use crate::output::Transmit;
use crate::time::Instant;
use crate::wire::BufferTooSmall;

/// An engine's next data frames to one peer, seen one ahead.
pub(crate) trait DataFrames {
    /// Payload bytes of the next frame, if there is one (0: a NOTIFY), without taking it.
    fn peek_payload(&self, now: Instant) -> Option<usize>;
    /// Takes the next frame, written to the front of `buf`.
    fn next_frame(&mut self, now: Instant, buf: &mut [u8]) -> Result<Option<Transmit>, BufferTooSmall>;
}

/// Appends `frames` to the batch `first` began (a frame carrying `payload` bytes of
/// data), up to `max_segments` frames and as many as `buf` holds at `max_frame` bytes
/// each: the update's equal chunks, then a shorter one (the model's last chunk, or the
/// NOTIFY) ends the batch, as a batch of datagrams must.
///
/// Equal chunks can still differ in length by a byte or two where a varint of the
/// header (the sequence number, the chunk index) gains a byte. A shorter one is padded
/// with zeros to the segment size (a frame is self-delimiting: receivers ignore bytes
/// after it); a longer one widens every segment of the batch ([`restride`]).
pub(crate) fn extend(
    frames: &mut impl DataFrames,
    now: Instant,
    first: Transmit,
    payload: usize,
    buf: &mut [u8],
    max_frame: usize,
    max_segments: usize,
) -> Result<Transmit, BufferTooSmall> {
    let mut batch = first;
    if payload == 0 {
        return Ok(batch); // a NOTIFY: shorter than any chunk, it goes alone
    }
    let mut segments = 1;
    while segments < max_segments && (segments + 1) * max_frame <= buf.len() {
        let last = match frames.peek_payload(now) {
            Some(next) if next == payload => false,
            Some(next) if next < payload => true,
            _ => break,
        };
        let at = segments * batch.segment_size;
        let Some(t) = frames.next_frame(now, &mut buf[at..at + max_frame])? else {
            break;
        };
        if t.len > batch.segment_size {
            restride(buf, segments, batch.segment_size, t.len);
            batch.segment_size = t.len;
        }
        segments += 1;
        let at = (segments - 1) * batch.segment_size;
        if last {
            batch.len = at + t.len;
            break;
        }
        buf[at + t.len..at + batch.segment_size].fill(0);
        batch.len = at + batch.segment_size;
    }
    Ok(batch)
}

/// Widens the segments of a batch from `old` to `new` bytes, zero-padded: the
/// `segments` frames at `k * old` and the one just written after them (at
/// `segments * old`, `new` bytes) move to `k * new`, from the last down so nothing is
/// overwritten before it moved.
fn restride(buf: &mut [u8], segments: usize, old: usize, new: usize) {
    buf.copy_within(segments * old..segments * old + new, segments * new);
    for k in (1..segments).rev() {
        buf.copy_within(k * old..(k + 1) * old, k * new);
    }
    for k in 0..segments {
        buf[k * new + old..(k + 1) * new].fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::NodeId;

    /// Frames of given lengths, each filled with its index + 1.
    struct Lengths {
        lens: [usize; 6],
        payloads: [usize; 6],
        next: usize,
    }

    impl DataFrames for Lengths {
        fn peek_payload(&self, _: Instant) -> Option<usize> {
            self.payloads.get(self.next).copied()
        }

        fn next_frame(&mut self, _: Instant, buf: &mut [u8]) -> Result<Option<Transmit>, BufferTooSmall> {
            let Some(&len) = self.lens.get(self.next) else {
                return Ok(None);
            };
            self.next += 1;
            buf[..len].fill(self.next as u8);
            Ok(Some(Transmit::one(NodeId(1), len)))
        }
    }

    fn batch(lens: [usize; 6], payloads: [usize; 6], max_segments: usize) -> (Transmit, [u8; 64]) {
        let mut frames = Lengths {
            lens,
            payloads,
            next: 0,
        };
        let mut buf = [0xffu8; 64];
        let first = frames.next_frame(Instant::ZERO, &mut buf).unwrap().unwrap();
        let t = extend(
            &mut frames,
            Instant::ZERO,
            first,
            payloads[0],
            &mut buf,
            8,
            max_segments,
        )
        .unwrap();
        (t, buf)
    }

    #[test]
    fn equal_frames_then_a_shorter_last_one() {
        let (t, buf) = batch([5, 5, 5, 3, 5, 5], [4, 4, 4, 2, 4, 4], 64);
        assert_eq!((t.len, t.segment_size, t.segments()), (18, 5, 4));
        assert_eq!(&buf[..18], &[1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 4, 4, 4]);
    }

    #[test]
    fn a_longer_frame_widens_the_segments_and_pads_the_earlier_ones() {
        let (t, buf) = batch([5, 5, 6, 5, 6, 6], [4; 6], 4);
        assert_eq!((t.len, t.segment_size, t.segments()), (24, 6, 4));
        assert_eq!(
            &buf[..24],
            &[1, 1, 1, 1, 1, 0, 2, 2, 2, 2, 2, 0, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4, 4, 0],
            "a frame a byte shorter than its segment is padded"
        );
    }

    #[test]
    fn stops_at_the_buffer_the_segment_cap_or_a_longer_payload() {
        // 64 bytes hold 8 frames of max_frame 8.
        assert_eq!(batch([5; 6], [4; 6], 64).0.segments(), 6);
        assert_eq!(batch([5; 6], [4; 6], 3).0.segments(), 3);
        let (t, _) = batch([5, 5, 7, 5, 5, 5], [4, 4, 6, 4, 4, 4], 64);
        assert_eq!(t.segments(), 2, "a frame with more data goes in the next batch");
        let (t, _) = batch([2, 5, 5, 5, 5, 5], [0, 4, 4, 4, 4, 4], 64);
        assert_eq!((t.len, t.segments()), (2, 1), "a NOTIFY goes alone");
    }
}
