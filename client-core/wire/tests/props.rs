//! Property tests of the codec and of presence synchronisation: the fuzzing that runs on
//! every `cargo test`.
//!
//! Strategies generate arbitrary `Up` and `Down` frames (every variant, every optional
//! field both ways, registry values unknown to this build, non-ASCII text) and check
//! that encoding round-trips, that the decoder treats partial, oversize and garbage
//! input as the codec promises and never panics, and that [`FrameBuf`] is indifferent
//! to how the stream is cut into reads. The coverage-guided fuzz target in `tests/fuzz`
//! runs the same decoder paths for longer.
//!
//! The codec properties (module `frames`) run in the std build only: their strategies
//! produce fields of any size. The presence-synchronisation properties (module `sync`)
//! generate values within the heapless capacities and run in both builds, except those
//! of `delta::diff`, which exists in the std build only. So do the access-rule
//! properties (module `access`: arbitrary `Rules` and the frames that carry them).

// Not every builder is used by these tests.
#[allow(dead_code)]
mod common;

#[cfg(feature = "std")]
mod frames {
    use proptest::collection::vec;
    use proptest::option::of;
    use proptest::prelude::*;
    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use tern_wire::codec::{
        CodecError, FrameBuf, PREFIX_MAX, body_size, decode, encode, encode_into,
    };
    use tern_wire::frame::{Open, Opened, Welcome};
    use tern_wire::limits::FRAME_MAX;
    use tern_wire::{
        Availability, Basic, CardField, CardKind, ClientMode, Down, ErrorCode, Ext, Fetcher, Hello,
        InboxItem, Incoming, LateReceipt, Message, Presence, PresenceDoc, ReceiptStatus, Tuple, Up,
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
            Just(ReceiptStatus::Relayed),
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
            (
                any::<u16>(),
                name(),
                text(),
                msg_id(),
                any::<u64>(),
                any::<u8>()
            )
                .prop_map(
                    |(version, user, token, device, inbox_seen, flags)| Up::Open(Open {
                        version,
                        user,
                        token,
                        device,
                        inbox_seen,
                        flags,
                    })
                ),
            crate::sync::have().prop_map(Up::Have),
            any::<u8>().prop_map(|m| Up::Mode {
                mode: ClientMode(m)
            }),
            any::<u32>().prop_map(|batch| Up::Applied { batch }),
            (any::<u32>(), name(), any::<u64>()).prop_map(|(req, target, version)| {
                Up::FetchIf {
                    req,
                    target,
                    version,
                }
            }),
            any::<u32>().prop_map(|req| Up::Watchers { req }),
            crate::access::access_up(),
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
            (any::<u32>(), code(), text()).prop_map(|(req, code, text)| Down::Fail {
                req,
                code,
                text
            }),
            (any::<u32>(), doc()).prop_map(|(req, doc)| Down::Presence { req, doc }),
            (any::<u32>(), status()).prop_map(|(req, status)| Down::Receipt { req, status }),
            doc().prop_map(|doc| Down::Notify { doc }),
            (any::<u64>(), inbox_item(body_max))
                .prop_map(|(seq, item)| Down::Deliver { seq, item }),
            (code(), text()).prop_map(|(code, text)| Down::Close { code, text }),
            (
                any::<u16>(),
                name(),
                (any::<u32>(), any::<u32>(), any::<u64>()),
                any::<bool>(),
                any::<u32>(),
                any::<u32>(),
            )
                .prop_map(
                    |(
                        version,
                        user,
                        (frame_max, body_max, time),
                        resumed,
                        resume_window,
                        keepalive,
                    )| {
                        Down::Opened(Opened {
                            version,
                            user,
                            frame_max,
                            body_max,
                            time,
                            resumed,
                            resume_window,
                            keepalive,
                        })
                    }
                ),
            crate::sync::batch().prop_map(Down::Batch),
            (any::<u32>(), crate::sync::batch())
                .prop_map(|(req, batch)| Down::Synced { req, batch }),
            (any::<u32>(), any::<u32>(), any::<u64>(), doc()).prop_map(
                |(req, slot, version, doc)| {
                    Down::Subscribed {
                        req,
                        slot,
                        version,
                        doc,
                    }
                }
            ),
            (any::<u32>(), any::<u64>(), doc()).prop_map(|(req, version, doc)| Down::Versioned {
                req,
                version,
                doc
            }),
            (any::<u32>(), any::<u32>())
                .prop_map(|(req, retry_after)| Down::Limited { req, retry_after }),
            (
                any::<u32>(),
                vec(name(), 0..4),
                vec((name(), any::<u32>(), any::<u32>()), 0..4)
            )
                .prop_map(|(req, subscribers, fetchers)| Down::Watchers {
                    req,
                    subscribers,
                    fetchers: fetchers
                        .into_iter()
                        .map(|(who, age, count)| Fetcher { who, age, count })
                        .collect(),
                }),
            name().prop_map(|watcher| Down::Watched { watcher }),
            crate::access::access_down(),
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
        // An unknown variant tag: the first that tern/1 does not assign, 23 in `Up` and
        // 22 in `Down`.
        assert_eq!(
            decode::<Up>(&[0x01, 0x17], FRAME_MAX),
            Err(CodecError::Malformed)
        );
        assert_eq!(
            decode::<Down>(&[0x01, 0x16], FRAME_MAX),
            Err(CodecError::Malformed)
        );
    }
}

