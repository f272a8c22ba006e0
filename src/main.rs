//! The `tomato` binary: parse the command line, load the configuration, run the command.

use std::process::ExitCode;

use clap::Parser;
use tomato::cli::{Cli, Command};
use tomato::config::Settings;

/// mimalloc rather than the system allocator: the location path allocates per message (frames,
/// JSON, task wake-ups), and glibc's malloc/free took about 10 % of the node's CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = std::env::vars_os()
        .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)));
    let settings = match Settings::load(cli.config.as_deref(), env) {
        Ok(settings) => settings,
        Err(err) => {
            for line in err.to_string().lines() {
                eprintln!("tomato: {line}");
            }
            return ExitCode::from(2);
        }
    };
    let rust_log = std::env::var("RUST_LOG").ok();
    tomato::telemetry::init(&settings.log, rust_log.as_deref());

    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    // 0 leaves tokio's own default: one worker per core, or TOKIO_WORKER_THREADS when set.
    if settings.server.workers > 0 {
        builder.worker_threads(settings.server.workers);
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("tomato: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(tomato::cli::run(
        cli.command.unwrap_or(Command::Serve),
        settings,
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "tomato stopped with an error");
            eprintln!("tomato: {err:#}");
            ExitCode::FAILURE
        }
    }
}
