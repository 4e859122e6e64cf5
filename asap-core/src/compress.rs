//! Compressed payloads: the encodings an update chunk may travel in, and their kernels.
//!
//! | encoding | bytes for `n` values | what the receiver gets |
//! |---|---|---|
//! | `F32Le` | `4n` | the values |
//! | `F16Le` | `2n` | IEEE binary16, round to nearest even, saturated at ±65,504 |
//! | `Bf16Le` | `2n` | bfloat16 (f32's range, 8 bits of mantissa), round to nearest even |
//! | `Q8` | `8 + n` | `lo + step·c` for a code `c` in `0..=255` per value; `lo` and `step` (f32) lead the chunk |
//! | `TopK` | `8k` | the `k` values of largest magnitude, as (index `u32`, value `f32`) pairs with rising indices; the others are 0 |
//!
//! Non-finite inputs are refused before anything is encoded ([`CodecError::NonFinite`]);
//! a payload that would decode to a non-finite value, or whose top-k indices are not
//! rising or out of the chunk, is refused before anything is folded, so a refused fold
//! changes nothing. What compression drops is not lost: the sender carries it to the
//! next round (see `Node`'s compressed mode).
//!
//! The kernels are plain loops over slices (no allocation, no `unsafe`), written so the
//! compiler can vectorise them; top-k finds its threshold by bisection over the bit
//! patterns of the magnitudes (32 counting passes) instead of sorting a copy.

use core::fmt;

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use crate::wire::Encoding;
pub use crate::wire::{Q8_HEADER, TOP_K_ENTRY};

/// What a node compresses its updates with. Every member of a cluster must agree (the
/// join handshake checks it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Compression {
    /// Raw `f32` (the default).
    None,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
    /// 8-bit linear quantisation per chunk.
    Q8,
    /// The largest `fraction` of each chunk's values by magnitude, `fraction` in
    /// `(0, 1]`.
    TopK {
        /// Share of the values sent.
        fraction: f32,
    },
}

/// Names of the compressions, as configuration files and command lines spell them:
/// `none`, `f16`, `bf16`, `q8`, `topk:FRACTION` (e.g. `topk:0.01`).
impl core::str::FromStr for Compression {
    type Err = UnknownCompression;

    fn from_str(s: &str) -> Result<Self, UnknownCompression> {
        let c = match s {
            "none" | "f32" => Compression::None,
            "f16" => Compression::F16,
            "bf16" => Compression::Bf16,
            "q8" => Compression::Q8,
            _ => {
                let fraction = s.strip_prefix("topk:").and_then(|f| f.parse().ok());
                Compression::TopK {
                    fraction: fraction.ok_or(UnknownCompression)?,
                }
            }
        };
        if c.is_valid() {
            Ok(c)
        } else {
            Err(UnknownCompression)
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::F16 => f.write_str("f16"),
            Compression::Bf16 => f.write_str("bf16"),
            Compression::Q8 => f.write_str("q8"),
            Compression::TopK { fraction } => write!(f, "topk:{fraction}"),
        }
    }
}

/// A compression name that is none of `none`, `f16`, `bf16`, `q8`, `topk:F` with `F`
/// in `(0, 1]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownCompression;

impl fmt::Display for UnknownCompression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a compression is one of none, f16, bf16, q8, or topk:F with F in (0, 1] (e.g. topk:0.01)")
    }
}

impl core::error::Error for UnknownCompression {}

/// Why values could not be encoded, or a payload decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodecError {
    /// A value (or what a payload decodes to) is NaN or infinite.
    NonFinite,
    /// The payload's length does not fit the encoding and the chunk's length.
    Length,
    /// Top-k indices not rising, or past the chunk.
    Index,
    /// The output buffer is too small; this many bytes are needed.
    BufferTooSmall(usize),
    /// The compression's parameter is out of range (top-k fraction not in `(0, 1]`).
    Parameter,
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::NonFinite => f.write_str("non-finite value"),
            CodecError::Length => f.write_str("payload length does not fit the encoding"),
            CodecError::Index => f.write_str("top-k indices not rising or out of range"),
            CodecError::BufferTooSmall(n) => write!(f, "buffer too small: {n} bytes needed"),
            CodecError::Parameter => f.write_str("top-k fraction not in (0, 1]"),
        }
    }
}

impl core::error::Error for CodecError {}

impl Compression {
    /// The wire encoding of its payloads.
    pub const fn encoding(self) -> Encoding {
        match self {
            Compression::None => Encoding::F32Le,
            Compression::F16 => Encoding::F16Le,
            Compression::Bf16 => Encoding::Bf16Le,
            Compression::Q8 => Encoding::Q8,
            Compression::TopK { .. } => Encoding::TopK,
        }
    }

    /// Whether its parameter is in range.
    pub const fn is_valid(self) -> bool {
        match self {
            Compression::TopK { fraction } => fraction > 0.0 && fraction <= 1.0,
            _ => true,
        }
    }

