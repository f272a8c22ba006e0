//! The `tomato` binary as operators use it: configuration checks, admin grants, and a clean stop
//! on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{ADMIN_EMAIL, TestApp};
use crate::world::{SHOP_AT, open_shop, paid_order};

/// The binary with a clean environment: no `TOMATO_*` from the caller leaks in.
pub(crate) fn tomato(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tomato"));
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    command
}

#[test]
fn an_invalid_value_stops_the_start_with_one_clear_line() {
    let dir = tempfile::tempdir().expect("dir");
    for args in [&["config", "check"][..], &["serve"][..]] {
        let output = tomato(dir.path())
            .args(args)
            .env("TOMATO_AUTH__JWT_SECRET", "too-short")
            .output()
            .expect("run tomato");
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(output.stderr).expect("utf-8");
        assert_eq!(
            stderr.trim_end(),
            "tomato: auth.jwt_secret must be at least 32 bytes",
            "{args:?}"
        );
    }
    assert!(!dir.path().join("data").exists(), "nothing was created");
}

#[test]
fn the_production_profile_refuses_each_development_setting() {
    let dir = tempfile::tempdir().expect("dir");
    let production = |extra: &[(&str, &str)]| {
        let mut command = tomato(dir.path());
        command
            .args(["config", "check"])
            .env("TOMATO_SERVER__PROFILE", "production");
        for (key, value) in extra {
            command.env(key, value);
        }
        command.output().expect("run tomato")
    };
    let output = production(&[]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).expect("utf-8");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 4, "one line per problem: {stderr}");
    for (line, setting) in lines.iter().zip([
        "auth.jwt_secret",
        "auth.dev_login",
        "payments.test_provider",
        "internal.key",
    ]) {
        assert!(line.starts_with(&format!("tomato: {setting}")), "{line}");
    }
    let fixed = [
        (
            "TOMATO_AUTH__JWT_SECRET",
            "a-production-secret-of-at-least-32-bytes",
        ),
        ("TOMATO_AUTH__DEV_LOGIN", "false"),
        ("TOMATO_PAYMENTS__TEST_PROVIDER", "false"),
        ("TOMATO_INTERNAL__KEY", "an-internal-key"),
    ];
    // Each one left as shipped is refused alone.
    for left in 0..fixed.len() {
        let others: Vec<(&str, &str)> = fixed
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != left)
            .map(|(_, pair)| *pair)
            .collect();
        let output = production(&others);
        assert_eq!(output.status.code(), Some(2));
        let stderr = String::from_utf8(output.stderr).expect("utf-8");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    let output = production(&fixed);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let serve = tomato(dir.path())
        .arg("serve")
        .env("TOMATO_SERVER__PROFILE", "production")
        .output()
        .expect("run tomato");
    assert_eq!(serve.status.code(), Some(2), "serve refuses too");
    assert!(!dir.path().join("data").exists(), "nothing was created");
}

#[test]
fn unknown_keys_stop_the_start() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("config.toml"), "[server]\nport = 80\n").expect("write");
    let output = tomato(dir.path())
        .args(["config", "check"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).expect("utf-8");
    assert_eq!(
        stderr.trim_end(),
        "tomato: unknown setting server.port in config.toml"
    );
}

#[test]
fn the_environment_wins_over_the_file() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("node.toml");
    std::fs::write(
        &file,
        "[server]\nbind = \"127.0.0.1:7000\"\n[store]\ndata_dir = \"from-file\"\n",
    )
    .expect("write");
    let output = tomato(dir.path())
        .args(["config", "check", "--config"])
        .arg(&file)
        .env("TOMATO_SERVER__BIND", "127.0.0.1:7001")
        .output()
        .expect("run");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    assert!(
        stdout.contains("server.bind      = 127.0.0.1:7001"),
        "{stdout}"
    );
    assert!(stdout.contains("store.data_dir   = from-file"), "{stdout}");
}

#[tokio::test]
async fn admin_grant_makes_an_admin_that_signs_in_as_one() {
    let dir = tempfile::tempdir().expect("dir");
    let output = tomato(dir.path())
        .args(["admin", "grant", "Ops@Example.com"])
        .output()
        .expect("run");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    assert!(stdout.contains("ops@example.com"), "{stdout}");

    let bad = tomato(dir.path())
        .args(["admin", "grant", "nobody"])
        .output()
        .expect("run");
    assert!(!bad.status.success());

    // A node on the same data directory sees the grant.
    let (mut child, addr) = start_node(dir.path());
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/api/auth/dev-login"))
        .json(&serde_json::json!({ "email": "ops@example.com", "name": "Ops" }))
        .send()
        .await
        .expect("send");
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["user"]["role"], "admin");
    let admin_token = body["token"].as_str().expect("token").to_owned();
    let client = reqwest::Client::new();
    let stats = |addr: String| {
        let (client, token) = (client.clone(), admin_token.clone());
        async move {
            client
                .get(format!("http://{addr}/api/admin/stats"))
                .bearer_auth(&token)
                .send()
                .await
                .expect("send")
                .status()
        }
    };
    assert_eq!(stats(addr.clone()).await, reqwest::StatusCode::OK);

    // And takes it away again, while the node runs: the node hears of it through the store's
    // change feed, though it keeps what it read for minutes while it follows that feed.
    let output = tomato(dir.path())
        .args(["admin", "revoke", "ops@example.com"])
        .output()
        .expect("run");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    assert!(stdout.contains("no longer an admin"), "{stdout}");
    let revoked_at = std::time::Instant::now();
    while stats(addr.clone()).await == reqwest::StatusCode::OK {
        assert!(
            revoked_at.elapsed() < std::time::Duration::from_secs(10),
            "the running node never heard of the revocation"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        stats(addr.clone()).await,
        reqwest::StatusCode::UNAUTHORIZED,
        "the admin token went stale"
    );
    stop_node(&mut child);
    let unknown = tomato(dir.path())
        .args(["admin", "revoke", "nobody@example.com"])
        .output()
        .expect("run");
    assert!(!unknown.status.success(), "an unknown e-mail is an error");
    let (mut child, addr) = start_node(dir.path());
    assert_eq!(
        stats(addr.clone()).await,
        reqwest::StatusCode::UNAUTHORIZED,
        "and stays stale after a restart"
    );
    let again: serde_json::Value = client
        .post(format!("http://{addr}/api/auth/dev-login"))
        .json(&serde_json::json!({ "email": "ops@example.com", "name": "Ops" }))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(again["user"]["role"], "customer");
    stop_node(&mut child);
}

