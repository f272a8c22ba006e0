//! The end of a run: the report as text or JSON, and plots of latency and rate over time.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cli::Transport;
use crate::record::{Measured, Percentiles};

/// What the node said about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerSide {
    pub memory_start_bytes: Option<u64>,
    pub memory_end_bytes: Option<u64>,
    /// Highest of the samples taken every 5 s.
    pub memory_peak_bytes: Option<u64>,
    /// `GET /api/admin/stats` before the city was created and after the run.
    pub stats_before: Value,
    pub stats_after: Value,
    /// Each node's CPU and cluster counters in the play, and its CPU in the setup (a single
    /// node's cluster counters are zeros).
    #[serde(default)]
    pub nodes: Vec<NodeSide>,
}

/// What one node of a cluster did during the play (its `/metrics` at the end minus at the
/// play's start), and the CPU it spent on the setup.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSide {
    pub target: String,
    pub shards_owned: u64,
    /// CPU seconds the node process used in the play (the load and the drain after it).
    #[serde(default)]
    pub cpu_s: f64,
    /// CPU seconds it used before the play, while the harness created the city and connected
    /// its parties: work of the harness's making, kept apart from the city's.
    #[serde(default)]
    pub setup_cpu_s: f64,
    /// Positions it published on their regions' channels, and the bytes that carried them.
    #[serde(default)]
    pub replicated_positions: u64,
    #[serde(default)]
    pub replication_bytes: u64,
    /// Regions it copies at the end.
    #[serde(default)]
    pub regions_copied: u64,
    /// Searches that asked other nodes (a region they reach was not copied there).
    #[serde(default)]
    pub remote_searches: u64,
    pub forwarded_positions: u64,
    pub remote_calls_ok: u64,
    #[serde(default)]
    pub remote_calls_refused: u64,
    pub remote_calls_not_owner: u64,
    pub remote_calls_failed: u64,
    #[serde(default)]
    pub remote_calls_unanswered: u64,
    #[serde(default)]
    pub owner_waits: u64,
    pub leases_won: u64,
    pub leases_lost: u64,
    pub handed_over: u64,
    /// Rider profiles it read because a rider was new to its index or copy.
    #[serde(default)]
    pub entry_reads: u64,
}

impl NodeSide {
    /// What the node did between `start` and `self` (counters subtracted; the shards owned and
    /// regions copied as at the end).
    pub fn since(&self, start: &NodeSide) -> NodeSide {
        let d = |end: u64, start: u64| end - start.min(end);
        NodeSide {
            target: self.target.clone(),
            shards_owned: self.shards_owned,
            cpu_s: (self.cpu_s - start.cpu_s).max(0.0),
            setup_cpu_s: self.setup_cpu_s,
            replicated_positions: d(self.replicated_positions, start.replicated_positions),
            replication_bytes: d(self.replication_bytes, start.replication_bytes),
            regions_copied: self.regions_copied,
            remote_searches: d(self.remote_searches, start.remote_searches),
            forwarded_positions: d(self.forwarded_positions, start.forwarded_positions),
            remote_calls_ok: d(self.remote_calls_ok, start.remote_calls_ok),
            remote_calls_refused: d(self.remote_calls_refused, start.remote_calls_refused),
            remote_calls_not_owner: d(self.remote_calls_not_owner, start.remote_calls_not_owner),
            remote_calls_failed: d(self.remote_calls_failed, start.remote_calls_failed),
            remote_calls_unanswered: d(self.remote_calls_unanswered, start.remote_calls_unanswered),
            owner_waits: d(self.owner_waits, start.owner_waits),
            leases_won: d(self.leases_won, start.leases_won),
            leases_lost: d(self.leases_lost, start.leases_lost),
            handed_over: d(self.handed_over, start.handed_over),
            entry_reads: d(self.entry_reads, start.entry_reads),
        }
    }
}