    /// A consensus step that converges with this compression on a graph with this
    /// spectral gap (`None`: unknown, a peer table): 1 for the dense encodings; for
    /// top-k `2.5 × fraction`, at most 0.5, and at most `30 × gap` on slow mixers.
    /// Measured, not derived (CHOCO's proven step is far smaller): on a ring of 8 top-k
    /// 0.25 diverges at 1 and top-k 0.1 at 0.5, top-k 0.01 needs 0.05; on a ring of 64
    /// (gap 0.003) top-k 0.1 diverges at 0.25 and converges at 0.1.
    pub fn default_step(self, gap: Option<f64>) -> f32 {
        match self {
            Compression::TopK { fraction } => {
                let cap = gap.map_or(0.5, |g| (30.0 * g).min(0.5) as f32);
                (2.5 * fraction).min(cap)
            }
            _ => 1.0,
        }
    }

    /// Top-k entries sent for a chunk of `values` values (`values` itself otherwise).
    pub const fn kept(self, values: usize) -> usize {
        match self {
            Compression::TopK { fraction } => {
                // In f32, as the fraction was given: 0.4 of 5 is 2, not 2.0000000298.
                // Rounded up by hand: `ceil` is not a `const fn`.
                let product = fraction * values as f32;
                let whole = product as usize;
                let k = if (whole as f32) < product { whole + 1 } else { whole };
                if k < values {
                    k
                } else {
                    values
                }
            }
            _ => values,
        }
    }

    /// Largest payload of a chunk of `values` values.
    pub const fn payload_len(self, values: usize) -> usize {
        match self {
            Compression::None => 4 * values,
            Compression::F16 | Compression::Bf16 => 2 * values,
            Compression::Q8 => Q8_HEADER + values,
            Compression::TopK { .. } => TOP_K_ENTRY * self.kept(values),
        }
    }

    /// Most values a chunk may cover when its payload has room for `room` bytes.
    pub const fn chunk_values(self, room: usize) -> usize {
        match self {
            Compression::None => room / 4,
            Compression::F16 | Compression::Bf16 => room / 2,
            Compression::Q8 => room.saturating_sub(Q8_HEADER),
            Compression::TopK { fraction } => {
                if !self.is_valid() {
                    return 0;
                }
                let entries = room / TOP_K_ENTRY;
                let mut values = (entries as f64 / fraction as f64) as usize;
                // Float rounding can overshoot by a value or two.
                while values > 0 && self.kept(values) > entries {
                    values -= 1;
                }
                values
            }
        }
    }
}

/// Encodes `values` into `out` as `compression` says; returns the payload's length.
/// Refuses non-finite values (and a top-k fraction out of range) before writing.
pub fn encode(compression: Compression, values: &[f32], out: &mut [u8]) -> Result<usize, CodecError> {
    if !compression.is_valid() {
        return Err(CodecError::Parameter);
    }
    if !crate::reduce::all_finite(values) {
        return Err(CodecError::NonFinite);
    }
    let len = compression.payload_len(values.len());
    let out = out.get_mut(..len).ok_or(CodecError::BufferTooSmall(len))?;
    match compression {
        Compression::None => crate::reduce::write_f32_le(values, out),
        Compression::F16 => {
            let (pairs, _) = out.as_chunks_mut::<2>();
            f16_blocks(values, |at, block| {
                for (p, h) in pairs[at..].iter_mut().zip(block) {
                    *p = h.to_le_bytes();
                }
            });
        }
        Compression::Bf16 => {
            let (pairs, _) = out.as_chunks_mut::<2>();
            for (p, v) in pairs.iter_mut().zip(values) {
                *p = to_bf16(*v).to_le_bytes();
            }
        }
        Compression::Q8 => {
            let q = Q8::of(values.iter().copied());
            let (head, codes) = out.split_at_mut(Q8_HEADER);
            head[..4].copy_from_slice(&q.lo.to_le_bytes());
            head[4..].copy_from_slice(&q.step.to_le_bytes());
            for (c, v) in codes.iter_mut().zip(values) {
                *c = q.code(*v);
            }
        }
        Compression::TopK { .. } => {
            let (entries, _) = out.as_chunks_mut::<TOP_K_ENTRY>();
            let mut next = entries.iter_mut();
            top_k(values, compression.kept(values.len()), |i, v| {
                if let Some(e) = next.next() {
                    e[..4].copy_from_slice(&(i as u32).to_le_bytes());
                    e[4..].copy_from_slice(&v.to_le_bytes());
                }
            });
        }
    }
    Ok(len)
}

/// `acc += weight · decode(encode(values))`, computed without the bytes: exactly what a
/// receiver folds from the payload (the sender's public copy moves by this). Refuses
/// what [`encode`] refuses and, like [`fold`], a result that would not be finite; on
/// error `acc` is unchanged.
pub fn fold_quantized(
    compression: Compression,
    values: &[f32],
    weight: f32,
    acc: &mut [f32],
) -> Result<(), CodecError> {
    check_quantized(compression, values, weight, acc)?;
    quantized(compression, values, |i, q| acc[i] += weight * q);
    Ok(())
}

