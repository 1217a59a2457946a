//! The `sluice` command line: `serve`, `config check`, and the admin commands `keys`,
//! `users` and `teams` (see [`admin`]), `usage` (see [`usage`]) and `audit`.

pub mod admin;
pub mod usage;

use crate::config::{self, Config};
use crate::server;
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "sluice", version, about = "Sluice, an AI gateway")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway (no config needed: built-in mock provider, SQLite state).
    Serve(ServeArgs),
    /// Work with config files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Manage virtual keys through a running gateway's admin API.
    Keys {
        #[command(flatten)]
        conn: admin::Conn,
        #[command(subcommand)]
        command: admin::KeysCommand,
    },
    /// Manage users through a running gateway's admin API.
    Users {
        #[command(flatten)]
        conn: admin::Conn,
        #[command(subcommand)]
        command: admin::UsersCommand,
    },
    /// Manage teams through a running gateway's admin API.
    Teams {
        #[command(flatten)]
        conn: admin::Conn,
        #[command(subcommand)]
        command: admin::TeamsCommand,
    },
    /// Usage and cost analytics, performance, the request log and the compliance export
    /// (`sluice usage --by team,model --since 7d`).
    Usage {
        #[command(flatten)]
        conn: admin::Conn,
        #[command(flatten)]
        args: Box<usage::UsageArgs>,
    },
    /// The audit log of admin writes: who, what, when (`sluice audit --since 7d`).
    Audit {
        #[command(flatten)]
        conn: admin::Conn,
        #[command(flatten)]
        args: admin::AuditArgs,
    },
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Config file (YAML). Without one: the built-in mock plus providers found in the environment.
    #[arg(long, short, env = "SLUICE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (overrides server.listen).
    #[arg(long, env = "SLUICE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Store URL, e.g. sqlite://sluice.db (overrides store.url).
    #[arg(long, env = "SLUICE_STORE_URL")]
    pub store: Option<String>,
    /// Allow serving without authentication on a non-loopback address.
    #[arg(long)]
    pub allow_unauthenticated: bool,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate a config file without serving; exits non-zero on errors.
    Check { file: PathBuf },
}

/// Loads the config for `serve`, applying flags and environment on top.
pub fn serve_config(args: &ServeArgs) -> Result<Config, config::ConfigErrors> {
    let mut cfg = config::load(args.config.as_deref(), &config::process_env)?;
    if let Some(l) = args.listen {
        cfg.server.listen = l;
    }
    if let Some(s) = &args.store {
        cfg.store.url.clone_from(s);
    }
    if args.allow_unauthenticated {
        cfg.server.allow_unauthenticated = true;
    }
    Ok(server::apply_env_overrides(cfg))
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match cli.command {
        Command::Keys { conn, command } => exit_code(admin::keys(&conn, command)),
        Command::Teams { conn, command } => exit_code(admin::teams(&conn, command)),
        Command::Users { conn, command } => exit_code(admin::users(&conn, command)),
        Command::Usage { conn, args } => exit_code(usage::run(&conn, *args)),
        Command::Audit { conn, args } => exit_code(admin::audit(&conn, args)),
        Command::Config {
            command: ConfigCommand::Check { file },
        } => match config::load(Some(&file), &config::process_env) {
            Ok(cfg) => {
                println!(
                    "{}: ok ({} providers, {} models)",
                    file.display(),
                    cfg.providers.len(),
                    cfg.models.len()
                );
                println!("config hash: {}", cfg.hash);
                for line in crate::router::unpriced(&cfg) {
                    println!("warning: unpriced: {line}");
                }
                0
            }
            Err(e) => {
                eprintln!("{e}");
                1
            }
        },
        Command::Serve(args) => {
            crate::telemetry::init();
            let cfg = match serve_config(&args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return 1;
                }
            };
            match run_serve(cfg, args.config) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    1
                }
            }
        }
    }
}

fn exit_code(r: anyhow::Result<()>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

fn run_serve(cfg: Config, path: Option<PathBuf>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(server::run(cfg, path, server::shutdown_signal(), |addr| {
        // One machine-readable line on stdout (tests and scripts read the port from it).
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "sluice listening on http://{addr}");
        let _ = out.flush();
    }))
}
