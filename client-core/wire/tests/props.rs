//! Property tests of the codec: the fuzzing that runs on every `cargo test`.
//!
//! Strategies generate arbitrary `Up` and `Down` frames (every variant, every optional
//! field both ways, registry values unknown to this build, non-ASCII text) and check
//! that encoding round-trips, that the decoder treats partial, oversize and garbage
//! input as the codec promises and never panics, and that [`FrameBuf`] is indifferent
//! to how the stream is cut into reads. The coverage-guided fuzz target in `tests/fuzz`
//! runs the same decoder paths for longer.
//!
//! std build only: the strategies produce `String`/`Vec` fields.
#![cfg(feature = "std")]

use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tern_wire::codec::{CodecError, FrameBuf, PREFIX_MAX, body_size, decode, encode, encode_into};
use tern_wire::frame::Welcome;
use tern_wire::limits::FRAME_MAX;
use tern_wire::{
    Availability, Basic, CardField, CardKind, Down, ErrorCode, Ext, Hello, InboxItem, Incoming,
    LateReceipt, Message, Presence, PresenceDoc, ReceiptStatus, Tuple, Up,
};

// ---- Strategies ----------------------------------------------------------------------

/// Short strings: mostly address-like ASCII, sometimes any Unicode.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![3 => "[a-z0-9.-]{1,12}@[a-z0-9.-]{1,12}", 1 => ".{0,20}"]
}

fn text() -> impl Strategy<Value = String> {
    ".{0,40}"
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max)
}

fn code() -> impl Strategy<Value = ErrorCode> {
    any::<u16>().prop_map(ErrorCode)
}

fn tuple() -> impl Strategy<Value = Tuple> {
    let ext = (name(), bytes(16)).prop_map(|(key, value)| Ext { key, value });
    (
        name(),
        any::<bool>(),
        of(any::<u8>().prop_map(Availability)),
        of(text()),
        of(text()),
        of(any::<u64>()),
        vec(ext, 0..3),
    )
        .prop_map(|(id, open, availability, contact, note, at, ext)| Tuple {
            id,
            basic: if open { Basic::Open } else { Basic::Closed },
            availability,
            contact,
            note,
            at,
            ext,
        })
}

fn presence() -> impl Strategy<Value = Presence> {
    let field = (any::<u8>(), text()).prop_map(|(kind, value)| CardField {
        kind: CardKind(kind),
        value,
    });
    (vec(tuple(), 0..4), vec(field, 0..3)).prop_map(|(tuples, card)| Presence { tuples, card })
}

fn doc() -> impl Strategy<Value = PresenceDoc> {
    (name(), any::<u64>(), presence()).prop_map(|(presentity, updated, presence)| PresenceDoc {
        presentity,
        updated,
        presence,
    })
}

fn status() -> impl Strategy<Value = ReceiptStatus> {
    prop_oneof![
        Just(ReceiptStatus::Delivered),
        Just(ReceiptStatus::Stored),
        code().prop_map(ReceiptStatus::Failed),
    ]
}

fn msg_id() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..=32)
}

fn message() -> impl Strategy<Value = Message> {
    (msg_id(), name(), of(name()), of(text()), bytes(64)).prop_map(
        |(id, to, reply_to, content_type, body)| Message {
            id,
            to,
            reply_to,
            content_type,
            body,
        },
    )
}

fn inbox_item(body_max: usize) -> impl Strategy<Value = InboxItem> {
    let incoming = (
        msg_id(),
        name(),
        name(),
        of(name()),
        of(text()),
        bytes(body_max),
        any::<u64>(),
    )
        .prop_map(|(id, from, to, reply_to, content_type, body, sent)| {
            InboxItem::Message(Incoming {
                id,
                from,
                to,
                reply_to,
                content_type,
                body,
                sent,
            })
        });
    let receipt = (msg_id(), name(), status())
        .prop_map(|(id, to, status)| InboxItem::Receipt(LateReceipt { id, to, status }));
    prop_oneof![incoming, receipt]
}

fn up() -> impl Strategy<Value = Up> {
    prop_oneof![
        (any::<u16>(), name(), text()).prop_map(|(version, user, token)| Up::Hello(Hello {
            version,
            user,
            token
        })),
        (any::<u32>(), presence()).prop_map(|(req, presence)| Up::Publish { req, presence }),
        (any::<u32>(), name()).prop_map(|(req, target)| Up::Fetch { req, target }),
        (any::<u32>(), name()).prop_map(|(req, target)| Up::Subscribe { req, target }),
        (any::<u32>(), name()).prop_map(|(req, target)| Up::Unsubscribe { req, target }),
        (any::<u32>(), message()).prop_map(|(req, msg)| Up::Send { req, msg }),
        any::<u64>().prop_map(|upto| Up::Ack { upto }),
        Just(Up::Bye),
    ]
}

