//! `porchlight-center receive --gw GW --request ID -o out.mp4`: reassemble a live feed or a
//! clip.
//!
//! Subscribes (QoS 1) to `{root}/gw/{gw}/live/{ID}` and `{root}/gw/{gw}/clip/{ID}`, decodes
//! each PLM1 payload ([`porchlight_protocol::framing::decode`]) and writes the bodies of kinds 1
//! (init) and 2 (fragment) to the output file **in `seq` order** as they arrive. The
//! [`Reassembler`] (pure, no I/O) holds out-of-order messages back, drops duplicates (QoS 1
//! redelivery), and gives up on a missing `seq` after [`GAP_GRACE`] (live is QoS 0: a lost
//! fragment is lost) or when more than [`MAX_BUFFERED`] messages wait behind it; skipped
//! `seq`s are reported as missing.
//!
//! It stops at the end message (kind 3) once everything before it is written (or given up),
//! or when nothing arrived for `--timeout`. For a live feed the end body is
//! `{"reason":…}`; for a clip it is the manifest `{request_id, camera, from, to, fragments,
//! bytes, sha256, signature?}`, checked against what arrived: `sha256` (lowercase hex) over
//! the concatenated bodies, `bytes` (their total length), `fragments` (the number of kind-2
//! messages), `request_id`, and no missing `seq`. The manifest's `signature` is reported as
//! present but not verified yet (docs/center.md says exactly what is checked).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::connection::Connection;
use super::settings::Settings;
use super::{check_gw, exit, CenterError};
use porchlight_protocol::framing::{self, Frame, Kind};
use porchlight_protocol::ids::valid_jti;
use porchlight_protocol::topics::Topics;
use porchlight_protocol::units::Dur;

/// How long a missing `seq` is waited for while later ones are already here.
pub const GAP_GRACE: Duration = Duration::from_millis(1000);
/// How many out-of-order messages are held back before a gap is given up at once.
pub const MAX_BUFFERED: usize = 256;

/// Arguments of `receive`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The gateway id.
    #[arg(long)]
    pub gw: String,
    /// The request id (`jti`) whose feed or clip to receive.
    #[arg(long)]
    pub request: String,
    /// The fMP4 file to write.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Give up when nothing arrived for this long.
    #[arg(long, default_value = "60s")]
    pub timeout: Dur,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// The box's certificate (PEM, as the center issued it): verify the clip manifest's
    /// signature with it (chain of custody). A clip whose signature does not verify fails.
    #[arg(long)]
    pub box_cert: Option<PathBuf>,
}

/// The end message, as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct End {
    /// Its `seq`.
    pub seq: u32,
    /// Its body (JSON).
    pub body: Vec<u8>,
}

/// Counters of one reassembly.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Messages received, duplicates included.
    pub messages: u64,
    /// Init messages written.
    pub init: u64,
    /// Fragment messages written.
    pub fragments: u64,
    /// Body bytes written (init + fragments).
    pub bytes: u64,
    /// Messages dropped as duplicates (or arriving after their `seq` was given up).
    pub duplicates: u64,
    /// Payloads that were not PLM1.
    pub malformed: u64,
    /// `seq`s given up on.
    pub missing: Vec<u32>,
}

/// Puts PLM1 messages back in `seq` order; pure (the caller writes what it releases and keeps
/// the time).
#[derive(Debug, Default)]
pub struct Reassembler {
    next: u32,
    held: BTreeMap<u32, (Kind, Vec<u8>)>,
    end: Option<End>,
    counts: Counts,
    sha: Sha256,
}

