//! `geo-compare --mode stream`: positions the way rider apps send them. One connection per
//! rider, one position in flight on it (no pipelining), offered at fixed total rates in steps,
//! open loop: each connection's sends are scheduled in advance, and a send that could not go
//! out on time (its connection still waits for the previous answer) is measured from when it
//! was due, so a slow side shows its queueing instead of hiding it. The sides, one after the
//! other on the same riders: the bare ceiling over `/ws` (see [`crate::bare`]), tomato over `/ws`
//! and over Socket.IO, Redis over RESP (`GEOADD`, one connection per rider) and Tile38 over
//! RESP (`SET .. POINT`, the same). For each side
//! and step: the rate achieved, p50/p99/p99.9 of the acknowledgement and errors; and the
//! highest rate each side holds with p99 under 50 ms and no errors. Each rider's first
//! position on a side goes before the steps, unmeasured (see [`warm_up`]).

use std::time::Duration;

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;
use tokio::time::Instant;

use crate::city::{City, Point, Walker};
use crate::cli::Transport;
use crate::conn::{Conn, Dialer, Incoming};
use crate::record;
use crate::resp::{Resp, RespDialer};
use crate::usage::Probe;

/// A step holds when its p99 stays under this.
pub const HOLD_P99_MS: f64 = 50.0;
/// Connections opened at once while a side connects.
const CONNECTING: usize = 64;
pub(crate) const KEY: &str = "tomato-load:stream";

/// One side at one offered rate.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub offered_per_s: f64,
    /// Positions sent in the step (answered or not): the offered rate times the step's length.
    pub sent: u64,
    pub achieved_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub errors: u64,
    /// CPU time the side's server process spent per position acknowledged in the step
    /// (microseconds; all its threads, kernel time included); `None` when its process is not
    /// known here.
    pub server_cpu_us_per_position: Option<f64>,
    /// The same as cores busy on average over the step.
    pub server_cores: Option<f64>,
}

impl Step {
    fn holds(&self) -> bool {
        self.errors == 0 && self.p99_ms < HOLD_P99_MS
    }
}

/// One side over every step.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Side {
    pub name: String,
    pub steps: Vec<Step>,
    /// The highest rate achieved in a step that held (p99 < 50 ms, no errors); `None`: none
    /// held.
    pub holds_per_s: Option<f64>,
    /// Why the side did not run (a peer missing), if it did not.
    pub skipped: Option<String>,
    /// How much the server's resident memory grew per rider connected (KiB), measured after
    /// every rider connected and sent its first position; `None` when its process is not known.
    pub memory_per_rider_kib: Option<f64>,
}

/// The streaming comparison.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Streaming {
    pub riders: usize,
    pub step_s: f64,
    pub sides: Vec<Side>,
    /// `a / b` of the rates each side holds, for the pairs the targets name.
    pub ratios: Vec<(String, Option<f64>)>,
}

impl Side {
    /// A side that did not run, and why.
    pub fn skipped(name: &str, why: &str) -> Self {
        Side {
            name: name.to_owned(),
            steps: Vec::new(),
            holds_per_s: None,
            skipped: Some(why.to_owned()),
            memory_per_rider_kib: None,
        }
    }
}

impl Streaming {
    fn held(&self, name: &str) -> Option<f64> {
        self.sides
            .iter()
            .find(|side| side.name == name)
            .and_then(|side| side.holds_per_s)
    }

    /// Computes the ratios the report shows.
    pub fn with_ratios(mut self) -> Self {
        let pairs = [
            ("tomato-ws", "bare-ws"),
            ("tomato-ws", "redis"),
            ("tomato-socketio", "bare-socketio"),
            ("tomato-socketio", "redis"),
            ("tomato-ws", "tile38"),
            ("tomato-socketio", "tile38"),
        ];
        self.ratios = pairs
            .iter()
            .map(|(a, b)| {
                let ratio = self.held(a).zip(self.held(b)).map(|(a, b)| a / b.max(1e-9));
                (format!("{a} / {b}"), ratio)
            })
            .collect();
        self
    }

