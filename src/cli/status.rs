//! `porchlight status`: a one-screen summary.

use std::path::Path;
use std::process::ExitCode;

use super::client::Client;
use crate::api::StatusResponse;
use crate::clock::fmt_ms;
use crate::ingest::health::CameraState;
use crate::protocol::units::{ByteSize, Dur};

/// Arguments of `porchlight status`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print the daemon's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Prints the summary.
pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let client = Client::from_config(config)?;
    if args.json {
        let v: serde_json::Value = client.get("/api/v1/status")?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let s: StatusResponse = client.get("/api/v1/status")?;
    let streaming = s
        .cameras
        .iter()
        .filter(|c| c.state == CameraState::Streaming)
        .count();
    println!(
        "porchlight {}  up {}",
        s.version,
        Dur(std::time::Duration::from_secs(s.uptime_s))
    );
    println!(
        "city link:  {}, {}",
        if s.link.is_empty() {
            "disabled"
        } else {
            &s.link
        },
        if s.paired { "paired" } else { "not paired" }
    );
    println!(
        "cameras:    {} configured, {} streaming",
        s.cameras.len(),
        streaming
    );
    for c in &s.cameras {
        match &c.last_error {
            Some(e) if c.state != CameraState::Streaming => {
                println!("  {:<16} {:<10} {e}", c.id, c.state)
            }
            _ => println!("  {:<16} {}", c.id, c.state),
        }
    }
    let u = &s.storage;
    let pct = if u.quota_bytes > 0 {
        u.used_bytes as f64 * 100.0 / u.quota_bytes as f64
    } else {
        0.0
    };
    println!(
        "storage:    {} of {} ({pct:.1} %), oldest {}",
        ByteSize(u.used_bytes),
        ByteSize(u.quota_bytes),
        fmt_ms(u.oldest_ms)
    );
    println!(
        "written:    {} today (flash wear)",
        ByteSize(u.written_today_bytes)
    );
    let l = &s.listeners;
    for (name, r) in [("web UI", &l.web), ("API", &l.api)] {
        let shed = if r.shed > 0 || r.out_of_descriptors > 0 {
            format!(
                ", {} shed (budget full), {} refused (out of descriptors)",
                r.shed, r.out_of_descriptors
            )
        } else {
            String::new()
        };
        println!("{name:<11} {} of {} connections{shed}", r.open, r.total);
    }
    Ok(ExitCode::SUCCESS)
}
