//! Prometheus metrics of the HTTP edge: request counts and latency per matched route (never per
//! id: `/api/order/{id}` is one series however many orders there are), and the `/metrics`
//! endpoint that renders every registered metric in the OpenMetrics text format.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use dashmap::DashSet;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The label for requests that matched no route.
const UNMATCHED: &str = "unmatched";

// The route is shared with every request that matched it (see `Metrics::route`), not copied.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: Arc<str>,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: Arc<str>,
}

type LatencyFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// The node's metrics registry and the edge's own series.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: LatencyFamily,
    resident: Gauge,
    cpu: Gauge<f64, AtomicU64>,
    /// Every route label seen, held once: a few dozen routes, so a request's labels take a
    /// reference instead of two copies of its path per request (with their allocations, these
    /// labels were 3.7 % of a nearby query's CPU).
    routes: DashSet<Arc<str>, foldhash::fast::RandomState>,
}

impl Metrics {
    /// A registry with the HTTP series registered under the `tomato` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tomato");
        let requests = Family::<RequestLabels, Counter>::default();
        // 0.5 ms to ~16 s in doublings: the location hot path sits at the bottom, slow
        // provider calls at the top.
        let latency: LatencyFamily =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 16)));
        registry.register(
            "http_requests",
            "HTTP requests by method, matched route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by method and matched route",
            latency.clone(),
        );
        let resident = Gauge::default();
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the node process (Linux; 0 elsewhere), read at scrape time",
            resident.clone(),
        );
        let cpu = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "process_cpu_seconds",
            "CPU time the node process has used, user and system (Linux; 0 elsewhere), read at scrape time",
            cpu.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            resident,
            cpu,
            routes: DashSet::with_hasher(foldhash::fast::RandomState::default()),
        }
    }

    /// The shared label of `route` (a matched route's pattern, or [`UNMATCHED`]).
    fn route(&self, route: &str) -> Arc<str> {
        if let Some(known) = self.routes.get(route) {
            return Arc::clone(&known);
        }
        let route: Arc<str> = route.into();
        self.routes.insert(Arc::clone(&route));
        route
    }

    /// The registry, for other parts of the node to register their own series at start.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Every series as Prometheus/OpenMetrics text, the node's resident memory read now.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        self.resident.set(resident_bytes().unwrap_or(0));
        self.cpu.set(cpu_seconds().unwrap_or(0.0));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The process's CPU time so far, user and system, from `/proc/self/stat` (fields 14 and 15,
/// in clock ticks of 1/100 s: the value of `CLK_TCK` on every Linux we run on).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some((user + system) / 100.0)
}

/// The process's resident set size, from `/proc/self/status` (`VmRSS: N kB`).
fn resident_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The label of a request's method: the standard ones by name, anything a client made up as
/// one value, so no client can add series at will.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// Middleware: counts and times every request by its matched route.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method());
    let route = metrics.route(
        req.extensions()
            .get::<MatchedPath>()
            .map_or(UNMATCHED, MatchedPath::as_str),
    );
    let response = next.run(req).await;
    let status = response.status().as_u16();
    metrics
        .latency
        .get_or_create(&RouteLabels {
            method,
            route: Arc::clone(&route),
        })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status,
        })
        .inc();
    response
}
