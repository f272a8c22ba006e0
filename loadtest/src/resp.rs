//! The RESP peers of `geo-compare`, Redis and Tile38: starting one on a free loopback port,
//! connecting to it, and what each says for "this rider is here" and "the nearest riders".

use std::net::TcpListener;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::city::Point;
use crate::conn::Dialer;

/// A geospatial server spoken to over RESP, and how it says "this rider is here" and "the
/// nearest five within 5 km".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resp {
    /// Redis's GEO commands: a sorted set of geohashes.
    Redis,
    /// Tile38: a collection of points in an R-tree, searched nearest first.
    Tile38,
}

impl Resp {
    /// Places `member` at `at` under `key`.
    pub(crate) fn update(self, key: &str, member: usize, at: Point) -> redis::Cmd {
        match self {
            Resp::Redis => {
                let mut cmd = redis::cmd("GEOADD");
                cmd.arg(key).arg(at.lon).arg(at.lat).arg(member);
                cmd
            }
            Resp::Tile38 => {
                let mut cmd = redis::cmd("SET");
                cmd.arg(key)
                    .arg(member)
                    .arg("POINT")
                    .arg(at.lat)
                    .arg(at.lon);
                cmd
            }
        }
    }

    /// The nearest `count` members of `key` within `radius_m` of `at`, nearest first.
    pub(crate) fn nearest(self, key: &str, at: Point, radius_m: u32, count: u32) -> redis::Cmd {
        match self {
            Resp::Redis => {
                let mut cmd = redis::cmd("GEOSEARCH");
                cmd.arg(key)
                    .arg("FROMLONLAT")
                    .arg(at.lon)
                    .arg(at.lat)
                    .arg("BYRADIUS")
                    .arg(radius_m)
                    .arg("m")
                    .arg("ASC")
                    .arg("COUNT")
                    .arg(count);
                cmd
            }
            Resp::Tile38 => {
                let mut cmd = redis::cmd("NEARBY");
                cmd.arg(key)
                    .arg("LIMIT")
                    .arg(count)
                    .arg("IDS")
                    .arg("POINT")
                    .arg(at.lat)
                    .arg(at.lon)
                    .arg(radius_m);
                cmd
            }
        }
    }

    /// Empties `key`.
    pub(crate) fn clear(self, key: &str) -> redis::Cmd {
        let mut cmd = redis::cmd(match self {
            Resp::Redis => "DEL",
            Resp::Tile38 => "DROP",
        });
        cmd.arg(key);
        cmd
    }

    /// How many members a search answered: Redis sends them as an array, Tile38 an array of
    /// its cursor and the ids.
    pub(crate) fn found(self, reply: &redis::Value) -> usize {
        match (self, reply) {
            (Resp::Redis, redis::Value::Array(found)) => found.len(),
            (Resp::Tile38, redis::Value::Array(parts)) => match parts.get(1) {
                Some(redis::Value::Array(ids)) => ids.len(),
                _ => 0,
            },
            _ => 0,
        }
    }
}

/// A connection to the Redis side that waits for every answer: redis-rs gives up on one after
/// 500 ms by default, which at 100 000 riders (a GEOSEARCH walks every member within 5 km)
/// counted a slow Redis as a failed one, 19 968 errors in 20 000 queries. A slow peer is
/// measured as slow.
pub(crate) async fn redis_connection(
    client: &redis::Client,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Opens one connection per rider to a RESP server. A server started here listens on 127.0.0.1
/// alone, and the connections come from 127.0.0.1 ..= 127.0.0.n, so that tens of thousands of
/// them do not run out of the local ports of one source address; a server named by URL is
/// reached from whatever address the system picks.
#[derive(Debug)]
pub struct RespDialer {
    tcp: Dialer,
    redis: redis::RedisConnectionInfo,
}

impl RespDialer {
    /// For the `resp` server at `url`; `spread` when it was started here.
    pub(crate) async fn new(
        resp: Resp,
        url: &str,
        spread: bool,
        source_addrs: u8,
    ) -> anyhow::Result<Self> {
        let info = redis::IntoConnectionInfo::into_connection_info(url)
            .with_context(|| format!("{resp:?} url {url}"))?;
        let mut parsed = reqwest::Url::parse(url).with_context(|| format!("{resp:?} url {url}"))?;
        if parsed.port().is_none() {
            let port = match resp {
                Resp::Redis => 6379,
                Resp::Tile38 => 9851,
            };
            parsed
                .set_port(Some(port))
                .map_err(|()| anyhow::anyhow!("{resp:?} url {url} has no host"))?;
        }
        let tcp = Dialer::new(&parsed, if spread { source_addrs } else { 0 }).await?;
        Ok(Self {
            tcp,
            redis: info.redis_settings().clone(),
        })
    }

    /// The `n`th rider's connection, waiting for every answer (see [`redis_connection`]).
    pub(crate) async fn connect(
        &self,
        n: usize,
    ) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        let stream = self.tcp.tcp(n).await?;
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        let (conn, driver) =
            redis::aio::MultiplexedConnection::new_with_config(&self.redis, stream, config).await?;
        tokio::spawn(driver);
        Ok(conn)
    }
}