mod sync {
    //! Presence synchronisation: `delta::diff` and `delta::apply`, the batch checksum, and
    //! the frames that carry them. The strategies keep within the no_std capacities
    //! (names 64 bytes, texts 128, lists 4, one change per batch) so that the same
    //! properties run in both builds.

    use core::fmt::Debug;

    use proptest::collection::vec;
    use proptest::option::of;
    use proptest::prelude::*;
    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use tern_wire::codec::{CodecError, decode, encode_into, frame_size};
    use tern_wire::delta::{self, Check, DeltaError, Field, Op};
    use tern_wire::limits::FRAME_MAX;
    use tern_wire::types::List;
    use tern_wire::{
        Availability, Basic, Batch, CardField, CardKind, Change, ClientMode, Down, Ext, Have, Held,
        Presence, PresenceDoc, Tuple, Up,
    };

    use crate::common::{blob, name, text};

    /// Most tuples `delta::apply` lets a document have in this build.
    #[cfg(feature = "std")]
    const TUPLES: usize = tern_wire::limits::TUPLES_MAX;
    #[cfg(not(feature = "std"))]
    const TUPLES: usize = tern_wire::limits::tiny::LIST;

    /// Most changes generated for a batch: a batch holds one in the no_std build.
    #[cfg(feature = "std")]
    const CHANGES: usize = 5;
    #[cfg(not(feature = "std"))]
    const CHANGES: usize = tern_wire::limits::tiny::CHANGES;

    // ---- Strategies ------------------------------------------------------------------

    /// A list of up to `max` elements (fewer in the no_std build).
    pub(crate) fn list_of<S>(element: S, max: usize) -> impl Strategy<Value = List<S::Value>>
    where
        S: Strategy,
        S::Value: Clone,
    {
        // The heapless lists hold four elements.
        #[cfg(not(feature = "std"))]
        let max = max.min(tern_wire::limits::tiny::LIST);
        vec(element, 0..=max).prop_map(|v| v.into_iter().collect())
    }

    pub(crate) fn address() -> impl Strategy<Value = String> {
        "[a-z0-9.-]{1,20}@[a-z0-9.-]{1,20}"
    }

    /// At most 64 bytes: mostly printable ASCII, sometimes any Unicode.
    pub(crate) fn short_text() -> impl Strategy<Value = String> {
        prop_oneof![3 => "[ -~]{0,24}", 1 => ".{0,16}"]
    }

    fn basic() -> impl Strategy<Value = Basic> {
        prop_oneof![Just(Basic::Open), Just(Basic::Closed)]
    }

    pub(crate) fn availability() -> impl Strategy<Value = Option<Availability>> {
        of(prop_oneof![
            Just(Availability::AVAILABLE),
            Just(Availability::ASLEEP),
            any::<u8>().prop_map(Availability),
        ])
    }

    fn ext() -> impl Strategy<Value = Ext> {
        prop_oneof![
            any::<u64>().prop_map(Ext::wake),
            ("x-[a-z]{1,6}", vec(any::<u8>(), 0..8)).prop_map(|(key, value)| Ext {
                key: name(&key),
                value: blob(&value),
            }),
        ]
    }

    fn tuple_with(id: impl Strategy<Value = String>) -> impl Strategy<Value = Tuple> {
        (
            id,
            basic(),
            availability(),
            of(short_text()),
            of(short_text()),
            of(any::<u64>()),
            list_of(ext(), 2),
        )
            .prop_map(|(id, basic, availability, contact, note, at, ext)| Tuple {
                id: name(&id),
                basic,
                availability,
                contact: contact.as_deref().map(text),
                note: note.as_deref().map(text),
                at,
                ext,
            })
    }

    fn tuple() -> impl Strategy<Value = Tuple> {
        tuple_with("[a-z]{1,8}")
    }

