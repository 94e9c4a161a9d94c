//! `porchlight pair` and `porchlight unpair`: pair the box with the city using a claim code,
//! or forget its city identity — through the running daemon, which does the work without a
//! restart (`docs/protocol.md`, "Pairing").

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{json, Value};

use super::client::Client;
use crate::clock::fmt_ms;

/// Arguments of `porchlight pair`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The claim code the city gave you (like ABCD-EFGH-JKMN; dashes and case do not matter).
    #[arg(long)]
    pub code: String,
    /// The city's pairing service, `mqtts://host:port` (default: `pairing.broker`).
    #[arg(long)]
    pub broker: Option<String>,
    /// The city's CA certificate (PEM) that the pairing service must be signed by
    /// (default: `pairing.ca_file`).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Print the daemon's JSON answer.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `porchlight unpair`.
#[derive(clap::Args, Debug)]
pub struct UnpairArgs {
    /// Confirm: sharing stops, queued messages for the city are deleted, the box's key is
    /// deleted. Pairing again needs a new claim code.
    #[arg(long)]
    pub yes: bool,
}

/// Pairs the box.
pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let client = Client::from_config(config)?;
    let ca_pem = match &args.ca {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the city CA {}", p.display()))?,
        ),
        None => None,
    };
    let body = json!({"code": args.code, "broker": args.broker, "ca_pem": ca_pem});
    eprintln!("Pairing: asking the city (this can take up to a minute)…");
    let v: Value = client.send("POST", "/api/v1/pair", &body)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "paired as {} — city link {}; certificate valid until {}",
            v["gateway_id"].as_str().unwrap_or("?"),
            v["broker"].as_str().unwrap_or("?"),
            fmt_ms(v["not_after"].as_i64()),
        );
        println!("nothing is shared until you allow it: see `porchlight consent`");
    }
    Ok(ExitCode::SUCCESS)
}

/// Unpairs the box.
pub fn unpair(config: Option<&Path>, args: UnpairArgs) -> anyhow::Result<ExitCode> {
    if !args.yes {
        anyhow::bail!(
            "unpairing stops all sharing, deletes what is queued for the city and the box's key; \
             run `porchlight unpair --yes` to confirm"
        );
    }
    let client = Client::from_config(config)?;
    let _: Value = client.send("POST", "/api/v1/unpair", &Value::Null)?;
    println!("unpaired: the box works locally; pair again with a new claim code");
    Ok(ExitCode::SUCCESS)
}