impl Reassembler {
    /// An empty reassembler expecting `seq` 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one message; returns the bodies now ready to be written, in order.
    pub fn push(&mut self, frame: Frame<'_>) -> Vec<Vec<u8>> {
        self.counts.messages += 1;
        let seen = frame.seq < self.next
            || self.held.contains_key(&frame.seq)
            || self.end.as_ref().is_some_and(|e| e.seq <= frame.seq);
        if seen {
            self.counts.duplicates += 1;
            return Vec::new();
        }
        match frame.kind {
            Kind::End => {
                self.end = Some(End {
                    seq: frame.seq,
                    body: frame.body.to_vec(),
                });
                // Anything held past the end cannot belong to this feed.
                let late = self.held.split_off(&frame.seq);
                self.counts.duplicates += late.len() as u64;
            }
            kind => {
                self.held.insert(frame.seq, (kind, frame.body.to_vec()));
            }
        }
        self.release()
    }

    fn release(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some((kind, body)) = self.held.remove(&self.next) {
            match kind {
                Kind::Init => self.counts.init += 1,
                _ => self.counts.fragments += 1,
            }
            self.counts.bytes += body.len() as u64;
            self.sha.update(&body);
            out.push(body);
            self.next += 1;
        }
        out
    }

    /// Counts a payload that is not PLM1.
    pub fn malformed(&mut self) {
        self.counts.messages += 1;
        self.counts.malformed += 1;
    }

    /// Whether a `seq` is missing while later messages (or the end) are here.
    pub fn has_gap(&self) -> bool {
        !self.held.is_empty() || self.end.as_ref().is_some_and(|e| self.next < e.seq)
    }

    /// How many messages wait behind a gap.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Gives up the missing `seq`s before the first message that is here; returns what that
    /// releases.
    pub fn skip_gap(&mut self) -> Vec<Vec<u8>> {
        let first = self
            .held
            .keys()
            .next()
            .copied()
            .or(self.end.as_ref().map(|e| e.seq));
        if let Some(first) = first {
            self.counts.missing.extend(self.next..first);
            self.next = self.next.max(first);
        }
        self.release()
    }

    /// Whether the end arrived and everything before it was written or given up.
    pub fn is_complete(&self) -> bool {
        self.end.as_ref().is_some_and(|e| self.next >= e.seq) && self.held.is_empty()
    }

    /// The end message, once received.
    pub fn end(&self) -> Option<&End> {
        self.end.as_ref()
    }

    /// The counters so far.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Lowercase hex sha256 of the bodies written so far.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha.clone().finalize())
    }
}

/// A clip manifest (the end body of a clip).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Manifest {
    /// The request id.
    pub request_id: String,
    /// The camera id.
    pub camera: String,
    /// Start of the clip as the box states it.
    pub from: serde_json::Value,
    /// End of the clip as the box states it.
    pub to: serde_json::Value,
    /// Number of fragment (kind 2) messages.
    pub fragments: u64,
    /// Total body bytes of init and fragments.
    pub bytes: u64,
    /// sha256 of the concatenated bodies, lowercase hex.
    pub sha256: String,
    /// The box's signature (not verified yet).
    #[serde(default)]
    pub signature: Option<serde_json::Value>,
}

/// What the manifest check found.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ManifestCheck {
    /// `sha256` equals the hash of what arrived.
    pub sha256_match: bool,
    /// The hash of what arrived.
    pub computed_sha256: String,
    /// `bytes` equals what arrived.
    pub bytes_match: bool,
    /// `fragments` equals the kind-2 messages written.
    pub fragments_match: bool,
    /// `request_id` is the one asked for.
    pub request_id_match: bool,
    /// No `seq` is missing.
    pub complete: bool,
    /// A `signature` is present.
    pub signature_present: bool,
    /// The signature verified with the box's certificate (`None`: no certificate given).
    pub signature_valid: Option<bool>,
}

impl ManifestCheck {
    /// Everything matches.
    pub fn ok(&self) -> bool {
        self.sha256_match
            && self.bytes_match
            && self.fragments_match
            && self.request_id_match
            && self.complete
            && self.signature_valid != Some(false)
    }
}

