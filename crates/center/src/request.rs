//! `porchlight-center request live|clip|cancel`: build the claims, sign them with the
//! center's request key ([`porchlight_protocol::request::sign_request`]), publish the JWS at QoS 1
//! on `{root}/gw/{gw}/request`, print the `jti`.
//!
//! With `--wait`, the reply topic `{root}/gw/{gw}/reply` is subscribed **before** the request
//! is published (a fast box could otherwise answer before we listen), and the replies for this
//! request are printed, one JSON object per line, until a final one or the end of the wait.
//!
//! Final statuses: `granted` for `live` and `cancel`; for a `clip`, `granted` is followed by
//! `completed` once the clip is sent, so the wait goes on until `completed` (or `failed`,
//! `revoked`, …). `denied`, `rejected`, `expired`, `revoked`, `completed`, `failed` are always
//! final. For a `cancel`, replies about its `target` are printed too (the box answers
//! `revoked` for the target, then `completed` for the cancel); only the cancel's own reply
//! ends the wait.
//!
//! Exit code: 0 when the last status is `granted`, `completed` or `pending` (the resident has
//! not decided yet); [`super::exit::REFUSED`] for any other status;
//! [`super::exit::TIMEOUT`] when no reply came at all.
//!
//! `--near LAT,LON --radius R --dir DIR` (live and clip) sends one request per registered,
//! unrevoked box whose registered location is inside the circle — per camera: `--camera` on
//! every box, or every camera each box reported in its heartbeats (heard during `--listen`)
//! unless its mode for the kind is `never`. Each box decides alone, as for a single request;
//! `--wait` prints every reply as `reply GW CAMERA JTI STATUS [REASON]`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::connection::Connection;
use super::fleet::{load_registry, Fleet};
use super::geo::{Circle, LatLon, Radius};
use super::settings::Settings;
use super::{check_gw, exit, CenterError};
use porchlight_protocol::ids::valid_jti;
use porchlight_protocol::messages::{Reply, ReplyStatus, SharingMode};
use porchlight_protocol::request::{sign_request, Claims, RequestKind};
use porchlight_protocol::topics::{self, Leaf, Topics};
use porchlight_protocol::units::Dur;

/// Arguments of `request`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// What to ask for.
    #[command(subcommand)]
    pub kind: Kind,
}

/// The three kinds of request.
#[derive(clap::Subcommand, Debug)]
pub enum Kind {
    /// A live feed of one camera.
    Live(LiveArgs),
    /// A clip of buffered video of one camera.
    Clip(ClipArgs),
    /// End one of the center's own requests (pending or granted).
    Cancel(CancelArgs),
}

/// Flags of every request.
#[derive(clap::Args, Debug)]
pub struct Common {
    /// The gateway id (CN of the box's certificate). Or `--near` for every box in a circle.
    #[arg(long, required_unless_present = "near", conflicts_with = "near")]
    pub gw: Option<String>,
    /// The camera id. With `--near` it may be left out: then every camera each box reported in
    /// its heartbeats during `--listen` is asked, except those whose mode for this kind is
    /// `never`.
    #[arg(long, required_unless_present = "near")]
    pub camera: Option<String>,
    /// One request per registered box whose registered location is inside the circle around
    /// `LAT,LON` (with `--radius` and `--dir`; live and clip only).
    #[arg(long, requires = "radius")]
    pub near: Option<LatLon>,
    /// The circle's radius (`500m`, `2km`).
    #[arg(long, requires = "near")]
    pub radius: Option<Radius>,
    /// The center's state directory (the registry with the boxes' locations), for `--near`.
    #[arg(long, env = "PORCHLIGHT_CENTER_DIR")]
    pub dir: Option<PathBuf>,
    /// With `--near` and no `--camera`: how long to listen to heartbeats to learn each box's
    /// cameras (boxes send one every 30 s by default).
    #[arg(long, default_value = "35s")]
    pub listen: Dur,
    /// The center's private request key (PKCS#8 PEM, mode 0600; from `keygen`). Not the TLS
    /// key, which is given before the subcommand.
    #[arg(long, visible_alias = "request-key")]
    pub key: PathBuf,
    /// How long the request stays valid (`exp` = now + ttl). Boxes refuse more than 1h by
    /// default.
    #[arg(long, default_value = "5m")]
    pub ttl: Dur,
    /// Wait this long for the box's replies and print them.
    #[arg(long)]
    pub wait: Option<Dur>,
    /// Use this request id instead of a random one (`[A-Za-z0-9_-]{1,64}`; never reuse one:
    /// the box rejects a replayed id). Lets `receive` subscribe before the request is sent.
    #[arg(long)]
    pub id: Option<String>,
    /// Case number.
    #[arg(long)]
    pub case: Option<String>,
    /// Mark the request as an emergency (boxes apply their emergency rule and always show
    /// it to the resident).
    #[arg(long)]
    pub emergency: bool,
}