/// What [`fold_quantized`] checks, without folding: so a caller can check every chunk
/// before it changes any.
pub fn check_quantized(compression: Compression, values: &[f32], weight: f32, acc: &[f32]) -> Result<(), CodecError> {
    if !compression.is_valid() {
        return Err(CodecError::Parameter);
    }
    if acc.len() != values.len() {
        return Err(CodecError::Length);
    }
    if !crate::reduce::all_finite(values) {
        return Err(CodecError::NonFinite);
    }
    let mut ok = true;
    quantized(compression, values, |i, q| ok &= (acc[i] + weight * q).is_finite());
    if ok {
        Ok(())
    } else {
        Err(CodecError::NonFinite)
    }
}

/// Calls `f(index, value)` with what the receiver decodes, for every value the payload
/// of `values` carries (top-k: only the kept ones). The values must be finite
/// ([`check_quantized`]).
pub fn for_each_quantized(compression: Compression, values: &[f32], f: impl FnMut(usize, f32)) {
    quantized(compression, values, f);
}

/// Checks `payload` for a chunk of `values` values ([`check`]), then calls
/// `f(index, value)` for every value it carries (top-k: only the sent ones).
pub fn for_each_decoded(
    encoding: Encoding,
    payload: &[u8],
    values: usize,
    f: impl FnMut(usize, f32),
) -> Result<(), CodecError> {
    check(encoding, payload, values)?;
    for_each(encoding, payload, f);
    Ok(())
}

/// Whether a chunk of `values` values keeps its payload packed in its own `values` words
/// of the sender's snapshot (see [`q8_pack_difference`]): q8 chunks of three values or
/// more (a payload of `8 + n` bytes takes `2 + ⌈n/4⌉` words). The compressed mode keeps
/// every other chunk as values, quantised again for each frame.
pub(crate) const fn packs(compression: Compression, values: usize) -> bool {
    matches!(compression, Compression::Q8) && (Q8_HEADER + values).div_ceil(4) <= values
}

/// Values a packed q8 chunk is quantised or decoded at a time, on the stack.
const Q8_BLOCK: usize = 64;

/// Quantises the chunk `x − p` as q8, once: writes its payload's bytes into `packed`
/// as little-endian words (`lo`, `step`, then the codes four a word) and calls
/// `f(index of a block's first value, block)` with what the receiver decodes of each
/// value, a block at a time (as [`q8_unpack`]). Returns `false`, having quantised and
/// written nothing, when a difference is not finite. `packed` must hold the payload
/// ([`packs`]).
///
/// The codes travel in `f32` words as bit patterns: only `to_bits` and `from_bits`
/// touch them, never arithmetic, so they come back out exactly as written.
pub(crate) fn q8_pack_difference(x: &[f32], p: &[f32], packed: &mut [f32], mut f: impl FnMut(usize, &[f32])) -> bool {
    if !crate::reduce::all_finite_differences(x, p) {
        return false;
    }
    let q = Q8::of(x.iter().zip(p).map(|(x, p)| x - p));
    let (head, words) = packed.split_at_mut(Q8_HEADER / 4);
    let blocks = x.chunks(Q8_BLOCK).zip(p.chunks(Q8_BLOCK));
    for ((b, (x, p)), words) in blocks.enumerate().zip(words.chunks_mut(Q8_BLOCK / 4)) {
        let (mut codes, mut decoded) = ([0u8; Q8_BLOCK], [0.0f32; Q8_BLOCK]);
        for (((c, v), x), p) in codes.iter_mut().zip(decoded.iter_mut()).zip(x).zip(p) {
            *c = q.code(x - p);
            *v = q.value(*c);
        }
        f(b * Q8_BLOCK, &decoded[..x.len()]);
        // Past the chunk's end the codes are zeros, as padding of the last word.
        let (groups, _) = codes.as_chunks::<4>();
        for (w, group) in words.iter_mut().zip(&groups[..x.len().div_ceil(4)]) {
            *w = f32::from_bits(u32::from_le_bytes(*group));
        }
    }
    head[0] = q.lo;
    head[1] = q.step;
    true
}

/// What each of the `values` values of a packed q8 payload ([`q8_pack_difference`])
/// decodes to, in blocks on the stack: `f(index of the block's first value, block)`, so
/// the caller's loops over a block vectorise.
pub(crate) fn q8_unpack(packed: &[f32], values: usize, mut f: impl FnMut(usize, &[f32])) {
    const BLOCK: usize = Q8_BLOCK;
    let q = Q8 {
        lo: packed[0],
        step: packed[1],
        inverse: 0.0,
    };
    let words = &packed[Q8_HEADER / 4..Q8_HEADER / 4 + values.div_ceil(4)];
    let mut block = [0.0f32; BLOCK];
    for (b, words) in words.chunks(BLOCK / 4).enumerate() {
        let at = b * BLOCK;
        let (groups, _) = block.as_chunks_mut::<4>();
        for (group, w) in groups.iter_mut().zip(words) {
            *group = w.to_bits().to_le_bytes().map(|c| q.value(c));
        }
        f(at, &block[..(values - at).min(BLOCK)]);
    }
}

/// Writes the payload held packed in `packed` ([`q8_pack_difference`]) into `out`, whose
/// length is the payload's.
pub(crate) fn unpack(packed: &[f32], out: &mut [u8]) {
    let (groups, rest) = out.as_chunks_mut::<4>();
    crate::reduce::write_f32_le(&packed[..groups.len()], groups.as_flattened_mut());
    if let Some(last) = packed.get(groups.len()) {
        rest.copy_from_slice(&last.to_le_bytes()[..rest.len()]);
    }
}

