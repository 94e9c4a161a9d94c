//! The `porchlight` command line: one file per subcommand, each with its `Args` and `run`.
//!
//! `run` starts the daemon; every other subcommand is a client of the running daemon's control
//! API ([`client`]), found through the same `--config FILE` the daemon was started with.

pub mod audit;
pub mod cameras;
pub mod client;
pub mod consent;
pub mod discover;
pub mod export;
pub mod pair;
pub mod requests;
pub mod run;
pub mod selftest;
pub mod status;
pub mod uplink;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Porchlight: the edge gateway for residents' cameras.
#[derive(Parser, Debug)]
#[command(name = "porchlight", version, about)]
pub struct Cli {
    /// Configuration file (the same one the daemon runs with). Without it, embedded defaults.
    #[arg(long, short, global = true, env = "PORCHLIGHT_CONFIG")]
    pub config: Option<PathBuf>,
    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway daemon.
    Run(run::Args),
    /// Summary: cameras, storage use against the quota, oldest buffered time.
    Status(status::Args),
    /// Each camera's state, codec, resolution, rates and buffered span; `cameras add|edit|remove`
    /// changes the cameras at run time.
    Cameras(cameras::Args),
    /// Write a time range of one camera to an MP4 file.
    Export(export::Args),
    /// The city link: connected or not, last error, outbox depth, last PUBACK.
    Uplink(uplink::Args),
    /// Show the cameras' sharing rules, or change one (`consent set CAMERA --live ask …`).
    Consent(consent::Args),
    /// Police requests waiting for you, and the grants running.
    Requests(requests::Args),
    /// Grant a pending request.
    Approve(requests::IdArgs),
    /// Refuse a pending request.
    Deny(requests::IdArgs),
    /// End a running grant at once (its live feed stops within a second).
    Revoke(requests::IdArgs),
    /// Pause all sharing: every feed stops, every pending request ends.
    Pause,
    /// Resume sharing under your rules.
    Resume,
    /// The audit log: who saw what, when (list, verify, export).
    Audit(audit::Args),
    /// Check this build on this machine (store, TLS, Ed25519, SHA-256) and print OK.
    Selftest(selftest::Args),
    /// Find cameras on the network (ONVIF, mDNS); `--probe ID` prints one's `[[cameras]]` entry.
    Discover(discover::Args),
    /// Pair the box with the city using a claim code (no restart).
    Pair(pair::Args),
    /// Forget the box's city identity: sharing stops (asks for `--yes`).
    Unpair(pair::UnpairArgs),
}

/// Sets up logging to stderr: capitalised messages with fields; never secrets (secrets are
/// typed [`crate::secret::Secret`] and print as `<redacted>`).
pub fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = cli.config.as_deref();
    match cli.command {
        Command::Run(args) => run::run(config, args),
        Command::Status(args) => status::run(config, args),
        Command::Cameras(args) => cameras::run(config, args),
        Command::Export(args) => export::run(config, args),
        Command::Uplink(args) => uplink::run(config, args),
        Command::Consent(args) => consent::run(config, args),
        Command::Requests(args) => requests::run(config, args),
        Command::Approve(args) => requests::act(config, "approve", args),
        Command::Deny(args) => requests::act(config, "deny", args),
        Command::Revoke(args) => requests::act(config, "revoke", args),
        Command::Pause => requests::switch(config, true),
        Command::Resume => requests::switch(config, false),
        Command::Audit(args) => audit::run(config, args),
        Command::Discover(args) => discover::run(config, args),
        Command::Pair(args) => pair::run(config, args),
        Command::Unpair(args) => pair::unpair(config, args),
        Command::Selftest(args) => selftest::run(args),
    }
}