/// Why and who: required for live and clip requests.
#[derive(clap::Args, Debug)]
pub struct Who {
    /// Why the video is needed (shown to the resident, kept in the audit log).
    #[arg(long)]
    pub reason: String,
    /// Who asks (officer, unit).
    #[arg(long)]
    pub requester: String,
}

/// `request live`.
#[derive(clap::Args, Debug)]
pub struct LiveArgs {
    /// Common flags.
    #[command(flatten)]
    pub common: Common,
    /// Why and who.
    #[command(flatten)]
    pub who: Who,
    /// How long a feed to ask for (the box clamps it to the resident's limit).
    #[arg(long)]
    pub duration: Dur,
}

/// `request clip`.
#[derive(clap::Args, Debug)]
pub struct ClipArgs {
    /// Common flags.
    #[command(flatten)]
    pub common: Common,
    /// Why and who.
    #[command(flatten)]
    pub who: Who,
    /// Start of the clip, RFC 3339 (e.g. `2026-03-01T12:00:00Z`).
    #[arg(long)]
    pub from: jiff::Timestamp,
    /// End of the clip (exclusive), RFC 3339.
    #[arg(long)]
    pub to: jiff::Timestamp,
}

/// `request cancel`.
#[derive(clap::Args, Debug)]
pub struct CancelArgs {
    /// Common flags (`--camera` must be the camera of the request to end).
    #[command(flatten)]
    pub common: Common,
    /// The id (`jti`) of the request to end.
    #[arg(long)]
    pub target: String,
    /// Why (optional for a cancel).
    #[arg(long)]
    pub reason: Option<String>,
    /// Who (optional for a cancel).
    #[arg(long)]
    pub requester: Option<String>,
}