fn quantized(compression: Compression, values: &[f32], mut f: impl FnMut(usize, f32)) {
    match compression {
        Compression::None => values.iter().enumerate().for_each(|(i, v)| f(i, *v)),
        Compression::F16 => {
            let mut floats = [0.0f32; F16_BLOCK];
            f16_blocks(values, |at, block| {
                block.convert_to_f32_slice(&mut floats[..block.len()]);
                for (k, v) in floats[..block.len()].iter().enumerate() {
                    f(at + k, *v);
                }
            });
        }
        Compression::Bf16 => values.iter().enumerate().for_each(|(i, v)| f(i, to_bf16(*v).to_f32())),
        Compression::Q8 => {
            let q = Q8::of(values.iter().copied());
            values.iter().enumerate().for_each(|(i, v)| f(i, q.value(q.code(*v))));
        }
        Compression::TopK { .. } => top_k(values, compression.kept(values.len()), f),
    }
}

/// Values converted to f16 at a time (on the stack).
const F16_BLOCK: usize = 64;

/// `values` as f16 (round to nearest even, saturated at ±65,504: never infinite), in
/// blocks: `f(index of the block's first value, block)`. The slice conversion uses the
/// CPU's instructions where it has them (F16C with asap-core's `std` feature).
fn f16_blocks(values: &[f32], mut f: impl FnMut(usize, &[f16])) {
    let (mut clamped, mut halves) = ([0.0f32; F16_BLOCK], [f16::ZERO; F16_BLOCK]);
    let (lo, hi) = (f16::MIN.to_f32(), f16::MAX.to_f32());
    for (b, block) in values.chunks(F16_BLOCK).enumerate() {
        for (c, v) in clamped.iter_mut().zip(block) {
            *c = v.clamp(lo, hi);
        }
        halves[..block.len()].convert_from_f32_slice(&clamped[..block.len()]);
        f(b * F16_BLOCK, &halves[..block.len()]);
    }
}

/// Round to nearest even; what would round past bf16's largest value saturates.
fn to_bf16(v: f32) -> bf16 {
    let b = bf16::from_f32(v);
    if b.is_infinite() {
        bf16::MAX.copysign(b)
    } else {
        b
    }
}

/// A chunk's linear quantisation: `lo`, then `step = (hi - lo) / 255` (computed so it
/// cannot overflow), each value coded as the nearest step.
struct Q8 {
    lo: f32,
    step: f32,
    inverse: f32,
}

impl Q8 {
    /// The quantisation of a chunk of finite `values`.
    fn of(values: impl Iterator<Item = f32>) -> Self {
        let (lo, hi) = values.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
        // No value (finite values leave `lo <= hi`).
        let (lo, hi) = if lo > hi { (0.0, 0.0) } else { (lo, hi) };
        let step = hi / 255.0 - lo / 255.0;
        // A range too narrow for its reciprocal (subnormal steps) is sent as `lo` alone.
        let inverse = if step > 0.0 && (1.0 / step).is_finite() {
            1.0 / step
        } else {
            0.0
        };
        Q8 { lo, step, inverse }
    }

    fn code(&self, v: f32) -> u8 {
        // `(v - lo)` may overflow for a range near f32::MAX; `v·inv - lo·inv` cannot.
        // Clamped, then rounded half up by truncation (no call: the loop vectorises).
        ((v * self.inverse - self.lo * self.inverse).clamp(0.0, 255.0) + 0.5) as u8
    }

    /// What a code decodes to: the same expression the receiver evaluates.
    fn value(&self, code: u8) -> f32 {
        self.lo + self.step * f32::from(code)
    }
}