    fn card() -> impl Strategy<Value = List<CardField>> {
        let field = (any::<u8>(), short_text()).prop_map(|(kind, value)| CardField {
            kind: CardKind(kind),
            value: text(&value),
        });
        list_of(field, 3)
    }

    /// A document of up to four tuples whose ids come from a four-letter alphabet, so
    /// that they often repeat (which `apply` does not care about).
    pub(crate) fn presence() -> impl Strategy<Value = Presence> {
        (list_of(tuple_with("[a-d]"), 4), card())
            .prop_map(|(tuples, card)| Presence { tuples, card })
    }

    fn field() -> impl Strategy<Value = Field> {
        prop_oneof![
            basic().prop_map(Field::Basic),
            availability().prop_map(Field::Availability),
            of(short_text()).prop_map(|c| Field::Contact(c.as_deref().map(text))),
            of(short_text()).prop_map(|n| Field::Note(n.as_deref().map(text))),
            of(any::<u64>()).prop_map(Field::At),
            list_of(ext(), 2).prop_map(Field::Ext),
        ]
    }

    /// A tuple index: mostly one a small document has, sometimes one past its end,
    /// rarely anything.
    fn index() -> impl Strategy<Value = u8> {
        prop_oneof![12 => 0u8..2, 4 => 2u8..6, 1 => any::<u8>()]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (index(), field()).prop_map(|(i, field)| Op::Set { i, field }),
            2 => (index(), tuple()).prop_map(|(i, tuple)| Op::Insert { i, tuple }),
            2 => index().prop_map(|i| Op::Remove { i }),
            1 => card().prop_map(Op::Card),
        ]
    }

    fn change() -> impl Strategy<Value = Change> {
        prop_oneof![
            (
                any::<u32>(),
                any::<u64>(),
                any::<u32>(),
                of(address()),
                presence()
            )
                .prop_map(|(slot, version, age, n, presence)| Change::Full {
                    slot,
                    version,
                    age,
                    name: n.as_deref().map(name),
                    presence,
                }),
            (
                any::<u32>(),
                any::<u64>(),
                any::<u32>(),
                any::<u32>(),
                list_of(op(), 6)
            )
                .prop_map(|(slot, version, back, age, ops)| Change::Delta {
                    slot,
                    version,
                    back,
                    age,
                    ops,
                }),
            any::<u32>().prop_map(|slot| Change::Gone { slot }),
        ]
    }

    pub(crate) fn batch() -> impl Strategy<Value = Batch> {
        (
            any::<u32>(),
            any::<u64>(),
            any::<[u8; 4]>(),
            vec(change(), 0..=CHANGES),
        )
            .prop_map(|(seq, time, check, changes)| Batch {
                seq,
                time,
                check,
                changes: changes.into_iter().collect(),
            })
    }

    pub(crate) fn have() -> impl Strategy<Value = Have> {
        let held = (any::<u32>(), any::<u64>()).prop_map(|(slot, version)| Held { slot, version });
        (any::<u32>(), any::<u8>(), list_of(held, 300)).prop_map(|(req, mode, held)| Have {
            req,
            mode: ClientMode(mode),
            held,
        })
    }

    fn doc() -> impl Strategy<Value = PresenceDoc> {
        (address(), any::<u64>(), presence()).prop_map(|(presentity, updated, presence)| {
            PresenceDoc {
                presentity: name(&presentity),
                updated,
                presence,
            }
        })
    }

    /// The frames that presence synchronisation added, client to gateway.
    fn sync_up() -> impl Strategy<Value = Up> {
        prop_oneof![
            have().prop_map(Up::Have),
            any::<u8>().prop_map(|m| Up::Mode {
                mode: ClientMode(m)
            }),
            any::<u32>().prop_map(|batch| Up::Applied { batch }),
            (any::<u32>(), address(), any::<u64>()).prop_map(|(req, target, version)| {
                Up::FetchIf {
                    req,
                    target: name(&target),
                    version,
                }
            }),
        ]
    }

    /// The frames that presence synchronisation added, gateway to client.
    fn sync_down() -> impl Strategy<Value = Down> {
        prop_oneof![
            batch().prop_map(Down::Batch),
            (any::<u32>(), batch()).prop_map(|(req, batch)| Down::Synced { req, batch }),
            (any::<u32>(), any::<u32>(), any::<u64>(), doc()).prop_map(
                |(req, slot, version, doc)| Down::Subscribed {
                    req,
                    slot,
                    version,
                    doc,
                }
            ),
            (any::<u32>(), any::<u64>(), doc())
                .prop_map(|(req, version, doc)| { Down::Versioned { req, version, doc } }),
        ]
    }

    /// One state a batch leads to, as [`Check`] takes it.
    #[cfg_attr(not(feature = "std"), allow(clippy::large_enum_variant))]
    #[derive(Debug, Clone)]
    enum State {
        /// `Check::state`.
        Is {
            slot: u32,
            name: String,
            version: u64,
            presence: Presence,
        },
        /// `Check::gone`.
        Gone(u32),
    }

    fn state() -> impl Strategy<Value = State> {
        prop_oneof![
            3 => (any::<u32>(), address(), any::<u64>(), presence()).prop_map(
                |(slot, name, version, presence)| State::Is {
                    slot,
                    name,
                    version,
                    presence,
                }
            ),
            1 => any::<u32>().prop_map(State::Gone),
        ]
    }

    // ---- Helpers ---------------------------------------------------------------------

    /// What `apply` must do, written out naively: the document it gives, or the error.
    fn model_apply(base: &Presence, ops: &[Op]) -> Result<Presence, DeltaError> {
        let mut tuples: Vec<Tuple> = base.tuples.to_vec();
        let mut card = base.card.clone();
        for op in ops {
            match op {
                Op::Set { i, field } => {
                    let t = tuples
                        .get_mut(usize::from(*i))
                        .ok_or(DeltaError::NoSuchTuple(*i))?;
                    match field.clone() {
                        Field::Basic(v) => t.basic = v,
                        Field::Availability(v) => t.availability = v,
                        Field::Contact(v) => t.contact = v,
                        Field::Note(v) => t.note = v,
                        Field::At(v) => t.at = v,
                        Field::Ext(v) => t.ext = v,
                    }
                }
                Op::Insert { i, tuple } => {
                    if usize::from(*i) > tuples.len() {
                        return Err(DeltaError::NoSuchTuple(*i));
                    }
                    if tuples.len() >= TUPLES {
                        return Err(DeltaError::TooMany);
                    }
                    tuples.insert(usize::from(*i), tuple.clone());
                }
                Op::Remove { i } => {
                    if usize::from(*i) >= tuples.len() {
                        return Err(DeltaError::NoSuchTuple(*i));
                    }
                    tuples.remove(usize::from(*i));
                }
                Op::Card(c) => card = c.clone(),
            }
        }
        Ok(Presence {
            tuples: tuples.into_iter().collect(),
            card,
        })
    }

    /// The postcard encoding of `value` on its own.
    #[cfg(feature = "std")]
    fn postcard_of<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
        postcard::to_allocvec(value).expect("encodes")
    }

    /// The postcard encoding of `value` on its own (no allocator in postcard here).
    #[cfg(not(feature = "std"))]
    fn postcard_of<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
        let mut buf = [0u8; 16 * 1024];
        postcard::to_slice(value, &mut buf)
            .expect("encodes")
            .to_vec()
    }

    /// CRC-32 as zlib and IEEE 802.3 define it (CRC-32/ISO-HDLC), one bit at a time:
    /// reflected polynomial 0xEDB88320, initial value and final XOR all ones. Written out
    /// here so that the test does not trust the crate the checksum is made with.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// Encodes `frame` through the allocation-free encoder (as a device would) into a
    /// buffer of exactly its size, and checks that it decodes back from exactly those bytes
    /// and that every strict prefix is incomplete.
    pub(crate) fn round_trip<T>(frame: &T) -> Result<(), TestCaseError>
    where
        T: Serialize + DeserializeOwned + PartialEq + Clone + Debug,
    {
        let size = frame_size(frame);
        let mut bytes = vec![0u8; size + 2];
        prop_assert_eq!(
            encode_into(frame, &mut bytes[..size - 1]),
            Err(CodecError::BufferTooSmall)
        );
        prop_assert_eq!(encode_into(frame, &mut bytes[..size]), Ok(size));
        bytes[size..].copy_from_slice(&[0xff, 0x00]);
        prop_assert_eq!(decode::<T>(&bytes, FRAME_MAX)?, Some((frame.clone(), size)));
        for cut in 0..size {
            prop_assert_eq!(
                decode::<T>(&bytes[..cut], FRAME_MAX)?,
                None,
                "prefix of {}",
                cut
            );
        }
        Ok(())
    }

    // ---- Properties ------------------------------------------------------------------

    #[test]
    fn the_reference_crc32_is_crc32_ieee() {
        // The check value of CRC-32/ISO-HDLC, and agreement with crc32fast.
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), crc32fast::hash(b"123456789"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn apply_never_panics_and_fails_exactly_on_bad_indexes_and_too_many_tuples(
            base in presence(),
            ops in prop_oneof![
                3 => vec(op(), 0..12),
                // Enough insertions to reach the build's tuple limit.
                1 => vec((0u8..4, tuple()).prop_map(|(i, tuple)| Op::Insert { i, tuple }), 10..=20),
            ],
        ) {
            let want = model_apply(&base, &ops);
            let mut doc = base.clone();
            let got = delta::apply(&mut doc, &ops);
            prop_assert_eq!(got, want.as_ref().map(|_| ()).map_err(|e| *e));
            if let Ok(want) = want {
                prop_assert_eq!(doc, want);
            }
        }

        #[test]
        fn ops_with_good_indexes_apply_as_documented(
            base in presence(),
            ops in vec((op(), any::<prop::sample::Index>()), 0..12),
        ) {
            // Point every op at a tuple the document has at that moment (dropping those
            // that cannot have one), as a gateway's delta does.
            let mut len = base.tuples.len();
            let ops: Vec<Op> = ops
                .into_iter()
                .filter_map(|(op, at)| match op {
                    Op::Set { field, .. } if len > 0 => Some(Op::Set { i: at.index(len) as u8, field }),
                    Op::Insert { tuple, .. } if len < TUPLES => {
                        len += 1;
                        Some(Op::Insert { i: at.index(len) as u8, tuple })
                    }
                    Op::Remove { .. } if len > 0 => {
                        len -= 1;
                        Some(Op::Remove { i: at.index(len + 1) as u8 })
                    }
                    Op::Card(card) => Some(Op::Card(card)),
                    _ => None,
                })
                .collect();
            let mut doc = base.clone();
            prop_assert_eq!(delta::apply(&mut doc, &ops), Ok(()));
            prop_assert_eq!(doc.tuples.len(), len);
            prop_assert_eq!(Ok(doc), model_apply(&base, &ops));
        }

        #[test]
        fn check_is_crc32_of_the_postcard_encodings_of_the_states(states in vec(state(), 0..6)) {
            let mut check = Check::new();
            let mut bytes = Vec::new();
            for state in &states {
                match state {
                    State::Is { slot, name, version, presence } => {
                        check.state(*slot, name, *version, presence);
                        bytes.extend(postcard_of(slot));
                        bytes.extend(postcard_of(name.as_str()));
                        bytes.extend(postcard_of(version));
                        bytes.extend(postcard_of(presence));
                    }
                    State::Gone(slot) => {
                        check.gone(*slot);
                        bytes.extend(postcard_of(slot));
                    }
                }
            }
            prop_assert_eq!(check.finish(), crc32(&bytes).to_le_bytes());
        }

        #[test]
        fn sync_up_frames_round_trip(frame in sync_up()) {
            round_trip(&frame)?;
        }

        #[test]
        fn sync_down_frames_round_trip(frame in sync_down()) {
            round_trip(&frame)?;
        }

        #[test]
        fn changes_round_trip(change in change()) {
            round_trip(&change)?;
        }
    }

    #[cfg(feature = "std")]
    mod diff {
        //! `delta::diff` (the gateway's side, std only) against `delta::apply`.

        use std::collections::BTreeSet;

        use proptest::collection::{btree_set, vec};
        use proptest::prelude::*;
        use tern_wire::codec::{decode, encode};
        use tern_wire::delta::{self, Op};
        use tern_wire::limits::FRAME_MAX;
        use tern_wire::{Batch, Change, Down, Presence, Tuple};

        use super::{card, presence, tuple, tuple_with};

        /// Whether a tuple id repeats in `p`.
        fn repeats(p: &Presence) -> bool {
            let ids: BTreeSet<&str> = p.tuples.iter().map(|t| t.id.as_str()).collect();
            ids.len() != p.tuples.len()
        }

        /// Whether the tuples common to both documents are in another order in `target`.
        fn reordered(base: &Presence, target: &Presence) -> bool {
            let common = |of: &Presence, other: &Presence| -> Vec<String> {
                of.tuples
                    .iter()
                    .filter(|t| other.tuples.iter().any(|o| o.id == t.id))
                    .map(|t| t.id.clone())
                    .collect()
            };
            common(base, target) != common(target, base)
        }

        /// Two documents with unique tuple ids whose common tuples are in the same order:
        /// a pool of tuples in random order, each in the base only, the target only, both
        /// (with some of its fields changed in the target) or neither.
        fn aligned() -> impl Strategy<Value = (Presence, Presence)> {
            btree_set("[a-z]{1,6}", 0..=10)
                .prop_flat_map(|ids| {
                    let n = ids.len();
                    (
                        Just(ids.into_iter().collect::<Vec<_>>()).prop_shuffle(),
                        vec(0u8..4, n),
                        vec((tuple(), tuple(), any::<[bool; 6]>()), n),
                        card(),
                        prop_oneof![Just(None), card().prop_map(Some)],
                    )
                })
                .prop_map(|(ids, roles, tuples, base_card, target_card)| {
                    let mut base = Presence {
                        tuples: Vec::new(),
                        card: base_card.clone(),
                    };
                    let mut target = Presence {
                        tuples: Vec::new(),
                        card: target_card.unwrap_or(base_card),
                    };
                    for ((id, role), (old, new, mask)) in ids.into_iter().zip(roles).zip(tuples) {
                        let old = Tuple {
                            id: id.clone(),
                            ..old
                        };
                        let new = Tuple { id, ..new };
                        let changed = Tuple {
                            id: old.id.clone(),
                            basic: if mask[0] { new.basic } else { old.basic },
                            availability: if mask[1] {
                                new.availability
                            } else {
                                old.availability
                            },
                            contact: if mask[2] {
                                new.contact.clone()
                            } else {
                                old.contact.clone()
                            },
                            note: if mask[3] {
                                new.note.clone()
                            } else {
                                old.note.clone()
                            },
                            at: if mask[4] { new.at } else { old.at },
                            ext: if mask[5] {
                                new.ext.clone()
                            } else {
                                old.ext.clone()
                            },
                        };
                        match role {
                            0 => base.tuples.push(old),
                            1 => target.tuples.push(new),
                            2 => {
                                base.tuples.push(old);
                                target.tuples.push(changed);
                            }
                            _ => {}
                        }
                    }
                    (base, target)
                })
        }

        /// Checks `diff(base, target)`: `None` exactly when an id repeats or the common
        /// tuples are reordered; otherwise ops that apply to give `target`, also after
        /// travelling in a batch, removals first and highest index first, none of them a
        /// no-op. Returns whether there was a delta.
        fn check_diff(base: &Presence, target: &Presence) -> Result<bool, TestCaseError> {
            let refuse = repeats(base) || repeats(target) || reordered(base, target);
            let Some(ops) = delta::diff(base, target) else {
                prop_assert!(refuse, "no delta from {:?} to {:?}", base, target);
                return Ok(false);
            };
            prop_assert!(!refuse, "a delta {:?} from {:?} to {:?}", ops, base, target);

            let removals: Vec<u8> = ops
                .iter()
                .map_while(|op| match op {
                    Op::Remove { i } => Some(*i),
                    _ => None,
                })
                .collect();
            prop_assert!(removals.windows(2).all(|w| w[0] > w[1]), "{:?}", ops);
            let later_removal = ops[removals.len()..]
                .iter()
                .any(|op| matches!(op, Op::Remove { .. }));
            prop_assert!(!later_removal, "{:?}", ops);

            let mut doc = base.clone();
            for op in &ops {
                let before = doc.clone();
                delta::apply(&mut doc, core::slice::from_ref(op))?;
                prop_assert_ne!(&doc, &before, "{:?} changes nothing", op);
            }
            prop_assert_eq!(&doc, target);
            if base == target {
                prop_assert!(ops.is_empty());
            }

            // The same ops after the wire.
            let frame = Down::Batch(Batch {
                seq: 1,
                time: 0,
                check: [0; 4],
                changes: vec![Change::Delta {
                    slot: 1,
                    version: 2,
                    back: 1,
                    age: 0,
                    ops,
                }],
            });
            let Some((Down::Batch(batch), _)) = decode::<Down>(&encode(&frame), FRAME_MAX)? else {
                return Err(TestCaseError::fail("the batch did not decode"));
            };
            let Change::Delta { ops, .. } = &batch.changes[0] else {
                return Err(TestCaseError::fail("the change did not decode"));
            };
            let mut doc = base.clone();
            prop_assert_eq!(delta::apply(&mut doc, ops), Ok(()));
            prop_assert_eq!(&doc, target);
            Ok(true)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn diff_then_apply_gives_the_target((base, target) in aligned()) {
                prop_assert!(check_diff(&base, &target)?, "aligned documents have a delta");
            }

            #[test]
            fn diff_refuses_exactly_repeated_ids_and_reordered_tuples(
                base in presence(),
                target in prop_oneof![
                    presence(),
                    // Often close to the base: the same tuples, some changed, some gone.
                    (presence(), vec(any::<bool>(), 4)).prop_map(|(other, keep)| Presence {
                        tuples: other.tuples.into_iter().zip(keep).filter(|(_, k)| *k).map(|(t, _)| t).collect(),
                        card: other.card,
                    }),
                ],
                reorder in vec(tuple_with("[a-d]"), 0..3),
            ) {
                check_diff(&base, &target)?;
                // The base with some tuples moved to the end: common tuples reordered
                // unless what moved was already last.
                let mut moved = base.clone();
                for t in reorder {
                    if let Some(at) = moved.tuples.iter().position(|o| o.id == t.id) {
                        let t = moved.tuples.remove(at);
                        moved.tuples.push(t);
                    }
                }
                check_diff(&base, &moved)?;
                check_diff(&base, &base)?;
            }
        }
    }
}

