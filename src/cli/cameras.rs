//! `porchlight cameras`: every camera's health and buffer; `cameras add|edit|remove` change
//! the cameras added at run time (through the daemon, which persists them and starts or stops
//! their streams without a restart).
//!
//! Passwords are read from a file (`--password-file`), never from the command line (where
//! `ps` and shell history would show them), and are never printed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{json, Value};

use super::client::{q, Client};
use crate::clock::fmt_ms;
use crate::protocol::units::ByteSize;

/// Arguments of `porchlight cameras`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// Print the daemon's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Change the cameras (without one: list them).
    #[command(subcommand)]
    pub action: Option<Action>,
}

/// `porchlight cameras add|edit|remove`.
#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Add a camera: one found by `porchlight discover` (its streams are asked over ONVIF), or
    /// one given by its RTSP URL. It streams at once and is kept across restarts.
    Add(AddArgs),
    /// Change an added camera (its stream restarts with the new settings).
    Edit(EditArgs),
    /// Remove an added camera. Its recorded video stays exportable until the store evicts it.
    Remove {
        /// Camera id.
        id: String,
    },
}

/// `porchlight cameras add`.
#[derive(clap::Args, Debug)]
pub struct AddArgs {
    /// The discovery id (first column of `porchlight discover`).
    #[arg(long, value_name = "ID", conflicts_with_all = ["url", "substream_url"], requires_all = ["username", "password_file"])]
    pub from_discovery: Option<String>,
    /// Main stream, `rtsp://host[:port]/path`, without credentials.
    #[arg(long, required_unless_present = "from_discovery")]
    pub url: Option<String>,
    /// Lower-bitrate substream.
    #[arg(long)]
    pub substream_url: Option<String>,
    /// User name for the camera (RTSP and ONVIF).
    #[arg(long)]
    pub username: Option<String>,
    /// File holding the camera's password (trailing newline ignored); never printed.
    #[arg(long, requires = "username")]
    pub password_file: Option<PathBuf>,
    /// Name shown to you (default: the name the camera announces, or the id).
    #[arg(long)]
    pub name: Option<String>,
    /// Camera id (default: made from the name).
    #[arg(long)]
    pub id: Option<String>,
    /// What goes to disk.
    #[arg(long, value_parser = ["main", "sub", "off"])]
    pub record: Option<String>,
    /// Also record the camera's AAC audio.
    #[arg(long)]
    pub audio: bool,
    /// RTP transport.
    #[arg(long, value_parser = ["tcp", "udp"])]
    pub transport: Option<String>,
}

/// `porchlight cameras edit`.
#[derive(clap::Args, Debug)]
pub struct EditArgs {
    /// Camera id.
    pub id: String,
    /// New name.
    #[arg(long)]
    pub name: Option<String>,
    /// New main stream URL.
    #[arg(long)]
    pub url: Option<String>,
    /// New substream URL.
    #[arg(long, conflicts_with = "no_substream")]
    pub substream_url: Option<String>,
    /// Remove the substream.
    #[arg(long)]
    pub no_substream: bool,
    /// New user name.
    #[arg(long)]
    pub username: Option<String>,
    /// File holding the new password.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// What goes to disk.
    #[arg(long, value_parser = ["main", "sub", "off"])]
    pub record: Option<String>,
    /// Record audio (true/false).
    #[arg(long)]
    pub audio: Option<bool>,
    /// RTP transport.
    #[arg(long, value_parser = ["tcp", "udp"])]
    pub transport: Option<String>,
    /// Follow the camera to the new address discovery saw it at (see `cameras` for
    /// "moved to … (waiting for you)").
    #[arg(long)]
    pub approve_move: bool,
}

