//! Length-delimited postcard framing.
//!
//! On a stream every frame is `varint(len) ‖ postcard(frame)`: the length is an unsigned
//! LEB128 varint of at most 5 bytes (postcard's own integer encoding) counting the body
//! bytes that follow. The body must be consumed exactly; trailing bytes are malformed.
//!
//! The receiver checks the announced length against its limit *before* buffering the
//! body, so an oversize frame costs it at most the 5 header bytes.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest length prefix: a `u32` as LEB128.
pub const PREFIX_MAX: usize = 5;

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The announced body length is over the receiver's limit.
    #[error("frame of {len} bytes is over the limit of {max}")]
    Oversize {
        /// Announced length.
        len: usize,
        /// The receiver's limit.
        max: usize,
    },
    /// The bytes are not a frame: bad prefix, unknown tag, bad field, over a capacity,
    /// or trailing bytes.
    #[error("malformed frame")]
    Malformed,
    /// The output buffer is too small for the encoded frame.
    #[error("output buffer too small")]
    BufferTooSmall,
}

/// Writes `len` as LEB128 into `out`, returning the bytes used.
fn put_varint(mut len: u32, out: &mut [u8; PREFIX_MAX]) -> usize {
    let mut i = 0;
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out[i] = byte;
            return i + 1;
        }
        out[i] = byte | 0x80;
        i += 1;
    }
}

/// Reads a LEB128 length prefix: `Ok(None)` if more bytes are needed.
fn get_varint(buf: &[u8]) -> Result<Option<(usize, usize)>, CodecError> {
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().enumerate().take(PREFIX_MAX) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let len = u32::try_from(value).map_err(|_| CodecError::Malformed)?;
            return Ok(Some((len as usize, i + 1)));
        }
    }
    if buf.len() >= PREFIX_MAX {
        Err(CodecError::Malformed)
    } else {
        Ok(None)
    }
}

/// Encodes `frame` with its length prefix into `out`, returning the bytes written.
/// Allocation-free: the form for `no_std` devices. `out` needs room for the frame only
/// (`varint(len) + len` bytes), nothing more.
pub fn encode_into<T: Serialize>(frame: &T, out: &mut [u8]) -> Result<usize, CodecError> {
    // The body goes after a one-byte prefix, which is right for bodies under 128 bytes;
    // a longer prefix moves it.
    let body_room = out.get_mut(1..).ok_or(CodecError::BufferTooSmall)?;
    let body_len = postcard::to_slice(frame, body_room)
        .map_err(|_| CodecError::BufferTooSmall)?
        .len();
    let mut prefix = [0u8; PREFIX_MAX];
    let n = put_varint(
        u32::try_from(body_len).map_err(|_| CodecError::BufferTooSmall)?,
        &mut prefix,
    );
    if n + body_len > out.len() {
        return Err(CodecError::BufferTooSmall);
    }
    out.copy_within(1..1 + body_len, n);
    out[..n].copy_from_slice(&prefix[..n]);
    Ok(n + body_len)
}

/// Encodes `frame` with its length prefix into a new vector.
#[cfg(feature = "std")]
pub fn encode<T: Serialize>(frame: &T) -> std::vec::Vec<u8> {
    let mut out = std::vec![0u8; PREFIX_MAX];
    // Writing into a Vec cannot fail for our frame types (no maps, no unsized lengths).
    out = postcard::to_extend(frame, out).unwrap_or_else(|_| std::vec![0u8; PREFIX_MAX]);
    let body_len = out.len() - PREFIX_MAX;
    let mut prefix = [0u8; PREFIX_MAX];
    let n = put_varint(body_len as u32, &mut prefix);
    let start = PREFIX_MAX - n;
    out[start..PREFIX_MAX].copy_from_slice(&prefix[..n]);
    out.drain(..start);
    out
}

/// The encoded body size of `frame`, prefix excluded (for size budgets and limits).
pub fn body_size<T: Serialize>(frame: &T) -> usize {
    postcard::experimental::serialized_size(frame).unwrap_or(usize::MAX)
}

/// The bytes `frame` takes on a stream: its length prefix and its body, without
/// encoding it.
pub fn frame_size<T: Serialize>(frame: &T) -> usize {
    let body = body_size(frame);
    let prefix = put_varint(
        u32::try_from(body).unwrap_or(u32::MAX),
        &mut [0u8; PREFIX_MAX],
    );
    body.saturating_add(prefix)
}

/// Decodes one frame from the front of `buf`, which holds bytes read from a stream.
///
/// Returns `Ok(None)` when `buf` holds only part of a frame, `Ok(Some((frame, used)))`
/// with the number of bytes the frame took, or an error: [`CodecError::Oversize`] as
/// soon as the prefix announces more than `max` body bytes, [`CodecError::Malformed`]
/// when the body is not a valid frame.
pub fn decode<T: DeserializeOwned>(
    buf: &[u8],
    max: usize,
) -> Result<Option<(T, usize)>, CodecError> {
    let Some((len, n)) = get_varint(buf)? else {
        return Ok(None);
    };
    // On 16- and 32-bit targets `n + len` can overflow when `max` is near `usize::MAX`.
    let end = match n.checked_add(len) {
        Some(end) if len <= max => end,
        _ => return Err(CodecError::Oversize { len, max }),
    };
    let Some(body) = buf.get(n..end) else {
        return Ok(None);
    };
    Ok(Some((decode_body(body)?, end)))
}

/// Decodes a frame body (no length prefix) that must be consumed exactly.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((frame, [])) => Ok(frame),
        _ => Err(CodecError::Malformed),
    }
}

/// A receive buffer that turns stream reads into frames.
#[cfg(feature = "std")]
#[derive(Debug)]
pub struct FrameBuf {
    buf: std::vec::Vec<u8>,
    start: usize,
    max: usize,
}

#[cfg(feature = "std")]
impl FrameBuf {
    /// A buffer accepting frame bodies up to `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            buf: std::vec::Vec::new(),
            start: 0,
            max,
        }
    }

    /// Appends bytes read from the stream.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, if the buffer holds one. After an error the stream is
    /// unusable: framing is lost.
    pub fn next_frame<T: DeserializeOwned>(&mut self) -> Result<Option<T>, CodecError> {
        match decode(&self.buf[self.start..], self.max)? {
            Some((frame, used)) => {
                self.start += used;
                if self.start > 4096 && self.start * 2 > self.buf.len() {
                    self.buf.drain(..self.start);
                    self.start = 0;
                }
                Ok(Some(frame))
            }
            None => Ok(None),
        }
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}
