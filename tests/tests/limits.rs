//! Abuse limits (issue 5, part 8) over real QUIC: a principal over its domain's rate
//! limit is told how long to wait, nothing it sent over the limit is stored, it gets
//! through after the wait, and other principals are unaffected meanwhile.

use std::time::Duration;

use tern_client::ClientError;
use tern_gateway::config::RateTable;
use tern_tests::Harness;

async fn send(
    client: &tern_client::Client,
    body: &str,
) -> Result<tern_client::SendOutcome, ClientError> {
    let to = "target@example.com".to_string();
    client.send(to, body.as_bytes().to_vec(), None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_client_recovers_after_retry_after_while_others_are_unaffected() {
    let gw = Harness::start_with(|c| {
        let rates = RateTable {
            messages_per_minute: 120,
            burst: 3,
            ..RateTable::default()
        };
        c.domains = vec![tern_tests::domain("example.com", rates)];
    })
    .await;
    let spammer = gw.user("spammer@example.com").await;
    let calm = gw.user("calm@example.com").await;
    gw.add_user("target@example.com");
    for i in 0..3 {
        send(&spammer, &format!("burst {i}"))
            .await
            .expect("within the burst");
    }
    let limited = send(&spammer, "one too many").await;
    let Err(ClientError::RateLimited { retry_after }) = limited else {
        panic!("expected RateLimited, got {limited:?}");
    };
    assert!(
        retry_after > Duration::ZERO && retry_after <= Duration::from_millis(500),
        "{retry_after:?}"
    );
    // Another principal of the same domain is not slowed down.
    for i in 0..3 {
        send(&calm, &format!("calm {i}")).await.expect("unaffected");
    }
    tokio::time::sleep(retry_after).await;
    send(&spammer, "after the wait")
        .await
        .expect("accepted again");
}

/// Opens a QUIC connection from `bind`; whether the gateway let it through.
async fn handshake(gw: &Harness, bind: std::net::SocketAddr) -> bool {
    let endpoint = tern_tests::raw::endpoint_on(&gw.cert_pem(), false, bind);
    let connecting = endpoint.connect(gw.addr(), "localhost").expect("connect");
    let ok = connecting.await.is_ok();
    endpoint.close(0u32.into(), b"");
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_opening_connections_too_fast_is_refused_and_others_are_not() {
    let gw = Harness::start_with(|c| {
        c.limits.connections_per_minute = 60;
        c.limits.connection_burst = 2;
    })
    .await;
    let here = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let there = std::net::SocketAddr::from(([127, 0, 0, 3], 0));
    assert!(handshake(&gw, here).await);
    assert!(handshake(&gw, here).await);
    assert!(
        !handshake(&gw, here).await,
        "the third within the burst is refused"
    );
    assert!(handshake(&gw, there).await, "another address is unaffected");
    // The bucket refills at one a second.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert!(handshake(&gw, here).await);
}
