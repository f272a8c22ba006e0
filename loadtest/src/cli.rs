//! The command line: `tomato-load run` (the default) plays a city against a node,
//! `tomato-load geo-compare` runs one nearest-rider workload against Redis GEO and tomato.
//! Everything is checked here, before any request leaves: rates, counts, the area, and that the
//! target is on this machine unless `--allow-remote` says otherwise.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use reqwest::Url;

/// tomato-load: a city of simulated riders, customers and sellers, against a running tomato node.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What to run.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Play a city: riders streaming positions, customers ordering and paying, sellers cooking,
    /// riders accepting and delivering; then report.
    Run(RunArgs),
    /// The same nearest-rider workload against Redis GEO, tomato and the bare ceiling of the
    /// stack, side by side (`--mode stream`: positions the way rider apps send them).
    GeoCompare(GeoArgs),
    /// After a run under faults, once the city is quiet: hold what clients were told (the
    /// run's `--history`) against the orders as the nodes now hold them; exits 1 on a finding.
    Check(CheckArgs),
    /// The bare ceiling server alone (geo-compare starts it in a process of its own): prints
    /// its address, then serves until killed.
    #[command(hide = true)]
    BareServer,
}

/// How `geo-compare` offers its load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GeoMode {
    /// U updates, then Q queries, as fast as C connections with P in flight each go.
    Batch,
    /// One connection per rider with one position in flight, at fixed total rates in steps
    /// (open loop), over tomato's `/ws` and Socket.IO, Redis RESP and the bare ceiling.
    Stream,
}

/// A side of `geo-compare`: the batch sides answer HTTP/2 requests (Redis, RESP pipelines), the
/// stream sides hold one socket per rider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GeoSide {
    /// Redis: `GEOADD` and `GEOSEARCH` over RESP (both modes).
    Redis,
    /// Tile38: `SET .. POINT` and `NEARBY .. LIMIT` over RESP (both modes). Left out of the
    /// default sides when no `tile38-server` is on the PATH and `--tile38` names none.
    Tile38,
    /// Batch: tomato's HTTP API.
    TomatoHttp,
    /// Batch: the bare ceiling of the stack over HTTP.
    BareHttp,
    /// Stream: the bare ceiling of the stack over `/ws`.
    BareWs,
    /// Stream: the bare ceiling of the stack over Socket.IO.
    BareSocketio,
    /// Stream: tomato over `/ws`.
    TomatoWs,
    /// Stream: tomato over Socket.IO.
    TomatoSocketio,
}

impl GeoSide {
    /// The name reports use.
    pub fn name(self) -> &'static str {
        match self {
            GeoSide::Redis => "redis",
            GeoSide::Tile38 => "tile38",
            GeoSide::TomatoHttp => "tomato-http",
            GeoSide::BareHttp => "bare-http",
            GeoSide::BareWs => "bare-ws",
            GeoSide::BareSocketio => "bare-socketio",
            GeoSide::TomatoWs => "tomato-ws",
            GeoSide::TomatoSocketio => "tomato-socketio",
        }
    }
}

impl GeoMode {
    /// The name `--mode` takes.
    pub fn name(self) -> &'static str {
        match self {
            GeoMode::Batch => "batch",
            GeoMode::Stream => "stream",
        }
    }

    /// Every side this mode runs, in the order it runs them.
    pub fn sides(self) -> &'static [GeoSide] {
        match self {
            GeoMode::Batch => &[
                GeoSide::Redis,
                GeoSide::Tile38,
                GeoSide::TomatoHttp,
                GeoSide::BareHttp,
            ],
            GeoMode::Stream => &[
                GeoSide::BareWs,
                GeoSide::TomatoWs,
                GeoSide::BareSocketio,
                GeoSide::TomatoSocketio,
                GeoSide::Redis,
                GeoSide::Tile38,
            ],
        }
    }
}

/// How riders send their positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// One Socket.IO connection per rider; positions as acknowledged `rider:location` events.
    Socketio,
    /// One plain WebSocket per rider at `/ws`, acknowledged the same way.
    Ws,
    /// `PUT /api/rider/location` over a shared keep-alive pool; offers read with
    /// `GET /api/rider/offers` after each update. No socket per rider.
    Http,
}

