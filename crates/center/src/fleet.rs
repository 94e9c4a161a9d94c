//! `porchlight-center fleet`: the city's view of its boxes, joined from three sources:
//!
//! - the registry (`--dir`): gateway id, label, registered location, revoked;
//! - the retained `{root}/gw/+/status` (online or not; the last will says offline when a box
//!   vanishes, at once on a closed connection or after 1.5 × its keepalive of silence);
//! - the `{root}/gw/+/heartbeat` messages (cameras, their state and consent **modes**,
//!   storage, outbox, the audit anchor, paused), every 30 s by default.
//!
//! `--near LAT,LON --radius R` keeps exactly the registered boxes whose registered location is
//! inside the circle (great-circle distance, [`super::geo`]), with their distance; boxes
//! without a location are never inside. Unregistered ids seen on the broker are listed (as
//! `unregistered`) only without `--near`.
//!
//! Output: a table, or with `--json` one JSON array. `--wait D` listens for D then prints once
//! (status is retained and arrives at once; cameras need a heartbeat, so wait ≥ one heartbeat
//! interval for the full picture). `--follow` prints again every `--every` until stopped.
//! `--stats` adds one line per print on stderr: heartbeats received, their rate, and the lag
//! (receive time − the heartbeat's `ts`), which grows when the center falls behind.
//!
//! [`Fleet`] is the pure state (no I/O), fed message by message.

use std::collections::BTreeMap;
use std::process::ExitCode;

use serde::Serialize;

use porchlight_protocol::messages::{CameraState, Heartbeat, SharingMode, Status};
use porchlight_protocol::topics::{self, Leaf, Parsed};
use porchlight_protocol::units::Dur;

use super::connection::Connection;
use super::geo::{distance_m, Circle, LatLon, Radius};
use super::settings::Settings;
use super::store::{CenterDir, Registry};
use super::CenterError;

/// Arguments of `fleet`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The center's state directory (registry: labels, locations, revocations). Needed for
    /// `--near`.
    #[arg(long, env = "PORCHLIGHT_CENTER_DIR")]
    pub dir: Option<std::path::PathBuf>,
    /// Centre of the circle, `LAT,LON` in degrees (with `--radius`).
    #[arg(long, requires = "radius")]
    pub near: Option<LatLon>,
    /// Radius of the circle (`500m`, `2km`).
    #[arg(long, requires = "near")]
    pub radius: Option<Radius>,
    /// Listen this long, then print once.
    #[arg(long, default_value = "3s", conflicts_with = "follow")]
    pub wait: Dur,
    /// Keep listening and print again every `--every`.
    #[arg(long)]
    pub follow: bool,
    /// How often `--follow` prints.
    #[arg(long, default_value = "5s")]
    pub every: Dur,
    /// One JSON array (per print) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Heartbeat counts, rate and lag on stderr at every print.
    #[arg(long)]
    pub stats: bool,
}

/// What the center knows of one box.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// Last status message.
    pub status: Option<Status>,
    /// Last heartbeat.
    pub heartbeat: Option<Heartbeat>,
    /// When the last heartbeat arrived, UTC ms.
    pub heartbeat_at: Option<i64>,
}

/// Heartbeat counters and lag since the last [`Fleet::take_stats`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Heartbeats received.
    pub heartbeats: u64,
    /// Payloads that did not parse.
    pub malformed: u64,
    /// Lags (receive − `ts`), ms, sorted when taken.
    #[serde(skip)]
    pub lags: Vec<i64>,
}

/// The pure fleet state.
#[derive(Debug, Default)]
pub struct Fleet {
    /// Per gateway id.
    pub boxes: BTreeMap<String, Seen>,
    /// Counters.
    pub stats: Stats,
}

