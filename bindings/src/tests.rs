//! The conversions between the FFI types and the core's, in pure Rust (no gateway, no
//! foreign code; the end-to-end tests are the per-language programs under
//! `scripts/bindings/`).

use std::path::PathBuf;
use std::time::Duration;

use tern_client::{Availability, CardKind, ClientError, ErrorCode};

use crate::*;

fn core_tuple() -> tern_client::Tuple {
    tern_client::Tuple {
        id: "phone".into(),
        basic: tern_client::Basic::Open,
        availability: Some(Availability::AWAY),
        contact: Some("tern:alice@example.com".into()),
        note: Some("lunch".into()),
        at: Some(1_700_000_000),
        ext: Vec::new(),
    }
}

fn core_doc() -> tern_client::PresenceDoc {
    tern_client::PresenceDoc {
        presentity: "alice@example.com".into(),
        updated: 1_700_000_000_123,
        presence: tern_client::Presence {
            tuples: vec![core_tuple()],
            card: vec![tern_client::CardField {
                kind: CardKind::EMAIL,
                value: "alice@example.com".into(),
            }],
        },
    }
}

#[test]
fn default_config_has_the_cores_defaults() {
    let config = default_config(
        "127.0.0.1:4433".into(),
        "alice@example.com".into(),
        "token".into(),
        b"pem".to_vec(),
    );
    assert!(config.inbox && config.reconnect && !config.anonymous);
    assert_eq!(config.mode, ClientMode::Active);
    assert_eq!(config.state_dir, None);
    assert_eq!(config.server_name, None);
    assert_eq!(
        config.keepalive_ms,
        tern_client::DEFAULT_KEEPALIVE.as_millis() as u64
    );
    assert_eq!(
        config.idle_timeout_ms,
        tern_client::DEFAULT_IDLE_TIMEOUT.as_millis() as u64
    );
    assert_eq!(
        config.request_timeout_ms,
        tern_client::DEFAULT_REQUEST_TIMEOUT.as_millis() as u64
    );
    // And back: exactly the core's own default configuration.
    let core = tern_client::ClientConfig::new(
        "127.0.0.1:4433".into(),
        "alice@example.com".into(),
        "token".into(),
        b"pem".to_vec(),
    );
    assert_eq!(tern_client::ClientConfig::from(config), core);
}

#[test]
fn config_fields_reach_the_core() {
    let config = TernConfig {
        state_dir: Some("/tmp/tern-state".into()),
        server_name: Some("gw.example.net".into()),
        mode: ClientMode::Sleepy,
        keepalive_ms: 0,
        idle_timeout_ms: 1_500,
        request_timeout_ms: 2_500,
        inbox: false,
        reconnect: false,
        anonymous: true,
        ..default_config(
            "gw:1".into(),
            "bob@example.com".into(),
            "t".into(),
            b"x".to_vec(),
        )
    };
    let core = tern_client::ClientConfig::from(config.clone());
    assert_eq!(core.state_dir, Some(PathBuf::from("/tmp/tern-state")));
    assert_eq!(core.server_name.as_deref(), Some("gw.example.net"));
    assert_eq!(core.mode, tern_client::ClientMode::SLEEPY);
    assert_eq!(core.keepalive, Duration::ZERO);
    assert_eq!(core.idle_timeout, Duration::from_millis(1_500));
    assert_eq!(core.request_timeout, Duration::from_millis(2_500));
    assert_eq!(core.ca_pem.as_deref(), Some(&b"x"[..]));
    assert!(!core.inbox && !core.reconnect && core.anonymous);
    assert_eq!(TernConfig::from(core), config);
}