/// Where the nodes are and whether they may be elsewhere.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Base URL of a tomato node; repeat for the nodes of a cluster (`run` spreads riders,
    /// sellers and customers over them, each party on another node than the next).
    #[arg(long = "target", default_value = "http://127.0.0.1:8080")]
    pub targets: Vec<String>,
    /// Allow a target that is not a loopback address.
    #[arg(long)]
    pub allow_remote: bool,
    /// An account the node treats as admin (`auth.admin_emails` or `tomato admin grant`);
    /// it verifies the restaurants and riders the run creates. The node needs `auth.dev_login`.
    #[arg(long, default_value = "admin@load.tomato.test")]
    pub admin_email: String,
}

/// What `check` reads.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// The history a run recorded (`run --history`).
    pub history: PathBuf,
    #[command(flatten)]
    pub target: Target,
    /// Seconds past its payment deadline an unpaid order may still be waiting (the expiry
    /// timer's own delay and a takeover).
    #[arg(long, default_value_t = 60)]
    pub slack_s: u64,
    /// Seconds the nodes' clocks may be apart (a drill that skews one): steps stamped closer
    /// than this by different nodes say nothing of their order.
    #[arg(long, default_value_t = 0)]
    pub skew_s: u64,
}

/// The simulated city: a disc around a centre.
#[derive(Debug, Clone, Args)]
pub struct Area {
    /// Centre latitude.
    #[arg(long, default_value_t = 12.9716, allow_negative_numbers = true)]
    pub lat: f64,
    /// Centre longitude.
    #[arg(long, default_value_t = 77.5946, allow_negative_numbers = true)]
    pub lon: f64,
    /// Radius of the city in km.
    #[arg(long, default_value_t = 4.0, allow_negative_numbers = true)]
    pub radius_km: f64,
}

/// `tomato-load run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub area: Area,
    /// Riders online for the whole run.
    #[arg(long, default_value_t = 1000)]
    pub riders: usize,
    /// How riders send positions.
    #[arg(long, value_enum, default_value_t = Transport::Socketio)]
    pub transport: Transport,
    /// Seconds between a rider's position updates.
    #[arg(long, default_value_t = 5.0, allow_negative_numbers = true)]
    pub interval_s: f64,
    /// Orders placed (and paid) per second, across all customers.
    #[arg(long, default_value_t = 2.0, allow_negative_numbers = true)]
    pub order_rate: f64,
    /// Seconds of load; then no new orders, and the run waits for the open ones to be delivered.
    #[arg(long, default_value_t = 60.0, allow_negative_numbers = true)]
    pub duration_s: f64,
    /// Apps coming and going during the load: sign-in and logout cycles per second, by
    /// accounts of their own (`--churn-users` of them, in turn), beside the riders and
    /// customers; each cycle records a user change or nothing and a revocation in the
    /// store's change feed that every node follows.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub churn_rate: f64,
    /// Accounts the churn signs in and out, in turn.
    #[arg(long, default_value_t = 1000)]
    pub churn_users: usize,
    /// Stop placing orders after this many, even before the duration ends.
    #[arg(long)]
    pub max_orders: Option<u64>,
    /// Longest wait for open orders after the load stops.
    #[arg(long, default_value_t = 90.0, allow_negative_numbers = true)]
    pub drain_s: f64,
    /// Restaurants, each with a small menu.
    #[arg(long, default_value_t = 20)]
    pub restaurants: usize,
    /// How far the nodes deliver (their `dispatch.max_delivery_km`): a customer orders only from
    /// the restaurants this close, as a customer app lists them (a node refuses a farther one
    /// with `address_out_of_range`).
    #[arg(long, default_value_t = 15.0, allow_negative_numbers = true)]
    pub delivery_km: f64,
    /// Customers; each holds at most one unpaid order, so this bounds orders in flight.
    #[arg(long, default_value_t = 100)]
    pub customers: usize,
    /// Seconds a seller takes from `preparing` to `ready_for_rider`.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub prep_s: f64,
    /// Seconds a rider thinks before accepting an offer.
    #[arg(long, default_value_t = 0.3, allow_negative_numbers = true)]
    pub think_s: f64,
    /// How fast a rider with an order rides, straight to the restaurant and on to the customer
    /// (km/h; a street speed by default, a higher one compresses a run's time).
    #[arg(long, default_value_t = 20.0, allow_negative_numbers = true)]
    pub speed_kmh: f64,
    /// Seconds a rider spends at the restaurant picking up, and again handing over.
    #[arg(long, default_value_t = 2.0, allow_negative_numbers = true)]
    pub handover_s: f64,
    /// Requests in flight while creating the city.
    #[arg(long, default_value_t = 32)]
    pub setup_concurrency: usize,
    /// Loopback source addresses (127.0.0.1, .2, ...) the sockets are spread over, so that
    /// tens of thousands of connections do not run out of ports on one address.
    #[arg(long, default_value_t = 8)]
    pub source_addrs: u8,
    /// Print the report as JSON on stdout instead of text.
    #[arg(long)]
    pub json: bool,
    /// Write latency and rate plots (SVG) into this directory.
    #[arg(long, value_name = "DIR")]
    pub plots: Option<PathBuf>,
    /// Write the id of every order a node acknowledged (placed) into this file, one per line,
    /// for `tomato audit` to check against the store after a fault drill.
    #[arg(long, value_name = "FILE")]
    pub orders_out: Option<PathBuf>,
    /// Record every order operation (place, pay, each status step, accept, cancel) into this
    /// file as invoke / ok / fail / info lines, for `tomato-load check` after a fault drill.
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
    /// Random seed for the city (positions, speeds, choices).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// `tomato-load geo-compare`.
