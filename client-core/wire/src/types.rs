//! Field storage types, chosen by the `std` feature.
//!
//! The two builds serialise identically: postcard writes a string or byte sequence as a
//! varint length followed by the bytes, and a list as a varint count followed by the
//! elements, whatever container holds them.

#[cfg(feature = "std")]
mod imp {
    use std::string::String;
    use std::vec::Vec;

    /// An identifier (`local@domain`), a tuple id or another short name.
    pub type Name = String;
    /// Human-readable text: a note, an error reason, a content type.
    pub type Text = String;
    /// An opaque byte string: a message body, an extension value.
    pub type Blob = Vec<u8>;
    /// A short opaque byte string: a message id (at most [`crate::limits::MSG_ID_MAX`]).
    pub type Key = Vec<u8>;
    /// A list of elements.
    pub type List<T> = Vec<T>;
}

#[cfg(not(feature = "std"))]
mod imp {
    use crate::limits::{MSG_ID_MAX, tiny};

    /// An identifier (`local@domain`), a tuple id or another short name.
    pub type Name = heapless::String<{ tiny::NAME }>;
    /// Human-readable text: a note, an error reason, a content type.
    pub type Text = heapless::String<{ tiny::TEXT }>;
    /// An opaque byte string: a message body, an extension value.
    pub type Blob = heapless::Vec<u8, { tiny::BLOB }>;
    /// A short opaque byte string: a message id.
    pub type Key = heapless::Vec<u8, MSG_ID_MAX>;
    /// A list of elements.
    pub type List<T> = heapless::Vec<T, { tiny::LIST }>;
}

pub use imp::*;
