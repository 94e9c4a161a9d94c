//! `porchlight cameras`: every camera's health and buffer.

use std::path::Path;
use std::process::ExitCode;

use super::client::Client;
use super::fmt_ms;
use crate::units::ByteSize;

/// Arguments of `porchlight cameras`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print the daemon's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Prints the cameras.
pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let client = Client::from_config(config)?;
    let cams: Vec<serde_json::Value> = client.get("/api/v1/cameras")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&cams)?);
        return Ok(ExitCode::SUCCESS);
    }
    if cams.is_empty() {
        println!("no cameras configured (add [[cameras]] to the config file)");
    }
    for c in &cams {
        let s = |k: &str| c[k].as_str().unwrap_or("-").to_owned();
        let n = |k: &str| c[k].as_i64();
        let res = match (n("width"), n("height")) {
            (Some(w), Some(h)) => format!("{w}x{h}"),
            _ => "-".into(),
        };
        println!("{} ({})", s("id"), s("name"));
        println!("  state:      {}", s("state"));
        if let Some(e) = c["last_error"].as_str() {
            println!("  last error: {e} (at {})", fmt_ms(n("last_error_ms")));
        }
        println!(
            "  video:      {} {} {} fps {} kbit/s{}",
            s("codec"),
            res,
            c["fps"].as_f64().map_or("-".into(), |f| format!("{f:.1}")),
            n("bitrate_bps").map_or("-".into(), |b| (b / 1000).to_string()),
            c["audio"]
                .as_str()
                .map(|a| format!(", audio {a}"))
                .unwrap_or_default(),
        );
        println!("  last frame: {}", fmt_ms(n("last_frame_ms")));
        println!(
            "  buffered:   {} to {} ({})  record={}",
            fmt_ms(n("buffered_from_ms")),
            fmt_ms(n("buffered_to_ms")),
            ByteSize(c["buffered_bytes"].as_u64().unwrap_or(0)),
            s("record")
        );
        println!(
            "  reconnects: {}  lost packets: {}  segments: {} stored, {} failed",
            n("reconnects").unwrap_or(0),
            n("lost_packets").unwrap_or(0),
            n("segments_written").unwrap_or(0),
            n("segments_failed").unwrap_or(0)
        );
    }
    Ok(ExitCode::SUCCESS)
}
