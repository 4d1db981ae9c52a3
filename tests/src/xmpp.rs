//! Real XMPP peers for the federation tests (`tests/federation.rs` against Prosody,
//! `tests/federation_ejabberd.rs` against ejabberd): a throw-away XMPP server on
//! loopback ([`Prosody`] driving `scripts/xmpp/prosody.sh`, [`Ejabberd`] driving
//! `scripts/xmpp/ejabberd.sh`, both an [`XmppServer`]) and XMPP users played by slixmpp
//! processes ([`Peer`], driving `tests/xmpp/peer.py` over JSON lines).
//!
//! Both install what they need on first use (`prosody.sh install` or `ejabberd.sh
//! install`, and `slixmpp.sh`, each idempotent) and panic with the reason when the
//! machine cannot run them: a test that needs a real XMPP server never passes without
//! one. The server is stopped and its directory removed on drop; a peer process is
//! killed on drop. When a test fails, the tail of the server's log is printed (kept
//! whole with `TERN_KEEP_DATA=1`).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long a test waits for something from the XMPP side: generous, since a stanza
/// may cross the XMPP server, the bridge, the hub and a QUIC client on a loaded machine.
pub const PATIENTLY: Duration = Duration::from_secs(30);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// Runs a command to its end; its stdout, or the reason it failed.
fn run(command: &mut Command) -> Result<String, String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{command:?} did not start: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{command:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Runs `f` on tokio's blocking threads; its panic is the caller's.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(err) => panic!("a blocking task was cancelled: {err}"),
    }
}

/// The Python of the slixmpp venv (built once per machine by `scripts/xmpp/slixmpp.sh`);
/// panics with the reason if it cannot be had.
pub fn python() -> PathBuf {
    static PY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let py = PY.get_or_init(|| {
        let out = run(&mut Command::new(repo().join("scripts/xmpp/slixmpp.sh")))?;
        let path = PathBuf::from(out.trim());
        if path.as_os_str().is_empty() {
            return Err("scripts/xmpp/slixmpp.sh printed no python".into());
        }
        Ok(path)
    });
    match py {
        Ok(path) => path.clone(),
        Err(why) => panic!("slixmpp is needed for the XMPP tests and could not be set up: {why}"),
    }
}

/// An XMPP account on the test server.
#[derive(Debug, Clone)]
pub struct XmppUser {
    /// Its bare JID.
    pub jid: String,
    /// Its password.
    pub password: String,
}

/// What differs between the XMPP servers the tests run: the script that runs one, and
/// what its log says.
pub trait Flavour: 'static {
    /// Its name, for messages.
    const NAME: &'static str;
    /// Its script, relative to the workspace root.
    const SCRIPT: &'static str;
    /// The prefix of the variables its script prints (`PROSODY`: `PROSODY_C2S_PORT`...).
    const VARS: &'static str;
    /// Its log file in the instance's directory.
    const LOG: &'static str;
    /// Its log line when a component's handshake succeeds.
    const COMPONENT_UP: &'static str;
    /// Its log line when an authenticated component stream for `domain` ends.
    fn component_down(domain: &str) -> String;
    /// Whether it is installed (once per test binary): `install` runs at most once.
    fn installed() -> &'static OnceLock<Result<(), String>>;
}

/// Prosody 0.12 (Debian's package), run by `scripts/xmpp/prosody.sh`.
#[derive(Debug)]
pub enum ProsodyFlavour {}

impl Flavour for ProsodyFlavour {
    const NAME: &'static str = "Prosody";
    const SCRIPT: &'static str = "scripts/xmpp/prosody.sh";
    const VARS: &'static str = "PROSODY";
    const LOG: &'static str = "prosody.log";
    const COMPONENT_UP: &'static str = "External component successfully authenticated";

    fn component_down(domain: &str) -> String {
        format!("component disconnected: {domain} ")
    }

    fn installed() -> &'static OnceLock<Result<(), String>> {
        static DONE: OnceLock<Result<(), String>> = OnceLock::new();
        &DONE
    }
}

/// ejabberd 23.01 (Debian's package), run by `scripts/xmpp/ejabberd.sh`.
#[derive(Debug)]
pub enum EjabberdFlavour {}

impl Flavour for EjabberdFlavour {
    const NAME: &'static str = "ejabberd";
    const SCRIPT: &'static str = "scripts/xmpp/ejabberd.sh";
    const VARS: &'static str = "EJABBERD";
    /// The VM's console: the lines of ejabberd.log, written at once (ejabberd.log lags).
    const LOG: &'static str = "ejabberd.out";
    const COMPONENT_UP: &'static str = "Accepted external component handshake authentication for ";

