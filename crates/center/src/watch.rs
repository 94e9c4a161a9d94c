//! `porchlight-center watch [--gw GW|+]`: one line per `status`, `heartbeat`, `event`,
//! `reply` and `audit` message of one box (or of every box with `+`, the default):
//!
//! ```text
//! 2026-03-01T12:00:00.123Z gw-1 status (retained) {"online":true,"ts":…,"version":"0.1.0"}
//! ```
//!
//! Live and clip payloads are not subscribed (that is video; use `receive`). Handy for demos
//! and tests: `--count N` stops after N lines, `--for 10s` after a while.

use std::process::ExitCode;

use super::connection::Connection;
use super::settings::Settings;
use super::{check_gw, CenterError};
use porchlight_protocol::topics::{self, Leaf, Parsed, Topics};
use porchlight_protocol::units::Dur;

/// The per-box topics watched.
pub const KINDS: [Leaf; 5] = [
    Leaf::Status,
    Leaf::Heartbeat,
    Leaf::Event,
    Leaf::Reply,
    Leaf::Audit,
];

/// Arguments of `watch`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The gateway id, or `+` for every box.
    #[arg(long, default_value = "+")]
    pub gw: String,
    /// Stop after this many messages.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after this long.
    #[arg(long = "for")]
    pub duration: Option<Dur>,
}

/// One output line for a message on `topic` under `root` (`None` if it is not a watched
/// topic).
pub fn line(
    root: &str,
    topic: &str,
    payload: &[u8],
    retained: bool,
    now_ms: i64,
) -> Option<String> {
    let Parsed::Gateway { gw, leaf } = topics::parse(root, topic)? else {
        return None;
    };
    if !KINDS.contains(&leaf) {
        return None;
    }
    let kind = leaf.as_str();
    let ts = jiff::Timestamp::from_millisecond(now_ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|_| now_ms.to_string());
    let body = match std::str::from_utf8(payload) {
        Ok(text) => text.trim_end().replace('\n', " "),
        Err(_) => format!("<{} bytes, not UTF-8>", payload.len()),
    };
    let retained = if retained { " (retained)" } else { "" };
    Some(format!("{ts} {gw} {kind}{retained} {body}"))
}

/// Subscribes and prints until `--count`, `--for`, or the connection ends.
pub async fn run(s: &Settings, args: Args) -> Result<ExitCode, CenterError> {
    if args.gw != "+" {
        check_gw(&args.gw)?;
    }
    let gw = Topics::new(&s.root, &args.gw);
    let topics: Vec<String> = KINDS.iter().map(|&k| gw.leaf(k)).collect();
    let mut conn = Connection::open(s).await?;
    conn.subscribe(&topics).await?;
    eprintln!("Watching {}", topics.join(" "));
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d.0);
    let mut n = 0u64;
    while args.count.is_none_or(|c| n < c) {
        let next = conn.next_message();
        let msg = match deadline {
            Some(d) => match tokio::time::timeout_at(d, next).await {
                Ok(m) => m?,
                Err(_) => break,
            },
            None => next.await?,
        };
        let now = jiff::Timestamp::now().as_millisecond();
        if let Some(l) = line(&s.root, &msg.topic, &msg.payload, msg.retained, now) {
            println!("{l}");
            n += 1;
        }
    }
    conn.close().await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_name_box_and_kind() {
        let l = line(
            "porchlight/v1",
            "porchlight/v1/gw/gw-1/status",
            b"{\"online\":true}",
            true,
            0,
        )
        .unwrap();
        assert_eq!(
            l,
            "1970-01-01T00:00:00.000Z gw-1 status (retained) {\"online\":true}"
        );
        assert!(line(
            "porchlight/v1",
            "porchlight/v1/gw/gw-1/live/x",
            b"",
            false,
            0
        )
        .is_none());
        assert!(line("porchlight/v1", "other/gw/gw-1/status", b"", false, 0).is_none());
        let bin = line(
            "porchlight/v1",
            "porchlight/v1/gw/g/audit",
            &[0xff],
            false,
            0,
        )
        .unwrap();
        assert!(bin.ends_with("<1 bytes, not UTF-8>"), "{bin}");
    }
}