/// A fresh request id: 16 random bytes, base64url (22 characters).
pub fn new_jti() -> Result<String, CenterError> {
    let bytes = super::random_bytes::<16>().map_err(|source| CenterError::File {
        what: "random source",
        path: "getrandom(2)".into(),
        source,
    })?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Builds the claims of a request at `now_s` (UTC seconds) for the `--gw`/`--camera` flags.
pub fn claims(kind: &Kind, jti: String, now_s: i64) -> Result<Claims, CenterError> {
    let c = kind.common();
    let gw = c.gw.clone().unwrap_or_default();
    let camera = c.camera.clone().unwrap_or_default();
    claims_for(kind, jti, now_s, gw, camera)
}

/// Builds the claims of a request at `now_s` for box `gw` and `camera`.
pub fn claims_for(
    kind: &Kind,
    jti: String,
    now_s: i64,
    gw: String,
    camera: String,
) -> Result<Claims, CenterError> {
    let c = kind.common();
    let ttl = c.ttl.0.as_secs() as i64;
    if ttl < 1 {
        return Err(CenterError::Usage("--ttl must be at least 1s".into()));
    }
    let mut claims = Claims {
        jti,
        iat: now_s,
        exp: now_s + ttl,
        gw,
        kind: RequestKind::Live,
        camera,
        from: None,
        to: None,
        duration_s: None,
        target: None,
        reason: None,
        case: c.case.clone(),
        requester: None,
        emergency: c.emergency,
    };
    match kind {
        Kind::Live(a) => {
            let d = a.duration.0.as_secs();
            if d < 1 {
                return Err(CenterError::Usage("--duration must be at least 1s".into()));
            }
            claims.duration_s = Some(d);
            claims.reason = Some(a.who.reason.clone());
            claims.requester = Some(a.who.requester.clone());
        }
        Kind::Clip(a) => {
            let from = a.from.as_second();
            // `to` is exclusive: round a fraction up so the asked range is covered.
            let to = a.to.as_second() + i64::from(a.to.subsec_nanosecond() > 0);
            if from >= to {
                return Err(CenterError::Usage("--from must be before --to".into()));
            }
            claims.kind = RequestKind::Clip;
            claims.from = Some(from);
            claims.to = Some(to);
            claims.reason = Some(a.who.reason.clone());
            claims.requester = Some(a.who.requester.clone());
        }
        Kind::Cancel(a) => {
            if !valid_jti(&a.target) {
                return Err(CenterError::Usage(
                    "--target must match [A-Za-z0-9_-]{1,64}".into(),
                ));
            }
            claims.kind = RequestKind::Cancel;
            claims.target = Some(a.target.clone());
            claims.reason = a.reason.clone();
            claims.requester = a.requester.clone();
        }
    }
    Ok(claims)
}

impl Kind {
    fn common(&self) -> &Common {
        match self {
            Kind::Live(a) => &a.common,
            Kind::Clip(a) => &a.common,
            Kind::Cancel(a) => &a.common,
        }
    }
}

/// Whether `status` ends the wait for a request of `kind` (`for_target`: a reply about the
/// request a cancel names).
pub fn is_final(kind: RequestKind, status: ReplyStatus, for_target: bool) -> bool {
    match status {
        _ if for_target => false,
        ReplyStatus::Pending => false,
        ReplyStatus::Granted => kind != RequestKind::Clip,
        _ => true,
    }
}

/// Whether the last status seen counts as success (exit 0).
pub fn is_success(kind: RequestKind, status: ReplyStatus, for_target: bool) -> bool {
    use ReplyStatus::*;
    if for_target {
        // A cancel did its job when its target ended.
        return matches!(status, Revoked | Expired | Completed);
    }
    let _ = kind;
    matches!(status, Granted | Completed | Pending)
}

/// Signs, publishes and (with `--wait`) follows the replies.
pub async fn run(s: &Settings, args: Args) -> Result<ExitCode, CenterError> {
    let common = args.kind.common();
    if let Some(camera) = &common.camera {
        if !porchlight_protocol::ids::valid_camera_id(camera) {
            return Err(CenterError::Usage(format!(
                "--camera {camera:?} is not a camera id (1-32 of A-Z a-z 0-9 _ -)"
            )));
        }
    }
    if common.near.is_some() {
        return run_near(s, args).await;
    }
    let gw = common.gw.clone().unwrap_or_default();
    check_gw(&gw)?;
    let jti = match &common.id {
        Some(id) if valid_jti(id) => id.clone(),
        Some(id) => {
            return Err(CenterError::Usage(format!(
                "--id {id:?} must match [A-Za-z0-9_-]{{1,64}}"
            )))
        }
        None => new_jti()?,
    };
    let key = super::keygen::load_signing_key(&common.key)?;
    let claims = claims(&args.kind, jti.clone(), jiff::Timestamp::now().as_second())?;
    let token = sign_request(&claims, &key);
    let topics = Topics::new(&s.root, &gw);

    let mut conn = Connection::open(s).await?;
    if common.wait.is_some() {
        conn.subscribe(&[topics.reply()]).await?;
    }
    conn.publish(&topics.request(), token.into_bytes()).await?;
    println!("{jti}");
    let Some(wait) = common.wait else {
        conn.close().await;
        return Ok(ExitCode::SUCCESS);
    };
    let target = match &args.kind {
        Kind::Cancel(a) => Some(a.target.as_str()),
        _ => None,
    };
    let last = follow(&mut conn, claims.kind, &jti, target, wait.0).await;
    conn.close().await;
    let code = match last? {
        Some((status, for_target)) => {
            println!("status: {status}");
            if is_success(claims.kind, status, for_target) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(exit::REFUSED)
            }
        }
        None => {
            println!("status: none");
            eprintln!(
                "error: no reply to request {jti} from gateway {} within {wait}: is the box online \
                 and subscribed? (see `porchlight-center watch --gw {}`)",
                gw, gw
            );
            ExitCode::from(exit::TIMEOUT)
        }
    };
    Ok(code)
}