    /// ejabberd's router logs this (at debug level, which the tests use) when the
    /// component's process ends, whichever side ended the stream.
    fn component_down(domain: &str) -> String {
        format!("Route unregistered: {domain}\n")
    }

    fn installed() -> &'static OnceLock<Result<(), String>> {
        static DONE: OnceLock<Result<(), String>> = OnceLock::new();
        &DONE
    }
}

/// A Prosody of its own on 127.0.0.1.
pub type Prosody = XmppServer<ProsodyFlavour>;

/// An ejabberd of its own on 127.0.0.1.
pub type Ejabberd = XmppServer<EjabberdFlavour>;

/// An XMPP server of its own on 127.0.0.1 (a throw-away instance in a temporary
/// directory): host [`Self::host`] for XMPP users and the XEP-0114 component
/// [`Self::component_host`] (example.com) for the gateway.
pub struct XmppServer<F: Flavour> {
    dir: Option<TempDir>,
    /// The client (c2s) port.
    pub c2s_port: u16,
    /// The component port.
    pub component_port: u16,
    /// The component's secret.
    pub secret: String,
    /// The XMPP users' domain (xmpp.test).
    pub host: String,
    /// The component's domain (example.com).
    pub component_host: String,
    flavour: PhantomData<fn() -> F>,
}

fn script<F: Flavour>() -> PathBuf {
    repo().join(F::SCRIPT)
}

impl Prosody {
    /// Starts a fresh server with the settings a gateway's operator is told to use
    /// (`component_conflict_resolve = "kick_old"`, docs/federation.md).
    pub async fn start() -> Self {
        Self::start_with("component_conflict_resolve = \"kick_old\"").await
    }

    /// Starts a fresh server with these Lua lines in its global section.
    pub async fn start_with(extra_config: &str) -> Self {
        let env = vec![
            ("PROSODY_EXTRA_CONFIG".to_string(), extra_config.to_string()),
            ("PROSODY_LOG_LEVEL".to_string(), "debug".to_string()),
        ];
        blocking(move || Self::start_blocking(&env)).await
    }
}

impl Ejabberd {
    /// Starts a fresh server. Its component listener needs nothing beyond the domain and
    /// secret; ejabberd has no counterpart of Prosody's `kick_old`: it accepts a second
    /// connection for the same domain beside the first, and spreads the stanzas for the
    /// domain between them.
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    /// Starts a fresh server with these YAML lines (top-level options) at the end of
    /// its ejabberd.yml.
    pub async fn start_with(extra_config: &str) -> Self {
        let env = vec![
            (
                "EJABBERD_EXTRA_CONFIG".to_string(),
                extra_config.to_string(),
            ),
            ("EJABBERD_LOG_LEVEL".to_string(), "debug".to_string()),
        ];
        blocking(move || Self::start_blocking(&env)).await
    }
}

impl<F: Flavour> XmppServer<F> {
    fn installed() {
        let done = F::installed()
            .get_or_init(|| run(Command::new("bash").arg(script::<F>()).arg("install")).map(drop));
        if let Err(why) = done {
            panic!(
                "{} is needed for the XMPP tests and could not be installed: {why}",
                F::NAME
            );
        }
    }

    fn start_blocking(env: &[(String, String)]) -> Self {
        Self::installed();
        let dir = tempfile::Builder::new()
            .prefix("tern-xmpp-test.")
            .tempdir()
            .unwrap_or_else(|e| panic!("a directory for {}: {e}", F::NAME));
        let exports = run(Command::new("bash")
            .arg(script::<F>())
            .arg("start")
            .arg(dir.path())
            .envs(env.iter().cloned()))
        .unwrap_or_else(|why| {
            let _ = run(Command::new("bash")
                .arg(script::<F>())
                .arg("stop")
                .arg(dir.path()));
            panic!("{} did not start: {why}", F::NAME)
        });
        let var = |name: &str| -> String {
            let name = format!("{}_{name}", F::VARS);
            exports
                .lines()
                .find_map(|line| line.strip_prefix(&format!("export {name}=")))
                .map(|v| v.trim_matches('\'').to_string())
                .unwrap_or_else(|| panic!("{} start printed no {name}: {exports}", F::SCRIPT))
        };
        let port = |name: &str| var(name).parse::<u16>().expect("a port number");
        Self {
            c2s_port: port("C2S_PORT"),
            component_port: port("COMPONENT_PORT"),
            secret: var("COMPONENT_SECRET"),
            host: var("XMPP_HOST"),
            component_host: var("COMPONENT_HOST"),
            dir: Some(dir),
            flavour: PhantomData,
        }
    }

