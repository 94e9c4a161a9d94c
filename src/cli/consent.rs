//! `porchlight consent`: show the cameras' sharing rules, or change one camera's.
//!
//! Rules are per camera and per kind (`live`, `clips`): `never` (the default), `ask` or
//! `always`, with limits. Only the resident changes them, here or in the web UI; the center
//! cannot.

use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;

use super::client::{q, Client};
use crate::consent::{CameraRules, Hours, Mode};
use crate::protocol::units::Dur;

/// Arguments of `porchlight consent`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Change a camera's rules.
    #[command(subcommand)]
    pub action: Option<Action>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `consent set`.
#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Change one camera's rules (unnamed settings keep their value).
    Set(SetArgs),
}

/// Arguments of `porchlight consent set`.
#[derive(clap::Args, Debug)]
pub struct SetArgs {
    /// Camera id.
    pub camera: String,
    /// Live feeds: never, ask or always.
    #[arg(long, value_parser = parse_mode)]
    pub live: Option<Mode>,
    /// Clips of recorded video: never, ask or always.
    #[arg(long, value_parser = parse_mode)]
    pub clips: Option<Mode>,
    /// Emergency requests for live feeds: never, ask or always (always shown to you).
    #[arg(long, value_parser = parse_mode)]
    pub emergency_live: Option<Mode>,
    /// Emergency requests for clips: never, ask or always.
    #[arg(long, value_parser = parse_mode)]
    pub emergency_clips: Option<Mode>,
    /// Longest live feed granted, e.g. 15m.
    #[arg(long)]
    pub max_live: Option<Dur>,
    /// Longest clip window granted, e.g. 1h.
    #[arg(long)]
    pub max_clip_window: Option<Dur>,
    /// Hours of the day when sharing is allowed, local time, e.g. 8-20 or 22-6; `all` clears.
    #[arg(long)]
    pub hours: Option<String>,
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    serde_json::from_value(Value::String(s.to_owned()))
        .map_err(|_| format!("{s:?}: expected never, ask or always"))
}

fn parse_hours(s: &str) -> anyhow::Result<Option<Hours>> {
    if s == "all" {
        return Ok(None);
    }
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| anyhow::anyhow!("--hours {s:?}: expected START-END, e.g. 8-20"))?;
    Ok(Some(Hours {
        start_hour: a.trim().parse()?,
        end_hour: b.trim().parse()?,
    }))
}

fn word(v: &Value) -> String {
    v.as_str().unwrap_or("-").to_owned()
}

/// Shows or changes rules.
pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let client = Client::from_config(config)?;
    if let Some(Action::Set(set)) = args.action {
        let all: Value = client.get("/api/v1/consent")?;
        let current = all["cameras"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["camera"] == set.camera.as_str()))
            .map(|c| c["rules"].clone())
            .ok_or_else(|| anyhow::anyhow!("no camera {:?}", set.camera))?;
        let mut rules: CameraRules = serde_json::from_value(current)?;
        if let Some(m) = set.live {
            rules.live = m;
        }
        if let Some(m) = set.clips {
            rules.clips = m;
        }
        if let Some(m) = set.emergency_live {
            rules.emergency.live = m;
        }
        if let Some(m) = set.emergency_clips {
            rules.emergency.clips = m;
        }
        if let Some(d) = set.max_live {
            rules.max_live_s = d.0.as_secs();
        }
        if let Some(d) = set.max_clip_window {
            rules.max_clip_window_s = d.0.as_secs();
        }
        if let Some(h) = &set.hours {
            rules.hours = parse_hours(h)?;
        }
        let body = serde_json::to_value(rules)?;
        let _: Value = client.send("PUT", &format!("/api/v1/consent/{}", q(&set.camera)), &body)?;
        println!("rules for {} updated", set.camera);
    }
    let all: Value = client.get("/api/v1/consent")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(ExitCode::SUCCESS);
    }
    if all["paused"] == true {
        println!("ALL SHARING PAUSED (porchlight resume to lift)");
    }
    println!(
        "{:<16} {:<7} {:<7} {:<9} {:<11} hours",
        "camera", "live", "clips", "max live", "max window"
    );
    for c in all["cameras"].as_array().into_iter().flatten() {
        let r = &c["rules"];
        let hours = match (&r["hours"]["start_hour"], &r["hours"]["end_hour"]) {
            (Value::Number(a), Value::Number(b)) => format!("{a}-{b}"),
            _ => "all day".into(),
        };
        let secs =
            |v: &Value| Dur(std::time::Duration::from_secs(v.as_u64().unwrap_or(0))).to_string();
        println!(
            "{:<16} {:<7} {:<7} {:<9} {:<11} {hours}  (emergency: live {}, clips {})",
            word(&c["camera"]),
            word(&r["live"]),
            word(&r["clips"]),
            secs(&r["max_live_s"]),
            secs(&r["max_clip_window_s"]),
            word(&r["emergency"]["live"]),
            word(&r["emergency"]["clips"]),
        );
    }
    Ok(ExitCode::SUCCESS)
}