/// A `redis-server` on a free loopback port, killed when the handle drops.
pub(crate) async fn start_redis() -> anyhow::Result<(String, Child)> {
    // A port free on 127.0.0.1 may still be the local port of a connection from another
    // loopback address (a previous run's sockets closing): Redis then cannot bind it and
    // exits, and another port is tried.
    for _ in 0..5 {
        if let Some(started) = try_start_redis().await? {
            return Ok(started);
        }
    }
    bail!("redis-server did not start on five free ports in a row")
}

/// One attempt: `None` when redis-server exited at once (its port was taken on an address).
async fn try_start_redis() -> anyhow::Result<Option<(String, Child)>> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        // Connections come from other loopback addresses too (see `RespDialer`).
        .args(["--protected-mode", "no"])
        .args(["--save", "", "--appendonly", "no"])
        // One connection per rider in stream mode: Redis lowers this to what its open-file
        // limit allows, rather than refusing clients past its default 10 000.
        .args(["--maxclients", "100000"])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting redis-server (install it, or pass --redis URL)")?;
    let url = format!("redis://127.0.0.1:{port}/");
    let client = redis::Client::open(url.as_str())?;
    for _ in 0..100 {
        if child.try_wait()?.is_some() {
            return Ok(None);
        }
        if let Ok(mut conn) = client.get_multiplexed_async_connection().await
            && redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .is_ok()
        {
            return Ok(Some((url, child)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("redis-server on port {port} did not answer PING within 5 s")
}

/// `binary` (a `tile38-server`) on a free loopback port, with a data directory of its own and
/// no append-only file (Redis runs without persistence too), killed when the handle drops.
pub(crate) async fn start_tile38(
    binary: &std::path::Path,
) -> anyhow::Result<(String, Child, tempfile::TempDir)> {
    let dir = tempfile::tempdir().context("a data directory for tile38-server")?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut child = Command::new(binary)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
        // Protected mode admits 127.0.0.1 alone, and connections come from other loopback
        // addresses too (see `RespDialer`); listening on 127.0.0.1 keeps it local all the same.
        .args(["--protected-mode", "no"])
        .arg("-d")
        .arg(dir.path())
        .args(["--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context(
            "starting tile38-server (build it from github.com/tidwall/tile38 and put it on the \
             PATH, pass --tile38 URL, or leave tile38 out of --sides)",
        )?;
    let url = format!("redis://127.0.0.1:{port}/");
    let client = redis::Client::open(url.as_str())?;
    for _ in 0..200 {
        if let Some(status) = child.try_wait()? {
            bail!("tile38-server exited at start ({status})");
        }
        if let Ok(mut conn) = client.get_multiplexed_async_connection().await
            && redis::cmd("PING")
                .query_async::<redis::Value>(&mut conn)
                .await
                .is_ok()
        {
            return Ok((url, child, dir));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("tile38-server on port {port} did not answer PING within 10 s")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(cmd: &redis::Cmd) -> Vec<String> {
        cmd.args_iter()
            .map(|arg| match arg {
                redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                _ => "<cursor>".to_owned(),
            })
            .collect()
    }

    #[test]
    fn each_peer_is_spoken_to_in_its_own_words() {
        let at = Point {
            lat: 12.5,
            lon: 77.25,
        };
        assert_eq!(
            words(&Resp::Redis.update("k", 7, at)),
            ["GEOADD", "k", "77.25", "12.5", "7"]
        );
        assert_eq!(
            words(&Resp::Tile38.update("k", 7, at)),
            ["SET", "k", "7", "POINT", "12.5", "77.25"]
        );
        assert_eq!(
            words(&Resp::Tile38.nearest("k", at, 5000, 5)),
            [
                "NEARBY", "k", "LIMIT", "5", "IDS", "POINT", "12.5", "77.25", "5000"
            ]
        );
        assert_eq!(words(&Resp::Tile38.clear("k")), ["DROP", "k"]);
        assert_eq!(words(&Resp::Redis.clear("k")), ["DEL", "k"]);
    }

    #[test]
    fn found_counts_the_members_of_each_answer() {
        use redis::Value::{Array, BulkString, Int};
        let ids = |n: usize| Array(vec![BulkString(b"1".to_vec()); n]);
        assert_eq!(Resp::Redis.found(&ids(3)), 3);
        assert_eq!(Resp::Tile38.found(&Array(vec![Int(0), ids(5)])), 5);
        assert_eq!(Resp::Tile38.found(&Array(vec![Int(0)])), 0);
        assert_eq!(Resp::Redis.found(&Int(1)), 0);
    }
}
