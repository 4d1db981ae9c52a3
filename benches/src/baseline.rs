//! Baselines measured in the same run as the tern figures, so that results can be read
//! as ratios on a noisy machine: a raw QUIC echo round trip (quinn, no tern) and raw
//! SQLite commits with the gateway's durability settings (WAL, `synchronous = FULL`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// ALPN of the echo baseline (anything but tern's).
const ECHO_ALPN: &[u8] = b"bench-echo";

/// A plain QUIC echo server on `127.0.0.1:0`: every byte read from a bidirectional
/// stream is written back on it. No framing, no tern, no storage.
pub struct EchoServer {
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
    cert: CertificateDer<'static>,
    task: tokio::task::JoinHandle<()>,
}

impl EchoServer {
    /// Binds and starts serving on the current tokio runtime.
    pub fn start() -> Result<Self> {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
        let cert = certified.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));
        let mut tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)?;
        tls.alpn_protocols = vec![ECHO_ALPN.to_vec()];
        let quic = QuicServerConfig::try_from(tls)?;
        let config = quinn::ServerConfig::with_crypto(Arc::new(quic));
        let endpoint = quinn::Endpoint::server(config, SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let addr = endpoint.local_addr()?;
        let task = tokio::spawn(serve(endpoint.clone()));
        Ok(Self {
            endpoint,
            addr,
            cert,
            task,
        })
    }

    /// Connects a client and measures `runs` round trips of a `payload`-byte write
    /// echoed back on one stream (after `warmup` unmeasured ones). Each round trip is
    /// bounded by `each`.
    pub async fn round_trips(
        &self,
        payload: usize,
        warmup: usize,
        runs: usize,
        each: Duration,
    ) -> Result<Vec<Duration>> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone())?;
        let mut tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![ECHO_ALPN.to_vec()];
        let config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
        let endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let conn =
            tokio::time::timeout(each, endpoint.connect_with(config, self.addr, "localhost")?)
                .await
                .context("echo handshake timed out")??;
        let (mut send, mut recv) = conn.open_bi().await?;
        let out = vec![0x5a_u8; payload];
        let mut back = vec![0_u8; payload];
        let mut samples = Vec::with_capacity(runs);
        for i in 0..warmup + runs {
            let started = Instant::now();
            let trip = async {
                send.write_all(&out).await?;
                recv.read_exact(&mut back).await?;
                anyhow::Ok(())
            };
            tokio::time::timeout(each, trip)
                .await
                .context("echo round trip timed out")??;
            if i >= warmup {
                samples.push(started.elapsed());
            }
        }
        send.finish()?;
        conn.close(0_u32.into(), b"done");
        endpoint.wait_idle().await;
        Ok(samples)
    }

    /// Stops the server.
    pub fn stop(self) {
        self.endpoint.close(0_u32.into(), b"done");
        self.task.abort();
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

async fn serve(endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                tokio::spawn(async move {
                    let mut buf = vec![0_u8; 64 * 1024];
                    while let Ok(Some(n)) = recv.read(&mut buf).await {
                        let Some(bytes) = buf.get(..n) else { return };
                        if send.write_all(bytes).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    }
}

/// What a run of raw SQLite commits achieved.
#[derive(Debug, Clone)]
pub struct CommitRun {
    /// Rows inserted per transaction.
    pub rows_per_commit: usize,
    /// Transactions committed.
    pub commits: usize,
    /// Wall time of all of them.
    pub elapsed: Duration,
    /// Time of each transaction, `BEGIN` to the end of `COMMIT`.
    pub latencies: Vec<Duration>,
}

impl CommitRun {
    /// Rows made durable per second.
    pub fn rows_per_second(&self) -> f64 {
        crate::stats::per_second(self.commits * self.rows_per_commit, self.elapsed)
    }

    /// Transactions per second.
    pub fn commits_per_second(&self) -> f64 {
        crate::stats::per_second(self.commits, self.elapsed)
    }
}

/// Commits transactions of `rows_per_commit` inserted rows (`body` bytes each) to a new
/// database file `path`, opened as the gateway opens its own (WAL, `synchronous =
/// FULL`, so every commit syncs the WAL), until `commits` are done or `budget` has
/// passed. Blocking: call it off the async runtime.
pub fn sqlite_commits(
    path: &Path,
    rows_per_commit: usize,
    body: usize,
    commits: usize,
    budget: Duration,
) -> Result<CommitRun> {
    if path.exists() {
        bail!("{} exists; the baseline needs a new file", path.display());
    }
    let conn = rusqlite::Connection::open(path)?;
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE log (seq INTEGER PRIMARY KEY, owner TEXT NOT NULL, item BLOB NOT NULL)",
    )?;
    let item = vec![0x5a_u8; body];
    let mut insert = conn.prepare("INSERT INTO log (owner, item) VALUES (?1, ?2)")?;
    let mut latencies = Vec::with_capacity(commits);
    let started = Instant::now();
    while latencies.len() < commits && started.elapsed() < budget {
        let t = Instant::now();
        conn.execute_batch("BEGIN IMMEDIATE")?;
        for _ in 0..rows_per_commit {
            insert.execute(rusqlite::params!["bob@example.com", item])?;
        }
        conn.execute_batch("COMMIT")?;
        latencies.push(t.elapsed());
    }
    Ok(CommitRun {
        rows_per_commit,
        commits: latencies.len(),
        elapsed: started.elapsed(),
        latencies,
    })
}
