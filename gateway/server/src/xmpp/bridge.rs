//! The bridge task: the gateway's XEP-0114 component connection to the XMPP server
//! (docs/federation.md).
//!
//! This module owns the connection's life: connecting, the component handshake,
//! keeping the stream alive, confirming what was written, and reconnecting with
//! backoff when the stream ends for any reason. It reports to the hub thread with
//! [`FedEvent`]s only (`Up` with a fresh stanza channel per connection, `Inbound`,
//! `Written`, `Down`) and answers on the stream only what [`stanza`] says to answer; it
//! decides nothing about presence or messages and touches no storage (the hub's
//! durable outbox holds what is to be sent until `Written` says the server has it).
//!
//! It uses tokio-xmpp's lower-level pieces, not its `Component`, which ends silently on
//! one malformed stanza or a minute of silence: a `TcpStream` connected to `host:port`
//! (trying each address the name resolves to, at every attempt) and tokio-xmpp's
//! `initiate_stream`, which is what its `TcpServerConnector` does apart from taking
//! only an `IP:port`.
//!
//! Confirmation: TCP keeps order and the server reads a component's stanzas in order,
//! so when one of the bridge's pings ([`stanza::ping`]) comes back, the server has read
//! everything written before it. The bridge keeps at most one confirmation in flight:
//! whenever stanzas were written after the last confirmed one and no ping is
//! outstanding, it pings, and the ping's return confirms the highest outbox number
//! written before it. A soft read timeout (a minute of silence) sends a ping too, which
//! keeps the stream alive; a ping not back within [`PING_TIMEOUT`] ends the
//! connection.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::{FutureExt, SinkExt, StreamExt};
use minidom::Element;
use tern_gateway_core::federation::Outbound;
use tern_wire::addr::normalise_domain;
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_xmpp::xmlstream::{ReadError, StreamHeader, Timeouts, XmlStream, initiate_stream};
use xmpp_parsers::component::Handshake;
use xmpp_parsers::ns;

use super::FedEvent;
use super::stanza::{self, PING_PREFIX, Received};
use crate::runtime::hub_thread::Event;

/// Where and as whom the bridge connects.
#[derive(Clone)]
pub(crate) struct Settings {
    /// The XMPP server's component listener, `host:port`.
    pub(crate) component: String,
    /// The component's shared secret.
    pub(crate) secret: String,
    /// The component's domain: the served domain joined to XMPP.
    pub(crate) domain: String,
}

impl std::fmt::Debug for Settings {
    /// Everything but the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("component", &self.component)
            .field("secret", &"…")
            .field("domain", &self.domain)
            .finish()
    }
}

/// The component stream: elements read unparsed, so that one bad stanza is one
/// element to answer or drop, not the end of the stream.
type Stream = XmlStream<BufStream<TcpStream>, Element>;

/// Silence before the stream reports a soft timeout (answered with a ping), and the
/// time the server then has to send anything before the stream is deemed dead.
const TIMEOUTS: Timeouts = Timeouts {
    read_timeout: Duration::from_secs(60),
    response_timeout: Duration::from_secs(30),
};
/// Longest a connection attempt (TCP, stream header, handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest one write may wait for the socket.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a ping may stay unanswered before the connection is given up.
pub(crate) const PING_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest the bridge waits for the server to take its closing stream footer.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The first delay before reconnecting (before jitter).
const BACKOFF_START: Duration = Duration::from_millis(500);
/// The longest delay before reconnecting.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A connection that stayed up this long resets the backoff.
const STABLE: Duration = Duration::from_secs(10);
/// Most outbound stanzas written before one flush.
const WRITE_BATCH: usize = 64;

/// Starts the bridge task: it connects, reconnects with backoff, and runs until aborted
/// (or until the hub thread is gone).
pub(crate) fn spawn(
    settings: Settings,
    events: flume::Sender<Event>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(settings, events))
}

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("cannot connect: {0}")]
    Tcp(io::Error),
    #[error("stream failed: {0}")]
    Stream(io::Error),
    #[error("the server sent no stream id")]
    NoStreamId,
    #[error("the server refused the component: {0}")]
    Refused(String),
    #[error("the server closed the connection during the handshake")]
    Closed,
    #[error("no handshake within {0:?}")]
    Timeout(Duration),
    #[error("the connection attempt panicked")]
    Panicked,
}

