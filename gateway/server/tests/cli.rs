//! The `tern-gateway` binary as an operator uses it: provisioning and `serve`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tern-gateway"));
    cmd.env_remove("TERN_GATEWAY_CONFIG")
        .env("RUST_LOG", "warn");
    cmd
}

fn run(args: &[&str]) -> Result<(String, String)> {
    let out = bin().args(args).output()?;
    let stdout = String::from_utf8(out.stdout)?;
    let stderr = String::from_utf8(out.stderr)?;
    ensure!(out.status.success(), "{args:?} failed: {stderr}");
    Ok((stdout, stderr))
}

#[test]
fn user_add_list_remove() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().to_str().context("path")?;
    let (stdout, stderr) = run(&[
        "user",
        "add",
        "Alice@localhost",
        "--data-dir",
        data,
        "--alias",
        "al@localhost",
    ])?;
    let token = stdout.lines().last().context("no token")?;
    ensure!(token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()));
    ensure!(stderr.contains("alice@localhost"), "stderr: {stderr}");
    ensure!(!stderr.contains(token), "the token went to stderr");

    let refused = bin()
        .args(["user", "add", "alice@localhost", "--data-dir", data])
        .output()?;
    ensure!(!refused.status.success(), "a duplicate was added");

    run(&[
        "user",
        "add",
        "bob@localhost",
        "--data-dir",
        data,
        "--no-presence",
    ])?;
    let (list, _) = run(&["user", "list", "--data-dir", data])?;
    let users: Vec<serde_json::Value> = list
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    ensure!(users.len() == 2, "list: {list}");
    ensure!(users[0]["address"] == "alice@localhost");
    ensure!(users[0]["aliases"][0] == "al@localhost");
    ensure!(users[1]["presentity"] == false);
    ensure!(!list.contains("token") && !list.contains(token));

    run(&["user", "remove", "bob@localhost", "--data-dir", data])?;
    let (list, _) = run(&["user", "list", "--data-dir", data])?;
    ensure!(list.lines().count() == 1);
    let missing = bin()
        .args(["user", "remove", "bob@localhost", "--data-dir", data])
        .output()?;
    ensure!(!missing.status.success());
    Ok(())
}

#[test]
fn user_add_warns_about_an_unserved_domain() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().to_str().context("path")?;
    let (_, stderr) = run(&["user", "add", "eve@elsewhere.example", "--data-dir", data])?;
    ensure!(
        stderr.contains("not a configured domain"),
        "stderr: {stderr}"
    );
    Ok(())
}

#[test]
fn serve_prints_one_line_and_stops_on_sigterm() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().to_str().context("path")?;
    let mut child = bin()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", data])
        .args(["--domain", "Example.COM", "--domain", "localhost"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let cert = dir.path().join("cert.pem");
    let expected_tail = format!("for example.com, localhost (cert: {})\n", cert.display());
    let ok =
        line.starts_with("tern-gateway listening on 127.0.0.1:") && line.ends_with(&expected_tail);
    if !ok {
        let _ = child.kill();
    }
    ensure!(ok, "unexpected line: {line:?}");
    ensure!(cert.exists());

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    ensure!(status.success());
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            ensure!(status.success(), "exited with {status}");
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            anyhow::bail!("did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
