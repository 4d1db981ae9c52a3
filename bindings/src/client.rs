//! [`TernClient`] (an exported object over `tern_client::Client`), the foreign
//! [`EventListener`] and the [`ListenerHandle`] of the task that feeds it.
//!
//! Owns: argument and result conversion for each call, and the listener loop (pull an
//! event, hand it to the foreign listener, release it). It may not decide anything the
//! core decides.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::error::TernError;
use crate::types::{
    ClientMode, Decision, Event, Presence, PresenceDoc, Receipt, Rules, SubscribeOutcome,
    SubscriptionInfo, TernConfig, WatcherInfo,
};

/// A connection to a tern gateway as one principal. Dropping it (or `close()`) ends
/// the session.
#[derive(uniffi::Object)]
pub struct TernClient {
    client: Arc<tern_client::Client>,
    /// The runtime the client's background task runs on (uniffi's tokio runtime), where
    /// listeners wait for events.
    runtime: Handle,
}

impl std::fmt::Debug for TernClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TernClient")
            .field("user", &self.client.user())
            .finish_non_exhaustive()
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl TernClient {
    /// Connects to the gateway, opens (or resumes) the device's session and returns
    /// once the gateway accepted it. Fails with `Rejected` (code 4) for a wrong token,
    /// `Disconnected` when the gateway cannot be reached, `InvalidArgument` for a bad
    /// configuration. The first connection is not retried.
    #[uniffi::constructor]
    pub async fn connect(config: TernConfig) -> Result<Arc<Self>, TernError> {
        let client = tern_client::Client::connect(config.into()).await?;
        Ok(Arc::new(Self {
            client: Arc::new(client),
            runtime: Handle::current(),
        }))
    }

    /// The principal's normalised address, as the gateway stamps it.
    pub fn user(&self) -> String {
        self.client.user()
    }

    /// Replaces the principal's presence information.
    pub async fn publish(&self, presence: Presence) -> Result<(), TernError> {
        Ok(self.client.publish(presence.try_into()?).await?)
    }

    /// Fetches a presentity's presence once (its version is 0: unknown). Fails with
    /// `Refused` when its rules deny it or ask, `Failed` code 6 for an unknown user.
    pub async fn fetch(&self, presentity: String) -> Result<PresenceDoc, TernError> {
        Ok(self.client.fetch(presentity).await?.into())
    }

    /// Subscribes to a presentity: `Granted` with its presence (changes follow as
    /// `Event.Presence`), or `Pending` when its rules say *ask*. Fails with `Refused`
    /// when they deny it.
    pub async fn subscribe(&self, presentity: String) -> Result<SubscribeOutcome, TernError> {
        Ok(match self.client.subscribe_request(presentity).await? {
            tern_client::SubscribeOutcome::Granted(doc) => SubscribeOutcome::Granted {
                presence: versioned(&self.client, doc),
            },
            tern_client::SubscribeOutcome::Pending => SubscribeOutcome::Pending,
        })
    }

    /// Ends a subscription, or withdraws a pending request.
    pub async fn unsubscribe(&self, presentity: String) -> Result<(), TernError> {
        Ok(self.client.unsubscribe(presentity).await?)
    }

    /// The cached presence of a subscribed presentity, without asking the gateway;
    /// `None` when it is not cached.
    pub fn cached(&self, presentity: String) -> Option<PresenceDoc> {
        self.client.cached(presentity).map(Into::into)
    }

    /// Everything the presence cache holds, by presentity.
    pub fn roster(&self) -> Vec<PresenceDoc> {
        self.client.roster().into_iter().map(Into::into).collect()
    }

    /// Sends an instant message with a new random id and waits for its receipt.
    /// `content_type` `None` means `text/plain;charset=utf-8`. Without a link the
    /// message waits in the outbox; after `Timeout` its receipt comes as `Event.Sent`.
    pub async fn send(
        &self,
        to: String,
        body: Vec<u8>,
        content_type: Option<String>,
    ) -> Result<Receipt, TernError> {
        Ok(self.client.send(to, body, content_type).await?.into())
    }

    /// Sends a text message (UTF-8, `text/plain`), like `send`.
    pub async fn send_text(&self, to: String, text: String) -> Result<Receipt, TernError> {
        Ok(self.client.send(to, text.into_bytes(), None).await?.into())
    }

    /// Who subscribes to this principal's presence, and who fetched it recently.
    pub async fn watchers(&self) -> Result<WatcherInfo, TernError> {
        Ok(self.client.watchers().await?.into())
    }

    /// Subscriptions and their states, in address order: this principal's own
    /// (`incoming` false) or those to its presence, with requests waiting for its
    /// decision (`incoming` true).
    pub async fn subscriptions(&self, incoming: bool) -> Result<Vec<SubscriptionInfo>, TernError> {
        let list = self.client.subscriptions(incoming).await?;
        Ok(list.into_iter().map(Into::into).collect())
    }

    /// The principal's rules.
    pub async fn rules(&self) -> Result<Rules, TernError> {
        Ok(self.client.rules().await?.into())
    }

    /// Replaces the principal's rules as a whole; they apply at once.
    pub async fn set_rules(&self, rules: Rules) -> Result<(), TernError> {
        Ok(self.client.set_rules(rules.try_into()?).await?)
    }

    /// Decides about one watcher, typically after `Event.Asked`.
    pub async fn decide(&self, watcher: String, decision: Decision) -> Result<(), TernError> {
        Ok(self.client.decide(watcher, decision.into()).await?)
    }

    /// Ends a watcher's subscription (or pending request) to this principal's presence.
    pub async fn cancel(&self, watcher: String) -> Result<(), TernError> {
        Ok(self.client.cancel(watcher).await?)
    }

    /// The application's mode changed: `Active` in the foreground, `Inactive` in the
    /// background, `Sleepy` for a device that wakes now and then.
    pub fn set_mode(&self, mode: ClientMode) {
        self.client.set_mode(mode.into());
    }

    /// The device's network changed: moves the connection to a new socket (QUIC
    /// migration), or reconnects at once.
    pub fn network_changed(&self) {
        self.client.network_changed();
    }

    /// Hands every event to `listener`, one at a time in order, on a thread of its own
    /// (never the caller's, never the runtime's), until the returned handle is stopped
    /// or dropped, or the client is closed. A message or receipt is acknowledged to the
    /// gateway when `on_event` returns. If `on_event` throws, the failure is logged and
    /// the event counts as handled. Use one listener per client at a time.
    pub fn listen(&self, listener: Arc<dyn EventListener>) -> Arc<ListenerHandle> {
        let (stop, stopped) = watch::channel(false);
        let client = Arc::clone(&self.client);
        let runtime = self.runtime.clone();
        std::thread::Builder::new()
            .name("tern-events".into())
            .spawn(move || run_listener(&client, listener.as_ref(), stopped, &runtime))
            .expect("cannot start the event listener's thread");
        Arc::new(ListenerHandle { stop })
    }

    /// Says goodbye and closes the connection; waiting calls fail with `Disconnected`
    /// and listeners stop. Calling it again does nothing.
    pub async fn close(&self) {
        self.client.close().await;
    }
}