    /// The comparison for people.
    pub fn text(&self) -> String {
        let mut out = format!(
            "geo-compare --mode stream: {} riders, one connection and one position in flight each, \
             steps of {:.0} s, open loop\n{:<16} {:>10} {:>10} {:>9} {:>9} {:>9} {:>7} {:>10} {:>6}\n",
            self.riders,
            self.step_s,
            "side",
            "offered/s",
            "achieved/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "errors",
            "cpu us/pos",
            "cores"
        );
        for side in &self.sides {
            if let Some(why) = &side.skipped {
                out += &format!("{:<16} skipped: {why}\n", side.name);
                continue;
            }
            let known = |v: Option<f64>, digits: usize| {
                v.map_or("-".to_owned(), |v| format!("{v:.digits$}"))
            };
            for step in &side.steps {
                out += &format!(
                    "{:<16} {:>10.0} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>7} {:>10} {:>6}\n",
                    side.name,
                    step.offered_per_s,
                    step.achieved_per_s,
                    step.p50_ms,
                    step.p99_ms,
                    step.p999_ms,
                    step.errors,
                    known(step.server_cpu_us_per_position, 1),
                    known(step.server_cores, 2),
                );
            }
        }
        out += &format!("highest rate held with p99 < {HOLD_P99_MS} ms and no errors:\n");
        for side in &self.sides {
            let held = side
                .holds_per_s
                .map_or("none".to_owned(), |r| format!("{r:.0}/s"));
            out += &format!("  {:<16} {held}\n", side.name);
        }
        out += "server memory per connected rider:\n";
        for side in &self.sides {
            let kib = side
                .memory_per_rider_kib
                .map_or("unknown".to_owned(), |k| format!("{k:.1} KiB"));
            out += &format!("  {:<16} {kib}\n", side.name);
        }
        for (pair, ratio) in &self.ratios {
            let ratio = ratio.map_or("n/a".to_owned(), |r| format!("{r:.2}"));
            out += &format!("  {pair:<28} {ratio}\n");
        }
        out
    }
}

/// One rider's connection on one side.
enum Link {
    Socket(Box<Conn>),
    /// Redis or Tile38, and the rider's member id.
    Resp(Resp, redis::aio::MultiplexedConnection, usize),
}