/// Prints replies for `jti` (and `target`) until a final one or `wait`; returns the last
/// status and whether it was about the target.
async fn follow(
    conn: &mut Connection,
    kind: RequestKind,
    jti: &str,
    target: Option<&str>,
    wait: Duration,
) -> Result<Option<(ReplyStatus, bool)>, CenterError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut last = None;
    loop {
        let msg = match tokio::time::timeout_at(deadline, conn.next_message()).await {
            Err(_) => return Ok(last),
            Ok(m) => m?,
        };
        let Ok(reply) = serde_json::from_slice::<Reply>(&msg.payload) else {
            tracing::warn!(topic = %msg.topic, "Reply that is not reply JSON; ignored");
            continue;
        };
        let for_target = match (reply.request_id == jti, target) {
            (true, _) => false,
            (false, Some(t)) if reply.request_id == t => true,
            _ => continue,
        };
        println!("{}", String::from_utf8_lossy(&msg.payload).trim_end());
        let done = is_final(kind, reply.status, for_target);
        last = Some((reply.status, for_target));
        if done {
            return Ok(last);
        }
    }
}

/// One request of a radius query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The box.
    pub gw: String,
    /// The camera.
    pub camera: String,
    /// The request id sent.
    pub jti: String,
}

/// The cameras to ask on each box: `--camera` for all, or each box's cameras from its last
/// heartbeat whose mode for `kind` is not `never` (the rest are listed as skipped).
pub fn plan(
    gws: &[String],
    camera: Option<&str>,
    fleet: &Fleet,
    kind: RequestKind,
) -> (Vec<(String, String)>, Vec<String>) {
    let mut ask = Vec::new();
    let mut skipped = Vec::new();
    for gw in gws {
        if let Some(c) = camera {
            ask.push((gw.clone(), c.to_owned()));
            continue;
        }
        let Some(hb) = fleet.boxes.get(gw).and_then(|s| s.heartbeat.as_ref()) else {
            skipped.push(format!(
                "{gw}: no heartbeat heard (offline?); give --camera to ask anyway"
            ));
            continue;
        };
        for cam in &hb.cameras {
            let mode = match kind {
                RequestKind::Clip => cam.sharing.clips,
                _ => cam.sharing.live,
            };
            if mode == SharingMode::Never {
                skipped.push(format!("{gw} {}: the resident's rule is never", cam.id));
            } else {
                ask.push((gw.clone(), cam.id.clone()));
            }
        }
        if hb.cameras.is_empty() {
            skipped.push(format!("{gw}: no cameras"));
        }
    }
    (ask, skipped)
}