mod access {
    //! Access rules and the frames that carry them (issue 5): arbitrary [`Rules`] and
    //! every access frame round-trip. The strategies keep within the no_std capacities
    //! (names 64 bytes, texts 128, lists 4) so that the properties run in both builds;
    //! in the std build lists go up to the gateway's limits (64 rules of each kind, 16
    //! delegates, 16 view tuples). Values the gateway would refuse (a window of day 0,
    //! an offset of 20 hours) are still frames: validating them is the gateway's work,
    //! so the strategies draw every field from its whole type.

    use proptest::option::of;
    use proptest::prelude::*;
    use tern_wire::{
        AdminOp, Decision, Delegate, Delivery, Down, InboxItem, InboxRule, Incoming, Item,
        LateReceipt, Operate, PresenceRule, ReceiptStatus, Rules, SubInfo, SubState, Up, View,
        When, Who,
    };

    use crate::common::{blob, key, name, text};
    use crate::sync::{address, availability, list_of, presence, round_trip, short_text};

    // ---- Strategies ------------------------------------------------------------------

    fn domain() -> impl Strategy<Value = String> {
        "[a-z0-9-]{1,20}(\\.[a-z]{2,6}){0,2}"
    }

    fn who() -> impl Strategy<Value = Who> {
        prop_oneof![
            Just(Who::Anyone),
            address().prop_map(|a| Who::User(name(&a))),
            domain().prop_map(|d| Who::Domain(name(&d))),
            Just(Who::Anonymous),
        ]
    }