    /// The instance's directory.
    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("the instance's directory").path()
    }

    /// The gateway's `[xmpp]` section for this server.
    pub fn xmpp_config(&self) -> tern_gateway::config::XmppConfig {
        tern_gateway::config::XmppConfig {
            component: format!("127.0.0.1:{}", self.component_port),
            secret: self.secret.clone(),
            domain: Some(self.component_host.clone()),
        }
    }

    async fn script(&self, args: Vec<String>) -> Result<String, String> {
        let sh = script::<F>();
        blocking(move || run(Command::new("bash").arg(sh).args(args))).await
    }

    /// Creates `local@host` with a random password (prosodyctl / ejabberdctl register).
    pub async fn add_user(&self, local: &str) -> XmppUser {
        let jid = format!("{local}@{}", self.host);
        let password = format!("pw-{}", rand::random::<u64>());
        let args = vec![
            "adduser".into(),
            self.path().display().to_string(),
            jid.clone(),
            password.clone(),
        ];
        if let Err(why) = self.script(args).await {
            panic!("cannot add {jid}: {why}");
        }
        XmppUser { jid, password }
    }

    /// Stops the server (SIGTERM; every stream ends). Data and ports are kept.
    pub async fn stop(&self) {
        let args = vec!["stop".into(), self.path().display().to_string()];
        if let Err(why) = self.script(args).await {
            panic!("{} did not stop: {why}", F::NAME);
        }
    }

    /// Starts the stopped server again with the same ports, secret, users and data.
    pub async fn start_again(&self) {
        let args = vec!["start".into(), self.path().display().to_string()];
        if let Err(why) = self.script(args).await {
            panic!("{} did not start again: {why}", F::NAME);
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path().join(F::LOG)).unwrap_or_default()
    }

    /// How many times a component authenticated so far.
    pub fn component_connections(&self) -> usize {
        self.log().matches(F::COMPONENT_UP).count()
    }

    /// How many times the component's authenticated stream ended so far (a connection
    /// that never said who it is, such as the script's own port check, is not counted).
    pub fn component_disconnections(&self) -> usize {
        self.log()
            .matches(&F::component_down(&self.component_host))
            .count()
    }

    /// Waits until a component (the gateway's bridge) has authenticated `n` times in
    /// all; panics after [`PATIENTLY`].
    pub async fn wait_component(&self, n: usize) {
        let deadline = Instant::now() + PATIENTLY;
        while self.component_connections() < n {
            assert!(
                Instant::now() < deadline,
                "the gateway's component did not connect to {} ({n} connection(s) \
                 expected, {} seen) within {PATIENTLY:?}",
                F::NAME,
                self.component_connections()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The last lines of a log, continuation lines (which start with white space) left out.
fn log_tail(log: &Path, lines: usize) -> String {
    let log = std::fs::read_to_string(log).unwrap_or_default();
    let kept: Vec<&str> = log
        .lines()
        .filter(|l| !l.starts_with(char::is_whitespace))
        .collect();
    kept[kept.len().saturating_sub(lines)..].join("\n")
}

impl<F: Flavour> Drop for XmppServer<F> {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else {
            return;
        };
        if std::thread::panicking() {
            eprintln!(
                "---- {}'s log ({}), last lines ----\n{}\n----",
                F::NAME,
                dir.path().display(),
                log_tail(&dir.path().join(F::LOG), 80)
            );
        }
        if let Err(why) = run(Command::new("bash")
            .arg(script::<F>())
            .arg("stop")
            .arg(dir.path()))
        {
            eprintln!("{} did not stop: {why}", F::NAME);
        }
        if std::env::var("TERN_KEEP_DATA").is_ok_and(|v| v == "1") {
            eprintln!("kept {}", dir.keep().display());
        }
    }
}

/// One XMPP user logged in to the test server: a `tests/xmpp/peer.py` process.
///
/// Events arrive in a mailbox: [`Self::expect`] takes the first one that matches and
/// leaves the others for later; [`Self::history`] keeps every event in arrival order.
pub struct Peer {
    /// The full JID it is bound to.
    pub jid: String,
    child: Child,
    stdin: Option<ChildStdin>,
    events: mpsc::UnboundedReceiver<Value>,
    mailbox: VecDeque<Value>,
    history: Vec<Value>,
    stderr: Arc<Mutex<String>>,
}

impl Peer {
    /// Logs `user` in as `user.jid/resource` and sends its initial presence.
    pub async fn login<F: Flavour>(
        server: &XmppServer<F>,
        user: &XmppUser,
        resource: &str,
    ) -> Self {
        let jid = format!("{}/{resource}", user.jid);
        let mut child = Command::new(python())
            .arg(repo().join("tests/xmpp/peer.py"))
            .args([&jid, &user.password, "127.0.0.1"])
            .arg(server.c2s_port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("the XMPP peer process did not start: {e}"));
        let (tx, events) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let event = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({"event": "garbage", "line": line}));
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut text = sink.lock().unwrap_or_else(|e| e.into_inner());
                if text.len() < 64 * 1024 {
                    text.push_str(&line);
                    text.push('\n');
                }
            }
        });
        let stdin = child.stdin.take();
        let mut peer = Self {
            jid,
            child,
            stdin,
            events,
            mailbox: VecDeque::new(),
            history: Vec::new(),
            stderr,
        };
        let up = peer
            .expect("login", |e| {
                matches!(kind(e), "connected" | "auth_failed" | "connect_failed")
            })
            .await;
        assert_eq!(kind(&up), "connected", "{} did not log in: {up}", peer.jid);
        assert_eq!(
            up["jid"],
            peer.jid.as_str(),
            "bound to the resource asked for"
        );
        peer
    }

    /// Its bare JID.
    pub fn bare(&self) -> &str {
        bare(&self.jid)
    }

    /// Sends a command and waits until the peer has carried it out.
    pub async fn cmd(&mut self, cmd: Value) {
        let name = cmd["cmd"].as_str().expect("a command name").to_string();
        let mut line = serde_json::to_string(&cmd).expect("JSON");
        line.push('\n');
        let written = self.stdin.as_mut().map(|stdin| {
            stdin
                .write_all(line.as_bytes())
                .and_then(|()| stdin.flush())
        });
        if !matches!(written, Some(Ok(()))) {
            panic!(
                "{}: cannot send {cmd}: {written:?}; {}",
                self.jid,
                self.report()
            );
        }
        let what = format!("`{name}` carried out");
        self.expect(&what, |e| kind(e) == "done" && e["cmd"] == name.as_str())
            .await;
    }

    /// Takes the first event `pick` accepts, waiting up to [`PATIENTLY`]; the others
    /// stay in the mailbox. Panics, with what the peer saw, if none comes.
    pub async fn expect(&mut self, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENTLY;
        loop {
            if let Some(at) = self.mailbox.iter().position(&pick) {
                return self.mailbox.remove(at).expect("found above");
            }
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => self.keep(event),
                Ok(None) => panic!(
                    "{}: the peer process ended while waiting for {what}; {}",
                    self.jid,
                    self.report()
                ),
                Err(_) => panic!(
                    "{}: waited {PATIENTLY:?} in vain for {what}; {}",
                    self.jid,
                    self.report()
                ),
            }
        }
    }

    /// Every event so far, in arrival order.
    pub fn history(&self) -> &[Value] {
        &self.history
    }

    fn keep(&mut self, event: Value) {
        assert_ne!(
            kind(&event),
            "bad_command",
            "{}: the peer refused a command: {event}",
            self.jid
        );
        self.history.push(event.clone());
        self.mailbox.push_back(event);
    }

    /// What the peer saw and said, for a failure message.
    pub fn report(&self) -> String {
        let seen: Vec<String> = self
            .history
            .iter()
            .rev()
            .take(40)
            .rev()
            .map(Value::to_string)
            .collect();
        let stderr = self
            .stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        format!(
            "its last events:\n  {}\nits stderr:\n{stderr}",
            seen.join("\n  ")
        )
    }

    /// Logs out and waits for the stream's end.
    pub async fn quit(mut self) {
        self.cmd(serde_json::json!({"cmd": "quit"})).await;
        self.expect("the stream's end", |e| kind(e) == "closed")
            .await;
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An event's name.
pub fn kind(event: &Value) -> &str {
    event["event"].as_str().unwrap_or("")
}

/// The bare part of a JID.
pub fn bare(jid: &str) -> &str {
    jid.split_once('/').map_or(jid, |(bare, _)| bare)
}

/// The resource of a JID, if any.
pub fn resource(jid: &str) -> Option<&str> {
    jid.split_once('/').map(|(_, r)| r)
}

/// Whether an event is a stanza of this event kind from this bare JID.
pub fn from_bare(event: &Value, kind_: &str, jid: &str) -> bool {
    kind(event) == kind_ && event["from"].as_str().is_some_and(|f| bare(f) == jid)
}

/// Whether an event is a presence of this type from this bare JID.
pub fn presence_from(event: &Value, jid: &str, type_: &str) -> bool {
    from_bare(event, "presence", jid) && event["type"] == type_
}