/// `request … --near LAT,LON --radius R`: one signed request per box (and camera) in the
/// circle; every box decides alone. With `--wait`, every reply is printed as
/// `GW CAMERA JTI STATUS [REASON]` until each request has a final status or the wait ends.
/// Exit 0 when every request got an answer (whatever it was: a denial is the resident's
/// right), [`exit::TIMEOUT`] when some got none.
async fn run_near(s: &Settings, args: Args) -> Result<ExitCode, CenterError> {
    let common = args.kind.common();
    if matches!(args.kind, Kind::Cancel(_)) {
        return Err(CenterError::Usage(
            "--near is for live and clip requests (a cancel names one request)".into(),
        ));
    }
    if common.id.is_some() {
        return Err(CenterError::Usage(
            "--id names one request; --near sends one per box".into(),
        ));
    }
    let (Some(center), Some(radius)) = (common.near, common.radius) else {
        return Err(CenterError::Usage("--near needs --radius".into()));
    };
    let Some(dir) = &common.dir else {
        return Err(CenterError::Usage(
            "--near needs --dir (the registry holds the boxes' locations)".into(),
        ));
    };
    let circle = Circle {
        center,
        radius_m: radius.0,
    };
    let reg = load_registry(Some(dir))?;
    let fleet_rows = Fleet::default().rows(&reg, Some(circle), 0);
    let gws: Vec<String> = fleet_rows
        .iter()
        .filter(|r| !r.revoked)
        .map(|r| r.gateway_id.clone())
        .collect();
    let key = super::keygen::load_signing_key(&common.key)?;
    let mut conn = Connection::open(s).await?;
    let kind = match args.kind {
        Kind::Clip(_) => RequestKind::Clip,
        _ => RequestKind::Live,
    };
    let mut fleet = Fleet::default();
    if common.camera.is_none() && !gws.is_empty() {
        conn.subscribe(&[topics::every_gateway(&s.root, Leaf::Heartbeat)])
            .await?;
        eprintln!(
            "Listening {} for the cameras of {} box(es) in the circle",
            common.listen,
            gws.len()
        );
        let deadline = tokio::time::Instant::now() + common.listen.0;
        while let Ok(m) = tokio::time::timeout_at(deadline, conn.next_message()).await {
            let m = m?;
            let now = jiff::Timestamp::now().as_millisecond();
            fleet.apply(&s.root, &m.topic, &m.payload, now);
            if gws
                .iter()
                .all(|g| fleet.boxes.get(g).is_some_and(|b| b.heartbeat.is_some()))
            {
                break;
            }
        }
    }
    let (ask, skipped) = plan(&gws, common.camera.as_deref(), &fleet, kind);
    for sk in &skipped {
        eprintln!("skipped: {sk}");
    }
    eprintln!(
        "{} box(es) within {radius} of {center}; sending {} request(s)",
        gws.len(),
        ask.len()
    );
    if common.wait.is_some() {
        conn.subscribe(&[topics::every_gateway(&s.root, Leaf::Reply)])
            .await?;
    }
    let now = jiff::Timestamp::now().as_second();
    let mut targets = Vec::new();
    for (gw, camera) in ask {
        let jti = new_jti()?;
        let claims = claims_for(&args.kind, jti.clone(), now, gw.clone(), camera.clone())?;
        let token = sign_request(&claims, &key);
        conn.publish(&Topics::new(&s.root, &gw).request(), token.into_bytes())
            .await?;
        println!("sent {gw} {camera} {jti}");
        targets.push(Target { gw, camera, jti });
    }
    let Some(wait) = common.wait else {
        conn.close().await;
        return Ok(ExitCode::SUCCESS);
    };
    let deadline = tokio::time::Instant::now() + wait.0;
    let mut last: std::collections::HashMap<String, ReplyStatus> = Default::default();
    let done = |last: &std::collections::HashMap<String, ReplyStatus>| {
        targets.iter().all(|t| {
            last.get(&t.jti)
                .is_some_and(|&st| is_final(kind, st, false))
        })
    };
    while !done(&last) {
        let msg = match tokio::time::timeout_at(deadline, conn.next_message()).await {
            Err(_) => break,
            Ok(m) => m?,
        };
        let Ok(reply) = serde_json::from_slice::<Reply>(&msg.payload) else {
            continue;
        };
        let Some(t) = targets.iter().find(|t| t.jti == reply.request_id) else {
            continue;
        };
        println!(
            "reply {} {} {} {}{}",
            t.gw,
            t.camera,
            t.jti,
            reply.status,
            reply.reason.map(|r| format!(" {r}")).unwrap_or_default()
        );
        last.insert(reply.request_id, reply.status);
    }
    conn.close().await;
    let unanswered: Vec<&Target> = targets
        .iter()
        .filter(|t| !last.contains_key(&t.jti))
        .collect();
    for t in &unanswered {
        println!("none {} {} {}", t.gw, t.camera, t.jti);
    }
    Ok(if unanswered.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "error: {} of {} request(s) got no reply within {wait}",
            unanswered.len(),
            targets.len()
        );
        ExitCode::from(exit::TIMEOUT)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(subcommand)]
        kind: Kind,
    }

    fn parse(args: &[&str]) -> Kind {
        let mut v = vec!["t"];
        v.extend_from_slice(args);
        T::try_parse_from(v).unwrap().kind
    }

    const BASE: [&str; 6] = ["--gw", "gw-1", "--camera", "porch", "--key", "k.pem"];

    #[test]
    fn live_claims_carry_duration_reason_and_ttl() {
        let mut a = vec!["live"];
        a.extend(BASE);
        a.extend([
            "--duration",
            "90s",
            "--reason",
            "r",
            "--requester",
            "o",
            "--ttl",
            "2m",
        ]);
        let c = claims(&parse(&a), "j".into(), 1000).unwrap();
        assert_eq!((c.iat, c.exp, c.duration_s), (1000, 1120, Some(90)));
        assert_eq!(c.kind, RequestKind::Live);
        assert_eq!((c.from, c.to, c.target), (None, None, None));
        assert_eq!(c.reason.as_deref(), Some("r"));
    }

    #[test]
    fn clip_times_are_utc_seconds_with_to_rounded_up() {
        let mut a = vec!["clip"];
        a.extend(BASE);
        a.extend([
            "--from",
            "2026-01-01T00:00:00.5Z",
            "--to",
            "2026-01-01T00:01:00.2Z",
            "--reason",
            "r",
            "--requester",
            "o",
        ]);
        let c = claims(&parse(&a), "j".into(), 1000).unwrap();
        assert_eq!((c.from, c.to), (Some(1_767_225_600), Some(1_767_225_661)));
        assert_eq!(c.duration_s, None);
    }

    #[test]
    fn clip_range_must_not_be_empty_and_cancel_target_must_be_a_jti() {
        let mut a = vec!["clip"];
        a.extend(BASE);
        a.extend([
            "--from",
            "2026-01-01T00:01:00Z",
            "--to",
            "2026-01-01T00:00:00Z",
            "--reason",
            "r",
            "--requester",
            "o",
        ]);
        assert!(claims(&parse(&a), "j".into(), 1).is_err());
        let mut a = vec!["cancel"];
        a.extend(BASE);
        a.extend(["--target", "a/b"]);
        assert!(claims(&parse(&a), "j".into(), 1).is_err());
    }

    #[test]
    fn jtis_are_fresh_and_valid() {
        let (a, b) = (new_jti().unwrap(), new_jti().unwrap());
        assert!(valid_jti(&a) && valid_jti(&b) && a != b, "{a} {b}");
    }

    #[test]
    fn radius_plan_asks_every_camera_not_set_to_never() {
        let mut fleet = Fleet::default();
        let hb = |cams: &[(&str, &str, &str)]| {
            let cams: Vec<_> = cams
                .iter()
                .map(|(id, live, clips)| {
                    serde_json::json!({"id":id,"state":"streaming","codec":null,"width":null,
                    "height":null,"fps":null,"bitrate_bps":null,"last_frame_ts":null,
                    "sharing":{"live":live,"clips":clips}})
                })
                .collect();
            serde_json::to_vec(&serde_json::json!({"ts":0,"seq":0,"version":"v","uptime_s":0,
                "paused":false,"cameras":cams,"storage":{"used_bytes":0,"quota_bytes":0,"oldest_ts":null},
                "outbox":{"messages":0,"bytes":0},"audit":{"seq":0,"hash":""},"grants_active":0}))
            .unwrap()
        };
        let r = "porchlight/v1";
        fleet.apply(
            r,
            "porchlight/v1/gw/a/heartbeat",
            &hb(&[("p", "ask", "never"), ("q", "never", "always")]),
            0,
        );
        let gws = vec!["a".to_owned(), "b".to_owned()];
        let (ask, skipped) = plan(&gws, None, &fleet, RequestKind::Live);
        assert_eq!(ask, vec![("a".to_owned(), "p".to_owned())]);
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        let (ask, _) = plan(&gws, None, &fleet, RequestKind::Clip);
        assert_eq!(ask, vec![("a".to_owned(), "q".to_owned())]);
        let (ask, skipped) = plan(&gws, Some("door"), &fleet, RequestKind::Live);
        assert_eq!(ask.len(), 2);
        assert!(skipped.is_empty());
    }

    #[test]
    fn final_and_success_statuses() {
        use RequestKind::*;
        assert!(!is_final(Live, ReplyStatus::Pending, false));
        assert!(is_final(Live, ReplyStatus::Granted, false));
        assert!(!is_final(Clip, ReplyStatus::Granted, false));
        assert!(is_final(Clip, ReplyStatus::Completed, false));
        assert!(!is_final(Cancel, ReplyStatus::Revoked, true));
        assert!(is_final(Cancel, ReplyStatus::Completed, false));
        for s in [
            ReplyStatus::Granted,
            ReplyStatus::Completed,
            ReplyStatus::Pending,
        ] {
            assert!(is_success(Live, s, false));
        }
        for s in [
            ReplyStatus::Denied,
            ReplyStatus::Rejected,
            ReplyStatus::Expired,
            ReplyStatus::Revoked,
            ReplyStatus::Failed,
        ] {
            assert!(!is_success(Live, s, false));
        }
        assert!(is_success(Cancel, ReplyStatus::Revoked, true));
    }
}