fn read_password(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the password file {}", path.display()))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

/// Lists or changes the cameras.
pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let client = Client::from_config(config)?;
    match args.action {
        None => list(&client, args.json),
        Some(Action::Add(a)) => add(&client, a),
        Some(Action::Edit(e)) => edit(&client, e),
        Some(Action::Remove { id }) => {
            let _: Value =
                client.send("DELETE", &format!("/api/v1/cameras/{}", q(&id)), &json!({}))?;
            println!("removed camera {id}; its recorded video stays exportable until the store evicts it");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn add(client: &Client, a: AddArgs) -> anyhow::Result<ExitCode> {
    let mut body = json!({});
    let set = |b: &mut Value, k: &str, v: Option<String>| {
        if let Some(v) = v {
            b[k] = json!(v);
        }
    };
    set(&mut body, "from_discovery", a.from_discovery.clone());
    set(&mut body, "url", a.url);
    set(&mut body, "substream_url", a.substream_url);
    set(&mut body, "username", a.username);
    set(&mut body, "name", a.name);
    set(&mut body, "id", a.id);
    set(&mut body, "record", a.record);
    set(&mut body, "transport", a.transport);
    if a.audio {
        body["audio"] = json!(true);
    }
    if let Some(p) = &a.password_file {
        body["password"] = json!(read_password(p)?);
    }
    if a.from_discovery.is_some() {
        eprintln!("asking the camera for its streams over ONVIF…");
    }
    let r: Value = client.send("POST", "/api/v1/cameras", &body)?;
    let c = &r["camera"];
    let s = |k: &str| c[k].as_str().unwrap_or("-").to_owned();
    println!("added camera {} ({})", s("id"), s("name"));
    println!("  url:       {}", s("url"));
    if let Some(sub) = c["substream_url"].as_str() {
        println!("  substream: {sub}");
    }
    println!("it streams now: `porchlight cameras` shows its state");
    Ok(ExitCode::SUCCESS)
}

fn edit(client: &Client, e: EditArgs) -> anyhow::Result<ExitCode> {
    let mut body = json!({});
    for (k, v) in [
        ("name", e.name),
        ("url", e.url),
        ("substream_url", e.substream_url),
        ("username", e.username),
        ("record", e.record),
        ("transport", e.transport),
    ] {
        if let Some(v) = v {
            body[k] = json!(v);
        }
    }
    if e.no_substream {
        body["substream_url"] = Value::Null;
    }
    if let Some(a) = e.audio {
        body["audio"] = json!(a);
    }
    if let Some(p) = &e.password_file {
        body["password"] = json!(read_password(p)?);
    }
    if e.approve_move {
        body["approve_move"] = json!(true);
    }
    let r: Value = client.send("PATCH", &format!("/api/v1/cameras/{}", q(&e.id)), &body)?;
    let c = &r["camera"];
    println!(
        "camera {} updated; its stream restarts ({})",
        c["id"].as_str().unwrap_or(&e.id),
        c["url"].as_str().unwrap_or("-")
    );
    Ok(ExitCode::SUCCESS)
}

fn list(client: &Client, json_out: bool) -> anyhow::Result<ExitCode> {
    let cams: Vec<Value> = client.get("/api/v1/cameras")?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&cams)?);
        return Ok(ExitCode::SUCCESS);
    }
    if cams.is_empty() {
        println!(
            "no cameras (find some with `porchlight discover`, then `porchlight cameras add`)"
        );
    }
    for c in &cams {
        let s = |k: &str| c[k].as_str().unwrap_or("-").to_owned();
        let n = |k: &str| c[k].as_i64();
        let res = match (n("width"), n("height")) {
            (Some(w), Some(h)) => format!("{w}x{h}"),
            _ => "-".into(),
        };
        let source = match c["source"].as_str() {
            Some("config") => "configuration file",
            Some("added") => "added",
            _ => "-",
        };
        println!("{} ({}) [{source}]", s("id"), s("name"));
        println!("  state:      {}", s("state"));
        println!("  url:        {}", s("url"));
        if let Some(e) = c["last_error"].as_str() {
            println!("  last error: {e} (at {})", fmt_ms(n("last_error_ms")));
        }
        if let Some(m) = c["onvif"]["pending_move"].as_object() {
            println!(
                "  moved to:   {} ({}) — waiting for you: `porchlight cameras edit {} --approve-move`",
                m.get("address").and_then(Value::as_str).unwrap_or("-"),
                m.get("reason").and_then(Value::as_str).unwrap_or("-"),
                s("id")
            );
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