/// Frames gateway to client; `body_max` bounds delivered message bodies.
fn down_with(body_max: usize) -> impl Strategy<Value = Down> {
    prop_oneof![
        (
            any::<u16>(),
            name(),
            any::<u32>(),
            any::<u32>(),
            any::<u64>()
        )
            .prop_map(|(version, user, frame_max, body_max, time)| Down::Welcome(
                Welcome {
                    version,
                    user,
                    frame_max,
                    body_max,
                    time,
                }
            )),
        any::<u32>().prop_map(|req| Down::Ok { req }),
        (any::<u32>(), code(), text()).prop_map(|(req, code, text)| Down::Fail { req, code, text }),
        (any::<u32>(), doc()).prop_map(|(req, doc)| Down::Presence { req, doc }),
        (any::<u32>(), status()).prop_map(|(req, status)| Down::Receipt { req, status }),
        doc().prop_map(|doc| Down::Notify { doc }),
        (any::<u64>(), inbox_item(body_max)).prop_map(|(seq, item)| Down::Deliver { seq, item }),
        (code(), text()).prop_map(|(code, text)| Down::Close { code, text }),
    ]
}

fn down() -> impl Strategy<Value = Down> {
    down_with(64)
}

// ---- Helpers -------------------------------------------------------------------------

