//! `porchlight uplink`: the state of the city link, through the daemon's control API.

use std::path::Path;
use std::process::ExitCode;

use super::client::Client;
use crate::clock::fmt_ms;
use crate::protocol::units::ByteSize;
use crate::uplink::{LinkState, LinkStatus};

/// Arguments of `porchlight uplink`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print the daemon's JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Prints the link state, last error, outbox and last PUBACK. Exits 0 whatever the state: a
/// link that is down is information, not a failure of this command.
pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let client = Client::from_config(config)?;
    if args.json {
        let v: serde_json::Value = client.get("/api/v1/uplink")?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let s: LinkStatus = client.get("/api/v1/uplink")?;
    print!("{}", render(&s));
    Ok(ExitCode::SUCCESS)
}

/// The text shown by `porchlight uplink`.
pub fn render(s: &LinkStatus) -> String {
    let mut out = String::new();
    if s.state == LinkState::Disabled {
        out.push_str("city link:   disabled (no [uplink] in the configuration)\n");
        return out;
    }
    let gw = s.gateway_id.as_deref().unwrap_or("?");
    let broker = s.broker.as_deref().unwrap_or("?");
    out.push_str(&format!(
        "city link:   {} ({} as {gw}, since {})\n",
        s.state.as_str(),
        broker,
        fmt_ms(s.since_ms)
    ));
    match &s.last_error {
        Some(e) => out.push_str(&format!(
            "last error:  {e} [{}] at {}\n",
            s.last_error_kind.map_or("other", |k| k.as_str()),
            fmt_ms(s.last_error_ms)
        )),
        None => out.push_str("last error:  none\n"),
    }
    out.push_str(&format!(
        "outbox:      {} message(s), {} of {} (when full: {})\n",
        s.outbox_messages,
        ByteSize(s.outbox_bytes),
        ByteSize(s.outbox_limit_bytes),
        serde_json::to_value(s.outbox_when_full)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    ));
    if s.outbox_lost > 0 {
        out.push_str(&format!(
            "             {} message(s) refused or dropped because it was full\n",
            s.outbox_lost
        ));
    }
    out.push_str(&format!("last PUBACK: {}\n", fmt_ms(s.last_puback_ms)));
    out.push_str(&format!(
        "connections: {}, last event seq {}\n",
        s.connects, s.event_seq
    ));
    out
}
