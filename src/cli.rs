//! The command line: `serve` (the default), `config check`, `admin grant EMAIL` and
//! `admin revoke EMAIL`.

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