/// A whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub run_id: String,
    pub transport: Transport,
    pub riders: usize,
    pub restaurants: usize,
    pub customers: usize,
    pub interval_s: f64,
    pub order_rate: f64,
    /// How fast riders ride with an order, km/h.
    #[serde(default)]
    pub speed_kmh: f64,
    /// The city's seed: runs with the same seed play the same city.
    #[serde(default)]
    pub seed: u64,
    /// Creating the city and connecting the sockets.
    pub setup_s: f64,
    /// The load phase (orders placed during it).
    pub load_s: f64,
    /// Load plus waiting for the open orders.
    pub total_s: f64,
    /// Paid orders not delivered when the run ended.
    pub undelivered: u64,
    /// The ids of the orders the node acknowledged (placed), for an audit of the store; left
    /// out of the JSON report, which stays small whatever the run.
    #[serde(skip)]
    pub acknowledged_orders: Vec<String>,
    #[serde(flatten)]
    pub measured: Measured,
    pub server: ServerSide,
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("n/a".into(), |b| {
        format!("{:.1} MiB", b as f64 / 1_048_576.0)
    })
}

impl Report {
    /// Location updates acknowledged per second of the total run.
    pub fn ingest_rate(&self) -> f64 {
        self.measured.counts.locations_acknowledged as f64 / self.total_s.max(0.001)
    }

    /// Orders placed per second of the load phase.
    pub fn order_rate_achieved(&self) -> f64 {
        self.measured.counts.orders_placed as f64 / self.load_s.max(0.001)
    }

    /// Orders delivered per hour a rider was on the road (load and draining).
    pub fn delivered_per_rider_hour(&self) -> f64 {
        let rider_hours = self.riders as f64 * self.total_s / 3600.0;
        self.measured.counts.delivered as f64 / rider_hours.max(f64::MIN_POSITIVE)
    }

    /// The share of the riders' time on the road without an order.
    pub fn idle_share(&self) -> f64 {
        let on_road = self.riders as f64 * self.total_s;
        (1.0 - self.measured.counts.busy_s / on_road.max(f64::MIN_POSITIVE)).clamp(0.0, 1.0)
    }

