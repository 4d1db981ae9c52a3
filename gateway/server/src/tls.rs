//! The gateway's TLS identity and its QUIC server configuration.
//!
//! Owns `data_dir/cert.pem` and `data_dir/key.pem`: on first start it generates a
//! self-signed certificate for the served domains, `localhost`, `127.0.0.1` and `::1`
//! (key file mode 0600), and reuses the pair afterwards, so clients that pinned the
//! certificate keep trusting it. An operator with a real certificate puts it in those two
//! files. A pair generated for other domains is reused as it is: delete both files to
//! make a new one.
//!
//! TLS is 1.3 only (QUIC requires it) with the `ring` provider, ALPN [`tern_wire::ALPN`],
//! no client certificates, and 0-RTT on single-use stateful tickets (see
//! [`rustls_config`]; replay safety is in tern-gateway-core's `Early`). The transport
//! settings come from [`GatewayConfig`]. This module does no networking.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use quinn::crypto::rustls::QuicServerConfig;
use quinn::{IdleTimeout, TransportConfig, VarInt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ServerSessionMemoryCache;

use crate::config::GatewayConfig;

/// The certificate file's name in the data directory.
pub const CERT_FILE: &str = "cert.pem";
/// The private key file's name in the data directory.
pub const KEY_FILE: &str = "key.pem";

/// Why the TLS identity or the server configuration could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// Reading or writing a PEM file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The certificate could not be generated.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate, key or settings.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    /// quinn refused the rustls configuration.
    #[error("quic tls: {0}")]
    Quic(String),
}

/// The gateway's certificate chain and key, as loaded from (or written to) the data
/// directory.
#[derive(Debug)]
pub struct Identity {
    /// The certificate chain, leaf first.
    pub certs: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
    /// The certificate file, as PEM text.
    pub cert_pem: Vec<u8>,
    /// Where the certificate file is.
    pub cert_path: PathBuf,
    /// Whether this call generated the pair.
    pub generated: bool,
}

/// Loads the identity from `data_dir`, generating a self-signed one for `domains` (plus
/// `localhost` and the loopback addresses) when neither file exists yet.
pub fn load_or_generate(data_dir: &Path, domains: &[&str]) -> Result<Identity, TlsError> {
    let cert_path = data_dir.join(CERT_FILE);
    let key_path = data_dir.join(KEY_FILE);
    let generated = !cert_path.exists() && !key_path.exists();
    if generated {
        generate(data_dir, &cert_path, &key_path, domains)?;
    }
    let cert_pem = std::fs::read(&cert_path).map_err(|source| TlsError::Io {
        path: cert_path.clone(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(&cert_path, e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error(&cert_path, "no certificate".into()));
    }
    let key =
        PrivateKeyDer::from_pem_file(&key_path).map_err(|e| pem_error(&key_path, e.to_string()))?;
    Ok(Identity {
        certs,
        key,
        cert_pem,
        cert_path,
        generated,
    })
}

fn pem_error(path: &Path, reason: String) -> TlsError {
    TlsError::Pem {
        path: path.to_owned(),
        reason,
    }
}

fn generate(
    data_dir: &Path,
    cert_path: &Path,
    key_path: &Path,
    domains: &[&str],
) -> Result<(), TlsError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Io { path, source }
    };
    crate::create_private_dir(data_dir).map_err(io(data_dir))?;
    let mut names: Vec<String> = domains.iter().map(|d| (*d).to_owned()).collect();
    for extra in ["localhost", "127.0.0.1", "::1"] {
        if !names.iter().any(|n| n == extra) {
            names.push(extra.to_owned());
        }
    }
    let certified = rcgen::generate_simple_self_signed(names)?;
    write_private(key_path, certified.signing_key.serialize_pem().as_bytes())
        .map_err(io(key_path))?;
    std::fs::write(cert_path, certified.cert.pem()).map_err(io(cert_path))?;
    tracing::info!(cert = %cert_path.display(), "generated a self-signed certificate");
    Ok(())
}

/// Writes a file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Resumption tickets remembered for 0-RTT: a few hundred bytes each, so about 20 MB
/// at most; the oldest are forgotten first (their clients fall back to a full handshake).
const TLS_SESSION_CACHE: usize = 65_536;