/// Checks `m` against what `r` reassembled for `request_id`.
pub fn check_manifest(m: &Manifest, r: &Reassembler, request_id: &str) -> ManifestCheck {
    let c = r.counts();
    let computed = r.sha256_hex();
    ManifestCheck {
        // Exact comparison: the protocol says lowercase hex, so uppercase is a mismatch.
        sha256_match: m.sha256 == computed,
        computed_sha256: computed,
        bytes_match: m.bytes == c.bytes,
        fragments_match: m.fragments == c.fragments,
        request_id_match: m.request_id == request_id,
        complete: c.missing.is_empty(),
        signature_present: m.signature.is_some(),
        signature_valid: None,
    }
}

/// Which topic the messages came on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// `live/{ID}`.
    Live,
    /// `clip/{ID}`.
    Clip,
}

#[derive(Serialize)]
struct Summary<'a> {
    request_id: &'a str,
    stream: Option<Stream>,
    out: String,
    ended: bool,
    end: Option<serde_json::Value>,
    #[serde(flatten)]
    counts: &'a Counts,
    manifest: Option<ManifestCheck>,
}

fn write_all(
    file: &mut std::fs::File,
    out: &std::path::Path,
    bodies: Vec<Vec<u8>>,
) -> Result<(), CenterError> {
    for b in bodies {
        file.write_all(&b).map_err(|source| CenterError::File {
            what: "output file",
            path: out.to_owned(),
            source,
        })?;
    }
    Ok(())
}

