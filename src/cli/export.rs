//! `porchlight export`: a time range of one camera as an MP4 file.
//!
//! The daemon first answers with a plan (which segments, the span actually covered, gaps), so
//! the resident is told when the range reaches outside the buffer or has holes; then the MP4
//! is streamed into a temporary file next to the output and renamed into place.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};

use super::client::{q, Client};
use crate::clock::fmt_ms;
use crate::export::ExportPlan;
use crate::protocol::units::{ByteSize, Dur};

/// Arguments of `porchlight export`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Camera id.
    #[arg(long)]
    pub camera: String,
    /// Start of the range, RFC 3339 (e.g. 2026-11-26T09:30:00Z).
    #[arg(long, conflicts_with = "last", requires = "to")]
    pub from: Option<jiff::Timestamp>,
    /// End of the range, RFC 3339.
    #[arg(long, conflicts_with = "last", requires = "from")]
    pub to: Option<jiff::Timestamp>,
    /// The most recent span instead of --from/--to, e.g. 30s, 10m.
    #[arg(long)]
    pub last: Option<Dur>,
    /// Output file.
    #[arg(short, long)]
    pub output: PathBuf,
}

/// Runs the export.
pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let (from, to) = match (args.from, args.to, args.last) {
        (Some(f), Some(t), None) => (f.as_millisecond(), t.as_millisecond()),
        (None, None, Some(last)) => {
            let now = jiff::Timestamp::now().as_millisecond();
            (now - last.0.as_millis() as i64, now)
        }
        _ => bail!("give --from and --to, or --last"),
    };
    if to <= from {
        bail!("--to must be after --from");
    }
    let client = Client::from_config(config)?;
    let query = format!("camera={}&from={from}&to={to}", q(&args.camera));
    let plan: ExportPlan = client.get(&format!("/api/v1/export/plan?{query}"))?;
    let resp = client.get_raw(&format!("/api/v1/export?{query}"))?;

    let tmp = args.output.with_extension("mp4.partial");
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut body = resp.into_body();
    let copied = std::io::copy(&mut body.as_reader(), &mut file);
    let written = match copied.and_then(|n| file.flush().and(file.sync_all()).map(|()| n)) {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e).context("the export was interrupted");
        }
    };
    std::fs::rename(&tmp, &args.output)
        .with_context(|| format!("cannot rename to {}", args.output.display()))?;

    println!(
        "wrote {}: {} , {} to {} ({} s, {} segment(s))",
        args.output.display(),
        ByteSize(written),
        fmt_ms(Some(plan.from_ms)),
        fmt_ms(Some(plan.to_ms)),
        (plan.to_ms - plan.from_ms) as f64 / 1000.0,
        plan.segments
    );
    for note in plan.notes() {
        println!("note: {note}");
    }
    Ok(ExitCode::SUCCESS)
}