#[derive(Debug, Clone, Args)]
pub struct GeoArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub area: Area,
    /// Riders in the index.
    #[arg(long, default_value_t = 10_000)]
    pub riders: usize,
    /// Position updates to send.
    #[arg(long, default_value_t = 100_000)]
    pub updates: u64,
    /// Nearest-5-within-5-km queries to send.
    #[arg(long, default_value_t = 20_000)]
    pub queries: u64,
    /// Connections on each side.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Requests in flight per connection (Redis: commands per pipeline; tomato: HTTP/2
    /// streams per connection).
    #[arg(long, default_value_t = 16)]
    pub pipeline: usize,
    /// A Redis to use instead of starting a `redis-server` on a free port.
    #[arg(long)]
    pub redis: Option<String>,
    /// A Tile38 (`redis://host:port`, it speaks RESP) to use instead of starting one.
    #[arg(long)]
    pub tile38: Option<String>,
    /// The `tile38-server` to start on a free port (default: the one on the PATH).
    #[arg(long)]
    pub tile38_server: Option<std::path::PathBuf>,
    /// Requests in flight while creating the riders.
    #[arg(long, default_value_t = 32)]
    pub setup_concurrency: usize,
    /// `batch` (updates then queries, pipelined) or `stream` (one connection per rider, fixed
    /// rates in steps).
    #[arg(long, value_enum, default_value_t = GeoMode::Batch)]
    pub mode: GeoMode,
    /// Stream mode: the total position rates offered (per second, all riders together), one
    /// step each.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,2000,4000,8000,16000"
    )]
    pub rates: Vec<f64>,
    /// Stream mode: seconds each rate is offered.
    #[arg(long, default_value_t = 10.0)]
    pub step_s: f64,
    /// The sides to run, in this order: all of the mode's by default (batch: redis, tile38,
    /// tomato-http, bare-http; stream: bare-ws, tomato-ws, bare-socketio, tomato-socketio,
    /// redis, tile38), tile38 only when there is one. One alone is handy while profiling a
    /// node.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub sides: Vec<GeoSide>,
    /// Stream mode: loopback source addresses the sockets are spread over.
    #[arg(long, default_value_t = 8)]
    pub source_addrs: u8,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Random seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// Parses and checks a command line; the error is the message for the user.
pub fn parse_from<I, T>(args: I) -> anyhow::Result<Command>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    parse_or_exit(args).map_err(|exit| anyhow::anyhow!("{}{}", exit.stdout, exit.stderr))
}

