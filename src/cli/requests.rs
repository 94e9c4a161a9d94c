//! `porchlight requests`, `approve`, `deny`, `revoke`: the police requests waiting for the
//! resident, the grants running, and the resident's answers.

use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;

use super::client::{q, Client};
use crate::clock::fmt_ms;

/// Arguments of `porchlight requests`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `approve`, `deny` and `revoke`.
#[derive(clap::Args, Debug)]
pub struct IdArgs {
    /// The request id (as `porchlight requests` lists it).
    pub id: String,
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or("-").to_owned()
}

fn what(req: &Value) -> String {
    let scope = &req["scope"];
    match scope["kind"].as_str() {
        Some("live") => format!("live feed for {} s", scope["duration_s"]),
        Some("clip") => format!(
            "clip {} to {}",
            fmt_ms(scope["from_ms"].as_i64()),
            fmt_ms(scope["to_ms"].as_i64())
        ),
        _ => "-".into(),
    }
}

/// Lists pending requests and active grants.
pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let client = Client::from_config(config)?;
    let v: Value = client.get("/api/v1/requests")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    if v["paused"] == true {
        println!("ALL SHARING PAUSED");
    }
    let pending = v["pending"].as_array().cloned().unwrap_or_default();
    println!("pending ({}):", pending.len());
    for p in &pending {
        let r = &p["request"];
        println!(
            "  {}  camera {}  {}{}\n    requester {}, case {}, reason: {}\n    expires {} — porchlight approve {} | porchlight deny {}",
            s(&r["id"]),
            s(&r["camera"]),
            what(r),
            if r["emergency"] == true { "  EMERGENCY" } else { "" },
            s(&r["requester"]),
            s(&r["case"]),
            s(&r["reason"]),
            fmt_ms(p["expires_at_ms"].as_i64()),
            s(&r["id"]),
            s(&r["id"]),
        );
    }
    let grants = v["grants"].as_array().cloned().unwrap_or_default();
    println!("active grants ({}):", grants.len());
    let now = jiff::Timestamp::now().as_millisecond();
    for g in &grants {
        let left = (g["until_ms"].as_i64().unwrap_or(now) - now).max(0) / 1000;
        println!(
            "  {}  camera {}  {}  by {}  {} s left — porchlight revoke {}",
            s(&g["id"]),
            s(&g["camera"]),
            s(&g["scope"]["kind"]),
            s(&g["request"]["requester"]),
            left,
            s(&g["id"]),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `approve`, `deny` or `revoke` one request.
pub fn act(config: Option<&Path>, action: &str, args: IdArgs) -> anyhow::Result<ExitCode> {
    let client = Client::from_config(config)?;
    let v: Value = client.send(
        "POST",
        &format!("/api/v1/requests/{}/{action}", q(&args.id)),
        &Value::Null,
    )?;
    match v["until"].as_i64() {
        Some(until) => println!(
            "{}: {} until {}",
            args.id,
            s(&v["status"]),
            fmt_ms(Some(until))
        ),
        None => println!("{}: {}", args.id, s(&v["status"])),
    }
    Ok(ExitCode::SUCCESS)
}

/// `pause` or `resume` all sharing.
pub fn switch(config: Option<&Path>, pause: bool) -> anyhow::Result<ExitCode> {
    let client = Client::from_config(config)?;
    let path = if pause {
        "/api/v1/pause"
    } else {
        "/api/v1/resume"
    };
    let _: Value = client.send("POST", path, &Value::Null)?;
    println!(
        "{}",
        if pause {
            "all sharing paused: running feeds stopped, pending requests ended"
        } else {
            "sharing resumed (your rules apply again; ended grants stay ended)"
        }
    );
    Ok(ExitCode::SUCCESS)
}
