//! The test harness: a real tomato node on 127.0.0.1:0 with its own data directory, and typed
//! helpers for talking to it over real HTTP.

use std::net::SocketAddr;
use std::path::PathBuf;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tomato::{Application, Settings};

/// The signing secret every test node uses, so tests can forge tokens of their own.
pub const TEST_JWT_SECRET: &str = "test-secret-0123456789abcdef0123456789abcdef";
/// Signs in as admin on every test node.
pub const ADMIN_EMAIL: &str = "admin@tomato.test";
/// The internal key of every test node.
pub const INTERNAL_KEY: &str = "test-internal-key-0123456789";

/// A running node and what it needs to be restarted on the same data.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    dir: TempDir,
    overrides: Vec<(String, String)>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

/// A signed-in user as the API returned them.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: String,
    pub user: Value,
}

impl Session {
    pub fn id(&self) -> &str {
        self.user["id"].as_str().expect("user id")
    }
}

/// A node with the test defaults.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Which store backend a test node runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// The embedded SQLite file (the default).
    Embedded,
    /// The ScyllaDB backend, on the test CQL database (Cassandra, or `TOMATO_TEST_SCYLLA`),
    /// in a keyspace of the node's own.
    Scylla,
}

/// A node on `store` with extra `TOMATO_*` overrides on top of the test defaults.
pub async fn spawn_app_on(store: Store, overrides: &[(&str, &str)]) -> TestApp {
    match store {
        Store::Embedded => spawn_app_with(overrides).await,
        Store::Scylla => {
            let (node, keyspace) = (crate::cql::node(), crate::cql::keyspace());
            let mut all = vec![
                ("TOMATO_STORE__BACKEND", "scylla"),
                ("TOMATO_STORE__SCYLLA__NODES", node.as_str()),
                ("TOMATO_STORE__SCYLLA__KEYSPACE", keyspace.as_str()),
            ];
            all.extend_from_slice(overrides);
            spawn_app_with(&all).await
        }
    }
}

/// Runs a test written against a [`Store`] once on each backend: `embedded` and `scylla`
/// tests in a module named after it.
#[macro_export]
macro_rules! on_both_stores {
    ($name:ident) => {
        mod $name {
            use $crate::helpers::Store;

            #[tokio::test]
            async fn embedded() {
                super::$name(Store::Embedded).await;
            }

            #[tokio::test]
            async fn scylla() {
                super::$name(Store::Scylla).await;
            }
        }
    };
}

/// A node with extra `TOMATO_*` overrides on top of the test defaults.
pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let overrides = overrides
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let mut app = TestApp {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        client: reqwest::Client::new(),
        dir,
        overrides,
        shutdown: None,
        server: None,
    };
    app.start().await;
    app
}

impl TestApp {
    /// A handle on a node running elsewhere (a `tomato serve` process the test started), so the
    /// same helpers speak to it; it cannot be stopped or restarted through this handle.
    pub fn attached(addr: SocketAddr) -> TestApp {
        TestApp {
            addr,
            client: reqwest::Client::new(),
            dir: tempfile::tempdir().expect("temp dir"),
            overrides: Vec::new(),
            shutdown: None,
            server: None,
        }
    }

    fn settings(&self) -> Settings {
        let data_dir = self.data_dir();
        let config_file = self.dir.path().join("empty.toml");
        std::fs::write(&config_file, "").expect("write empty config");
        let mut env = vec![
            ("TOMATO_SERVER__BIND".to_owned(), "127.0.0.1:0".to_owned()),
            (
                "TOMATO_STORE__DATA_DIR".to_owned(),
                data_dir.display().to_string(),
            ),
            (
                "TOMATO_AUTH__JWT_SECRET".to_owned(),
                TEST_JWT_SECRET.to_owned(),
            ),
            (
                "TOMATO_AUTH__ADMIN_EMAILS".to_owned(),
                ADMIN_EMAIL.to_owned(),
            ),
            ("TOMATO_INTERNAL__KEY".to_owned(), INTERNAL_KEY.to_owned()),
            // Every test user signs in from 127.0.0.1; the sign-in limit has its own test.
            (
                "TOMATO_LIMITS__SIGN_IN_PER_MINUTE".to_owned(),
                "1000000".to_owned(),
            ),
        ];
        env.extend(self.overrides.iter().cloned());
        Settings::load(Some(&config_file), env).expect("test settings load")
    }

