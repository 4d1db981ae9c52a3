//! A UDP relay on loopback between one client and the gateway that can be cut: after
//! [`Relay::cut`] every datagram in either direction is dropped, as when a phone loses
//! coverage or a cable is pulled. Nothing tells either side; only timeouts can.
//! (The full link emulator with delay, loss and blackouts comes with the weak-links work.)

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// A running relay; dropping it stops it.
pub struct Relay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    flight: Arc<Mutex<Flight>>,
    task: JoinHandle<()>,
}

/// The client's first flight: every datagram it sent before the first answer came back
/// (for a resuming QUIC client: its Initial with the ClientHello, and its 0-RTT data).
#[derive(Debug, Default)]
struct Flight {
    datagrams: Vec<Vec<u8>>,
    answered: bool,
}

impl Relay {
    /// Relays datagrams between the first client that sends to [`Self::addr`] and
    /// `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let front = UdpSocket::bind("127.0.0.1:0").await?;
        let back = UdpSocket::bind("127.0.0.1:0").await?;
        back.connect(upstream).await?;
        let addr = front.local_addr()?;
        let cut = Arc::new(AtomicBool::new(false));
        let flight = Arc::new(Mutex::new(Flight::default()));
        let task = tokio::spawn(pump(front, back, cut.clone(), flight.clone()));
        Ok(Self {
            addr,
            cut,
            flight,
            task,
        })
    }

    /// Where clients should connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops everything from now on, both ways.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    /// The datagrams of the client's first flight, as an eavesdropper records them.
    pub fn first_flight(&self) -> Vec<Vec<u8>> {
        self.flight
            .lock()
            .map(|f| f.datagrams.clone())
            .unwrap_or_default()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump(front: UdpSocket, back: UdpSocket, cut: Arc<AtomicBool>, flight: Arc<Mutex<Flight>>) {
    let mut client: Option<SocketAddr> = None;
    let mut up = vec![0u8; 65_536];
    let mut down = vec![0u8; 65_536];
    loop {
        tokio::select! {
            got = front.recv_from(&mut up) => {
                let Ok((n, from)) = got else { return };
                client = Some(from);
                if let Ok(mut f) = flight.lock()
                    && !f.answered
                {
                    f.datagrams.push(up[..n].to_vec());
                }
                if !cut.load(Ordering::SeqCst) {
                    let _ = back.send(&up[..n]).await;
                }
            }
            got = back.recv(&mut down) => {
                let Ok(n) = got else { return };
                if let Ok(mut f) = flight.lock() {
                    f.answered = true;
                }
                if let (Some(to), false) = (client, cut.load(Ordering::SeqCst)) {
                    let _ = front.send_to(&down[..n], to).await;
                }
            }
        }
    }
}