impl Link {
    /// Sends one position and waits for its acknowledgement.
    async fn send(&mut self, id: u64, at: Point) -> bool {
        match self {
            Link::Socket(conn) => {
                if conn.send_location(id, at).await.is_err() {
                    return false;
                }
                loop {
                    match conn.next().await {
                        Some(Ok(Incoming::Ack(acked, data))) if acked == id => {
                            return data.get("ok").and_then(|ok| ok.as_bool()) == Some(true);
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => return false,
                    }
                }
            }
            Link::Resp(resp, conn, member) => resp
                .update(KEY, *member, at)
                .query_async::<redis::Value>(conn)
                .await
                .is_ok(),
        }
    }
}

/// What a side connects to.
#[derive(Debug)]
pub enum Peer<'a> {
    /// A node (or the bare server) over a socket transport, with each rider's token.
    Socket {
        dialer: &'a Dialer,
        transport: Transport,
        tokens: &'a [String],
    },
    /// Redis or Tile38, one connection per rider.
    Resp(Resp, &'a RespDialer),
}

/// Opens one link per rider.
async fn connect(peer: &Peer<'_>, riders: usize) -> anyhow::Result<Vec<Link>> {
    let links = futures_util::stream::iter(0..riders)
        .map(|i| async move {
            match peer {
                Peer::Socket {
                    dialer,
                    transport,
                    tokens,
                } => {
                    let token = &tokens[i % tokens.len()];
                    let conn = dialer.connect(*transport, token, i).await?;
                    Ok::<Link, anyhow::Error>(Link::Socket(Box::new(conn)))
                }
                Peer::Resp(resp, dialer) => Ok(Link::Resp(*resp, dialer.connect(i).await?, i)),
            }
        })
        .buffered(CONNECTING)
        .collect::<Vec<_>>()
        .await;
    links.into_iter().collect()
}

/// Runs one side through every rate; the links close when it ends.
pub async fn side(
    name: &str,
    peer: Peer<'_>,
    server: Probe,
    walkers: &[Walker],
    city: &City,
    rates: &[f64],
    step: Duration,
) -> Side {
    let before = server.read();
    let mut links = match connect(&peer, walkers.len()).await {
        Ok(links) => links,
        Err(err) => {
            return Side::skipped(name, &format!("could not connect every rider: {err:#}"));
        }
    };
    warm_up(&mut links, walkers).await;
    let memory_per_rider_kib = before.zip(server.read()).map(|(before, after)| {
        after.rss_bytes.saturating_sub(before.rss_bytes) as f64 / 1024.0 / links.len().max(1) as f64
    });
    let mut steps = Vec::new();
    let mut walkers = walkers.to_vec();
    for &rate in rates {
        let (result, back) = run_step(links, &mut walkers, city, rate, step, server).await;
        links = back;
        steps.push(result);
    }
    let holds_per_s = steps
        .iter()
        .filter(|s| s.holds())
        .map(|s| s.achieved_per_s)
        .max_by(f64::total_cmp);
    Side {
        name: name.to_owned(),
        steps,
        holds_per_s,
        skipped: None,
        memory_per_rider_kib,
    }
}

/// Each rider's first position, unmeasured: a node meets a rider once (its actor, its profile,
/// its token in the cache), and riders that stream met it long ago; the steps measure the
/// stream, not a node start's herd of first positions.
async fn warm_up(links: &mut [Link], walkers: &[Walker]) {
    futures_util::stream::iter(links.iter_mut().zip(walkers))
        .for_each_concurrent(CONNECTING, |(link, walker)| async move {
            let _ = link.send(0, walker.at).await;
        })
        .await;
}

/// One step: every link sends on its own schedule for `step`.
async fn run_step(
    links: Vec<Link>,
    walkers: &mut [Walker],
    city: &City,
    rate: f64,
    step: Duration,
    server: Probe,
) -> (Step, Vec<Link>) {
    let cpu_before = server.read();
    let n = links.len().max(1);
    let every = Duration::from_secs_f64(n as f64 / rate.max(1e-9));
    let started = Instant::now();
    let end = started + step;
    let tasks: Vec<_> = links
        .into_iter()
        .zip(walkers.iter_mut())
        .enumerate()
        .map(|(i, (mut link, walker))| {
            let mut walker = walker.clone();
            let city = *city;
            // Spread the connections' first sends over one interval.
            let first = started + every.mul_f64(i as f64 / n as f64);
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(i as u64);
                // Plain samples, merged into one histogram after the step: a histogram per
                // connection is ~160 KB, 3 GB for 19 000 riders, and allocating that as a
                // step starts delayed the harness's own sends by seconds.
                let mut latency = Vec::new();
                let (mut done, mut errors) = (0_u64, 0_u64);
                let mut due = first;
                let mut id = 0_u64;
                while due < end {
                    tokio::time::sleep_until(due).await;
                    id += 1;
                    let at = walker.step(every.as_secs_f64(), &city, &mut rng);
                    if link.send(id, at).await {
                        let us = u64::try_from(due.elapsed().as_micros())
                            .unwrap_or(record::HIGHEST_US)
                            .clamp(1, record::HIGHEST_US);
                        latency.push(us);
                        done += 1;
                    } else {
                        errors += 1;
                    }
                    due += every;
                }
                (link, walker, latency, done, errors, Instant::now())
            })
        })
        .collect();
    let mut total: Histogram<u64> = record::histogram();
    let (mut done, mut errors) = (0_u64, 0_u64);
    let mut last = started;
    let mut back = Vec::with_capacity(n);
    for (task, walker) in tasks.into_iter().zip(walkers.iter_mut()) {
        match task.await {
            Ok((link, moved, latency, d, e, finished)) => {
                for us in latency {
                    let _ = total.record(us);
                }
                done += d;
                errors += e;
                last = last.max(finished);
                *walker = moved;
                back.push(link);
            }
            // A panicked task loses its link; the step counts what the others did.
            Err(_) => errors += 1,
        }
    }
    let elapsed = (last - started).max(step).as_secs_f64();
    let cpu = cpu_before
        .zip(server.read())
        .map(|(before, after)| after.cpu.saturating_sub(before.cpu).as_secs_f64());
    let ms = |q: f64| total.value_at_quantile(q) as f64 / 1000.0;
    let result = Step {
        offered_per_s: rate,
        sent: done + errors,
        achieved_per_s: done as f64 / elapsed,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        errors,
        server_cpu_us_per_position: cpu.map(|s| s * 1e6 / done.max(1) as f64),
        server_cores: cpu.map(|s| s / elapsed),
    };
    (result, back)
}