    /// Where this node keeps its store.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    async fn start(&mut self) {
        let app = Application::build(self.settings())
            .await
            .expect("build app");
        self.addr = app.local_addr().expect("bound address");
        let (tx, rx) = oneshot::channel();
        self.shutdown = Some(tx);
        self.server = Some(tokio::spawn(app.run_until_stopped(async {
            let _ = rx.await;
        })));
    }

    /// Stops the node the way ctrl-c does: drain, then flush the store.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server stopped cleanly");
        }
    }

    /// Stops the node and starts a new one on the same data directory (on a new port).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends a request with an optional bearer token and JSON body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut req = self.client.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        req.send().await.expect("request sent")
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        self.request(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> reqwest::Response {
        self.request(Method::POST, path, token, Some(body)).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: &Value) -> reqwest::Response {
        self.request(Method::PUT, path, token, Some(body)).await
    }

    /// Signs in through the development login.
    pub async fn dev_login(&self, email: &str, name: &str) -> Session {
        let response = self
            .post(
                "/api/auth/dev-login",
                None,
                &serde_json::json!({ "email": email, "name": name }),
            )
            .await;
        let body = json_ok(response).await;
        session(body)
    }

    /// Signs in and switches to `role`, returning the session with the new token.
    pub async fn user_with_role(&self, email: &str, role: &str) -> Session {
        let session = self.dev_login(email, "Test User").await;
        let response = self
            .put(
                "/api/auth/role",
                Some(&session.token),
                &serde_json::json!({ "role": role }),
            )
            .await;
        self::session(json_ok(response).await)
    }

    /// The admin of every test node.
    pub async fn admin(&self) -> Session {
        self.dev_login(ADMIN_EMAIL, "Admin").await
    }

    /// The value of a counter in `/metrics`, e.g. `tomato_order_actor_restarts_total`.
    pub async fn metric(&self, name: &str) -> u64 {
        let text = self
            .get("/metrics", None)
            .await
            .text()
            .await
            .expect("metrics");
        let prefix = format!("{name} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        self.request(Method::DELETE, path, token, None).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// `{token, user}` from a sign-in answer.
pub fn session(body: Value) -> Session {
    Session {
        token: body["token"].as_str().expect("token in body").to_owned(),
        user: body["user"].clone(),
    }
}

/// Asserts a 2xx answer and returns its JSON body.
pub async fn json_ok(response: reqwest::Response) -> Value {
    let status = response.status();
    let text = response.text().await.expect("body");
    assert!(
        status.is_success(),
        "expected success, got {status}: {text}"
    );
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("not JSON ({err}): {text}"))
}

/// Asserts an error answer with the error body of docs/api.md and returns its code.
pub async fn error_code(response: reqwest::Response, expected: StatusCode) -> String {
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().expect("ascii").to_owned());
    let text = response.text().await.expect("body");
    assert_eq!(status, expected, "body: {text}");
    assert_eq!(
        content_type.as_deref(),
        Some("application/json"),
        "error bodies are JSON: {text}"
    );
    let body: Value = serde_json::from_str(&text).expect("error body is JSON");
    let code = body["error"]["code"]
        .as_str()
        .expect("error.code")
        .to_owned();
    let message = body["error"]["message"].as_str().expect("error.message");
    assert!(!message.is_empty(), "error.message is set");
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(1),
        "only `error` at the top: {text}"
    );
    code
}

/// Installs the npm packages pinned in `dir` (its lock file pins every one) unless `package` is
/// there already. Tests run in parallel processes, so a directory is the lock.
pub fn npm_ci(dir: &std::path::Path, package: &str, for_what: &str) {
    let installed = dir.join("node_modules").join(package).join("package.json");
    let lock = dir.join(".installing");
    let started = std::time::Instant::now();
    while !installed.exists() {
        if std::fs::create_dir(&lock).is_ok() {
            let status = std::process::Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(dir)
                .status()
                .unwrap_or_else(|_| panic!("npm (Node.js) is needed for {for_what}"));
            let _ = std::fs::remove_dir(&lock);
            assert!(status.success(), "npm ci in {} failed", dir.display());
        } else {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(300),
                "npm ci never finished"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}
