//! QUIC endpoints for the harness's own sessions. (The tap that timestamps every
//! datagram between a phone and its emulated link is `tern_benches::tap`.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use quinn::crypto::rustls::QuicClientConfig;

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

pub(crate) use tern_benches::tap::{Datagram, Tap};
