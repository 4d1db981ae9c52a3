//! Watcher information (issue 5, part 3; RFC 2779 5.1.11, 5.1.12) over real QUIC: a
//! principal learns of each subscription when it is made, and can list its
//! subscribers and who fetched its presence recently, by their authenticated names.

use tern_client::Event;
use tern_tests::{Harness, expect_event};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_learns_of_subscriptions_and_lists_its_watchers() {
    let gw = Harness::start().await;
    let alice = gw.user("alice@example.com").await;
    let bob = gw.user("bob@example.com").await;
    let carol = gw.user("carol@example.com").await;

    bob.subscribe("Alice@Example.com".into())
        .await
        .expect("subscribed");
    let watcher = expect_event(&alice, |e| match e {
        Event::Watched { watcher } => Some(watcher),
        _ => None,
    })
    .await;
    assert_eq!(
        watcher, "bob@example.com",
        "the authenticated, normalised name"
    );
    carol
        .fetch("alice@example.com".into())
        .await
        .expect("fetched");
    carol
        .fetch("alice@example.com".into())
        .await
        .expect("fetched");

    let info = alice.watchers().await.expect("watcher information");
    assert_eq!(info.subscribers, ["bob@example.com"]);
    assert_eq!(info.fetchers.len(), 1);
    assert_eq!(info.fetchers[0].who, "carol@example.com");
    assert_eq!(info.fetchers[0].count, 2);
    // Bob's view of his own watchers is his own: nobody watches him.
    let none = bob.watchers().await.expect("watcher information");
    assert!(none.subscribers.is_empty() && none.fetchers.is_empty());
}