    fn decision() -> impl Strategy<Value = Decision> {
        prop_oneof![
            Just(Decision::Allow),
            Just(Decision::Deny),
            Just(Decision::Ask),
            Just(Decision::Polite),
            Just(Decision::FetchOnly),
        ]
    }

    fn delivery() -> impl Strategy<Value = Delivery> {
        prop_oneof![
            Just(Delivery::Accept),
            Just(Delivery::Refuse),
            Just(Delivery::Discard),
        ]
    }

    fn sub_state() -> impl Strategy<Value = SubState> {
        prop_oneof![
            Just(SubState::Active),
            Just(SubState::Pending),
            Just(SubState::Denied),
            Just(SubState::Cancelled),
        ]
    }

    fn view() -> impl Strategy<Value = View> {
        (list_of("[a-z]{1,8}", 16), any::<u8>(), availability()).prop_map(
            |(tuples, hide, status)| View {
                tuples: tuples.iter().map(|t| name(t)).collect(),
                hide,
                status,
            },
        )
    }

    fn when() -> impl Strategy<Value = When> {
        // Mostly windows a gateway accepts, sometimes anything.
        let valid = (1u8..=0x7f, 0u16..1440, 1u16..=1440, -840i16..=840);
        let any = (any::<u8>(), any::<u16>(), any::<u16>(), any::<i16>());
        prop_oneof![3 => valid, 1 => any].prop_map(|(days, from, to, offset)| When {
            days,
            from,
            to,
            offset,
        })
    }

