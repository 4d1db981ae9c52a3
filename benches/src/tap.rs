//! A UDP tap: forwards datagrams between a measured client and its (emulated) link and
//! records the size and time of each, as the client's radio sees them (the link
//! emulator only counts them). One socket towards the link per client source address,
//! since each new connection (or migration) has its own. Used by the `reconnect` and
//! `day` harnesses.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::task::{JoinHandle, JoinSet};

/// One datagram the tap forwarded.
#[derive(Debug, Clone, Copy)]
pub struct Datagram {
    /// Phone to gateway.
    pub up: bool,
    /// UDP payload bytes.
    pub len: usize,
    /// When the tap forwarded it.
    pub at: Instant,
}

/// A UDP forwarder between a phone and its link emulator that records the size and time
/// of every datagram, as the phone's radio sees them (the emulator only counts them).
/// One socket towards the emulator per phone source address.
pub struct Tap {
    /// Where the client sends its datagrams.
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Datagram>>>,
    task: JoinHandle<()>,
}

impl Tap {
    /// Starts forwarding to `upstream` from a new loopback socket ([`Self::addr`]).
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = front.local_addr()?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(tap(front, upstream, Arc::clone(&log)));
        Ok(Self { addr, log, task })
    }

    /// How many datagrams it has seen so far: the start of a window.
    pub fn mark(&self) -> usize {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The datagrams seen since `mark`.
    pub fn since(&self, mark: usize) -> Vec<Datagram> {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.get(mark..).unwrap_or_default().to_vec()
    }

    /// Every datagram so far.
    pub fn datagrams(&self) -> Vec<Datagram> {
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