    /// The report for people.
    pub fn text(&self) -> String {
        let c = &self.measured.counts;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "tomato-load run {}: {} riders over {} every {} s, {} orders/s asked, {} restaurants, {} customers",
            self.run_id,
            self.riders,
            format!("{:?}", self.transport).to_lowercase(),
            self.interval_s,
            self.order_rate,
            self.restaurants,
            self.customers
        );
        let _ = writeln!(
            out,
            "setup {:.1} s, load {:.1} s, total with draining {:.1} s",
            self.setup_s, self.load_s, self.total_s
        );
        let _ = writeln!(
            out,
            "rates: {:.0} location updates/s acknowledged ({} sent, {} acknowledged); {:.2} orders/s placed",
            self.ingest_rate(),
            c.locations_sent,
            c.locations_acknowledged,
            self.order_rate_achieved()
        );
        let _ = writeln!(
            out,
            "orders: {} placed, {} paid, {} ready, {} accepted, {} picked up, {} delivered, {} undelivered; \
             offers heard {}, accepts lost to a faster rider {}",
            c.orders_placed,
            c.orders_paid,
            c.orders_ready,
            c.accepts,
            c.picked_up,
            c.delivered,
            self.undelivered,
            c.offers_heard,
            c.accepts_lost
        );
        if c.redials > 0 {
            let _ = writeln!(
                out,
                "sockets dialled again after their node closed them: {}",
                c.redials
            );
        }
        let _ = writeln!(
            out,
            "{:<20} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "latency (ms)", "count", "p50", "p90", "p99", "p99.9", "max"
        );
        for (name, p) in &self.measured.latency_ms {
            let Percentiles {
                count,
                p50,
                p90,
                p99,
                p999,
                max,
            } = p;
            let _ = writeln!(
                out,
                "{name:<20} {count:>8} {p50:>9.2} {p90:>9.2} {p99:>9.2} {p999:>9.2} {max:>9.2}"
            );
        }
        let _ = writeln!(
            out,
            "rides at {} km/h: {:.1} orders delivered per rider-hour, riders idle {:.0} % of the time",
            self.speed_kmh,
            self.delivered_per_rider_hour(),
            self.idle_share() * 100.0
        );
        let _ = writeln!(
            out,
            "{:<22} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "ride", "count", "mean", "p50", "p90", "p99", "max"
        );
        for (name, s) in &self.measured.rides {
            let _ = writeln!(
                out,
                "{name:<22} {:>8} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                s.count, s.mean, s.p50, s.p90, s.p99, s.max
            );
        }
        if self.measured.errors.is_empty() {
            let _ = writeln!(out, "errors: none");
        } else {
            let _ = writeln!(out, "errors:");
            for (kind, n) in &self.measured.errors {
                let _ = writeln!(out, "  {kind:<40} {n}");
            }
        }
        let s = &self.server;
        let _ = writeln!(
            out,
            "node memory: {} at start, {} peak, {} at end",
            mib(s.memory_start_bytes),
            mib(s.memory_peak_bytes),
            mib(s.memory_end_bytes)
        );
        let _ = writeln!(
            out,
            "node says: riders online {}, orders delivered {} (before the run {}), dispatch {}",
            s.stats_after["ridersOnline"],
            s.stats_after["ordersByStatus"]["delivered"],
            s.stats_before["ordersByStatus"]["delivered"],
            s.stats_after["dispatch"]
        );
        let cpu_total: f64 = s.nodes.iter().map(|node| node.cpu_s).sum();
        for node in &s.nodes {
            let per_s = |n: u64| n as f64 / self.total_s.max(0.001);
            let _ = writeln!(
                out,
                "node {}: {} shards, CPU {:.1} s in the play ({:.0} % of the nodes'; {:.1} s in the \
                 setup); replicated {} positions \
                 ({:.0}/s, {:.0} B each), {} regions copied, forwarded {}, {} searches asked \
                 others; remote calls {} ok / {} refused / {} not owner / {} unanswered / {} failed, {} owner \
                 waits; leases won {}, lost {}, handed over {}; rider profiles read on entry {}",
                node.target,
                node.shards_owned,
                node.cpu_s,
                100.0 * node.cpu_s / cpu_total.max(0.001),
                node.setup_cpu_s,
                node.replicated_positions,
                per_s(node.replicated_positions),
                node.replication_bytes as f64 / node.replicated_positions.max(1) as f64,
                node.regions_copied,
                node.forwarded_positions,
                node.remote_searches,
                node.remote_calls_ok,
                node.remote_calls_refused,
                node.remote_calls_not_owner,
                node.remote_calls_unanswered,
                node.remote_calls_failed,
                node.owner_waits,
                node.leases_won,
                node.leases_lost,
                node.handed_over,
                node.entry_reads
            );
        }
        out
    }

    /// Writes `latency.svg` (p99 per second), `rate.svg` (positions per second) and `orders.svg`
    /// (orders placed per second) into `dir`.
    pub fn plot(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let timeline = &self.measured.timeline;
        let seconds = timeline.len().max(1) as f64;
        let latency: [Series; 2] = [
            (
                "location ingest p99 (ms)",
                points(timeline.iter().map(|t| (t.second, t.ingest_p99_ms))),
                BLUE,
            ),
            (
                "order placement p99 (ms)",
                points(timeline.iter().map(|t| (t.second, t.placement_p99_ms))),
                RED,
            ),
        ];
        chart(
            &dir.join("latency.svg"),
            "p99 latency per second",
            seconds,
            &latency,
        )?;
        // Two charts: a few orders a second vanish on the axis of thousands of positions.
        let updates = points(
            timeline
                .iter()
                .map(|t| (t.second, Some(t.location_updates as f64))),
        );
        chart(
            &dir.join("rate.svg"),
            "location updates acknowledged per second",
            seconds,
            &[("location updates/s", updates, BLUE)],
        )?;
        let orders = points(
            timeline
                .iter()
                .map(|t| (t.second, Some(t.orders_placed as f64))),
        );
        chart(
            &dir.join("orders.svg"),
            "orders placed per second",
            seconds,
            &[("orders placed/s", orders, RED)],
        )
    }
}

/// A line of a chart: its legend, its points (second, value) and its colour.
type Series = (&'static str, Vec<(f64, f64)>, RGBColor);

fn points(series: impl Iterator<Item = (u64, Option<f64>)>) -> Vec<(f64, f64)> {
    series
        .filter_map(|(s, v)| v.map(|v| (s as f64, v)))
        .collect()
}

fn chart(file: &Path, title: &str, seconds: f64, series: &[Series]) -> anyhow::Result<()> {
    let top = series
        .iter()
        .flat_map(|(_, pts, _)| pts.iter().map(|p| p.1))
        .fold(1.0_f64, f64::max)
        * 1.1;
    let root = SVGBackend::new(file, (960, 480)).into_drawing_area();
    let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..seconds, 0.0..top)?;
        chart.configure_mesh().x_desc("second of the run").draw()?;
        for (name, pts, colour) in series {
            let colour = *colour;
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), colour))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|err| anyhow::anyhow!("plotting {}: {err}", file.display()))
}