    fn presence_rule() -> impl Strategy<Value = PresenceRule> {
        (who(), decision(), of(view()), of(when())).prop_map(|(who, decision, view, when)| {
            PresenceRule {
                who,
                decision,
                view,
                when,
            }
        })
    }

    pub(crate) fn rules() -> impl Strategy<Value = Rules> {
        let inbox = (who(), delivery()).prop_map(|(who, delivery)| InboxRule { who, delivery });
        let delegate = (address(), any::<u8>()).prop_map(|(who, rights)| Delegate {
            who: name(&who),
            rights,
        });
        (
            list_of(presence_rule(), 64),
            list_of(inbox, 64),
            list_of(delegate, 16),
        )
            .prop_map(|(presence, inbox, delegates)| Rules {
                presence,
                inbox,
                delegates,
            })
    }

    fn item() -> impl Strategy<Value = Item> {
        let id = proptest::collection::vec(any::<u8>(), 1..=32);
        let message = (
            id.clone(),
            address(),
            address(),
            of(address()),
            of(short_text()),
            proptest::collection::vec(any::<u8>(), 0..64),
            any::<u64>(),
        )
            .prop_map(|(id, from, to, reply_to, content_type, body, sent)| {
                InboxItem::Message(Incoming {
                    id: key(&id),
                    from: name(&from),
                    to: name(&to),
                    reply_to: reply_to.as_deref().map(name),
                    content_type: content_type.as_deref().map(text),
                    body: blob(&body),
                    sent,
                })
            });
        let status = prop_oneof![
            Just(ReceiptStatus::Delivered),
            Just(ReceiptStatus::Stored),
            Just(ReceiptStatus::Relayed),
            any::<u16>().prop_map(|c| ReceiptStatus::Failed(tern_wire::ErrorCode(c))),
        ];
        let receipt = (id, address(), status).prop_map(|(id, to, status)| {
            InboxItem::Receipt(LateReceipt {
                id: key(&id),
                to: name(&to),
                status,
            })
        });
        (any::<u64>(), prop_oneof![message, receipt]).prop_map(|(seq, item)| Item { seq, item })
    }