/// Why an established connection ended.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("the server closed the stream")]
    Footer,
    #[error("the server closed the connection")]
    Eof,
    #[error("stream error from the server: {0}")]
    StreamError(String),
    #[error("read failed: {0}")]
    Read(io::Error),
    #[error("write failed: {0}")]
    Write(io::Error),
    #[error("a write took longer than {0:?}")]
    WriteTimeout(Duration),
    #[error("a ping was not answered within {0:?}")]
    PingTimeout(Duration),
    #[error("the component's domain {0:?} is not a JID")]
    Unpingable(String),
    #[error("the hub thread dropped the stanza channel")]
    ChannelClosed,
    #[error("the hub thread is gone")]
    HubGone,
    #[error("the connection's task panicked")]
    Panicked,
}

/// The task: connect, serve, report, back off, again; until the hub thread is gone.
async fn run(settings: Settings, events: flume::Sender<Event>) {
    let domain =
        normalise_domain(&settings.domain).unwrap_or_else(|_| settings.domain.to_ascii_lowercase());
    let mut backoff = Backoff::new();
    let mut outage = Outage::default();
    while !events.is_disconnected() {
        // A panic in a library on what the server sent must not end the bridge: the
        // connection ends and another one starts.
        let connected = AssertUnwindSafe(connect(&settings, &domain))
            .catch_unwind()
            .await
            .unwrap_or(Err(ConnectError::Panicked));
        match connected {
            Ok(stream) => {
                outage.recovered(&settings.component, &domain);
                let up = Instant::now();
                let end = AssertUnwindSafe(session(&domain, stream, &events))
                    .catch_unwind()
                    .await
                    .unwrap_or(End::Panicked);
                if matches!(end, End::HubGone) || report(&events, FedEvent::Down).await.is_err() {
                    tracing::debug!("the hub thread is gone: the XMPP bridge stops");
                    return;
                }
                outage.lost(&settings.component, &end);
                if up.elapsed() >= STABLE {
                    backoff.reset();
                }
            }
            Err(err) => outage.failed(&settings.component, &domain, &err),
        }
        sleep(backoff.next_delay()).await;
    }
}

/// Tells the hub thread; fails only if it is gone.
async fn report(events: &flume::Sender<Event>, event: FedEvent) -> Result<(), End> {
    events
        .send_async(Event::Federation(event))
        .await
        .map_err(|_| End::HubGone)
}

/// Connects and authenticates as the component, within [`CONNECT_TIMEOUT`].
async fn connect(settings: &Settings, domain: &str) -> Result<Stream, ConnectError> {
    timeout(CONNECT_TIMEOUT, handshake(settings, domain))
        .await
        .unwrap_or(Err(ConnectError::Timeout(CONNECT_TIMEOUT)))
}

/// TCP (each address `host:port` resolves to, in turn), the stream header, then the
/// XEP-0114 handshake: SHA-1 of the stream id and the secret, answered `<handshake/>`.
async fn handshake(settings: &Settings, domain: &str) -> Result<Stream, ConnectError> {
    let tcp = TcpStream::connect(settings.component.as_str())
        .await
        .map_err(ConnectError::Tcp)?;
    // Stanzas are small and a confirmation waits for each ping: no Nagle delay.
    let _ = tcp.set_nodelay(true);
    let header = StreamHeader {
        from: None,
        to: Some(Cow::Borrowed(domain)),
        id: None,
    };
    let mut pending = initiate_stream(BufStream::new(tcp), ns::COMPONENT, header, TIMEOUTS)
        .await
        .map_err(ConnectError::Stream)?;
    let id = pending.take_header().id.ok_or(ConnectError::NoStreamId)?;
    let mut stream: Stream = pending.skip_features();
    let handshake = Handshake::from_stream_id_and_password(id.into_owned(), &settings.secret);
    stream
        .send(&handshake)
        .await
        .map_err(ConnectError::Stream)?;
    loop {
        match stream.next().await {
            Some(Ok(element)) if element.is("handshake", ns::COMPONENT) => return Ok(stream),
            Some(Ok(element)) => {
                let name = element.name().to_string();
                let why = match stanza::received(domain, element) {
                    Received::StreamError(why) => why,
                    _ => format!("<{name}/> instead of <handshake/>"),
                };
                return Err(ConnectError::Refused(why));
            }
            Some(Err(ReadError::SoftTimeout)) => {}
            Some(Err(ReadError::ParseError(err))) => {
                return Err(ConnectError::Refused(err.to_string()));
            }
            Some(Err(ReadError::HardError(err))) => return Err(ConnectError::Stream(err)),
            Some(Err(ReadError::StreamFooterReceived)) | None => return Err(ConnectError::Closed),
        }
    }
}

