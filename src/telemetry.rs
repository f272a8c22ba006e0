//! Logging: a tracing subscriber writing text for people or JSON for log shippers, filtered by
//! `log.filter`.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber. `RUST_LOG`, when set, replaces `log.filter` for one run,
/// the usual escape hatch when debugging.
pub fn init(settings: &LogSettings, rust_log: Option<&str>) {
    let filter = rust_log
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .or_else(|| EnvFilter::try_new(&settings.filter).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    // Colours only for a terminal: piped into a file or a log shipper they are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    // Another subscriber (a test harness, say) may be installed already; that one wins.
    let _ = match settings.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
