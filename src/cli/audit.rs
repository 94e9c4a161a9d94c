//! `porchlight audit list|verify|export`: the hash-chained record of every request, decision
//! and byte shared.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;

use super::client::{q, Client};
use crate::clock::fmt_ms;

/// Arguments of `porchlight audit`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// Audit actions.
#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// The newest entries.
    List(ListArgs),
    /// Check the whole chain; exits non-zero when it is broken.
    Verify,
    /// Every entry as JSON lines (or CSV) on stdout.
    Export(ExportArgs),
}

/// Filters of `audit list`.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Only this camera.
    #[arg(long)]
    pub camera: Option<String>,
    /// Only this request.
    #[arg(long)]
    pub request: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `audit export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// `jsonl` or `csv`.
    #[arg(long, default_value = "jsonl")]
    pub format: String,
}

/// Runs an audit action.
pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let client = Client::from_config(config)?;
    match args.action {
        Action::List(a) => {
            let mut query = format!("?limit={}", a.limit);
            if let Some(c) = &a.camera {
                query += &format!("&camera={}", q(c));
            }
            if let Some(r) = &a.request {
                query += &format!("&request={}", q(r));
            }
            let v: Value = client.get(&format!("/api/v1/audit{query}"))?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(ExitCode::SUCCESS);
            }
            for e in v["entries"].as_array().into_iter().flatten() {
                println!(
                    "#{:<5} {} {:<18} {:<9} request {} camera {} {}",
                    e["seq"],
                    fmt_ms(e["ts"].as_i64()),
                    e["kind"].as_str().unwrap_or("-"),
                    e["actor"].as_str().unwrap_or("-"),
                    e["request_id"].as_str().unwrap_or("-"),
                    e["camera"].as_str().unwrap_or("-"),
                    e["detail"],
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Action::Verify => {
            let v: Value = client.get("/api/v1/audit/verify")?;
            if v["ok"] == true {
                println!(
                    "audit chain OK: {} entries, last #{} {}",
                    v["entries"],
                    v["last_seq"],
                    v["last_hash"].as_str().unwrap_or("")
                );
                Ok(ExitCode::SUCCESS)
            } else {
                println!(
                    "AUDIT CHAIN BROKEN: {}",
                    v["problem"].as_str().unwrap_or("?")
                );
                Ok(ExitCode::FAILURE)
            }
        }
        Action::Export(a) => {
            let resp = client.get_raw(&format!("/api/v1/audit/export?format={}", q(&a.format)))?;
            let mut out = std::io::stdout().lock();
            std::io::copy(&mut resp.into_body().as_reader(), &mut out)?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