impl Fleet {
    /// Takes one message received at `now_ms`.
    pub fn apply(&mut self, root: &str, topic: &str, payload: &[u8], now_ms: i64) {
        let Some(Parsed::Gateway { gw, leaf }) = topics::parse(root, topic) else {
            return;
        };
        if !porchlight_protocol::tls::valid_gateway_id(gw) {
            return;
        }
        match leaf {
            Leaf::Status => match serde_json::from_slice::<Status>(payload) {
                Ok(s) => self.boxes.entry(gw.to_owned()).or_default().status = Some(s),
                Err(_) => self.stats.malformed += 1,
            },
            Leaf::Heartbeat => match serde_json::from_slice::<Heartbeat>(payload) {
                Ok(h) => {
                    self.stats.heartbeats += 1;
                    self.stats.lags.push(now_ms - h.ts);
                    let e = self.boxes.entry(gw.to_owned()).or_default();
                    e.heartbeat = Some(h);
                    e.heartbeat_at = Some(now_ms);
                }
                Err(_) => self.stats.malformed += 1,
            },
            _ => {}
        }
    }

    /// The counters since the last call, lags sorted.
    pub fn take_stats(&mut self) -> Stats {
        let mut s = std::mem::take(&mut self.stats);
        s.lags.sort_unstable();
        s
    }

    /// The rows to print: registered boxes (inside `circle` when given) joined with what was
    /// seen; without a circle, unregistered ids seen on the broker too.
    pub fn rows(&self, reg: &Registry, circle: Option<Circle>, now_ms: i64) -> Vec<Row> {
        let mut rows = Vec::new();
        for b in &reg.boxes {
            let distance = match (circle, b.location) {
                (Some(c), Some(loc)) if c.contains(loc) => Some(distance_m(c.center, loc)),
                (Some(_), _) => continue,
                (None, _) => None,
            };
            let mut r = Row::new(&b.gateway_id, self.boxes.get(&b.gateway_id), now_ms);
            r.registered = true;
            r.label = b.label.clone();
            r.location = b.location;
            r.distance_m = distance.map(|d| d.round());
            r.revoked = b.revoked.is_some();
            rows.push(r);
        }
        if circle.is_none() {
            // A set, not `find_box` per id: that scan made a 10,000-box print take 0.9 s.
            let known: std::collections::HashSet<&str> =
                reg.boxes.iter().map(|b| b.gateway_id.as_str()).collect();
            for (gw, seen) in &self.boxes {
                if !known.contains(gw.as_str()) {
                    rows.push(Row::new(gw, Some(seen), now_ms));
                }
            }
        }
        if circle.is_some() {
            rows.sort_by(|a, b| a.distance_m.partial_cmp(&b.distance_m).unwrap());
        }
        rows
    }
}

/// One camera in a row: what the center may ask for.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CameraRow {
    /// Camera id.
    pub id: String,
    /// Where its worker is.
    pub state: CameraState,
    /// Live mode.
    pub live: SharingMode,
    /// Clips mode.
    pub clips: SharingMode,
}

/// One box as printed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    /// Gateway id.
    pub gateway_id: String,
    /// In the registry.
    pub registered: bool,
    /// Revoked by the city.
    pub revoked: bool,
    /// Label from the claim code.
    pub label: Option<String>,
    /// Registered location.
    pub location: Option<LatLon>,
    /// Distance from the circle's centre, metres (with `--near`).
    pub distance_m: Option<f64>,
    /// From the retained status: `Some(true)` online, `Some(false)` offline, `None` never seen.
    pub online: Option<bool>,
    /// Daemon version (status or heartbeat).
    pub version: Option<String>,
    /// Sharing paused by the resident.
    pub paused: Option<bool>,
    /// Cameras from the last heartbeat.
    pub cameras: Vec<CameraRow>,
    /// Storage used, bytes.
    pub storage_used: Option<u64>,
    /// Storage quota, bytes.
    pub storage_quota: Option<u64>,
    /// Outbox messages.
    pub outbox_messages: Option<u64>,
    /// Outbox bytes.
    pub outbox_bytes: Option<u64>,
    /// Audit anchor seq.
    pub audit_seq: Option<u64>,
    /// Audit anchor hash.
    pub audit_hash: Option<String>,
    /// Seconds since the last heartbeat arrived.
    pub heartbeat_age_s: Option<f64>,
}

