//! The command line: `serve` (the default), `config check`, `admin grant EMAIL`,
//! `admin revoke EMAIL` and `audit FILE`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tomato_domain::{Email, Role};

use crate::config::{Settings, StoreBackend};
use crate::startup::{Application, shutdown_signal};

/// tomato: a food-delivery back end built as an actor system with location sharding.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Config file to read instead of ./config.toml (TOMATO_<SECTION>__<KEY> variables still win).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node (the default).
    Serve,
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Administer users.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Audit the store after a fault drill: every order id in FILE (one per line, as
    /// `tomato-load run --orders-out` writes them) must be stored, paid and delivered, each
    /// step once and in time order. Exits non-zero, listing what is wrong, otherwise.
    Audit {
        /// The acknowledged orders' ids, one per line.
        file: PathBuf,
    },
}

/// `tomato config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load and validate the configuration, print a summary, and exit.
    Check,
}

/// `tomato admin ...`
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Give the user with this e-mail role admin, creating the account if needed.
    Grant {
        /// The user's e-mail.
        email: String,
    },
    /// Take role admin away from the user with this e-mail (they become a customer; tokens
    /// minted as admin stop working within seconds on every node).
    Revoke {
        /// The user's e-mail.
        email: String,
    },
}

/// Runs the parsed command with loaded settings.
pub async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            let app = Application::build(settings).await?;
            app.run_until_stopped(shutdown_signal()).await
        }
        Command::Config(ConfigCommand::Check) => {
            println!("configuration is valid");
            println!("  server.bind      = {}", settings.server.bind);
            println!("  store.backend    = {:?}", settings.store.backend);
            println!("  store.data_dir   = {}", settings.store.data_dir.display());
            if settings.store.backend == StoreBackend::Scylla {
                let scylla = &settings.store.scylla;
                println!(
                    "  store.scylla     = keyspace {} at {} ({:?})",
                    scylla.keyspace,
                    scylla.nodes.join(", "),
                    scylla.consistency
                );
            }
            println!("  auth.dev_login   = {}", settings.auth.dev_login);
            println!("  cluster          = {}", cluster_mode(&settings));
            Ok(())
        }
        Command::Admin(AdminCommand::Grant { email }) => {
            let email = Email::parse(&email).map_err(|err| anyhow::anyhow!("{err}"))?;
            let stores = crate::startup::open_store(&settings).await?;
            let user = stores.users.grant_admin(&email).await?;
            stores.backend.close().await?;
            println!("{} ({}) is now an admin", user.email, user.id);
            Ok(())
        }
        Command::Admin(AdminCommand::Revoke { email }) => {
            let email = Email::parse(&email).map_err(|err| anyhow::anyhow!("{err}"))?;
            let stores = crate::startup::open_store(&settings).await?;
            let outcome = match stores.users.find_by_email(&email).await? {
                None => Err(anyhow::anyhow!("no user has the e-mail {email}")),
                Some(user) if user.role != Role::Admin => {
                    println!(
                        "{} ({}) is not an admin; nothing changed",
                        user.email, user.id
                    );
                    Ok(())
                }
                Some(user) => {
                    // A role change bumps the role version: admin tokens go stale.
                    let user = stores.users.set_role(user.id, Role::Customer).await?;
                    println!("{} ({}) is no longer an admin", user.email, user.id);
                    Ok(())
                }
            };
            stores.backend.close().await?;
            outcome
        }
        Command::Audit { file } => audit(&settings, &file).await,
    }
}

/// `tomato audit FILE`: prints what is wrong with each order, then the count.
async fn audit(settings: &Settings, file: &std::path::Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file)
        .map_err(|err| anyhow::anyhow!("cannot read {}: {err}", file.display()))?;
    let mut ids = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let id = line.parse().map_err(|err| {
            anyhow::anyhow!("{}:{}: not an order id: {err}", file.display(), n + 1)
        })?;
        ids.push(id);
    }
    let stores = crate::startup::open_store(settings).await?;
    let audit = crate::orders::audit::audit(stores.orders.as_ref(), &ids).await;
    stores.backend.close().await?;
    let audit = audit?;
    for (id, finding) in &audit.findings {
        println!("order {id}: {finding}");
    }
    if audit.is_clean() {
        println!("{} orders audited: every one delivered once", audit.audited);
        Ok(())
    } else {
        anyhow::bail!(
            "{} orders audited: {} findings",
            audit.audited,
            audit.findings.len()
        )
    }
}

fn cluster_mode(settings: &Settings) -> &'static str {
    use secrecy::ExposeSecret;
    if settings.cluster.redis_url.expose_secret().is_empty() {
        "single node"
    } else {
        "redis-coordinated"
    }
}