/// Calls `f(index, value)` for the `k` values of largest magnitude (ties to the lowest
/// indices), in index order.
fn top_k(values: &[f32], k: usize, mut f: impl FnMut(usize, f32)) {
    if k == 0 {
        return;
    }
    // The k-th largest magnitude: the largest bit pattern t with at least k magnitudes
    // >= t (non-negative floats order as their bits).
    let (mut lo, mut hi) = (0u32, 0x7f80_0000u32);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        let at_least = values.iter().filter(|v| v.abs().to_bits() >= mid).count();
        if at_least >= k {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let threshold = lo;
    let above = values.iter().filter(|v| v.abs().to_bits() > threshold).count();
    let mut ties = k.saturating_sub(above);
    for (i, v) in values.iter().enumerate() {
        let bits = v.abs().to_bits();
        if bits > threshold {
            f(i, *v);
        } else if bits == threshold && ties > 0 {
            ties -= 1;
            f(i, *v);
        }
    }
}

/// `acc += weight · decode(payload)`, `acc` being the chunk the payload encodes. Checks
/// first (length, indices, finiteness of every decoded value and of every result):
/// on error `acc` is unchanged.
pub fn fold(encoding: Encoding, payload: &[u8], weight: f32, acc: &mut [f32]) -> Result<(), CodecError> {
    check(encoding, payload, acc.len())?;
    let finite = |x: f32| x.is_finite();
    let mut ok = true;
    // Check pass: every sum must stay finite.
    for_each(encoding, payload, |i, v| ok &= finite(acc[i] + weight * v));
    if !ok {
        return Err(CodecError::NonFinite);
    }
    for_each(encoding, payload, |i, v| acc[i] += weight * v);
    Ok(())
}

/// Writes what `payload` decodes to into `out` (top-k: zeros where nothing was sent).
pub fn decode(encoding: Encoding, payload: &[u8], out: &mut [f32]) -> Result<(), CodecError> {
    check(encoding, payload, out.len())?;
    if encoding == Encoding::TopK {
        out.fill(0.0);
    }
    for_each(encoding, payload, |i, v| out[i] = v);
    Ok(())
}

/// Checks a payload for a chunk of `values` values: its length, top-k's indices, and
/// that every value it decodes to is finite.
pub fn check(encoding: Encoding, payload: &[u8], values: usize) -> Result<(), CodecError> {
    let length_ok = match encoding {
        Encoding::F32Le => payload.len() == 4 * values,
        Encoding::F16Le | Encoding::Bf16Le => payload.len() == 2 * values,
        Encoding::Q8 => payload.len() == Q8_HEADER + values,
        Encoding::TopK => payload.len().is_multiple_of(TOP_K_ENTRY) && payload.len() / TOP_K_ENTRY <= values,
    };
    if !length_ok {
        return Err(CodecError::Length);
    }
    match encoding {
        Encoding::Q8 => {
            let (lo, step) = q8_header(payload);
            // The extremes finite means every value is: `lo` and the largest code the
            // payload holds (not 255: a range just under f32::MAX may overflow at 255
            // and never use it, and the sender's own decode of its codes is finite).
            let top = payload[Q8_HEADER..].iter().copied().max().unwrap_or(0);
            if !(lo.is_finite() && step.is_finite() && step >= 0.0 && (lo + step * f32::from(top)).is_finite()) {
                return Err(CodecError::NonFinite);
            }
        }
        Encoding::TopK => {
            let (entries, _) = payload.as_chunks::<TOP_K_ENTRY>();
            let mut next = 0u64;
            for e in entries {
                let (i, v) = top_k_entry(e);
                if u64::from(i) < next || i as usize >= values {
                    return Err(CodecError::Index);
                }
                if !v.is_finite() {
                    return Err(CodecError::NonFinite);
                }
                next = u64::from(i) + 1;
            }
        }
        _ => {
            let mut ok = true;
            for_each(encoding, payload, |_, v| ok &= v.is_finite());
            if !ok {
                return Err(CodecError::NonFinite);
            }
        }
    }
    Ok(())
}

fn q8_header(payload: &[u8]) -> (f32, f32) {
    let word = |at: usize| f32::from_le_bytes([payload[at], payload[at + 1], payload[at + 2], payload[at + 3]]);
    (word(0), word(4))
}

fn top_k_entry(e: &[u8; TOP_K_ENTRY]) -> (u32, f32) {
    (
        u32::from_le_bytes([e[0], e[1], e[2], e[3]]),
        f32::from_le_bytes([e[4], e[5], e[6], e[7]]),
    )
}

/// Calls `f(index, value)` for every value a checked payload carries.
fn for_each(encoding: Encoding, payload: &[u8], mut f: impl FnMut(usize, f32)) {
    match encoding {
        Encoding::F32Le => {
            let (words, _) = payload.as_chunks::<4>();
            words.iter().enumerate().for_each(|(i, w)| f(i, f32::from_le_bytes(*w)));
        }
        Encoding::F16Le => {
            // In blocks, so the slice conversion can use the CPU's (F16C, NEON).
            let (pairs, _) = payload.as_chunks::<2>();
            let (mut halves, mut floats) = ([f16::ZERO; F16_BLOCK], [0.0f32; F16_BLOCK]);
            for (b, block) in pairs.chunks(F16_BLOCK).enumerate() {
                for (h, p) in halves.iter_mut().zip(block) {
                    *h = f16::from_le_bytes(*p);
                }
                halves[..block.len()].convert_to_f32_slice(&mut floats[..block.len()]);
                for (k, v) in floats[..block.len()].iter().enumerate() {
                    f(b * F16_BLOCK + k, *v);
                }
            }
        }
        Encoding::Bf16Le => {
            let (pairs, _) = payload.as_chunks::<2>();
            pairs
                .iter()
                .enumerate()
                .for_each(|(i, p)| f(i, bf16::from_le_bytes(*p).to_f32()));
        }
        Encoding::Q8 => {
            let (lo, step) = q8_header(payload);
            let q = Q8 { lo, step, inverse: 0.0 };
            payload[Q8_HEADER..]
                .iter()
                .enumerate()
                .for_each(|(i, c)| f(i, q.value(*c)));
        }
        Encoding::TopK => {
            let (entries, _) = payload.as_chunks::<TOP_K_ENTRY>();
            entries.iter().for_each(|e| {
                let (i, v) = top_k_entry(e);
                f(i as usize, v);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: [Compression; 5] = [
        Compression::None,
        Compression::F16,
        Compression::Bf16,
        Compression::Q8,
        Compression::TopK { fraction: 0.25 },
    ];

    fn round_trip(c: Compression, values: &[f32]) -> heapless::Vec<f32, 256> {
        let mut buf = [0u8; 8 + 8 * 256];
        let len = encode(c, values, &mut buf).unwrap();
        assert_eq!(len, c.payload_len(values.len()));
        let mut out = heapless::Vec::<f32, 256>::new();
        out.resize(values.len(), f32::NAN).unwrap();
        decode(c.encoding(), &buf[..len], &mut out).unwrap();
        out
    }

    fn finite() -> impl Strategy<Value = f32> {
        prop_oneof![
            -1e6f32..1e6,
            -1.0f32..1.0,
            Just(0.0),
            Just(-0.0),
            Just(f32::MAX),
            Just(f32::MIN)
        ]
    }

    proptest! {
        #[test]
        fn f32_is_exact(values in prop::collection::vec(finite(), 0..200)) {
            let out = round_trip(Compression::None, &values);
            prop_assert_eq!(&out[..], &values[..]);
        }

        #[test]
        fn f16_rounds_to_half_an_ulp_and_saturates(values in prop::collection::vec(finite(), 0..200)) {
            let out = round_trip(Compression::F16, &values);
            for (v, d) in values.iter().zip(&out) {
                let max = f16::MAX.to_f32();
                if v.abs() > max {
                    prop_assert_eq!(*d, max.copysign(*v));
                } else {
                    // Half an ulp: 2^-11 relative for normals, 2^-25 absolute below.
                    let bound = (v.abs() * 2f32.powi(-11)).max(2f32.powi(-25));
                    prop_assert!((d - v).abs() <= bound, "{v} -> {d}");
                }
            }
        }

        #[test]
        fn bf16_keeps_eight_bits(values in prop::collection::vec(finite(), 0..200)) {
            let out = round_trip(Compression::Bf16, &values);
            for (v, d) in values.iter().zip(&out) {
                prop_assert!(d.is_finite());
                prop_assert!((d - v).abs() <= v.abs() * 2f32.powi(-8) + f32::MIN_POSITIVE, "{v} -> {d}");
            }
        }

        #[test]
        fn q8_errs_by_at_most_half_a_step(values in prop::collection::vec(-1e6f32..1e6, 1..200)) {
            let out = round_trip(Compression::Q8, &values);
            let lo = values.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let step = hi / 255.0 - lo / 255.0;
            for (v, d) in values.iter().zip(&out) {
                // Half a step, plus the rounding of `lo + step·c` itself.
                let bound = 0.5 * step * 1.001 + (lo.abs() + hi.abs()) * 2f32.powi(-22);
                prop_assert!((d - v).abs() <= bound, "{v} -> {d} (step {step})");
            }
        }

        #[test]
        fn top_k_keeps_the_largest_magnitudes_exactly(
            values in prop::collection::vec(finite(), 0..200),
            fraction in 0.001f32..=1.0,
        ) {
            let c = Compression::TopK { fraction };
            let out = round_trip(c, &values);
            let kept = out.iter().zip(&values).filter(|(d, v)| d.to_bits() == v.to_bits() && **d != 0.0).count();
            let zeros_in = values.iter().filter(|v| **v == 0.0).count();
            prop_assert!(kept + zeros_in >= c.kept(values.len()), "{kept} kept");
            let smallest_kept = out.iter().filter(|d| **d != 0.0).map(|d| d.abs()).fold(f32::INFINITY, f32::min);
            for (v, d) in values.iter().zip(&out) {
                prop_assert!(*d == 0.0 || d.to_bits() == v.to_bits(), "kept values are exact");
                if *d == 0.0 {
                    prop_assert!(v.abs() <= smallest_kept, "{v} dropped, {smallest_kept} kept");
                }
            }
        }

        #[test]
        fn fold_quantized_is_bit_exact_with_folding_the_payload(
            values in prop::collection::vec(finite(), 1..100),
            w in 0.01f32..1.0,
            fraction in 0.01f32..=1.0,
        ) {
            for c in ALL.into_iter().chain([Compression::TopK { fraction }]) {
                let mut buf = [0u8; 8 + 8 * 100];
                let len = encode(c, &values, &mut buf).unwrap();
                let start: heapless::Vec<f32, 100> = values.iter().map(|v| v * 0.25).collect();
                let (mut by_payload, mut by_values) = (start.clone(), start.clone());
                let folded = fold(c.encoding(), &buf[..len], w, &mut by_payload);
                let quantized = fold_quantized(c, &values, w, &mut by_values);
                prop_assert_eq!(folded, quantized);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<heapless::Vec<u32, 100>>();
                prop_assert_eq!(bits(&by_payload), bits(&by_values), "{:?}", c);
            }
        }

        #[test]
        fn a_packed_q8_chunk_is_the_payload_encode_writes(
            x in prop::collection::vec(-1e3f32..1e3, 3..200),
            shift in -10f32..10.0,
        ) {
            let p: heapless::Vec<f32, 200> = x.iter().map(|v| v * 0.5 + shift).collect();
            let d: heapless::Vec<f32, 200> = x.iter().zip(&p).map(|(x, p)| x - p).collect();
            prop_assert!(packs(Compression::Q8, x.len()));
            // The snapshot's words hold junk from the last round.
            let mut packed = [f32::from_bits(0x7fc0_1234); 200];
            let packed = &mut packed[..x.len()];
            let mut decoded = [f32::NAN; 200];
            let finite = q8_pack_difference(&x, &p, packed, |at, q| decoded[at..at + q.len()].copy_from_slice(q));
            prop_assert!(finite);
            let len = Compression::Q8.payload_len(x.len());
            let (mut by_encode, mut by_unpack) = ([0u8; 8 + 200], [0xa5u8; 8 + 200]);
            prop_assert_eq!(encode(Compression::Q8, &d, &mut by_encode), Ok(len));
            unpack(packed, &mut by_unpack[..len]);
            prop_assert_eq!(&by_unpack[..len], &by_encode[..len]);
            prop_assert_eq!(by_unpack[len], 0xa5, "nothing written past the payload");
            // What the sender moves its public copy by, three ways, bit for bit.
            let mut quantized = [f32::NAN; 200];
            for_each_quantized(Compression::Q8, &d, |k, q| quantized[k] = q);
            let mut unpacked = [f32::NAN; 200];
            q8_unpack(packed, x.len(), |at, q| unpacked[at..at + q.len()].copy_from_slice(q));
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<heapless::Vec<u32, 200>>();
            prop_assert_eq!(bits(&decoded[..x.len()]), bits(&quantized[..x.len()]));
            prop_assert_eq!(bits(&unpacked[..x.len()]), bits(&quantized[..x.len()]));
        }

        #[test]
        fn fold_adds_the_weighted_decoded_values(values in prop::collection::vec(-1e3f32..1e3, 1..100), w in 0.01f32..1.0) {
            for c in ALL {
                let mut buf = [0u8; 8 + 8 * 100];
                let len = encode(c, &values, &mut buf).unwrap();
                let decoded = round_trip(c, &values);
                let mut acc: heapless::Vec<f32, 100> = values.iter().map(|v| v * 0.5).collect();
                let expected: heapless::Vec<f32, 100> = acc.iter().zip(&decoded).map(|(a, d)| a + w * d).collect();
                fold(c.encoding(), &buf[..len], w, &mut acc).unwrap();
                prop_assert_eq!(&acc, &expected);
            }
        }
    }

    #[test]
    fn q8_packs_chunks_of_three_values_or_more_and_refuses_non_finite_differences() {
        assert!(!packs(Compression::Q8, 1) && !packs(Compression::Q8, 2));
        assert!(packs(Compression::Q8, 3) && packs(Compression::Q8, 1_000));
        assert!(!packs(Compression::F16, 1_000) && !packs(Compression::TopK { fraction: 0.1 }, 1_000));
        let mut packed = [7.0f32; 4];
        let finite = q8_pack_difference(&[f32::MAX, 0.0, 1.0, 2.0], &[-f32::MAX, 0.0, 0.0, 0.0], &mut packed, |_, _| {
            panic!("nothing decoded")
        });
        assert!(!finite);
        assert_eq!(packed, [7.0; 4], "nothing written");
    }

    #[test]
    fn compressions_parse_from_their_names_and_print_back() {
        use core::fmt::Write;
        for c in ALL.into_iter().chain([Compression::TopK { fraction: 0.01 }]) {
            let mut name = heapless::String::<16>::new();
            write!(name, "{c}").unwrap();
            assert_eq!(name.parse(), Ok(c));
        }
        for bad in ["", "q4", "topk", "topk:0", "topk:1.5", "topk:x", "F16"] {
            assert_eq!(bad.parse::<Compression>(), Err(UnknownCompression), "{bad:?}");
        }
    }

    #[test]
    fn chunks_fill_the_room_they_have() {
        for c in ALL.into_iter().chain([
            Compression::TopK { fraction: 0.01 },
            Compression::TopK { fraction: 1.0 },
        ]) {
            for room in [16usize, 100, 1_337, 65_000] {
                let n = c.chunk_values(room);
                assert!(c.payload_len(n) <= room, "{c:?} {room}: {n}");
                assert!(n > 0, "{c:?} {room}");
                // One more value would not fit (top-k: within one entry's worth).
                let slack = if matches!(c, Compression::TopK { .. }) {
                    TOP_K_ENTRY
                } else {
                    0
                };
                assert!(
                    c.payload_len(n + 1 + slack * 200) > room,
                    "{c:?} {room}: {n} is not the most"
                );
            }
        }
        assert_eq!(Compression::TopK { fraction: 0.0 }.chunk_values(1000), 0);
    }

    #[test]
    fn non_finite_values_are_refused_before_encoding() {
        for c in ALL {
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut buf = [0xaau8; 64];
                assert_eq!(
                    encode(c, &[1.0, bad, 2.0], &mut buf),
                    Err(CodecError::NonFinite),
                    "{c:?}"
                );
                assert!(buf.iter().all(|b| *b == 0xaa), "nothing written");
            }
        }
        assert_eq!(
            encode(Compression::TopK { fraction: 1.5 }, &[1.0], &mut [0; 8]),
            Err(CodecError::Parameter)
        );
        assert_eq!(
            encode(Compression::Q8, &[1.0; 4], &mut [0; 11]),
            Err(CodecError::BufferTooSmall(12))
        );
    }

    #[test]
    fn payloads_decoding_to_non_finite_values_change_nothing() {
        let inf16 = f16::INFINITY.to_le_bytes();
        let nan_bf = bf16::NAN.to_le_bytes();
        let mut q8_inf_lo = [0u8; Q8_HEADER + 2];
        q8_inf_lo[..4].copy_from_slice(&f32::INFINITY.to_le_bytes());
        let mut q8_overflow = [255u8; Q8_HEADER + 2];
        q8_overflow[..4].copy_from_slice(&f32::MAX.to_le_bytes());
        q8_overflow[4..8].copy_from_slice(&f32::MAX.to_le_bytes());
        let mut q8_negative_step = [0u8; Q8_HEADER + 2];
        q8_negative_step[4..8].copy_from_slice(&(-1.0f32).to_le_bytes());
        let mut top_nan = [0u8; 8];
        top_nan[4..].copy_from_slice(&f32::NAN.to_le_bytes());
        let cases: [(Encoding, &[u8]); 6] = [
            (Encoding::F16Le, &[0, 0, inf16[0], inf16[1]]),
            (Encoding::Bf16Le, &[nan_bf[0], nan_bf[1], 0, 0]),
            (Encoding::Q8, &q8_inf_lo),
            (Encoding::Q8, &q8_overflow),
            (Encoding::Q8, &q8_negative_step),
            (Encoding::TopK, &top_nan),
        ];
        for (encoding, payload) in cases {
            let mut acc = [1.0f32, 2.0];
            assert_eq!(
                fold(encoding, payload, 0.5, &mut acc),
                Err(CodecError::NonFinite),
                "{encoding:?}"
            );
            assert_eq!(acc, [1.0, 2.0]);
        }
        // Finite values whose sum overflows: refused as a whole.
        let big = encode_vec(Compression::Bf16, &[1.0, f32::MAX]);
        let mut acc = [1.0f32, f32::MAX];
        assert_eq!(fold(Encoding::Bf16Le, &big, 1.0, &mut acc), Err(CodecError::NonFinite));
        assert_eq!(acc, [1.0, f32::MAX]);
    }

    fn encode_vec(c: Compression, values: &[f32]) -> heapless::Vec<u8, 64> {
        let mut buf = [0u8; 64];
        let len = encode(c, values, &mut buf).unwrap();
        heapless::Vec::from_slice(&buf[..len]).unwrap()
    }

    #[test]
    fn top_k_at_zero_and_at_the_whole_chunk() {
        let values = [3.0f32, -7.0, 0.5, 7.0, -0.25];
        // k = 0: an empty payload, decoding to zeros.
        let mut called = false;
        top_k(&values, 0, |_, _| called = true);
        assert!(!called);
        let mut out = [9.0f32; 5];
        decode(Encoding::TopK, &[], &mut out).unwrap();
        assert_eq!(out, [0.0; 5]);
        // k = length: lossless.
        let all = Compression::TopK { fraction: 1.0 };
        assert_eq!(&round_trip(all, &values)[..], &values[..]);
        // Ties broken towards the lower index: |−7| and |7| both, then 3.
        let two = encode_vec(Compression::TopK { fraction: 0.4 }, &values);
        let mut out = [0.0f32; 5];
        decode(Encoding::TopK, &two, &mut out).unwrap();
        assert_eq!(out, [0.0, -7.0, 0.0, 7.0, 0.0]);
    }

    #[test]
    fn malformed_top_k_and_lengths_are_refused() {
        let entry = |i: u32, v: f32| {
            let mut e = [0u8; 8];
            e[..4].copy_from_slice(&i.to_le_bytes());
            e[4..].copy_from_slice(&v.to_le_bytes());
            e
        };
        let mut falling = [0u8; 16];
        falling[..8].copy_from_slice(&entry(3, 1.0));
        falling[8..].copy_from_slice(&entry(1, 1.0));
        let mut repeated = [0u8; 16];
        repeated[..8].copy_from_slice(&entry(2, 1.0));
        repeated[8..].copy_from_slice(&entry(2, 1.0));
        let mut acc = [0.0f32; 4];
        assert_eq!(fold(Encoding::TopK, &falling, 1.0, &mut acc), Err(CodecError::Index));
        assert_eq!(fold(Encoding::TopK, &repeated, 1.0, &mut acc), Err(CodecError::Index));
        assert_eq!(
            fold(Encoding::TopK, &entry(4, 1.0), 1.0, &mut acc),
            Err(CodecError::Index)
        );
        assert_eq!(fold(Encoding::TopK, &[0; 12], 1.0, &mut acc), Err(CodecError::Length));
        assert_eq!(
            fold(Encoding::TopK, &[0; 40], 1.0, &mut acc),
            Err(CodecError::Length),
            "more entries than values"
        );
        assert_eq!(fold(Encoding::F16Le, &[0; 6], 1.0, &mut acc), Err(CodecError::Length));
        assert_eq!(fold(Encoding::Q8, &[0; 8], 1.0, &mut acc), Err(CodecError::Length));
        assert_eq!(acc, [0.0; 4]);
    }
}