/// How the program ends without running anything: what it prints and its exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// 0 for `--help` and `--version`, 2 for a command line that is wrong.
    pub code: u8,
    pub stdout: String,
    pub stderr: String,
}

/// Parses and checks a command line: the command, or how to end (help and version go to
/// stdout with code 0, as every command-line tool does; mistakes to stderr with code 2).
pub fn parse_or_exit<I, T>(args: I) -> Result<Command, Exit>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::try_parse_from(args).map_err(|err| {
        let text = err.render().to_string();
        let code = u8::try_from(err.exit_code()).unwrap_or(2);
        if err.use_stderr() {
            Exit {
                code,
                stdout: String::new(),
                stderr: text,
            }
        } else {
            Exit {
                code,
                stdout: text,
                stderr: String::new(),
            }
        }
    })?;
    let checked = match &cli.command {
        Command::Run(run) => run.check(),
        Command::GeoCompare(geo) => geo.check(),
        Command::Check(check) => check.target.urls().map(drop),
        Command::BareServer => Ok(()),
    };
    checked.map_err(|err| Exit {
        code: 2,
        stdout: String::new(),
        stderr: format!("tomato-load: {err:#}\n"),
    })?;
    Ok(cli.command)
}

impl Target {
    /// The first node's base URL (where the city is created and statistics are read).
    pub fn url(&self) -> anyhow::Result<Url> {
        self.urls()?
            .into_iter()
            .next()
            .context("give at least one --target")
    }

    /// Every node's base URL, each refused when it is not loopback and `--allow-remote` is not
    /// given.
    pub fn urls(&self) -> anyhow::Result<Vec<Url>> {
        self.targets.iter().map(|t| self.checked(t)).collect()
    }

    fn checked(&self, target: &str) -> anyhow::Result<Url> {
        let url =
            Url::parse(target).with_context(|| format!("--target {target:?} is not a URL"))?;
        if url.scheme() != "http" {
            bail!("--target must be an http:// URL, got {target:?}");
        }
        let host = url
            .host_str()
            .with_context(|| format!("--target {target:?} has no host"))?;
        let loopback = host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback && !self.allow_remote {
            bail!(
                "--target {host} is not a loopback address; pass --allow-remote to load another machine"
            );
        }
        Ok(url)
    }

    fn check(&self) -> anyhow::Result<()> {
        self.urls()?;
        if !self.admin_email.contains('@') {
            bail!("--admin-email must be an email address");
        }
        Ok(())
    }
}

impl Area {
    /// The city these flags describe.
    pub fn city(&self) -> crate::city::City {
        crate::city::City {
            centre: crate::city::Point {
                lat: self.lat,
                lon: self.lon,
            },
            radius_m: self.radius_km * 1000.0,
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        if !(self.lat.is_finite() && (-85.0..=85.0).contains(&self.lat)) {
            bail!("--lat must be within [-85, 85], got {}", self.lat);
        }
        if !(self.lon.is_finite() && (-180.0..=180.0).contains(&self.lon)) {
            bail!("--lon must be within [-180, 180], got {}", self.lon);
        }
        // The dispatch and delivery limits are in km; a city larger than this cannot be served.
        if !(self.radius_km.is_finite() && (0.1..=50.0).contains(&self.radius_km)) {
            bail!(
                "--radius-km must be within [0.1, 50], got {}",
                self.radius_km
            );
        }
        Ok(())
    }
}

/// A rate or time: finite and not negative; `positive` also refuses zero.
fn amount(name: &str, value: f64, positive: bool) -> anyhow::Result<()> {
    if !value.is_finite() || value < 0.0 || (positive && value == 0.0) {
        let wanted = if positive { "> 0" } else { ">= 0" };
        bail!("--{name} must be a finite number {wanted}, got {value}");
    }
    Ok(())
}

impl RunArgs {
    fn check(&self) -> anyhow::Result<()> {
        self.target.check()?;
        self.area.check()?;
        amount("interval-s", self.interval_s, true)?;
        amount("order-rate", self.order_rate, false)?;
        amount("churn-rate", self.churn_rate, false)?;
        if self.churn_rate > 0.0 && self.churn_users == 0 {
            bail!("--churn-users must be at least 1 with a --churn-rate");
        }
        amount("duration-s", self.duration_s, true)?;
        amount("drain-s", self.drain_s, false)?;
        amount("prep-s", self.prep_s, false)?;
        amount("think-s", self.think_s, false)?;
        amount("speed-kmh", self.speed_kmh, true)?;
        amount("delivery-km", self.delivery_km, true)?;
        amount("handover-s", self.handover_s, false)?;
        if self.riders == 0 {
            bail!("--riders must be at least 1");
        }
        if self.order_rate > 0.0 && (self.restaurants == 0 || self.customers == 0) {
            bail!("placing orders needs at least one restaurant and one customer");
        }
        if self.setup_concurrency == 0 || self.source_addrs == 0 {
            bail!("--setup-concurrency and --source-addrs must be at least 1");
        }
        Ok(())
    }

