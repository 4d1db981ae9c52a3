//! QUIC endpoints for the harness's own sessions, and a tap that timestamps every
//! datagram between a phone and its emulated link.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use quinn::crypto::rustls::QuicClientConfig;
use tokio::net::UdpSocket;
use tokio::task::{JoinHandle, JoinSet};

/// A client endpoint on loopback trusting `cert_pem`, speaking tern's ALPN, with this
/// keep-alive interval (none when `None`) and idle timeout. Flow-control windows are a
/// small device's, as `tern-client` sets them.
pub(crate) fn endpoint(
    cert_pem: &[u8],
    keepalive: Option<Duration>,
    idle: Duration,
) -> Result<quinn::Endpoint> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &cert_pem[..]) {
        roots.add(cert.context("the gateway's PEM certificate")?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![tern_wire::ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(idle.try_into()?));
    transport.keep_alive_interval(keepalive);
    transport.stream_receive_window(quinn::VarInt::from_u32(64 * 1024));
    transport.receive_window(quinn::VarInt::from_u32(256 * 1024));
    config.transport_config(Arc::new(transport));
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// One datagram the tap forwarded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Datagram {
    /// Phone to gateway.
    pub(crate) up: bool,
    /// UDP payload bytes.
    pub(crate) len: usize,
    pub(crate) at: Instant,
}

/// A UDP forwarder between a phone and its link emulator that records the size and time
/// of every datagram, as the phone's radio sees them (the emulator only counts them).
/// One socket towards the emulator per phone source address.
pub(crate) struct Tap {
    pub(crate) addr: SocketAddr,
    log: Arc<Mutex<Vec<Datagram>>>,
    task: JoinHandle<()>,
}

impl Tap {
    pub(crate) async fn start(upstream: SocketAddr) -> Result<Self> {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = front.local_addr()?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(tap(front, upstream, Arc::clone(&log)));
        Ok(Self { addr, log, task })
    }

    /// Every datagram so far.
    pub(crate) fn datagrams(&self) -> Vec<Datagram> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn tap(front: Arc<UdpSocket>, upstream: SocketAddr, log: Arc<Mutex<Vec<Datagram>>>) {
    let mut backs: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    // Dropped (and so aborted) with this task.
    let mut readers = JoinSet::new();
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, from) = match front.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(err) if transient(&err) => continue,
            Err(_) => return,
        };
        let back = match backs.get(&from) {
            Some(back) => Arc::clone(back),
            None => {
                let Ok(back) = UdpSocket::bind("127.0.0.1:0").await else {
                    continue;
                };
                if back.connect(upstream).await.is_err() {
                    continue;
                }
                let back = Arc::new(back);
                backs.insert(from, Arc::clone(&back));
                let (front, reading, log) =
                    (Arc::clone(&front), Arc::clone(&back), Arc::clone(&log));
                readers.spawn(async move {
                    let mut buf = vec![0u8; 65_535];
                    loop {
                        let n = match reading.recv(&mut buf).await {
                            Ok(n) => n,
                            Err(err) if transient(&err) => continue,
                            Err(_) => return,
                        };
                        record(&log, false, n);
                        let _ = front.send_to(buf.get(..n).unwrap_or_default(), from).await;
                    }
                });
                back
            }
        };
        record(&log, true, n);
        let _ = back.send(buf.get(..n).unwrap_or_default()).await;
    }
}

/// An error a UDP socket reports for an earlier datagram (ICMP), after which it works.
fn transient(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
    )
}

fn record(log: &Mutex<Vec<Datagram>>, up: bool, len: usize) {
    let datagram = Datagram {
        up,
        len,
        at: Instant::now(),
    };
    log.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(datagram);
}