impl Row {
    fn new(gw: &str, seen: Option<&Seen>, now_ms: i64) -> Row {
        let status = seen.and_then(|s| s.status.as_ref());
        let hb = seen.and_then(|s| s.heartbeat.as_ref());
        Row {
            gateway_id: gw.to_owned(),
            registered: false,
            revoked: false,
            label: None,
            location: None,
            distance_m: None,
            online: status.map(|s| s.online),
            version: hb
                .map(|h| h.version.clone())
                .or_else(|| status.and_then(|s| s.version.clone())),
            paused: hb.map(|h| h.paused),
            cameras: hb
                .map(|h| {
                    h.cameras
                        .iter()
                        .map(|c| CameraRow {
                            id: c.id.clone(),
                            state: c.state,
                            live: c.sharing.live,
                            clips: c.sharing.clips,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            storage_used: hb.map(|h| h.storage.used_bytes),
            storage_quota: hb.map(|h| h.storage.quota_bytes),
            outbox_messages: hb.map(|h| h.outbox.messages),
            outbox_bytes: hb.map(|h| h.outbox.bytes),
            audit_seq: hb.map(|h| h.audit.seq),
            audit_hash: hb.map(|h| h.audit.hash.clone()),
            heartbeat_age_s: seen
                .and_then(|s| s.heartbeat_at)
                .map(|t| ((now_ms - t) as f64 / 1000.0).max(0.0)),
        }
    }
}

fn gib(b: u64) -> String {
    format!("{:.1}G", b as f64 / (1u64 << 30) as f64)
}

/// The table.
pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<20} {:<8} {:<6} {:<13} {:<9} {:<12} {:<22} {:<6} {:<16} CAMERAS (state live/clips)\n",
        "BOX", "ONLINE", "PAUSED", "STORAGE", "OUTBOX", "AUDIT", "LABEL", "HB_AGE", "DISTANCE"
    );
    for r in rows {
        let online = match (r.revoked, r.registered, r.online) {
            (true, _, _) => "revoked",
            (_, _, Some(true)) => "online",
            (_, _, Some(false)) => "offline",
            (_, _, None) => "unseen",
        };
        let storage = match (r.storage_used, r.storage_quota) {
            (Some(u), Some(q)) => format!("{}/{}", gib(u), gib(q)),
            _ => "-".into(),
        };
        let audit = match (r.audit_seq, &r.audit_hash) {
            (Some(s), Some(h)) => format!("{s}:{}", h.get(..8).unwrap_or(h)),
            _ => "-".into(),
        };
        let cams = r
            .cameras
            .iter()
            .map(|c| format!("{}:{} {}/{}", c.id, c.state, c.live, c.clips))
            .collect::<Vec<_>>()
            .join(", ");
        let label = match (r.registered, &r.label) {
            (false, _) => "(unregistered)".to_owned(),
            (true, Some(l)) => l.clone(),
            (true, None) => "-".into(),
        };
        out.push_str(&format!(
            "{:<20} {:<8} {:<6} {:<13} {:<9} {:<12} {:<22} {:<6} {:<16} {}\n",
            r.gateway_id,
            online,
            r.paused
                .map(|p| if p { "yes" } else { "no" })
                .unwrap_or("-"),
            storage,
            r.outbox_messages
                .map(|m| m.to_string())
                .unwrap_or_else(|| "-".into()),
            audit,
            label,
            r.heartbeat_age_s
                .map(|a| format!("{a:.0}s"))
                .unwrap_or_else(|| "-".into()),
            r.distance_m
                .map(|d| format!("{d:.0}m"))
                .unwrap_or_else(|| "-".into()),
            if cams.is_empty() { "-".into() } else { cams },
        ));
    }
    out
}

/// The stats line.
pub fn stats_line(s: &Stats, secs: f64, boxes: usize) -> String {
    let pct = |p: f64| -> i64 {
        if s.lags.is_empty() {
            return 0;
        }
        let i = ((s.lags.len() as f64 - 1.0) * p).round() as usize;
        s.lags[i]
    };
    format!(
        "stats: heartbeats={} rate={:.1}/s malformed={} boxes={} lag_ms_p50={} lag_ms_p99={} lag_ms_max={}",
        s.heartbeats,
        s.heartbeats as f64 / secs.max(0.001),
        s.malformed,
        boxes,
        pct(0.5),
        pct(0.99),
        s.lags.last().copied().unwrap_or(0)
    )
}

/// Loads the registry when `--dir` is given (an empty one otherwise).
pub fn load_registry(dir: Option<&std::path::Path>) -> Result<Registry, CenterError> {
    match dir {
        Some(d) => {
            let d = CenterDir::new(d);
            d.check_initialized()?;
            d.read()
        }
        None => Ok(Registry::default()),
    }
}

/// What identifies a version of `registry.json` (it is only ever replaced by a rename).
fn registry_stamp(dir: Option<&std::path::Path>) -> Option<(std::time::SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(CenterDir::new(dir?).registry()).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// Subscribes and prints.
pub async fn run(s: &Settings, args: Args) -> Result<ExitCode, CenterError> {
    let circle = match (args.near, args.radius) {
        (Some(center), Some(r)) => {
            if args.dir.is_none() {
                return Err(CenterError::Usage(
                    "--near needs --dir (the registry holds the boxes' locations)".into(),
                ));
            }
            Some(Circle {
                center,
                radius_m: r.0,
            })
        }
        _ => None,
    };
    if args.follow && args.every.0.is_zero() {
        return Err(CenterError::Usage("--every must be more than 0s".into()));
    }
    let mut reg_stamp = registry_stamp(args.dir.as_deref());
    let mut reg = load_registry(args.dir.as_deref())?;
    let mut conn = Connection::open(s).await?;
    let filters = [
        topics::every_gateway(&s.root, Leaf::Status),
        topics::every_gateway(&s.root, Leaf::Heartbeat),
    ];
    conn.subscribe(&filters).await?;
    eprintln!("Listening to {}", filters.join(" "));
    let mut fleet = Fleet::default();
    let period = if args.follow {
        args.every.0
    } else {
        args.wait.0
    };
    let mut last = tokio::time::Instant::now();
    let mut next = last + period;
    loop {
        match tokio::time::timeout_at(next, conn.next_message()).await {
            Ok(m) => {
                let m = m?;
                let now = jiff::Timestamp::now().as_millisecond();
                fleet.apply(&s.root, &m.topic, &m.payload, now);
                continue;
            }
            Err(_) => {
                let began = std::time::Instant::now();
                let now = jiff::Timestamp::now().as_millisecond();
                if args.follow {
                    // Boxes pair while we follow: pick up new registry entries (re-parsed only
                    // when the file changed; at 10,000 boxes it is 10 MB of JSON).
                    let stamp = registry_stamp(args.dir.as_deref());
                    if stamp != reg_stamp {
                        reg = load_registry(args.dir.as_deref())?;
                        reg_stamp = stamp;
                    }
                }
                let rows = fleet.rows(&reg, circle, now);
                let mut out = if args.json {
                    let mut j = serde_json::to_string(&rows).expect("rows serialize");
                    j.push('\n');
                    j
                } else {
                    table(&rows)
                };
                if args.follow && !args.json {
                    out.push('\n');
                }
                {
                    // One write for the whole print: stdout is line-buffered even into a file.
                    use std::io::Write;
                    let mut stdout = std::io::stdout().lock();
                    let _ = stdout
                        .write_all(out.as_bytes())
                        .and_then(|_| stdout.flush());
                }
                if args.stats {
                    let st = fleet.take_stats();
                    eprintln!(
                        "{} print_ms={}",
                        stats_line(&st, last.elapsed().as_secs_f64(), fleet.boxes.len()),
                        began.elapsed().as_millis()
                    );
                }
                if !args.follow {
                    break;
                }
                last = tokio::time::Instant::now();
                next = last + period;
            }
        }
    }
    conn.close().await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::BoxRecord;

    fn rec(gw: &str, loc: Option<(f64, f64)>) -> BoxRecord {
        BoxRecord {
            gateway_id: gw.into(),
            label: Some(format!("home of {gw}")),
            location: loc.map(|(lat, lon)| LatLon { lat, lon }),
            code: "C".into(),
            key_sha256: String::new(),
            serial: "01".into(),
            serials: vec![],
            certificate: String::new(),
            enrolled: 0,
            issued: 0,
            not_after: 0,
            revoked: None,
        }
    }

    const HB: &str = r#"{"ts":1000,"seq":1,"version":"0.1.0","uptime_s":5,"paused":false,
      "cameras":[{"id":"porch","state":"streaming","codec":"h264","width":1,"height":1,"fps":1.0,
      "bitrate_bps":1,"last_frame_ts":1,"sharing":{"live":"ask","clips":"always"}}],
      "storage":{"used_bytes":10,"quota_bytes":20,"oldest_ts":null},"outbox":{"messages":3,"bytes":4},
      "audit":{"seq":7,"hash":"abcdef0123456789"},"grants_active":0}"#;

    #[test]
    fn status_and_heartbeat_join_the_registry() {
        let mut f = Fleet::default();
        let r = "porchlight/v1";
        f.apply(
            r,
            "porchlight/v1/gw/gw-a/status",
            br#"{"online":true,"ts":1,"version":"0.1.0"}"#,
            0,
        );
        f.apply(r, "porchlight/v1/gw/gw-a/heartbeat", HB.as_bytes(), 1500);
        f.apply(r, "porchlight/v1/gw/gw-x/status", br#"{"online":false}"#, 0);
        f.apply(r, "porchlight/v1/gw/gw-a/heartbeat", b"junk", 0);
        let mut reg = Registry::default();
        reg.boxes.push(rec("gw-a", Some((48.0, 11.0))));
        reg.boxes.push(rec("gw-b", None));
        let rows = f.rows(&reg, None, 3500);
        assert_eq!(rows.len(), 3);
        let a = &rows[0];
        assert_eq!(a.online, Some(true));
        assert_eq!(a.cameras[0].live, SharingMode::Ask);
        assert_eq!(a.cameras[0].clips, SharingMode::Always);
        assert_eq!((a.outbox_messages, a.audit_seq), (Some(3), Some(7)));
        assert_eq!(a.heartbeat_age_s, Some(2.0));
        assert_eq!(rows[1].online, None);
        assert!(!rows[2].registered && rows[2].online == Some(false));
        let t = table(&rows);
        assert!(t.contains("porch:streaming ask/always"), "{t}");
        assert!(t.contains("(unregistered)"), "{t}");
        let st = f.take_stats();
        assert_eq!(
            (st.heartbeats, st.malformed, st.lags.clone()),
            (1, 1, vec![500])
        );
    }

    #[test]
    fn a_circle_keeps_exactly_the_registered_boxes_inside() {
        let f = Fleet::default();
        let mut reg = Registry::default();
        reg.boxes.push(rec("in-400m", Some((48.0036, 11.0))));
        reg.boxes.push(rec("out-600m", Some((48.0054, 11.0))));
        reg.boxes.push(rec("center", Some((48.0, 11.0))));
        reg.boxes.push(rec("nowhere", None));
        let c = Circle {
            center: LatLon {
                lat: 48.0,
                lon: 11.0,
            },
            radius_m: 500.0,
        };
        let ids: Vec<_> = f
            .rows(&reg, Some(c), 0)
            .into_iter()
            .map(|r| r.gateway_id)
            .collect();
        assert_eq!(ids, vec!["center", "in-400m"]);
    }
}
