//! Builders shared by the integration tests. They turn plain literals into the field
//! types of whichever build is under test (`String`/`Vec` with `std`, heapless buffers
//! without), so that one test source covers both builds.

// The conversions below can fail in the heapless build (over capacity) but not in the std
// build, where clippy would rather see `From`.
#![allow(clippy::unnecessary_fallible_conversions)]

use core::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tern_wire::types::{Blob, Key, List, Name, Text};

/// An identifier or other short name.
pub(crate) fn name(s: &str) -> Name {
    s.try_into().expect("name fits the build's capacity")
}

/// A text field.
pub(crate) fn text(s: &str) -> Text {
    s.try_into().expect("text fits the build's capacity")
}

/// An opaque byte string.
pub(crate) fn blob(b: &[u8]) -> Blob {
    b.try_into().expect("blob fits the build's capacity")
}

/// A message id.
pub(crate) fn key(b: &[u8]) -> Key {
    b.try_into().expect("key fits the build's capacity")
}

/// A list.
pub(crate) fn list<T, const N: usize>(items: [T; N]) -> List<T> {
    items.into_iter().collect()
}

/// Encodes `frame` with its length prefix through the allocation-free encoder, as a
/// device would.
pub(crate) fn wire<T: Serialize>(frame: &T) -> Vec<u8> {
    let mut buf = [0u8; 2048];
    let n = tern_wire::codec::encode_into(frame, &mut buf).expect("frame fits 2 KiB");
    buf[..n].to_vec()
}

/// Decodes exactly one whole frame from `bytes`.
pub(crate) fn unwire<T: DeserializeOwned + Debug>(bytes: &[u8]) -> T {
    match tern_wire::codec::decode::<T>(bytes, tern_wire::limits::FRAME_MAX) {
        Ok(Some((frame, used))) => {
            assert_eq!(used, bytes.len(), "the frame must take every byte");
            frame
        }
        other => panic!("expected one whole frame, got {other:?}"),
    }
}