/// Receives a client's events; implemented in Kotlin, Swift or Python.
#[uniffi::export(foreign)]
pub trait EventListener: Send + Sync {
    /// One event. Called on the listener's own thread; return promptly (hand the event
    /// to the application's loop): the next event waits until this returns.
    fn on_event(&self, event: Event);
}

/// Stops a listener: `stop()`, or dropping the handle. An `on_event` call under way
/// finishes; none follows.
#[derive(Debug, uniffi::Object)]
pub struct ListenerHandle {
    stop: watch::Sender<bool>,
}

#[uniffi::export]
impl ListenerHandle {
    /// Stops the listener. Idempotent; may be called from `on_event`.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

impl Drop for ListenerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The listener loop: waits on `runtime` for the next event or the stop signal (stop
/// wins when both are ready, leaving the event queued), then calls the listener on this
/// thread and releases the event. An event taken is always handed over, so that no
/// inbox item is released unseen.
fn run_listener(
    client: &tern_client::Client,
    listener: &dyn EventListener,
    mut stopped: watch::Receiver<bool>,
    runtime: &Handle,
) {
    loop {
        let next = runtime.block_on(async {
            tokio::select! {
                biased;
                // Also resolves (with an error) when the handle is dropped.
                _ = stopped.wait_for(|stop| *stop) => None,
                event = client.next_event() => event,
            }
        });
        let Some(event) = next else {
            break;
        };
        let presence_version = match &event {
            tern_client::Event::Presence(doc) => cached_version(client, doc),
            _ => 0,
        };
        match Event::try_from(event) {
            Ok(mut event) => {
                if let Event::Presence { presence } = &mut event {
                    presence.version = presence_version;
                }
                if catch_unwind(AssertUnwindSafe(|| listener.on_event(event))).is_err() {
                    tracing::error!("the event listener failed; the event counts as handled");
                }
            }
            Err(unknown) => tracing::debug!(event = ?unknown, "skipped an event of a newer kind"),
        }
        client.acknowledge();
    }
}

/// `doc` with the cache's version when the cache holds exactly this document.
fn versioned(client: &tern_client::Client, doc: tern_client::PresenceDoc) -> PresenceDoc {
    let version = cached_version(client, &doc);
    PresenceDoc {
        version,
        ..doc.into()
    }
}

fn cached_version(client: &tern_client::Client, doc: &tern_client::PresenceDoc) -> u64 {
    client
        .cached(doc.presentity.clone())
        .filter(|entry| entry.doc == *doc)
        .map_or(0, |entry| entry.version)
}