/// One connection, from `Up` to its end.
async fn session(domain: &str, mut stream: Stream, events: &flume::Sender<Event>) -> End {
    let (out, rx) = unbounded_channel();
    if report(events, FedEvent::Up { out }).await.is_err() {
        return End::HubGone;
    }
    let mut link = Link::new(domain, events);
    let end = link.serve(&mut stream, rx).await;
    // Best effort: our stream footer, then the TCP close (the drop).
    let _ = timeout(CLOSE_TIMEOUT, stream.shutdown()).await;
    end
}

/// A ping written and not yet back.
#[derive(Debug)]
struct Pending {
    id: String,
    /// The highest outbox number written before it.
    upto: u64,
    sent: Instant,
}

/// The state of one live connection.
struct Link<'a> {
    /// The component's domain, normalised.
    domain: &'a str,
    events: &'a flume::Sender<Event>,
    /// Makes this connection's ping ids its own.
    tag: String,
    pings_sent: u64,
    /// The highest outbox number handled on this connection (written, or dropped as
    /// unsendable); 0 before the first.
    written: u64,
    /// The highest outbox number reported `Written`.
    confirmed: u64,
    pings: VecDeque<Pending>,
}

impl<'a> Link<'a> {
    fn new(domain: &'a str, events: &'a flume::Sender<Event>) -> Self {
        Self {
            domain,
            events,
            tag: format!("{:08x}", rand::random::<u32>()),
            pings_sent: 0,
            written: 0,
            confirmed: 0,
            pings: VecDeque::new(),
        }
    }