/// Receives into `args.out` and prints the summary.
pub async fn run(s: &Settings, args: Args) -> Result<ExitCode, CenterError> {
    check_gw(&args.gw)?;
    if !valid_jti(&args.request) {
        return Err(CenterError::Usage(format!(
            "--request {:?} must match [A-Za-z0-9_-]{{1,64}}",
            args.request
        )));
    }
    let topics = Topics::new(&s.root, &args.gw);
    let (live, clip) = (topics.live(&args.request), topics.clip(&args.request));
    let mut file = std::fs::File::create(&args.out).map_err(|source| CenterError::File {
        what: "output file",
        path: args.out.clone(),
        source,
    })?;
    let mut conn = Connection::open(s).await?;
    conn.subscribe(&[live.clone(), clip.clone()]).await?;
    eprintln!("Waiting on {live} and {clip}");

    let mut r = Reassembler::new();
    let mut stream = None;
    let mut gap_since: Option<tokio::time::Instant> = None;
    let idle = args.timeout.0;
    let mut last_rx = tokio::time::Instant::now();
    let ended = loop {
        if r.is_complete() {
            break true;
        }
        let now = tokio::time::Instant::now();
        if r.has_gap() {
            let since = *gap_since.get_or_insert(now);
            if now >= since + GAP_GRACE || r.held() > MAX_BUFFERED {
                let bodies = r.skip_gap();
                write_all(&mut file, &args.out, bodies)?;
                gap_since = None;
                continue;
            }
        } else {
            gap_since = None;
        }
        let mut deadline = last_rx + idle;
        if let Some(since) = gap_since {
            deadline = deadline.min(since + GAP_GRACE);
        }
        let msg = match tokio::time::timeout_at(deadline, conn.next_message()).await {
            Err(_) if tokio::time::Instant::now() >= last_rx + idle => break false,
            Err(_) => continue,
            Ok(m) => m?,
        };
        last_rx = tokio::time::Instant::now();
        let this = if msg.topic == live {
            Stream::Live
        } else if msg.topic == clip {
            Stream::Clip
        } else {
            continue;
        };
        if stream.is_some_and(|s| s != this) {
            tracing::warn!(topic = %msg.topic, "Messages on both the live and the clip topic; keeping the first");
            continue;
        }
        stream = Some(this);
        match framing::decode(&msg.payload) {
            Ok(frame) => {
                let bodies = r.push(frame);
                write_all(&mut file, &args.out, bodies)?;
            }
            Err(e) => {
                tracing::warn!(error = %e, topic = %msg.topic, "Not a PLM1 payload; ignored");
                r.malformed();
            }
        }
    };
    conn.close().await;
    file.sync_all().map_err(|source| CenterError::File {
        what: "output file",
        path: args.out.clone(),
        source,
    })?;
    drop(file);

    let end_json = r
        .end()
        .map(|e| serde_json::from_slice::<serde_json::Value>(&e.body));
    let manifest = match (stream, r.end()) {
        (Some(Stream::Clip), Some(e)) => Some(serde_json::from_slice::<Manifest>(&e.body)),
        _ => None,
    };
    let mut check = match &manifest {
        Some(Ok(m)) => Some(check_manifest(m, &r, &args.request)),
        _ => None,
    };
    if let (Some(k), Some(cert), Some(Ok(body))) = (&mut check, &args.box_cert, &end_json) {
        let pem = std::fs::read(cert).map_err(|source| CenterError::File {
            what: "box certificate",
            path: cert.clone(),
            source,
        })?;
        k.signature_valid = Some(porchlight_protocol::manifest::verify_body(body, &pem).is_ok());
    }
    let c = r.counts();
    if args.json {
        let summary = Summary {
            request_id: &args.request,
            stream,
            out: args.out.display().to_string(),
            ended,
            end: end_json.as_ref().and_then(|v| v.as_ref().ok().cloned()),
            counts: c,
            manifest: check.clone(),
        };
        println!(
            "{}",
            serde_json::to_string(&summary).expect("summary serialises")
        );
    } else {
        match r.end() {
            Some(e) => println!("end: {}", String::from_utf8_lossy(&e.body).trim_end()),
            None => println!("end: none (no end message)"),
        }
        let missing = if c.missing.is_empty() {
            "none".to_owned()
        } else {
            format!("{} ({:?})", c.missing.len(), c.missing)
        };
        println!(
            "messages: {} ({} init, {} fragments, {} end, {} duplicates, {} malformed), bytes: {}, missing seqs: {missing}",
            c.messages,
            c.init,
            c.fragments,
            u8::from(r.end().is_some()),
            c.duplicates,
            c.malformed,
            c.bytes,
        );
        println!("written: {}", args.out.display());
        if let Some(k) = &check {
            let word = |b: bool| if b { "match" } else { "MISMATCH" };
            println!("sha256: {} ({})", word(k.sha256_match), k.computed_sha256);
            println!(
                "manifest: bytes {}, fragments {}, request_id {}, seqs {}, signature {}",
                word(k.bytes_match),
                word(k.fragments_match),
                word(k.request_id_match),
                if k.complete { "complete" } else { "MISSING" },
                match (k.signature_valid, k.signature_present) {
                    (Some(true), _) => "VALID (box certificate)",
                    (Some(false), _) => "INVALID",
                    (None, true) => "present (not verified: give --box-cert)",
                    (None, false) => "absent",
                },
            );
        }
    }
    if !ended {
        eprintln!(
            "error: no end message: nothing arrived for {} ({} bytes written to {}, incomplete)",
            args.timeout,
            c.bytes,
            args.out.display()
        );
        return Ok(ExitCode::from(exit::TIMEOUT));
    }
    match (&manifest, &check) {
        (Some(Err(e)), _) => {
            eprintln!("error: the clip's end message is not a manifest: {e}");
            Ok(ExitCode::from(exit::INTEGRITY))
        }
        (_, Some(k)) if !k.ok() => {
            eprintln!("error: the clip does not match its manifest");
            Ok(ExitCode::from(exit::INTEGRITY))
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(kind: Kind, seq: u32, body: &[u8]) -> Vec<u8> {
        framing::encode(kind, seq, 0, body)
    }

    fn push(r: &mut Reassembler, kind: Kind, seq: u32, body: &[u8]) -> Vec<Vec<u8>> {
        let p = f(kind, seq, body);
        r.push(framing::decode(&p).unwrap())
    }

    #[test]
    fn in_order_stream_is_released_at_once_and_completes_at_end() {
        let mut r = Reassembler::new();
        assert_eq!(push(&mut r, Kind::Init, 0, b"i"), vec![b"i".to_vec()]);
        assert_eq!(push(&mut r, Kind::Fragment, 1, b"a"), vec![b"a".to_vec()]);
        assert!(!r.is_complete());
        assert!(push(&mut r, Kind::End, 2, b"{}").is_empty());
        assert!(r.is_complete() && !r.has_gap());
        let c = r.counts();
        assert_eq!((c.messages, c.init, c.fragments, c.bytes), (3, 1, 1, 2));
        assert_eq!(r.sha256_hex(), hex::encode(Sha256::digest(b"ia")));
    }

    #[test]
    fn out_of_order_messages_are_held_until_the_gap_fills() {
        let mut r = Reassembler::new();
        push(&mut r, Kind::Init, 0, b"i");
        assert!(push(&mut r, Kind::Fragment, 2, b"b").is_empty());
        assert!(push(&mut r, Kind::End, 3, b"{}").is_empty());
        assert!(r.has_gap() && !r.is_complete());
        assert_eq!(
            push(&mut r, Kind::Fragment, 1, b"a"),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        assert!(r.is_complete());
        assert!(r.counts().missing.is_empty());
    }

    #[test]
    fn duplicates_are_dropped_wherever_they_land() {
        let mut r = Reassembler::new();
        push(&mut r, Kind::Init, 0, b"i");
        push(&mut r, Kind::Fragment, 2, b"b");
        assert!(push(&mut r, Kind::Init, 0, b"i").is_empty());
        assert!(push(&mut r, Kind::Fragment, 2, b"b").is_empty());
        push(&mut r, Kind::Fragment, 1, b"a");
        push(&mut r, Kind::End, 3, b"{}");
        assert!(push(&mut r, Kind::End, 3, b"{}").is_empty());
        assert_eq!(r.counts().duplicates, 3);
        assert_eq!(r.counts().bytes, 3);
    }

    #[test]
    fn a_lost_seq_is_skipped_and_reported_missing() {
        let mut r = Reassembler::new();
        push(&mut r, Kind::Init, 0, b"i");
        push(&mut r, Kind::Fragment, 3, b"c");
        assert_eq!(r.skip_gap(), vec![b"c".to_vec()]);
        push(&mut r, Kind::End, 6, b"{}");
        assert!(r.has_gap());
        assert!(r.skip_gap().is_empty());
        assert!(r.is_complete());
        assert_eq!(r.counts().missing, vec![1, 2, 4, 5]);
        // A straggler after its seq was given up is a duplicate, not written.
        assert!(push(&mut r, Kind::Fragment, 1, b"a").is_empty());
    }

    #[test]
    fn manifest_checks_hash_bytes_fragments_id_and_gaps() {
        let mut r = Reassembler::new();
        push(&mut r, Kind::Init, 0, b"init");
        push(&mut r, Kind::Fragment, 1, b"frag");
        let good = Manifest {
            request_id: "c1".into(),
            camera: "porch".into(),
            from: 1.into(),
            to: 2.into(),
            fragments: 1,
            bytes: 8,
            sha256: hex::encode(Sha256::digest(b"initfrag")),
            signature: None,
        };
        let k = check_manifest(&good, &r, "c1");
        assert!(k.ok(), "{k:?}");
        let upper = Manifest {
            sha256: good.sha256.to_uppercase(),
            ..good.clone()
        };
        assert!(!check_manifest(&upper, &r, "c1").sha256_match);
        let counted_init = Manifest {
            fragments: 2,
            ..good.clone()
        };
        assert!(!check_manifest(&counted_init, &r, "c1").ok());
        assert!(!check_manifest(&good, &r, "other").ok());
    }
}
