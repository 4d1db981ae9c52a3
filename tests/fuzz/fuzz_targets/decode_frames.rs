//! Fuzzes the frame decoder with arbitrary stream bytes.
//!
//! For `Up` and for `Down`, the input is read as a stream twice: by slicing it with
//! `codec::decode` frame after frame, and through a `FrameBuf` fed in chunks whose size
//! the first input byte picks. Neither may panic, both must yield the same frames and end
//! the same way, and every frame decoded must survive an encode/decode round trip.
#![no_main]

use core::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tern_wire::codec::{self, CodecError, FrameBuf};
use tern_wire::{Down, Up};

/// How a stream ended: a decoding error, or `None` when it ran out mid-frame or at a
/// frame boundary.
type End = Option<CodecError>;

/// Decodes frames from the front of `data` until it runs out or an error.
fn by_slicing<T: DeserializeOwned>(data: &[u8], max: usize) -> (Vec<T>, End) {
    let mut frames = Vec::new();
    let mut rest = data;
    loop {
        match codec::decode::<T>(rest, max) {
            Ok(Some((frame, used))) => {
                assert!(used > 0 && used <= rest.len(), "used {used} of {}", rest.len());
                frames.push(frame);
                rest = &rest[used..];
            }
            Ok(None) => return (frames, None),
            Err(e) => return (frames, Some(e)),
        }
    }
}

/// Feeds `data` into a [`FrameBuf`] `chunk` bytes at a time, draining it after each read.
fn by_frame_buf<T: DeserializeOwned>(data: &[u8], max: usize, chunk: usize) -> (Vec<T>, End) {
    let mut buf = FrameBuf::new(max);
    let mut frames = Vec::new();
    for read in data.chunks(chunk) {
        buf.extend(read);
        loop {
            match buf.next_frame::<T>() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

fn check<T>(data: &[u8], max: usize, chunk: usize)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let sliced = by_slicing::<T>(data, max);
    match sliced.1 {
        Some(CodecError::Oversize { len, max: m }) => assert!(len > m && m == max),
        Some(CodecError::BufferTooSmall) => panic!("decoding never fills a buffer"),
        Some(CodecError::Malformed) | None => {}
    }
    assert_eq!(by_frame_buf::<T>(data, max, chunk), sliced);

    for frame in &sliced.0 {
        let bytes = codec::encode(frame);
        let prefix = bytes.len() - codec::body_size(frame);
        assert!((1..=codec::PREFIX_MAX).contains(&prefix));
        match codec::decode::<T>(&bytes, usize::MAX) {
            Ok(Some((again, used))) => {
                assert_eq!(&again, frame);
                assert_eq!(used, bytes.len());
            }
            other => panic!("re-encoded {frame:?} does not decode: {other:?}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&knob, stream)) = data.split_first() else {
        return;
    };
    // The knob picks the read size (1 to 64 bytes) and, by its top bit, a small limit
    // that makes oversize frames common.
    let chunk = usize::from(knob & 0x3f) + 1;
    let max = if knob & 0x80 != 0 {
        64
    } else {
        tern_wire::limits::DEFAULT_FRAME_MAX as usize
    };
    check::<Up>(stream, max, chunk);
    check::<Down>(stream, max, chunk);
});