    /// A rider's speed with an order, m/s.
    pub fn speed_mps(&self) -> f64 {
        self.speed_kmh / 3.6
    }

    /// The load phase's length.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration_s)
    }
}

impl GeoArgs {
    fn check(&self) -> anyhow::Result<()> {
        self.target.check()?;
        self.area.check()?;
        if self.riders == 0 || self.connections == 0 || self.pipeline == 0 {
            bail!("--riders, --connections and --pipeline must be at least 1");
        }
        if self.setup_concurrency == 0 {
            bail!("--setup-concurrency must be at least 1");
        }
        if self.rates.is_empty() || !self.rates.iter().all(|r| r.is_finite() && *r > 0.0) {
            bail!("--rates must be positive numbers, e.g. 1000,2000,4000");
        }
        if !(self.step_s.is_finite() && (0.5..=600.0).contains(&self.step_s)) {
            bail!("--step-s must be between 0.5 and 600");
        }
        if self.source_addrs == 0 {
            bail!("--source-addrs must be at least 1");
        }
        let mode = self.mode.sides();
        if let Some(side) = self.sides.iter().find(|side| !mode.contains(side)) {
            let names: Vec<&str> = mode.iter().map(|side| side.name()).collect();
            bail!(
                "--sides: {} is not a side of --mode {}; it has {}",
                side.name(),
                self.mode.name(),
                names.join(", ")
            );
        }
        Ok(())
    }

    /// The sides to run: those given, else all of the mode's (Tile38 only when `tile38` says
    /// there is one: `--tile38`, or a `tile38-server` on the PATH).
    pub fn sides_with(&self, tile38: bool) -> Vec<GeoSide> {
        if self.sides.is_empty() {
            let mut sides = self.mode.sides().to_vec();
            sides.retain(|side| tile38 || *side != GeoSide::Tile38);
            sides
        } else {
            self.sides.clone()
        }
    }

    /// The sides to run, Tile38 among them when this machine has one.
    pub fn sides(&self) -> Vec<GeoSide> {
        self.sides_with(self.tile38_found())
    }

    /// Whether there is a Tile38 to run: one named, or a `tile38-server` to start.
    pub fn tile38_found(&self) -> bool {
        self.tile38.is_some() || self.tile38_server.is_some() || tile38_installed()
    }

    /// The default sides left out here, each with why, for the report.
    pub fn skipped(&self) -> Vec<(GeoSide, &'static str)> {
        if self.sides.is_empty() && !self.tile38_found() {
            vec![(
                GeoSide::Tile38,
                "no tile38-server on the PATH (build it from github.com/tidwall/tile38; or \
                 --tile38-server PATH, --tile38 URL)",
            )]
        } else {
            Vec::new()
        }
    }

    /// Whether this run has the side.
    pub fn has(&self, side: GeoSide) -> bool {
        self.sides().contains(&side)
    }
}

