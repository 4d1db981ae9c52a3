//! Federation with XMPP through a real ejabberd (issue 7, docs/federation.md): the same
//! bridge as `tests/federation.rs`, against ejabberd 23.01 (Debian bookworm's package)
//! instead of Prosody. Each test has its own ejabberd on loopback
//! (`scripts/xmpp/ejabberd.sh`: its own Erlang node, cookie, Mnesia and ports, no epmd)
//! with the gateway as its XEP-0114 component for `example.com` (`ejabberd_service`),
//! XMPP users of `xmpp.test` played by slixmpp processes (`tests/xmpp/peer.py`), tern
//! users by `tern-client` over QUIC.
//!
//! The bridge confirms what it wrote with a XEP-0199 ping from the component's domain to
//! itself, which the XMPP server must route straight back to the component
//! (gateway/server/src/xmpp/bridge.rs). Prosody does; that ejabberd does too is checked
//! here stanza by stanza in its log
//! ([`ejabberd_routes_the_bridges_confirmation_pings_back_and_the_outbox_empties`]),
//! and through its effect: the durable outbox empties, and stays empty across an
//! ejabberd restart.
//!
//! Where a test must show that something has arrived, it passes a barrier ([`barrier`]):
//! the XMPP user sends a tern user a message and waits for the answer. ejabberd keeps
//! the order between two of its processes (the component's stream and a user's session),
//! so everything the gateway sent that user before has then arrived.

use tern_tests::Harness;
use tern_tests::federation::{self as scenario, *};
use tern_tests::xmpp::{Ejabberd, Peer, from_bare};

/// An ejabberd and a gateway joined to it as `example.com`, its component connected.
async fn world() -> (Ejabberd, Harness) {
    let started = std::time::Instant::now();
    let xmpp = Ejabberd::start().await;
    eprintln!("ejabberd started in {:?}", started.elapsed());
    scenario::world(xmpp).await
}

/// The ids of the bridge's pings in ejabberd's log (it logs every stream's XML at debug
/// level): those it received on a component stream, and those it sent to one.
fn pings_in_log(log: &str) -> (Vec<String>, Vec<String>) {
    let id_of = |line: &str| -> Option<String> {
        let at = line.find("id=")?;
        let rest = &line[at + 3..];
        let rest = rest.trim_start_matches(['\'', '"', '\\']);
        let id: String = rest
            .chars()
            .take_while(|c| !matches!(c, '\'' | '"' | '\\'))
            .collect();
        id.starts_with("tern-ping-").then_some(id)
    };
    let (mut received, mut sent) = (Vec::new(), Vec::new());
    for line in log.lines().filter(|l| l.contains("tern-ping-")) {
        if line.contains("Received XML on stream") {
            received.extend(id_of(line));
        } else if line.contains("Send XML on stream") {
            sent.extend(id_of(line));
        }
    }
    (received, sent)
}

// ---- The confirmation ping ------------------------------------------------------------

/// The bridge's confirmation ping (from `example.com` to `example.com`) is routed back
/// by ejabberd to the component stream it came from, unchanged: every stanza written is
/// confirmed and leaves the durable outbox, and the one component stream stays up.
///
/// Were the ping not routed back, the outbox would never empty and the bridge would
/// drop the stream after 30 s (`PING_TIMEOUT`) and reconnect, again and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejabberd_routes_the_bridges_confirmation_pings_back_and_the_outbox_empties() {
    let (xmpp, gw) = world().await;
    let alice = gw.user(ALICE).await;
    let x = xmpp.add_user("xavier").await;
    let mut xavier = Peer::login(&xmpp, &x, "laptop").await;

    for n in 0..5 {
        relay(
            &alice,
            message(&format!("p-{n}"), &x.jid, &format!("ping me {n}")),
        )
        .await;
    }
    xavier
        .expect("the last message", |e| {
            from_bare(e, "message", ALICE) && e["origin_id"] == "p-4"
        })
        .await;
    wait_outbox_empty(&xmpp, &gw).await;

    // In ejabberd's own words: each ping the component wrote went back to it, as it was.
    let log = xmpp.log();
    let (received, sent) = pings_in_log(&log);
    assert!(
        !received.is_empty(),
        "no ping from the component in ejabberd's log:\n{}",
        ping_lines(&log)
    );
    for id in &received {
        assert!(
            sent.contains(id),
            "ejabberd did not send the ping {id} back to the component:\n{}",
            ping_lines(&log)
        );
    }
    let back = log
        .lines()
        .find(|l| l.contains("Send XML on stream") && l.contains("tern-ping-"))
        .expect("a ping sent back");
    assert!(
        back.contains("to='example.com'")
            && back.contains("from='example.com'")
            && back.contains("type='get'"),
        "the ping comes back as it went, an iq get from and to example.com: {back}"
    );
    eprintln!("ejabberd's log, a ping going back to the component:\n{back}");
    assert_eq!(xmpp.component_connections(), 1, "one component stream");
    assert_eq!(xmpp.component_disconnections(), 0, "the stream never ended");
}

// ---- An XMPP user watches a tern user ------------------------------------------------

/// An XMPP user subscribes to a tern user and follows its presence (scenario in
/// `tern_tests::federation`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_xmpp_user_subscribes_to_a_tern_user_and_sees_its_presence_change() {
    let (xmpp, gw) = world().await;
    scenario::an_xmpp_user_subscribes_to_a_tern_user_and_sees_its_presence_change(xmpp, gw).await;
}

// ---- A tern user watches an XMPP user -------------------------------------------------

/// A tern user subscribes to an XMPP user who approves; one tuple per resource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tern_user_subscribes_to_an_xmpp_user_who_approves() {
    let (xmpp, gw) = world().await;
    scenario::a_tern_user_subscribes_to_an_xmpp_user_who_approves(xmpp, gw).await;
}

// ---- Messages ------------------------------------------------------------------------

/// Messages both ways with ids and receipts, a bounce, a refused content type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_cross_both_ways_with_ids_and_receipts() {
    let (xmpp, gw) = world().await;
    scenario::messages_cross_both_ways_with_ids_and_receipts(xmpp, gw).await;
}

// ---- ejabberd restarts ----------------------------------------------------------------

/// ejabberd restarted mid-traffic: every message arrives (scenario in
/// `tern_tests::federation`), and the outbox holds what was unconfirmed meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejabberd_restarts_mid_traffic_and_nothing_is_lost() {
    let (xmpp, gw) = world().await;
    the_xmpp_server_restarts_mid_traffic_and_nothing_is_lost(xmpp, gw).await;
}

// ---- The XMPP side alone ---------------------------------------------------------------

/// The XMPP machinery alone, without the gateway: a failure here is the
/// infrastructure's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_xmpp_side_alone_works() {
    let xmpp = Ejabberd::start().await;
    scenario::the_xmpp_side_alone_works(xmpp).await;
}