/// The rustls server configuration: TLS 1.3, `ring`, ALPN `tern/1`, no client auth,
/// 0-RTT on single-use stateful tickets.
pub fn rustls_config(identity: &Identity) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(identity.certs.clone(), identity.key.clone_key())?;
    config.alpn_protocols = vec![tern_wire::ALPN.to_vec()];
    // 0-RTT: a returning client sends its opening frame and queued messages in its first
    // flight. QUIC requires the maximum to be u32::MAX when early data is on at all.
    // Two defences against replayed flights: rustls offers early data only on stateful
    // tickets, each usable once (RFC 8446 8.1), so a replayed ClientHello finds its
    // ticket gone; and the hub lets nothing but de-duplicated message storage happen
    // before the handshake is confirmed (tern-gateway-core `Early`), which also covers
    // replays this process cannot recognise (another node, a restart).
    config.max_early_data_size = u32::MAX;
    config.session_storage = ServerSessionMemoryCache::new(TLS_SESSION_CACHE);
    Ok(config)
}

/// The transport parameters of every connection, from the configuration.
pub fn transport_config(config: &GatewayConfig) -> Result<TransportConfig, TlsError> {
    let mut transport = TransportConfig::default();
    let idle =
        IdleTimeout::try_from(config.idle_timeout()).map_err(|e| TlsError::Quic(e.to_string()))?;
    transport
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(
            config
                .timeouts
                .keepalive_ms
                .map(std::time::Duration::from_millis),
        )
        // The session is one bidirectional stream opened by the client.
        .max_concurrent_bidi_streams(VarInt::from_u32(1))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(config.quic.stream_receive_window))
        .receive_window(VarInt::from_u32(config.quic.receive_window))
        .send_window(config.quic.send_window)
        .datagram_receive_buffer_size(None);
    Ok(transport)
}

/// The quinn server configuration: TLS plus transport parameters. Connection migration
/// stays on: a phone moving from Wi-Fi to cellular keeps its session.
pub fn server_config(
    identity: &Identity,
    config: &GatewayConfig,
) -> Result<quinn::ServerConfig, TlsError> {
    let crypto = QuicServerConfig::try_from(rustls_config(identity)?)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport_config(config)?));
    Ok(server)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = load_or_generate(&data, &["example.com"]).unwrap();
        assert!(first.generated);
        assert_eq!(first.cert_path, data.join(CERT_FILE));
        assert!(
            String::from_utf8_lossy(&first.cert_pem).starts_with("-----BEGIN CERTIFICATE-----")
        );
        let second = load_or_generate(&data, &["other.example"]).unwrap();
        assert!(!second.generated);
        assert_eq!(first.cert_pem, second.cert_pem);
        assert_eq!(first.certs, second.certs);
    }

    #[cfg(unix)]
    #[test]
    fn the_key_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        load_or_generate(dir.path(), &[]).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_lone_key_or_cert_is_an_error_not_a_new_pair() {
        let dir = tempfile::tempdir().unwrap();
        load_or_generate(dir.path(), &[]).unwrap();
        std::fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
        assert!(matches!(
            load_or_generate(dir.path(), &[]),
            Err(TlsError::Pem { .. })
        ));
    }

    #[test]
    fn garbage_pem_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CERT_FILE), "not pem").unwrap();
        std::fs::write(dir.path().join(KEY_FILE), "not pem").unwrap();
        assert!(load_or_generate(dir.path(), &[]).is_err());
    }

    #[test]
    fn server_config_builds_with_tls13_alpn_and_early_data() {
        let dir = tempfile::tempdir().unwrap();
        let identity = load_or_generate(dir.path(), &["localhost"]).unwrap();
        let tls = rustls_config(&identity).unwrap();
        assert_eq!(tls.alpn_protocols, vec![b"tern/1".to_vec()]);
        assert_eq!(
            tls.max_early_data_size,
            u32::MAX,
            "0-RTT is on (QUIC wants MAX)"
        );
        assert!(
            !tls.ticketer.enabled(),
            "stateful single-use tickets, for anti-replay"
        );
        server_config(&identity, &GatewayConfig::default()).unwrap();
    }
}
