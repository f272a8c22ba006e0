//! `tomato-load`: parse, run, print.

use std::process::ExitCode;

use tomato_load::cli::GeoMode;
use tomato_load::{Command, geo, parse_or_exit, run};

fn main() -> ExitCode {
    let command = match parse_or_exit(std::env::args_os()) {
        Ok(command) => command,
        Err(exit) => {
            print!("{}", exit.stdout);
            eprint!("{}", exit.stderr);
            return ExitCode::from(exit.code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("tomato-load: starting the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tomato-load: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => {
            let (json, plots) = (args.json, args.plots.clone());
            let orders_out = args.orders_out.clone();
            let report = run::run(args).await?;
            if let Some(dir) = plots {
                report.plot(&dir)?;
            }
            if let Some(file) = orders_out {
                let mut ids = report.acknowledged_orders.join("\n");
                ids.push('\n');
                std::fs::write(&file, ids)
                    .map_err(|err| anyhow::anyhow!("cannot write {}: {err}", file.display()))?;
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.text());
            }
        }
        Command::Check(args) => {
            let (findings, orders) = tomato_load::check::against_nodes(&args).await?;
            let ops = tomato_load::history::read(&args.history)?
                .iter()
                .filter(|e| e.kind != tomato_load::history::Kind::Invoke)
                .count();
            for finding in &findings {
                println!("{finding}");
            }
            println!(
                "checked {ops} operations against {} orders: {} findings",
                orders.len(),
                findings.len()
            );
            if !findings.is_empty() {
                return Err(anyhow::anyhow!("the history breaks the rules above"));
            }
        }
        Command::BareServer => {
            let server = tomato_load::bare::start().await?;
            println!("{}", server.addr);
            std::future::pending::<()>().await;
        }
        Command::GeoCompare(args) if args.mode == GeoMode::Stream => {
            let json = args.json;
            let streaming = geo::stream(args).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&streaming)?);
            } else {
                print!("{}", streaming.text());
            }
        }
        Command::GeoCompare(args) => {
            let json = args.json;
            let comparison = geo::compare(args).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&comparison)?);
            } else {
                print!("{}", comparison.text());
            }
        }
    }
    Ok(())
}
