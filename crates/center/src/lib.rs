//! The reference city center (`porchlight-center`): the police side of wire protocol v1, for
//! tests, demos and city IT. It is a client of the city broker like any box, with its own
//! certificate (CN `center` in the tests) and an Ed25519 request key.
//!
//! # Layout
//!
//! One file per subcommand, each with its `Args` and `run`:
//!
//! - [`keygen`]: the center's request key pair (PKCS#8 private 0600, SPKI public).
//! - [`request`]: sign and publish a `live`, `clip` or `cancel` request; optionally wait for
//!   the box's replies (subscribed **before** publishing, so none is missed); `--near` sends
//!   one per box in a circle.
//! - [`receive`]: reassemble a PLM1 live feed or clip into an fMP4 file, in `seq` order, and
//!   check a clip's manifest (sha256, bytes, fragment count).
//! - [`watch`]: one line per status, heartbeat, event, reply or audit message of one box or
//!   all of them.
//! - [`ca`]: the city CA (`ca init`) and the broker's and center's certificates.
//! - [`codes`]: single-use, expiring claim codes for residents.
//! - [`serve`]: the enrollment service answering pairing and renewal CSRs; its decisions,
//!   without MQTT, are [`enroll`].
//! - [`fleet`]: the fleet table (registry + retained status + heartbeats), `--near` a circle
//!   ([`geo`]).
//! - [`revoke`]: `revoke-box` and the CRL for the broker.
//!
//! [`store`] is the center's state directory (CA, registry of codes and boxes under `flock`,
//! audit log). [`settings`] resolves the connection flags (or `--config center.toml`), and
//! [`connection`] holds the MQTT session (rumqttc over rustls with the ring provider, the city
//! CA as the only trust anchor, built by [`porchlight_protocol::tls::load`]; verification is never
//! disabled).
//!
//! Errors are [`CenterError`]; outcomes that are answers rather than failures (a denied
//! request, a timed-out wait, a clip whose hash does not match) are exit codes ([`exit`]).

pub mod ca;
pub mod codes;
pub mod connection;
pub mod enroll;
pub mod fleet;
pub mod geo;
pub mod keygen;
pub mod receive;
pub mod request;
pub mod revoke;
pub mod serve;
pub mod settings;
pub mod store;
pub mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use porchlight_protocol::tls::TlsError;

/// Exit codes of `porchlight-center` beyond 0 (success) and 1 (an error).
pub mod exit {
    /// The box answered with a final status other than `granted`, `completed` or `pending`.
    pub const REFUSED: u8 = 3;
    /// Nothing final arrived in time: no reply (`request --wait`) or no end message
    /// (`receive --timeout`).
    pub const TIMEOUT: u8 = 4;
    /// A clip's manifest does not match what arrived (sha256, bytes, fragments, missing seqs).
    pub const INTEGRITY: u8 = 5;
}

/// The reference city center: enroll Porchlight boxes (CA, claim codes, CSRs), see the fleet,
/// request video from boxes and receive it.
#[derive(Parser, Debug)]
#[command(name = "porchlight-center", version)]
pub struct Cli {
    /// How to reach the broker (flags, environment, or `--config`).
    #[command(flatten)]
    pub connect: settings::ConnectArgs,
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
    /// Make the center's Ed25519 request key pair.
    Keygen(keygen::Args),
    /// Sign and send a request (live, clip or cancel) to a box.
    Request(request::Args),
    /// Receive a live feed or clip into an fMP4 file.
    Receive(receive::Args),
    /// Print status, heartbeat, event, reply and audit messages of one box or all.
    Watch(watch::Args),
    /// The city CA: create it, issue the broker's and the center's certificates.
    Ca(ca::Args),
    /// Issue and list single-use claim codes for residents.
    Codes(codes::Args),
    /// Answer the CSRs of pairing and renewing boxes (the enrollment service).
    Serve(serve::Args),
    /// The fleet: boxes from the registry, retained status and heartbeats (`--near` for a circle).
    Fleet(fleet::Args),
    /// Revoke a box: refuse its renewals and write the CRL for the broker.
    RevokeBox(revoke::Args),
}

/// Why a center command failed.
#[derive(Debug, thiserror::Error)]
pub enum CenterError {
    /// A flag or configuration value is missing or invalid.
    #[error("{0}")]
    Usage(String),
    /// The `--config` file could not be read or parsed.
    #[error("config {}: {message}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The TLS material (CA, certificate, key) could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A file could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    File {
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The request key could not be read, made or encoded.
    #[error("request key {}: {message}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong (never key bytes).
        message: String,
    },
    /// The broker could not be reached or refused us.
    #[error("cannot connect to {broker}: {message}")]
    Connect {
        /// `host:port`.
        broker: String,
        /// Plain words.
        message: String,
    },
    /// The broker refused a subscription (its ACL does not let this identity read the topic).
    #[error(
        "the broker refused the subscription to {topic} (check the ACL for this certificate's CN)"
    )]
    SubscribeRefused {
        /// The topic filter.
        topic: String,
    },
    /// The connection failed after it was up.
    #[error("connection to {broker} lost: {message}")]
    Lost {
        /// `host:port`.
        broker: String,
        /// Plain words.
        message: String,
    },
}

/// Runs the chosen subcommand on a Tokio runtime of its own.
pub fn run(cli: Cli) -> Result<ExitCode, CenterError> {
    let command = match cli.command {
        Command::Keygen(args) => return keygen::run(args),
        Command::Ca(args) => return ca::run(args),
        Command::Codes(args) => return codes::run(args),
        Command::RevokeBox(args) => return revoke::run(args),
        other => other,
    };
    let settings = cli.connect.resolve()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CenterError::Usage(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(async move {
        match command {
            Command::Keygen(_) | Command::Ca(_) | Command::Codes(_) | Command::RevokeBox(_) => {
                unreachable!("handled above")
            }
            Command::Serve(args) => serve::run(&settings, args).await,
            Command::Fleet(args) => fleet::run(&settings, args).await,
            Command::Request(args) => request::run(&settings, args).await,
            Command::Receive(args) => receive::run(&settings, args).await,
            Command::Watch(args) => watch::run(&settings, args).await,
        }
    })
}

/// `N` bytes from the kernel's CSPRNG through ring (keys, serials, claim codes, request ids):
/// the center's one random source.
pub fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    use ring::rand::SecureRandom;
    let mut buf = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| std::io::Error::other("the system CSPRNG failed"))?;
    Ok(buf)
}

/// Checks a gateway id flag (`--gw`): a topic level, 1-64 of `A-Z a-z 0-9 _ - .`.
fn check_gw(gw: &str) -> Result<(), CenterError> {
    if porchlight_protocol::tls::valid_gateway_id(gw) {
        Ok(())
    } else {
        Err(CenterError::Usage(format!(
            "--gw {gw:?} is not a gateway id (1-64 of A-Z a-z 0-9 _ - .)"
        )))
    }
}