    /// Reads, writes and confirms until the connection ends.
    async fn serve(
        &mut self,
        stream: &mut Stream,
        mut rx: UnboundedReceiver<(u64, Outbound)>,
    ) -> End {
        loop {
            if self.pings.is_empty()
                && self.written > self.confirmed
                && let Err(end) = self.ping(stream).await
            {
                return end;
            }
            let deadline = self.pings.front().map(|p| p.sent + PING_TIMEOUT);
            let step = tokio::select! {
                read = stream.next() => self.on_read(stream, read).await,
                item = rx.recv() => match item {
                    Some(item) => self.on_outbound(stream, item, &mut rx).await,
                    None => Err(End::ChannelClosed),
                },
                () = until(deadline) => Err(End::PingTimeout(PING_TIMEOUT)),
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// One thing read from the stream.
    async fn on_read(
        &mut self,
        stream: &mut Stream,
        read: Option<Result<Element, ReadError>>,
    ) -> Result<(), End> {
        match read {
            Some(Ok(element)) => self.on_element(stream, element).await,
            // A minute of silence: the server must say something within the response
            // timeout, and a ping makes it.
            Some(Err(ReadError::SoftTimeout)) => self.ping(stream).await,
            Some(Err(ReadError::ParseError(err))) => {
                tracing::warn!(%err, "XMPP: an element that does not parse, skipped");
                Ok(())
            }
            Some(Err(ReadError::StreamFooterReceived)) => Err(End::Footer),
            Some(Err(ReadError::HardError(err))) => Err(End::Read(err)),
            None => Err(End::Eof),
        }
    }

    /// One element from the server.
    async fn on_element(&mut self, stream: &mut Stream, element: Element) -> Result<(), End> {
        match stanza::received(self.domain, element) {
            Received::Inbound(inbound) => report(self.events, FedEvent::Inbound(inbound)).await,
            Received::Reply(reply) => {
                self.write(stream, &reply).await?;
                self.flush(stream).await
            }
            Received::Pong(id) => self.pong(&id).await,
            Received::StreamError(why) => Err(End::StreamError(why)),
            Received::Ignored(ignored) => {
                let (kind, from, why) = (&ignored.kind, &ignored.from, ignored.why);
                if ignored.suspicious {
                    tracing::warn!(%kind, ?from, why, "XMPP: stanza dropped");
                } else {
                    tracing::debug!(%kind, ?from, why, "XMPP: stanza ignored");
                }
                Ok(())
            }
        }
    }

    /// A stanza from the hub, and whatever else is already waiting (up to a batch),
    /// written with one flush.
    async fn on_outbound(
        &mut self,
        stream: &mut Stream,
        first: (u64, Outbound),
        rx: &mut UnboundedReceiver<(u64, Outbound)>,
    ) -> Result<(), End> {
        self.send_outbound(stream, first).await?;
        for _ in 1..WRITE_BATCH {
            match rx.try_recv() {
                Ok(item) => self.send_outbound(stream, item).await?,
                Err(_) => break,
            }
        }
        self.flush(stream).await
    }

    /// Writes one outbox stanza (unflushed), or drops it if it cannot be written.
    async fn send_outbound(
        &mut self,
        stream: &mut Stream,
        (seq, out): (u64, Outbound),
    ) -> Result<(), End> {
        if seq <= self.written {
            // The hub replays its outbox on `Up`; a stanza it also hands over live in
            // the same turn comes twice.
            tracing::trace!(
                seq,
                "XMPP: outbox stanza already written on this connection"
            );
            return Ok(());
        }
        match stanza::outbound(self.domain, &out) {
            Ok(element) => self.write(stream, &element).await?,
            Err(why) => {
                tracing::warn!(seq, %why, "XMPP: outbox stanza cannot be sent: dropped");
                if let Some(failed) = stanza::bounce(&out, &why) {
                    report(self.events, FedEvent::Inbound(failed)).await?;
                }
            }
        }
        self.written = seq;
        Ok(())
    }

    /// Writes one element (unflushed), after checking its `from`: the server would
    /// close the whole stream over a `from` outside the component's domain.
    async fn write(&mut self, stream: &mut Stream, element: &Element) -> Result<(), End> {
        if !stanza::from_is_ours(self.domain, element) {
            let from = element.attr("from");
            tracing::warn!(
                ?from,
                kind = element.name(),
                "XMPP: stanza from outside the component's domain not written"
            );
            return Ok(());
        }
        match timeout(WRITE_TIMEOUT, stream.feed(element)).await {
            Err(_) => Err(End::WriteTimeout(WRITE_TIMEOUT)),
            Ok(Ok(())) => Ok(()),
            // The encoder refused it (text XML forbids); tokio-xmpp rewinds what it had
            // buffered, and the stream goes on.
            Ok(Err(err)) if err.kind() == io::ErrorKind::InvalidInput => {
                tracing::warn!(%err, kind = element.name(), "XMPP: stanza not serialisable: dropped");
                Ok(())
            }
            Ok(Err(err)) => Err(End::Write(err)),
        }
    }

    async fn flush(&mut self, stream: &mut Stream) -> Result<(), End> {
        match timeout(WRITE_TIMEOUT, SinkExt::<&Element>::flush(stream)).await {
            Err(_) => Err(End::WriteTimeout(WRITE_TIMEOUT)),
            Ok(result) => result.map_err(End::Write),
        }
    }

    /// Writes a ping that confirms everything written so far when it comes back.
    async fn ping(&mut self, stream: &mut Stream) -> Result<(), End> {
        self.pings_sent += 1;
        let id = format!("{PING_PREFIX}{}-{}", self.tag, self.pings_sent);
        let Some(ping) = stanza::ping(self.domain, &id) else {
            return Err(End::Unpingable(self.domain.to_string()));
        };
        self.write(stream, &ping).await?;
        self.flush(stream).await?;
        self.pings.push_back(Pending {
            id,
            upto: self.written,
            sent: Instant::now(),
        });
        Ok(())
    }

    /// A ping came back: it and every earlier one are answered (the server reads in
    /// order), and what was written before it is confirmed.
    async fn pong(&mut self, id: &str) -> Result<(), End> {
        let Some(at) = self.pings.iter().position(|p| p.id == id) else {
            tracing::debug!(id, "XMPP: a ping answer for no ping outstanding");
            return Ok(());
        };
        let upto = self.pings[at].upto;
        self.pings.drain(..=at);
        if upto > self.confirmed {
            self.confirmed = upto;
            report(self.events, FedEvent::Written { upto }).await?;
        }
        Ok(())
    }
}

/// Completes at the deadline; never without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Exponential backoff with jitter: each delay is a random 50 to 100 % of a base that
/// starts at [`BACKOFF_START`] and doubles up to [`BACKOFF_MAX`].
#[derive(Debug)]
struct Backoff {
    base: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self {
            base: BACKOFF_START,
        }
    }

    fn reset(&mut self) {
        self.base = BACKOFF_START;
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.base.mul_f64(rand::random_range(0.5..=1.0));
        self.base = (self.base * 2).min(BACKOFF_MAX);
        delay
    }
}

/// What the log has said about the current outage: one warning when it starts, debug
/// lines for the attempts after, one line when the component is back.
#[derive(Debug, Default)]
struct Outage {
    since: Option<Instant>,
    attempts: u32,
    warned: bool,
}

impl Outage {
    fn failed(&mut self, component: &str, domain: &str, err: &ConnectError) {
        self.since.get_or_insert_with(Instant::now);
        self.attempts += 1;
        if self.warned {
            tracing::debug!(%component, attempt = self.attempts, %err, "XMPP component still not connected");
        } else {
            self.warned = true;
            tracing::warn!(%component, %domain, %err, "XMPP component cannot connect; retrying with backoff");
        }
    }

    fn lost(&mut self, component: &str, end: &End) {
        tracing::warn!(%component, reason = %end, "XMPP component connection lost; reconnecting");
        *self = Self {
            since: Some(Instant::now()),
            attempts: 0,
            warned: true,
        };
    }

    fn recovered(&mut self, component: &str, domain: &str) {
        match self.since {
            Some(since) => tracing::info!(
                %component,
                %domain,
                down_for = ?since.elapsed(),
                failed_attempts = self.attempts,
                "XMPP component connected again"
            ),
            None => tracing::info!(%component, %domain, "XMPP component connected"),
        }
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_gateway_core::federation::Inbound;
    use tern_wire::ErrorCode;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const WAIT: Duration = Duration::from_secs(5);

    #[test]
    fn backoff_doubles_with_jitter_up_to_its_cap_and_resets() {
        let mut backoff = Backoff::new();
        let first = backoff.next_delay();
        assert!(
            first >= BACKOFF_START / 2 && first <= BACKOFF_START,
            "{first:?}"
        );
        let second = backoff.next_delay();
        assert!(
            second >= BACKOFF_START && second <= BACKOFF_START * 2,
            "{second:?}"
        );
        for _ in 0..20 {
            let delay = backoff.next_delay();
            assert!(delay <= BACKOFF_MAX, "{delay:?}");
        }
        assert_eq!(backoff.base, BACKOFF_MAX);
        let late = backoff.next_delay();
        assert!(late >= BACKOFF_MAX / 2, "{late:?}");
        backoff.reset();
        assert!(backoff.next_delay() <= BACKOFF_START);
    }

    #[test]
    fn jitter_spreads_the_delays() {
        let delays: std::collections::BTreeSet<Duration> =
            (0..32).map(|_| Backoff::new().next_delay()).collect();
        assert!(delays.len() > 1, "{delays:?}");
    }

    /// One connection to a stand-in XMPP server speaking just enough XEP-0114: it
    /// accepts any handshake, records what the bridge writes, and sends what a test
    /// tells it to.
    struct Server {
        sock: TcpStream,
        seen: String,
    }

    impl Server {
        async fn accept(listener: &TcpListener) -> Self {
            let (sock, _) = timeout(WAIT, listener.accept())
                .await
                .expect("the bridge connects")
                .expect("accept");
            let mut server = Self {
                sock,
                seen: String::new(),
            };
            server
                .read_until(|s| s.contains("component:accept") && s.trim_end().ends_with('>'))
                .await;
            server
                .send(
                    "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
                     xmlns:stream='http://etherx.jabber.org/streams' id='fake-1' \
                     from='example.com'>",
                )
                .await;
            server.read_until(|s| s.contains("</handshake>")).await;
            server.send("<handshake/>").await;
            server.seen.clear();
            server
        }

        async fn send(&mut self, xml: &str) {
            self.sock.write_all(xml.as_bytes()).await.expect("write");
        }

        /// Reads until what the bridge wrote satisfies `done` (panics after [`WAIT`]).
        async fn read_until(&mut self, done: impl Fn(&str) -> bool) {
            let deadline = Instant::now() + WAIT;
            let mut buf = [0u8; 4096];
            while !done(&self.seen) {
                let n = tokio::time::timeout_at(deadline, self.sock.read(&mut buf))
                    .await
                    .unwrap_or_else(|_| panic!("timed out; the bridge wrote: {}", self.seen))
                    .expect("read");
                assert!(n > 0, "the bridge closed; it wrote: {}", self.seen);
                self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }

        /// Reads whatever the bridge writes within a moment.
        async fn drain(&mut self) {
            let mut buf = [0u8; 4096];
            while let Ok(Ok(n)) =
                timeout(Duration::from_millis(200), self.sock.read(&mut buf)).await
            {
                if n == 0 {
                    break;
                }
                self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }

        /// The ids of the bridge's pings written so far.
        fn pings(&self) -> Vec<String> {
            self.seen
                .match_indices(PING_PREFIX)
                .map(|(at, _)| {
                    let rest = &self.seen[at..];
                    let end = rest.find(['\'', '"']).unwrap_or(rest.len());
                    rest[..end].to_string()
                })
                .collect()
        }

        /// Routes a ping back to the component, as the server does.
        async fn return_ping(&mut self, id: &str) {
            let xml = format!(
                "<iq type='get' from='example.com' to='example.com' id='{id}' xml:lang='en'>\
                 <ping xmlns='urn:xmpp:ping'/></iq>"
            );
            self.send(&xml).await;
        }
    }

    async fn next_event(events: &flume::Receiver<Event>) -> FedEvent {
        match timeout(WAIT, events.recv_async()).await {
            Ok(Ok(Event::Federation(event))) => event,
            other => panic!("no federation event: {other:?}"),
        }
    }

    async fn no_event(events: &flume::Receiver<Event>) {
        sleep(Duration::from_millis(300)).await;
        assert!(events.is_empty(), "unexpected: {:?}", events.try_recv());
    }

    fn message(seq: u64, to: &str, body: &str) -> (u64, Outbound) {
        let stanza = Outbound::Message {
            from: "alice@example.com".into(),
            to: to.into(),
            id: format!("m{seq}").into_bytes(),
            body: body.into(),
        };
        (seq, stanza)
    }

    #[tokio::test]
    async fn stanzas_are_written_confirmed_by_the_ping_after_them_and_the_link_comes_back() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let settings = Settings {
            component: listener.local_addr().expect("addr").to_string(),
            secret: "s3cret".into(),
            domain: "Example.COM".into(),
        };
        let (events, rx) = flume::bounded(16);
        let bridge = spawn(settings, events);
        let mut server = Server::accept(&listener).await;
        let FedEvent::Up { out } = next_event(&rx).await else {
            panic!("not up");
        };

        // Written, then confirmed only once the ping written after them is back.
        out.send(message(1, "bob@xmpp.test", "one")).expect("send");
        out.send(message(2, "bob@xmpp.test", "two")).expect("send");
        server
            .read_until(|s| s.contains(">two</body>") && s.contains(PING_PREFIX))
            .await;
        assert!(server.seen.find(">one<") < server.seen.find(">two<"));
        assert!(server.seen.find(">two<") < server.seen.find(PING_PREFIX));
        no_event(&rx).await;
        server.drain().await;
        let pings = server.pings();
        assert_eq!(
            pings.len(),
            1,
            "one confirmation at a time: {}",
            server.seen
        );
        server.return_ping(&pings[0]).await;
        assert!(matches!(
            next_event(&rx).await,
            FedEvent::Written { upto: 2 }
        ));

        // A replayed number is not written twice; an unsendable message bounces to the
        // hub and still counts as handled.
        out.send(message(2, "bob@xmpp.test", "again"))
            .expect("send");
        out.send(message(3, "bob@example.com", "to ourselves"))
            .expect("send");
        match next_event(&rx).await {
            FedEvent::Inbound(Inbound::Failed { code, id, .. }) => {
                assert_eq!((code, id), (ErrorCode::BAD_ADDRESS, b"m3".to_vec()));
            }
            other => panic!("{other:?}"),
        }
        server
            .read_until(|s| s.matches(PING_PREFIX).count() == 2)
            .await;
        assert!(!server.seen.contains("again") && !server.seen.contains("to ourselves"));
        let second = server.pings()[1].clone();
        server.return_ping(&second).await;
        assert!(matches!(
            next_event(&rx).await,
            FedEvent::Written { upto: 3 }
        ));

        // Stanzas from the XMPP side: for the hub, or answered on the stream; one that
        // does not parse changes nothing.
        server
            .send(
                "<message type='chat' id='b1' from='bob@xmpp.test/phone' to='alice@example.com'>\
                 <body>hello</body></message>\
                 <presence from='bob@xmpp.test/phone' to='alice@example.com'><show>bogus</show></presence>\
                 <iq type='get' id='q1' from='bob@xmpp.test/phone' to='alice@example.com'>\
                 <ping xmlns='urn:xmpp:ping'/></iq>",
            )
            .await;
        match next_event(&rx).await {
            FedEvent::Inbound(Inbound::Message { from, body, .. }) => {
                assert_eq!((from.as_str(), body.as_str()), ("bob@xmpp.test", "hello"));
            }
            other => panic!("{other:?}"),
        }
        server
            .read_until(|s| s.contains("bad-request") && s.contains("id='q1'"))
            .await;

        // The server goes away: down, then up again on a new connection, with a new
        // stanza channel.
        drop(server);
        assert!(matches!(next_event(&rx).await, FedEvent::Down));
        assert!(out.is_closed());
        let mut server = Server::accept(&listener).await;
        let FedEvent::Up { out } = next_event(&rx).await else {
            panic!("not up again");
        };
        out.send(message(4, "bob@xmpp.test", "four")).expect("send");
        server.read_until(|s| s.contains(PING_PREFIX)).await;
        let ping = server.pings()[0].clone();
        server.return_ping(&ping).await;
        assert!(matches!(
            next_event(&rx).await,
            FedEvent::Written { upto: 4 }
        ));
        bridge.abort();
    }

    #[tokio::test]
    async fn a_refused_handshake_is_retried_and_reported_nowhere() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let settings = Settings {
            component: listener.local_addr().expect("addr").to_string(),
            secret: "wrong".into(),
            domain: "example.com".into(),
        };
        let (events, rx) = flume::bounded(16);
        let bridge = spawn(settings, events);
        for _ in 0..2 {
            let (mut sock, _) = timeout(WAIT, listener.accept())
                .await
                .expect("connects")
                .expect("accept");
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf).await;
            sock.write_all(
                b"<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
                  xmlns:stream='http://etherx.jabber.org/streams' id='x' from='example.com'>",
            )
            .await
            .expect("write");
            let _ = sock.read(&mut buf).await;
            let _ = sock
                .write_all(
                    b"<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
                      </stream:error></stream:stream>",
                )
                .await;
        }
        assert!(rx.is_empty(), "{:?}", rx.try_recv());
        bridge.abort();
    }
}
