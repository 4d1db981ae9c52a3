//! A raw QUIC session to the gateway: the ALPN and TLS a real client uses, but frames
//! (or garbage) written by the test itself. For bad-input and protocol tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use tern_wire::codec::{self, FrameBuf};
use tern_wire::{Down, Hello, Open, Up, VERSION};

use crate::PROMPTLY;

/// One QUIC connection with its session stream.
pub struct RawSession {
    /// The QUIC connection.
    pub conn: quinn::Connection,
    /// The endpoint that owns it (kept alive with it).
    pub endpoint: quinn::Endpoint,
    /// The session stream, client to gateway.
    pub send: quinn::SendStream,
    /// The session stream, gateway to client.
    pub recv: quinn::RecvStream,
    /// Every byte read from the session stream, in order.
    pub transcript: Vec<u8>,
    buf: FrameBuf,
}

/// A client endpoint on loopback trusting `cert_pem`, speaking ALPN `tern/1`.
pub fn endpoint(cert_pem: &[u8]) -> quinn::Endpoint {
    endpoint_with(cert_pem, false)
}

/// [`endpoint`], optionally keeping TLS session tickets and sending 0-RTT data with them.
pub fn endpoint_with(cert_pem: &[u8], early_data: bool) -> quinn::Endpoint {
    endpoint_on(cert_pem, early_data, SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// [`endpoint_with`], bound to `bind` (e.g. another loopback address, to tell peers apart).
pub fn endpoint_on(cert_pem: &[u8], early_data: bool, bind: SocketAddr) -> quinn::Endpoint {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &cert_pem[..]) {
        roots.add(cert.expect("PEM certificate")).expect("trusted");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![tern_wire::ALPN.to_vec()];
    tls.enable_early_data = early_data;
    let crypto = QuicClientConfig::try_from(tls).expect("QUIC TLS config");
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(Duration::from_secs(30).try_into().expect("idle")));
    // Windows of a small device, not quinn's bulk-transfer defaults: a raw session that
    // stops reading then stalls the gateway's sender after a few dozen kilobytes.
    transport.stream_receive_window(quinn::VarInt::from_u32(32 * 1024));
    transport.receive_window(quinn::VarInt::from_u32(64 * 1024));
    config.transport_config(Arc::new(transport));
    let mut endpoint = quinn::Endpoint::client(bind).expect("client socket");
    endpoint.set_default_client_config(config);
    endpoint
}

impl RawSession {
    /// Connects and opens the session stream (nothing is sent yet).
    pub async fn open(addr: SocketAddr, cert_pem: &[u8]) -> Self {
        Self::open_from(addr, cert_pem, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// [`Self::open`] from a client socket bound to `bind`.
    pub async fn open_from(addr: SocketAddr, cert_pem: &[u8], bind: SocketAddr) -> Self {
        let endpoint = endpoint_on(cert_pem, false, bind);
        let conn = endpoint
            .connect(addr, "localhost")
            .expect("connect")
            .await
            .expect("handshake");
        let (send, recv) = conn.open_bi().await.expect("session stream");
        Self {
            conn,
            endpoint,
            send,
            recv,
            transcript: Vec::new(),
            buf: FrameBuf::new(tern_wire::limits::FRAME_MAX),
        }
    }

    /// Connects and says Hello as `user`.
    pub async fn login(addr: SocketAddr, cert_pem: &[u8], user: &str, token: &str) -> Self {
        let mut session = Self::open(addr, cert_pem).await;
        session
            .send(&Up::Hello(Hello {
                version: VERSION,
                user: user.into(),
                token: token.into(),
            }))
            .await;
        session
    }

    /// Connects and opens the session of device `device` (16 bytes of that value) with
    /// these `Open` flags.
    pub async fn open_device(
        addr: SocketAddr,
        cert_pem: &[u8],
        user: &str,
        token: &str,
        device: u8,
        flags: u8,
    ) -> Self {
        let mut session = Self::open(addr, cert_pem).await;
        session
            .send(&Up::Open(Open {
                version: VERSION,
                user: user.into(),
                token: token.into(),
                device: vec![device; 16],
                inbox_seen: 0,
                flags,
            }))
            .await;
        session
    }

    /// The next frame if one comes within `wait`; `None` if none does (or the stream
    /// ended).
    pub async fn recv_within(&mut self, wait: Duration) -> Option<Down> {
        loop {
            match self.buf.next_frame::<Down>() {
                Ok(Some(frame)) => return Some(frame),
                Ok(None) => {}
                Err(e) => panic!("gateway sent a bad frame: {e}"),
            }
            let chunk = tokio::time::timeout(wait, self.recv.read_chunk(64 * 1024, true));
            match chunk.await {
                Ok(Ok(Some(chunk))) => {
                    self.transcript.extend_from_slice(&chunk.bytes);
                    self.buf.extend(&chunk.bytes);
                }
                _ => return None,
            }
        }
    }

    /// Writes one frame.
    pub async fn send(&mut self, frame: &Up) {
        self.write(&codec::encode(frame)).await;
    }

    /// Writes raw bytes.
    pub async fn write(&mut self, bytes: &[u8]) {
        self.send.write_all(bytes).await.expect("write");
    }

    /// The next frame from the gateway, or `None` if the stream ended or the
    /// connection closed.
    pub async fn recv(&mut self) -> Option<Down> {
        let read = async {
            loop {
                match self.buf.next_frame::<Down>() {
                    Ok(Some(frame)) => return Some(frame),
                    Ok(None) => {}
                    Err(e) => panic!("gateway sent a bad frame: {e}"),
                }
                match self.recv.read_chunk(64 * 1024, true).await {
                    Ok(Some(chunk)) => {
                        self.transcript.extend_from_slice(&chunk.bytes);
                        self.buf.extend(&chunk.bytes);
                    }
                    Ok(None) | Err(_) => return None,
                }
            }
        };
        tokio::time::timeout(PROMPTLY, read)
            .await
            .expect("gateway answered in time")
    }

    /// Frames until the gateway closes, the last being its `Close` if it sent one.
    pub async fn recv_until_closed(&mut self) -> Vec<Down> {
        let mut frames = Vec::new();
        while let Some(frame) = self.recv().await {
            let last = matches!(frame, Down::Close { .. });
            frames.push(frame);
            if last {
                break;
            }
        }
        frames
    }
}
