//! Hundreds, over real QUIC: a subscriber of hundreds of presentities (RFC 2779 2.2.4)
//! and a presentity with hundreds of subscribers (2.2.5). Millions are a matter for the
//! load harnesses in benches/, not for a test.

use std::sync::Arc;

use tern_client::Event;
use tern_tests::{Harness, PROMPTLY, expect_event, open_presence};
use tokio::task::JoinSet;

const MANY: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_of_hundreds_of_presentities_gets_every_document_at_login() {
    let gw = Harness::start().await;
    let token = gw.add_user("watcher@example.com");
    let watcher = gw.connect("watcher@example.com", &token).await;
    for i in 0..MANY {
        let who = format!("contact{i}@example.com");
        gw.add_user(&who);
        watcher.subscribe(who).await.expect("subscribed");
    }
    watcher.close().await;

    // A new session restates every subscription, and none is lost to the queue limit.
    let again = gw.connect("watcher@example.com", &token).await;
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < MANY {
        let doc = expect_event(&again, |e| match e {
            Event::Presence(doc) => Some(doc),
            _ => None,
        })
        .await;
        seen.insert(doc.presentity);
    }
    assert_eq!(seen.len(), MANY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_subscribers_of_one_presentity_are_all_notified() {
    const WATCHERS: usize = 200;
    let gw = Arc::new(Harness::start().await);
    let star = gw.user("star@example.com").await;
    let mut watchers = Vec::new();
    for i in 0..WATCHERS {
        let client = gw.user(&format!("fan{i}@example.com")).await;
        client
            .subscribe("star@example.com".into())
            .await
            .expect("subscribed");
        watchers.push(client);
    }
    star.publish(open_presence("on stage"))
        .await
        .expect("published");
    let mut waiting = JoinSet::new();
    for client in watchers {
        waiting.spawn(async move {
            expect_event(&client, |e| match e {
                Event::Presence(doc) => doc.presence.tuples.first()?.note.clone(),
                _ => None,
            })
            .await
        });
    }
    let mut notified = 0;
    while let Some(note) = tokio::time::timeout(PROMPTLY, waiting.join_next())
        .await
        .expect("every watcher notified in time")
    {
        assert_eq!(note.expect("watcher task"), "on stage");
        notified += 1;
    }
    assert_eq!(notified, WATCHERS);
}
