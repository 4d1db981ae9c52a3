//! Protocol limits: what a conforming peer may send, and the no_std capacities.
//!
//! The gateway's configured limits (frame and body size) are announced in
//! [`crate::frame::Welcome`]; these constants are the protocol's hard ceilings and the
//! defaults.

/// Largest encoded frame (length prefix excluded) that any peer must accept.
pub const FRAME_MAX: usize = 1 << 20;
/// Default largest frame a gateway accepts: 64 KiB.
pub const DEFAULT_FRAME_MAX: u32 = 64 * 1024;
/// Default largest message body a gateway accepts: 16 KiB.
pub const DEFAULT_BODY_MAX: u32 = 16 * 1024;
/// Longest identifier (`local@domain`), in bytes after normalisation.
pub const NAME_MAX: usize = 255;
/// Longest text field (note, content type, reason), in bytes.
pub const TEXT_MAX: usize = 1024;
/// Longest message id, in bytes.
pub const MSG_ID_MAX: usize = 32;
/// Most tuples in one presence document.
pub const TUPLES_MAX: usize = 16;
/// Most extensions in one tuple, and most contact-card fields in one document.
pub const EXT_MAX: usize = 16;
/// Longest extension value, in bytes.
pub const EXT_VALUE_MAX: usize = 1024;

/// Capacities of the heapless buffers in the `no_std` build (IoT devices). They are
/// smaller than the protocol maxima: a device that must decode larger fields builds with
/// `std` or an allocator. Over-capacity fields fail to decode; they never overflow.
pub mod tiny {
    /// Capacity of a [`crate::types::Name`].
    pub const NAME: usize = 64;
    /// Capacity of a [`crate::types::Text`].
    pub const TEXT: usize = 128;
    /// Capacity of a [`crate::types::Blob`].
    pub const BLOB: usize = 512;
    /// Capacity of a [`crate::types::List`].
    pub const LIST: usize = 4;
    /// Capacity of a batch's [`crate::sync::Changes`]: one, so that a decoded frame stays
    /// the size of one presence document (about 12 KiB).
    pub const CHANGES: usize = 1;
}