    fn admin_op() -> impl Strategy<Value = AdminOp> {
        prop_oneof![
            Just(AdminOp::Watchers),
            any::<bool>().prop_map(|incoming| AdminOp::Subscriptions { incoming }),
            Just(AdminOp::GetRules),
            rules().prop_map(AdminOp::SetRules),
            Just(AdminOp::GetPresence),
            presence().prop_map(AdminOp::SetPresence),
            address().prop_map(|w| AdminOp::Cancel(name(&w))),
        ]
    }

    /// The access frames, client to gateway.
    pub(crate) fn access_up() -> impl Strategy<Value = Up> {
        prop_oneof![
            any::<u32>().prop_map(|req| Up::GetRules { req }),
            (any::<u32>(), rules()).prop_map(|(req, rules)| Up::SetRules { req, rules }),
            (any::<u32>(), address(), decision()).prop_map(|(req, w, decision)| Up::Decide {
                req,
                watcher: name(&w),
                decision,
            }),
            (any::<u32>(), address()).prop_map(|(req, w)| Up::Cancel {
                req,
                watcher: name(&w),
            }),
            (any::<u32>(), any::<bool>())
                .prop_map(|(req, incoming)| Up::Subscriptions { req, incoming }),
            (any::<u32>(), address(), presence()).prop_map(|(req, p, presence)| {
                Up::PublishFor {
                    req,
                    presentity: name(&p),
                    presence,
                }
            }),
            (any::<u32>(), address(), any::<u64>()).prop_map(|(req, inbox, after)| Up::Read {
                req,
                inbox: name(&inbox),
                after,
            }),
            (any::<u16>(), domain(), "[ -~]{0,64}").prop_map(|(version, domain, token)| {
                Up::Operate(Operate {
                    version,
                    domain: name(&domain),
                    token: text(&token),
                })
            }),
            (any::<u32>(), address(), admin_op()).prop_map(|(req, user, op)| Up::Admin {
                req,
                user: name(&user),
                op,
            }),
        ]
    }