/// `len` as an unsigned LEB128 varint, written independently of the codec.
fn leb128(mut len: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Checks everything the codec promises about one valid frame.
fn check_frame<T>(frame: &T) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Clone + core::fmt::Debug,
{
    let bytes = encode(frame);
    let body = body_size(frame);
    let prefix = leb128(body as u64);
    prop_assert_eq!(&bytes[..bytes.len() - body], prefix.as_slice());

    // The allocation-free encoder writes the same bytes into a buffer of exactly the
    // frame's size, and refuses a buffer one byte short.
    let mut buf = vec![0u8; bytes.len()];
    prop_assert_eq!(encode_into(frame, &mut buf), Ok(bytes.len()));
    prop_assert_eq!(&buf, &bytes);
    prop_assert_eq!(
        encode_into(frame, &mut buf[..bytes.len() - 1]),
        Err(CodecError::BufferTooSmall)
    );

    // Round trip, taking exactly the frame's bytes even with more behind it.
    let mut stream = bytes.clone();
    stream.extend_from_slice(&[0xff, 0x00]);
    let decoded = decode::<T>(&stream, FRAME_MAX)?;
    prop_assert_eq!(decoded, Some((frame.clone(), bytes.len())));

    // Every strict prefix is incomplete, never an error.
    for cut in 0..bytes.len() {
        prop_assert_eq!(
            decode::<T>(&bytes[..cut], FRAME_MAX)?,
            None,
            "prefix of {}",
            cut
        );
    }

    // A limit below the body length is reported as soon as the prefix is in.
    let prefix_len = bytes.len() - body;
    prop_assert_eq!(
        decode::<T>(&bytes[..prefix_len], body - 1),
        Err(CodecError::Oversize {
            len: body,
            max: body - 1
        })
    );
    Ok(())
}

/// Decodes `bytes` as `T` and checks the promises that hold for any input.
fn decode_anything<T>(bytes: &[u8], max: usize) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + core::fmt::Debug,
{
    match decode::<T>(bytes, max) {
        Ok(Some((frame, used))) => {
            prop_assert!(used <= bytes.len());
            prop_assert!(used <= max + PREFIX_MAX);
            // Whatever decoded is a frame like any other (the input's varints may have
            // been non-minimal, so compare values, not bytes).
            let again = encode(&frame);
            prop_assert_eq!(decode::<T>(&again, FRAME_MAX)?, Some((frame, again.len())));
        }
        Ok(None) | Err(CodecError::Malformed) => {}
        Err(CodecError::Oversize { len, max: m }) => {
            prop_assert_eq!(m, max);
            prop_assert!(len > max);
        }
        Err(e @ CodecError::BufferTooSmall) => prop_assert!(false, "decode returned {:?}", e),
    }
    Ok(())
}

// ---- Properties ----------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn up_frames_round_trip(frame in up()) {
        check_frame(&frame)?;
    }

    #[test]
    fn down_frames_round_trip(frame in down()) {
        check_frame(&frame)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in bytes(256), max in prop_oneof![Just(FRAME_MAX), 0..300usize]) {
        decode_anything::<Up>(&bytes, max)?;
        decode_anything::<Down>(&bytes, max)?;
    }

    #[test]
    fn arbitrary_bodies_behind_a_right_prefix_never_panic(body in bytes(256)) {
        // A correct length prefix gets the fuzz past framing into the frame decoder.
        let mut bytes = leb128(body.len() as u64);
        bytes.extend_from_slice(&body);
        decode_anything::<Up>(&bytes, FRAME_MAX)?;
        decode_anything::<Down>(&bytes, FRAME_MAX)?;
    }

    #[test]
    fn mutated_frames_never_panic(
        up in up(),
        down in down(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        for mut bytes in [encode(&up), encode(&down)] {
            for (at, value) in &edits {
                let i = at.index(bytes.len());
                bytes[i] = *value;
            }
            let end = cut.index(bytes.len() + 1);
            decode_anything::<Up>(&bytes[..end], FRAME_MAX)?;
            decode_anything::<Down>(&bytes[..end], FRAME_MAX)?;
        }
    }

    #[test]
    fn oversize_prefix_is_refused_before_the_body(max in 0..=u32::MAX as usize - 1, extra in any::<u32>()) {
        let len = (max as u64 + 1 + u64::from(extra)).min(u64::from(u32::MAX));
        let prefix = leb128(len);
        prop_assert!(prefix.len() <= PREFIX_MAX);
        let want = CodecError::Oversize { len: len as usize, max };
        prop_assert_eq!(decode::<Up>(&prefix, max), Err(want));
        prop_assert_eq!(decode::<Down>(&prefix, max), Err(want));

        let mut buf = FrameBuf::new(max);
        buf.extend(&prefix);
        prop_assert_eq!(buf.next_frame::<Up>(), Err(want));
    }

    #[test]
    fn frame_buf_is_indifferent_to_read_sizes(
        frames in vec(prop_oneof![4 => down(), 1 => down_with(3000)], 1..24),
        reads in vec(1..700usize, 1..64),
    ) {
        let stream: Vec<u8> = frames.iter().flat_map(encode).collect();
        let mut buf = FrameBuf::new(FRAME_MAX);
        let mut got = Vec::new();
        let mut rest = stream.as_slice();
        let mut sizes = reads.iter().cycle();
        while !rest.is_empty() {
            let n = (*sizes.next().expect("cycle")).min(rest.len());
            let (chunk, tail) = rest.split_at(n);
            buf.extend(chunk);
            rest = tail;
            while let Some(frame) = buf.next_frame::<Down>()? {
                got.push(frame);
            }
        }
        prop_assert_eq!(buf.pending(), 0);
        prop_assert_eq!(got, frames);
    }
}

#[test]
fn over_long_varint_prefix_is_malformed() {
    // Five continuation bytes: no u32 is that long.
    let prefix = [0x80, 0x80, 0x80, 0x80, 0x80, 0x00];
    assert_eq!(decode::<Up>(&prefix, FRAME_MAX), Err(CodecError::Malformed));
    // A five-byte prefix whose value needs more than 32 bits.
    let prefix = [0xff, 0xff, 0xff, 0xff, 0x1f];
    assert_eq!(
        decode::<Up>(&prefix, usize::MAX),
        Err(CodecError::Malformed)
    );
    // The largest u32 is fine as a prefix (and then over any sane limit).
    let prefix = [0xff, 0xff, 0xff, 0xff, 0x0f];
    assert_eq!(
        decode::<Up>(&prefix, FRAME_MAX),
        Err(CodecError::Oversize {
            len: u32::MAX as usize,
            max: FRAME_MAX
        })
    );
}

#[test]
fn trailing_bytes_inside_a_frame_are_malformed() {
    // `Bye` with one byte too many inside its announced length.
    assert_eq!(
        decode::<Up>(&[0x02, 0x07, 0x00], FRAME_MAX),
        Err(CodecError::Malformed)
    );
    // An unknown variant tag.
    assert_eq!(
        decode::<Up>(&[0x01, 0x08], FRAME_MAX),
        Err(CodecError::Malformed)
    );
    assert_eq!(
        decode::<Down>(&[0x01, 0x08], FRAME_MAX),
        Err(CodecError::Malformed)
    );
}