#[tokio::test]
async fn audit_names_each_acknowledged_order_not_delivered_once() {
    let dir = tempfile::tempdir().expect("dir");
    let (mut child, addr) =
        start_node_with(dir.path(), &[("TOMATO_AUTH__ADMIN_EMAILS", ADMIN_EMAIL)]);
    let app = TestApp::attached(addr.parse().expect("addr"));
    let shop = open_shop(&app, "audit-shop@c.test", "Audit Kitchen", SHOP_AT).await;
    // Paid but never delivered, and one the store never held.
    let (_, paid) = paid_order(&app, &shop, "audit@c.test").await;
    let lost = tomato_domain::OrderId::new().to_string();
    let ids = dir.path().join("orders.txt");
    std::fs::write(&ids, format!("{paid}\n\n{lost}\n")).expect("write");
    let output = tomato(dir.path())
        .arg("audit")
        .arg(&ids)
        .output()
        .expect("run");
    assert!(!output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    assert!(
        stdout.contains(&format!("order {paid}: steps placed\n")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("order {lost}: not in the store")),
        "{stdout}"
    );
    let stderr = String::from_utf8(output.stderr).expect("utf-8");
    assert!(stderr.contains("2 orders audited: 2 findings"), "{stderr}");

    // A line that is no order id stops the audit before it reads anything, naming the line.
    std::fs::write(&ids, format!("{paid}\nnot-an-id\n")).expect("write");
    let output = tomato(dir.path())
        .arg("audit")
        .arg(&ids)
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).expect("utf-8");
    assert!(stderr.contains("orders.txt:2: not an order id"), "{stderr}");
    stop_node(&mut child);
}

/// Starts `tomato serve` on a free port and returns once it is ready, with its address.
fn start_node(dir: &Path) -> (std::process::Child, String) {
    start_node_with(dir, &[])
}

/// Starts `tomato serve` in `dir` with extra settings, and returns once it serves.
pub(crate) fn start_node_with(dir: &Path, env: &[(&str, &str)]) -> (std::process::Child, String) {
    let started = Instant::now();
    let mut child = tomato(dir)
        .arg("serve")
        .env("TOMATO_SERVER__BIND", "127.0.0.1:0")
        .env("TOMATO_LOG__FORMAT", "json")
        // Harness cities sign in hundreds of users from 127.0.0.1.
        .env("TOMATO_LIMITS__SIGN_IN_PER_MINUTE", "1000000")
        // What the caller sets wins (a fixed port, for a node restarted where its clients are).
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn tomato serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("tomato serve exited before serving")
            .expect("read line");
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if event["message"] == "serving" {
            break event["addr"].as_str().expect("addr field").to_owned();
        }
        assert!(started.elapsed() < Duration::from_secs(60), "never served");
    };
    // Keep draining stdout so the node never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

fn stop_node(child: &mut std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "a clean stop exits 0, got {status}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "did not stop within 30 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn sigterm_drains_and_flushes_the_store() {
    let dir = tempfile::tempdir().expect("dir");
    let (mut child, addr) = start_node(dir.path());
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/api/auth/dev-login"))
        .json(&serde_json::json!({ "email": "kept@example.com", "name": "Kept" }))
        .send()
        .await
        .expect("send");
    let before: serde_json::Value = response.json().await.expect("json");
    stop_node(&mut child);
    // A clean close checkpoints the write-ahead log into the database file.
    let wal = dir.path().join("data").join("tomato.db-wal");
    let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal_len, 0, "the WAL was checkpointed at shutdown");

    let (mut child, addr) = start_node(dir.path());
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/api/auth/dev-login"))
        .json(&serde_json::json!({ "email": "kept@example.com", "name": "Kept" }))
        .send()
        .await
        .expect("send");
    let after: serde_json::Value = response.json().await.expect("json");
    assert_eq!(
        after["user"]["id"], before["user"]["id"],
        "the account survived the stop"
    );
    stop_node(&mut child);
}