/// Whether a `tile38-server` is on the PATH.
pub fn tile38_installed() -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| dir.join("tile38-server").is_file())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn help_and_version_print_on_stdout_and_succeed() {
        for args in [
            vec!["tomato-load", "--help"],
            vec!["tomato-load", "-h"],
            vec!["tomato-load", "help"],
        ] {
            let exit = super::parse_or_exit(args.clone()).expect_err("no command runs");
            assert_eq!(exit.code, 0, "{args:?}");
            assert!(exit.stdout.contains("Usage: tomato-load"), "{exit:?}");
            assert!(exit.stdout.contains("geo-compare") && exit.stdout.contains("run"));
            assert!(exit.stderr.is_empty());
        }
        let run = super::parse_or_exit(["tomato-load", "run", "--help"]).expect_err("help");
        assert_eq!(run.code, 0);
        assert!(run.stdout.contains("--riders"), "{run:?}");
        let version = super::parse_or_exit(["tomato-load", "--version"]).expect_err("version");
        assert_eq!(version.code, 0);
        assert!(version.stdout.starts_with("tomato-load "), "{version:?}");
    }

    #[test]
    fn mistakes_print_on_stderr_with_code_2() {
        for args in [
            vec!["tomato-load"],
            vec!["tomato-load", "fly"],
            vec!["tomato-load", "run", "--riders", "many"],
            vec!["tomato-load", "run", "--riders", "0"],
        ] {
            let exit = super::parse_or_exit(args.clone()).expect_err("refused");
            assert_eq!(exit.code, 2, "{args:?}");
            assert!(exit.stdout.is_empty(), "{exit:?}");
            assert!(!exit.stderr.trim().is_empty(), "{args:?} says why");
        }
    }

    use super::*;

    fn refused(args: &[&str]) -> String {
        let mut all = vec!["tomato-load"];
        all.extend_from_slice(args);
        parse_from(all).expect_err("refused").to_string()
    }

    #[test]
    fn negative_rates_and_remote_targets_are_refused() {
        assert!(refused(&["run", "--order-rate", "-5"]).contains("--order-rate"));
        assert!(refused(&["run", "--interval-s", "0"]).contains("--interval-s"));
        assert!(refused(&["run", "--duration-s", "NaN"]).contains("--duration-s"));
        assert!(refused(&["run", "--target", "http://10.0.0.7:8080"]).contains("--allow-remote"));
        assert!(refused(&["geo-compare", "--pipeline", "0"]).contains("--pipeline"));
        assert!(refused(&["geo-compare", "--rates", "100,-5"]).contains("--rates"));
        assert!(refused(&["geo-compare", "--rates", "NaN"]).contains("--rates"));
        assert!(refused(&["geo-compare", "--step-s", "0"]).contains("--step-s"));
        assert!(refused(&["geo-compare", "--mode", "fast"]).contains("--mode"));
        assert!(refused(&["geo-compare", "--sides", "tomato-ws"]).contains("--mode batch"));
        assert!(
            refused(&["geo-compare", "--mode", "stream", "--sides", "bare-http"])
                .contains("bare-ws, tomato-ws, bare-socketio, tomato-socketio, redis")
        );
        assert!(refused(&["run", "--lat", "95"]).contains("--lat"));
    }

    #[test]
    fn loopback_targets_and_the_flag_are_accepted() {
        for target in ["http://127.0.0.1:9", "http://localhost:9", "http://[::1]:9"] {
            parse_from(["tomato-load", "run", "--target", target]).expect(target);
        }
        parse_from([
            "tomato-load",
            "run",
            "--target",
            "http://10.0.0.7:8080",
            "--allow-remote",
        ])
        .expect("remote with the flag");
        let sides = |args: &[&str]| match parse_from(args).expect("accepted") {
            Command::GeoCompare(geo) => geo.sides(),
            _ => unreachable!("geo-compare"),
        };
        assert_eq!(
            sides(&["tomato-load", "geo-compare", "--sides", "tomato-http"]),
            [GeoSide::TomatoHttp]
        );
        let stream = match parse_from(["tomato-load", "geo-compare", "--mode", "stream"]) {
            Ok(Command::GeoCompare(geo)) => geo,
            _ => unreachable!("geo-compare"),
        };
        assert_eq!(stream.sides_with(true), GeoMode::Stream.sides());
        assert!(!stream.sides_with(false).contains(&GeoSide::Tile38));
        assert_eq!(
            sides(&["tomato-load", "geo-compare", "--sides", "tile38,redis"]),
            [GeoSide::Tile38, GeoSide::Redis]
        );
    }
}