    /// The access frames, gateway to client.
    pub(crate) fn access_down() -> impl Strategy<Value = Down> {
        let info = (address(), sub_state()).prop_map(|(who, state)| SubInfo {
            who: name(&who),
            state,
        });
        prop_oneof![
            any::<u32>().prop_map(|req| Down::Pending { req }),
            address().prop_map(|w| Down::Asked { watcher: name(&w) }),
            (any::<u32>(), rules()).prop_map(|(req, rules)| Down::Rules { req, rules }),
            (any::<u32>(), list_of(info, 8))
                .prop_map(|(req, list)| Down::Subscriptions { req, list }),
            (address(), sub_state()).prop_map(|(t, state)| Down::Subscription {
                target: name(&t),
                state,
            }),
            (any::<u32>(), list_of(item(), 32), any::<bool>())
                .prop_map(|(req, items, more)| Down::Items { req, items, more }),
        ]
    }

    // ---- Properties ------------------------------------------------------------------

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn rules_round_trip(rules in rules()) {
            round_trip(&rules)?;
        }

        #[test]
        fn access_up_frames_round_trip(frame in access_up()) {
            round_trip(&frame)?;
        }

        #[test]
        fn access_down_frames_round_trip(frame in access_down()) {
            round_trip(&frame)?;
        }
    }
}