#[test]
fn debug_hides_the_token() {
    let config = default_config("gw:1".into(), "a@b.c".into(), "s3cr3t".into(), vec![]);
    let shown = format!("{config:?}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
}

#[test]
fn modes_convert_both_ways() {
    for (ffi, core) in [
        (ClientMode::Active, tern_client::ClientMode::ACTIVE),
        (ClientMode::Inactive, tern_client::ClientMode::INACTIVE),
        (ClientMode::Sleepy, tern_client::ClientMode::SLEEPY),
    ] {
        assert_eq!(tern_client::ClientMode::from(ffi), core);
        assert_eq!(ClientMode::from(core), ffi);
    }
    assert_eq!(
        ClientMode::from(tern_client::ClientMode(200)),
        ClientMode::Active
    );
}

#[test]
fn presence_round_trips_with_names() {
    let presence = Presence::from(core_doc().presence);
    assert_eq!(
        presence.tuples,
        vec![Tuple {
            id: "phone".into(),
            open: true,
            availability: Some("away".into()),
            contact: Some("tern:alice@example.com".into()),
            note: Some("lunch".into()),
            at: Some(1_700_000_000),
        }]
    );
    assert_eq!(
        presence.card,
        vec![CardField {
            kind: "email".into(),
            value: "alice@example.com".into()
        }]
    );
    let back = tern_client::Presence::try_from(presence).unwrap();
    assert_eq!(back, core_doc().presence);
}

#[test]
fn unregistered_values_go_as_numbers() {
    let tuple = tern_client::Tuple {
        availability: Some(Availability(42)),
        basic: tern_client::Basic::Closed,
        ..core_tuple()
    };
    let ffi = Tuple::from(tuple.clone());
    assert_eq!(ffi.availability.as_deref(), Some("42"));
    assert!(!ffi.open);
    assert_eq!(tern_client::Tuple::try_from(ffi).unwrap(), tuple);

    let field = CardField {
        kind: "9".into(),
        value: "x".into(),
    };
    let core = tern_client::CardField::try_from(field.clone()).unwrap();
    assert_eq!(core.kind, CardKind(9));
    assert_eq!(CardField::from(core), field);
}

#[test]
fn extensions_are_dropped_when_publishing() {
    let tuple = tern_client::Tuple {
        ext: vec![tern_client::Ext::wake(60)],
        ..core_tuple()
    };
    let back = tern_client::Tuple::try_from(Tuple::from(tuple)).unwrap();
    assert!(back.ext.is_empty());
}

#[test]
fn unknown_names_are_invalid_arguments() {
    let bad_tuple = Tuple {
        availability: Some("sleepy-ish".into()),
        ..Tuple::from(core_tuple())
    };
    let bad_card = CardField {
        kind: "fax".into(),
        value: "1".into(),
    };
    let bad_view = View {
        status: Some("nope".into()),
        ..View::default()
    };
    assert!(matches!(
        tern_client::Tuple::try_from(bad_tuple.clone()),
        Err(TernError::InvalidArgument { .. })
    ));
    assert!(matches!(
        tern_client::CardField::try_from(bad_card),
        Err(TernError::InvalidArgument { .. })
    ));
    assert!(matches!(
        tern_client::View::try_from(bad_view),
        Err(TernError::InvalidArgument { .. })
    ));
    let presence = Presence {
        tuples: vec![bad_tuple],
        card: vec![],
    };
    assert!(matches!(
        tern_client::Presence::try_from(presence),
        Err(TernError::InvalidArgument { reason }) if reason.contains("sleepy-ish")
    ));
}

#[test]
fn documents_carry_the_cache_version_when_known() {
    let doc = PresenceDoc::from(core_doc());
    assert_eq!(doc.version, 0);
    assert_eq!(doc.presentity, "alice@example.com");
    assert_eq!(doc.updated, 1_700_000_000_123);
    let cached = PresenceDoc::from(tern_client::CachedPresence {
        slot: 3,
        version: 17,
        doc: core_doc(),
    });
    assert_eq!(cached, PresenceDoc { version: 17, ..doc });
}

#[test]
fn receipts_and_their_status() {
    let failed = tern_client::ReceiptStatus::Failed(ErrorCode::UNKNOWN_USER);
    assert_eq!(
        ReceiptStatus::from(failed),
        ReceiptStatus::Failed {
            code: 6,
            reason: "unknown_user".into()
        }
    );
    assert_eq!(
        ReceiptStatus::from(tern_client::ReceiptStatus::Failed(ErrorCode(777))),
        ReceiptStatus::Failed {
            code: 777,
            reason: "error_777".into()
        }
    );
    for status in [
        tern_client::ReceiptStatus::Delivered,
        tern_client::ReceiptStatus::Stored,
        failed,
    ] {
        assert_eq!(
            tern_client::ReceiptStatus::from(ReceiptStatus::from(status)),
            status
        );
    }
    let sent = Receipt::from(tern_client::SendOutcome {
        id: vec![1; 16],
        to: "bob@example.com".into(),
        status: tern_client::ReceiptStatus::Delivered,
    });
    let late = Receipt::from(tern_client::LateReceipt {
        id: vec![1; 16],
        to: "bob@example.com".into(),
        status: tern_client::ReceiptStatus::Delivered,
    });
    assert_eq!(sent, late);
    assert_eq!(sent.status, ReceiptStatus::Delivered);
}

fn core_rules() -> tern_client::Rules {
    tern_client::Rules {
        presence: vec![
            tern_client::PresenceRule {
                who: tern_client::Who::User("bob@example.com".into()),
                decision: tern_client::Decision::Allow,
                view: Some(tern_client::View {
                    tuples: vec!["phone".into()],
                    hide: tern_client::View::NOTE | tern_client::View::CARD,
                    status: Some(Availability::BUSY),
                }),
                when: Some(tern_client::When {
                    days: 0x1f,
                    from: 9 * 60,
                    to: 17 * 60,
                    offset: -300,
                }),
            },
            tern_client::PresenceRule {
                who: tern_client::Who::Domain("example.net".into()),
                decision: tern_client::Decision::Ask,
                view: None,
                when: None,
            },
            tern_client::PresenceRule {
                who: tern_client::Who::Anonymous,
                decision: tern_client::Decision::Polite,
                view: None,
                when: None,
            },
            tern_client::PresenceRule {
                who: tern_client::Who::Anyone,
                decision: tern_client::Decision::Deny,
                view: None,
                when: None,
            },
        ],
        inbox: vec![
            tern_client::InboxRule {
                who: tern_client::Who::Anonymous,
                delivery: tern_client::Delivery::Discard,
            },
            tern_client::InboxRule {
                who: tern_client::Who::Domain("spam.example".into()),
                delivery: tern_client::Delivery::Refuse,
            },
            tern_client::InboxRule {
                who: tern_client::Who::Anyone,
                delivery: tern_client::Delivery::Accept,
            },
        ],
        delegates: vec![tern_client::Delegate {
            who: "assistant@example.com".into(),
            rights: tern_client::Delegate::PUBLISH | tern_client::Delegate::READ,
        }],
    }
}

#[test]
fn rules_round_trip() {
    let rules = Rules::from(core_rules());
    let first = &rules.presence[0];
    assert_eq!(
        first.who,
        Who::User {
            address: "bob@example.com".into()
        }
    );
    assert_eq!(first.decision, Decision::Allow);
    let view = first.view.as_ref().unwrap();
    assert_eq!(view.status.as_deref(), Some("busy"));
    assert_eq!(view.hide, 2 | 16);
    assert_eq!(
        first.when,
        Some(TimeWindow {
            days: 0x1f,
            from: 540,
            to: 1020,
            offset: -300
        })
    );
    assert_eq!(
        rules.presence[1].who,
        Who::Domain {
            name: "example.net".into()
        }
    );
    assert_eq!(rules.inbox[0].delivery, Delivery::Discard);
    assert_eq!(rules.delegates[0].rights, 3);
    assert_eq!(tern_client::Rules::try_from(rules).unwrap(), core_rules());
}

#[test]
fn access_values_convert() {
    for state in [
        tern_client::SubState::Active,
        tern_client::SubState::Pending,
        tern_client::SubState::Denied,
        tern_client::SubState::Cancelled,
    ] {
        assert_eq!(
            tern_client::SubState::from(SubscriptionState::from(state)),
            state
        );
    }
    let info = SubscriptionInfo::from(tern_client::SubInfo {
        who: "bob@example.com".into(),
        state: tern_client::SubState::Pending,
    });
    assert_eq!(info.state, SubscriptionState::Pending);
    let watchers = WatcherInfo::from(tern_client::WatcherInfo {
        subscribers: vec!["bob@example.com".into()],
        fetchers: vec![tern_client::Fetcher {
            who: "carol@example.com".into(),
            age: 12,
            count: 3,
        }],
    });
    assert_eq!(watchers.subscribers, vec!["bob@example.com".to_string()]);
    assert_eq!(
        watchers.fetchers,
        vec![Fetcher {
            who: "carol@example.com".into(),
            age_secs: 12,
            count: 3
        }]
    );
}

#[test]
fn events_convert() {
    use tern_client::Event as E;
    let incoming = tern_client::Incoming {
        id: vec![7; 16],
        from: "alice@example.com".into(),
        to: "bob@example.com".into(),
        reply_to: None,
        content_type: Some("text/markdown".into()),
        body: b"*hi*".to_vec(),
        sent: 1_700_000_000_000,
    };
    let late = tern_client::LateReceipt {
        id: vec![7; 16],
        to: "carol@example.com".into(),
        status: tern_client::ReceiptStatus::Stored,
    };
    let cases = [
        (
            E::Presence(core_doc()),
            Event::Presence {
                presence: core_doc().into(),
            },
        ),
        (
            E::SubscriptionEnded {
                presentity: "a@b.c".into(),
            },
            Event::SubscriptionEnded {
                presentity: "a@b.c".into(),
            },
        ),
        (
            E::Watched {
                watcher: "w@b.c".into(),
            },
            Event::Watched {
                watcher: "w@b.c".into(),
            },
        ),
        (
            E::Asked {
                watcher: "w@b.c".into(),
            },
            Event::Asked {
                watcher: "w@b.c".into(),
            },
        ),
        (
            E::SubscriptionChanged {
                target: "a@b.c".into(),
                state: tern_client::SubState::Denied,
            },
            Event::SubscriptionChanged {
                target: "a@b.c".into(),
                state: SubscriptionState::Denied,
            },
        ),
        (
            E::Message {
                seq: 5,
                message: incoming,
            },
            Event::Message {
                message: Message {
                    id: vec![7; 16],
                    from: "alice@example.com".into(),
                    to: "bob@example.com".into(),
                    reply_to: None,
                    content_type: Some("text/markdown".into()),
                    body: b"*hi*".to_vec(),
                    sent: 1_700_000_000_000,
                },
            },
        ),
        (
            E::Receipt {
                seq: 6,
                receipt: late.clone(),
            },
            Event::Receipt {
                receipt: late.clone().into(),
            },
        ),
        (
            E::Sent(tern_client::SendOutcome {
                id: late.id.clone(),
                to: late.to.clone(),
                status: late.status,
            }),
            Event::Sent {
                receipt: late.into(),
            },
        ),
        (
            E::Connection(tern_client::ConnectionState::Connected),
            Event::Connection {
                state: ConnectionState::Connected,
            },
        ),
        (
            E::Connection(tern_client::ConnectionState::Reconnecting {
                reason: "lost".into(),
            }),
            Event::Connection {
                state: ConnectionState::Reconnecting {
                    reason: "lost".into(),
                },
            },
        ),
        (
            E::Connection(tern_client::ConnectionState::Disconnected {
                reason: "bye".into(),
            }),
            Event::Connection {
                state: ConnectionState::Disconnected {
                    reason: "bye".into(),
                },
            },
        ),
    ];
    for (core, ffi) in cases {
        assert_eq!(Event::try_from(core), Ok(ffi));
    }
}

#[test]
fn every_client_error_maps() {
    let cases = [
        (
            ClientError::InvalidArgument("bad".into()),
            TernError::InvalidArgument {
                reason: "bad".into(),
            },
        ),
        (
            ClientError::Rejected {
                code: 4,
                text: "wrong token".into(),
            },
            TernError::Rejected {
                code: 4,
                reason: "wrong token".into(),
            },
        ),
        (
            ClientError::Failed {
                code: 6,
                text: "no such user".into(),
            },
            TernError::Failed {
                code: 6,
                reason: "no such user".into(),
            },
        ),
        (
            ClientError::Refused { text: "no".into() },
            TernError::Refused {
                reason: "no".into(),
            },
        ),
        (
            ClientError::SubscriptionPending {
                presentity: "a@b.c".into(),
            },
            TernError::Pending,
        ),
        (
            ClientError::RateLimited {
                retry_after: Duration::from_millis(1_250),
            },
            TernError::RateLimited {
                retry_after_ms: 1_250,
            },
        ),
        (
            ClientError::OutboxFull { limit: 256 },
            TernError::RateLimited { retry_after_ms: 0 },
        ),
        (ClientError::Timeout, TernError::Timeout),
        (
            ClientError::Closed {
                reason: "closed".into(),
            },
            TernError::Disconnected {
                reason: "closed".into(),
            },
        ),
        (
            ClientError::Connect("no answer".into()),
            TernError::Disconnected {
                reason: "cannot connect: no answer".into(),
            },
        ),
        (
            ClientError::Tls("untrusted".into()),
            TernError::Disconnected {
                reason: "tls: untrusted".into(),
            },
        ),
        (
            ClientError::NotConnected,
            TernError::Disconnected {
                reason: "not connected: reconnecting".into(),
            },
        ),
        (
            ClientError::Storage("locked".into()),
            TernError::Internal {
                reason: "state directory: locked".into(),
            },
        ),
        (
            ClientError::Protocol("junk".into()),
            TernError::Internal {
                reason: "protocol error: junk".into(),
            },
        ),
    ];
    for (core, ffi) in cases {
        assert_eq!(TernError::from(core), ffi);
    }
}

#[test]
fn errors_display_their_fields() {
    let e = TernError::Failed {
        code: 6,
        reason: "unknown_user".into(),
    };
    assert_eq!(e.to_string(), "failed (6): unknown_user");
    assert_eq!(TernError::Timeout.to_string(), "timed out");
}
