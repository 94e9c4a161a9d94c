//! The city uplink: MQTT 3.1.1 over mutual TLS to the city's broker (wire protocol v1,
//! `docs/protocol.md`), with a retained status and last will, heartbeats, events, and a durable
//! store-and-forward [`outbox`].
//!
//! # Pieces
//!
//! - [`inbox`]: requests from the center, stored durably before their PUBACK.
//! - [`outbox`]: every QoS 1 message is written to sled and flushed before it is sent, and
//!   deleted only when the broker's PUBACK for its packet id arrives. The packet id ↔ key
//!   bookkeeping is pure and unit-tested.
//! - `mqtt` (private): the worker. One rumqttc `EventLoop` per connection: rumqttc keeps no
//!   reconnect backoff and its own replay of in-flight packets would duplicate ours, so each
//!   connection starts from a fresh client and the outbox is replayed from its oldest key. The
//!   session is persistent (`clean_session = false`, client id = gateway id) so the broker
//!   keeps the box's subscription to `request` across outages.
//!
//! Topics, payloads, PLM1 framing and the rustls client configuration (ring provider, city CA
//! only, the box's certificate; key file 0600) are the wire protocol's, shared with the center:
//! [`crate::protocol::topics`], [`crate::protocol::messages`], [`crate::protocol::framing`],
//! [`crate::protocol::tls`].
//!
//! # Use
//!
//! [`Uplink::open`] gives the worker and an [`UplinkHandle`]; [`Uplink::run`] runs until the
//! shutdown signal, then publishes the offline status, drains the outbox until
//! `drain_timeout`, and disconnects. The handle queues events ([`UplinkHandle::event`], which
//! blocks for a sled flush) and reports the link ([`UplinkHandle::status`]).

pub mod inbox;
mod mqtt;
pub mod outbox;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::clock::now_ms;

use crate::protocol::messages::{Event, EventKind, HealthReport};
use crate::protocol::tls;
use crate::protocol::topics::Topics;
use outbox::{Outbox, OutboxError, Record, WhenFull};

/// Largest number of outbox messages sent and not yet acknowledged on one connection.
pub const WINDOW: usize = 32;

/// Everything the uplink needs, from `[uplink]` in the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UplinkSettings {
    /// Broker host name (or IP) as written in `uplink.broker`; also the TLS server name.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// The city CA (PEM), the only trust anchor.
    pub ca_file: PathBuf,
    /// The box's certificate (PEM); its CN is the gateway id.
    pub cert_file: PathBuf,
    /// The box's private key (PEM, mode 0600).
    pub key_file: PathBuf,
    /// Topic root, e.g. `porchlight/v1`.
    pub topic_root: String,
    /// Time between heartbeats.
    pub heartbeat_interval: Duration,
    /// MQTT keepalive.
    pub keepalive: Duration,
    /// Time allowed for TCP + TLS + CONNECT (and for flushing one packet; see
    /// [`UplinkSettings::network_timeout`]).
    pub connect_timeout: Duration,
    /// First reconnect delay.
    pub backoff_initial: Duration,
    /// Cap on the reconnect delay.
    pub backoff_max: Duration,
    /// Largest MQTT packet sent or accepted, bytes.
    pub max_packet_size: usize,
    /// Outbox byte limit.
    pub outbox_limit: u64,
    /// Outbox policy when full.
    pub when_full: WhenFull,
    /// How long a graceful shutdown may spend draining the outbox.
    pub drain_timeout: Duration,
}

/// Slowest uplink the network timeout is sized for: 32 KiB/s (256 kbit/s, a poor DSL upstream).
pub const MIN_UPLINK_BYTES_PER_S: u64 = 32 * 1024;

impl UplinkSettings {
    /// Settings for a broker with every tunable at its default.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        ca_file: PathBuf,
        cert_file: PathBuf,
        key_file: PathBuf,
    ) -> Self {
        UplinkSettings {
            host: host.into(),
            port,
            ca_file,
            cert_file,
            key_file,
            topic_root: crate::protocol::topics::DEFAULT_ROOT.into(),
            heartbeat_interval: Duration::from_secs(30),
            keepalive: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            max_packet_size: 1 << 20,
            outbox_limit: 64 << 20,
            when_full: WhenFull::RejectNew,
            drain_timeout: Duration::from_secs(5),
        }
    }

    /// rumqttc uses one timeout for connecting and for flushing each packet, so it must cover
    /// the largest packet on the slowest link: `max(connect_timeout, max_packet_size / 32 KiB/s)`.
    pub fn network_timeout(&self) -> Duration {
        let for_packet = (self.max_packet_size as u64).div_ceil(MIN_UPLINK_BYTES_PER_S);
        self.connect_timeout.max(Duration::from_secs(for_packet))
    }
}

/// Why the uplink refused something.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// The TLS material could not be loaded.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The outbox refused or failed.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// The inbox could not be opened or written.
    #[error(transparent)]
    Inbox(#[from] inbox::InboxError),
    /// The message would exceed `uplink.max_packet_size` (rumqttc would otherwise drop the
    /// connection and retry the same packet forever).
    #[error("message to {topic} is {size} bytes as an MQTT packet, over uplink.max_packet_size {max}; refused")]
    TooLarge {
        /// Topic.
        topic: String,
        /// Packet size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// Where the link is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// No `[uplink]` configured.
    Disabled,
    /// Connecting (or waiting to retry; see `last_error`).
    Connecting,
    /// Connected; status published.
    Connected,
    /// Stopped (shutdown).
    Disconnected,
}

impl LinkState {
    /// The word used in the API and CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Disabled => "disabled",
            LinkState::Connecting => "connecting",
            LinkState::Connected => "connected",
            LinkState::Disconnected => "disconnected",
        }
    }
}

/// `GET /api/v1/uplink`: the state of the city link.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LinkStatus {
    /// State.
    pub state: LinkState,
    /// Gateway id (CN of the certificate).
    pub gateway_id: Option<String>,
    /// `host:port` of the broker.
    pub broker: Option<String>,
    /// When the state last changed, UTC ms.
    pub since_ms: Option<i64>,
    /// Last failure in plain words.
    pub last_error: Option<String>,
    /// Its category.
    pub last_error_kind: Option<LinkErrorKind>,
    /// When, UTC ms.
    pub last_error_ms: Option<i64>,
    /// Successful connections since start.
    pub connects: u64,
    /// Queued messages.
    pub outbox_messages: u64,
    /// Queued bytes.
    pub outbox_bytes: u64,
    /// Outbox byte limit.
    pub outbox_limit_bytes: u64,
    /// Outbox policy when full.
    pub outbox_when_full: WhenFull,
    /// Messages refused or dropped because the outbox was full, not yet reported.
    pub outbox_lost: u64,
    /// When the last PUBACK for an outbox message arrived, UTC ms.
    pub last_puback_ms: Option<i64>,
    /// The last event seq handed out.
    pub event_seq: u64,
}

impl LinkStatus {
    /// The status when no uplink is configured.
    pub fn disabled() -> LinkStatus {
        LinkStatus {
            state: LinkState::Disabled,
            gateway_id: None,
            broker: None,
            since_ms: None,
            last_error: None,
            last_error_kind: None,
            last_error_ms: None,
            connects: 0,
            outbox_messages: 0,
            outbox_bytes: 0,
            outbox_limit_bytes: 0,
            outbox_when_full: WhenFull::default(),
            outbox_lost: 0,
            last_puback_ms: None,
            event_seq: 0,
        }
    }
}

/// What kind of failure ended or refused a connection; the word in `porchlight uplink` and the
/// API's `last_error_kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkErrorKind {
    /// The broker's certificate does not chain to the configured city CA.
    CaMismatch,
    /// The box's certificate is expired or not yet valid.
    CertificateExpired,
    /// The broker refused the box's certificate (a TLS alert).
    CertificateRefused,
    /// The box's TLS material cannot be loaded.
    Certificate,
    /// Another TLS failure.
    Tls,
    /// The broker's ACL refused a subscription.
    Acl,
    /// The broker refused the CONNECT (identity, client id).
    NotAuthorized,
    /// The broker's name does not resolve.
    Dns,
    /// No answer in time.
    Timeout,
    /// Nothing listens at the broker's address.
    ConnectionRefused,
    /// The broker closed the connection.
    ConnectionLost,
    /// A message is larger than the broker's packet limit.
    TooLarge,
    /// Anything else.
    Other,
}

impl LinkErrorKind {
    /// The word, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkErrorKind::CaMismatch => "ca_mismatch",
            LinkErrorKind::CertificateExpired => "certificate_expired",
            LinkErrorKind::CertificateRefused => "certificate_refused",
            LinkErrorKind::Certificate => "certificate",
            LinkErrorKind::Tls => "tls",
            LinkErrorKind::Acl => "acl",
            LinkErrorKind::NotAuthorized => "not_authorized",
            LinkErrorKind::Dns => "dns",
            LinkErrorKind::Timeout => "timeout",
            LinkErrorKind::ConnectionRefused => "connection_refused",
            LinkErrorKind::ConnectionLost => "connection_lost",
            LinkErrorKind::TooLarge => "too_large",
            LinkErrorKind::Other => "other",
        }
    }
}

/// A connection failure in plain words with its category.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkError {
    /// Category.
    pub kind: LinkErrorKind,
    /// Plain words.
    pub message: String,
}

/// Parses an `mqtts://host[:port]` broker address (port 8883 by default) into host and port;
/// `key` names the setting in the error.
pub fn parse_broker(key: &str, broker: &str) -> Result<(String, u16), String> {
    let url = url::Url::parse(broker).map_err(|e| {
        format!(
            "{key} {:?} is not a URL: {e}",
            crate::secret::redact_url(broker)
        )
    })?;
    if url.scheme() != "mqtts" {
        return Err(format!(
            "{key} must start with mqtts:// (TLS); {}:// is refused: the city link is never plaintext",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{key} must not carry credentials: the box authenticates with its certificate"
        ));
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() {
        return Err(format!("{key} takes only mqtts://host[:port]"));
    }
    match url.host_str().filter(|h| !h.is_empty()) {
        None => Err(format!("{key} has no host")),
        Some(h) => {
            let h = h.trim_start_matches('[').trim_end_matches(']').to_owned();
            Ok((h, url.port().unwrap_or(8883)))
        }
    }
}

/// Supplies the daemon's part of each heartbeat (cameras, storage, audit anchor).
pub trait HealthSource: Send + Sync + 'static {
    /// A fresh report. May block briefly (it is called from a blocking thread).
    fn report(&self) -> HealthReport;
}

/// A source with no cameras and no storage (for tools and tests).
#[derive(Debug, Default)]
pub struct NoHealth;

impl HealthSource for NoHealth {
    fn report(&self) -> HealthReport {
        HealthReport::default()
    }
}

#[derive(Debug, Default)]
struct LinkInfo {
    state: Option<LinkState>,
    since_ms: Option<i64>,
    last_error: Option<LinkError>,
    last_error_ms: Option<i64>,
    connects: u64,
    last_puback_ms: Option<i64>,
}

struct Shared {
    outbox: Outbox,
    inbox: inbox::Inbox,
    live_tx: tokio::sync::mpsc::Sender<LiveMessage>,
    gate: Mutex<Option<Gate>>,
    topics: Topics,
    gateway_id: String,
    broker: String,
    max_packet_size: usize,
    link: Mutex<LinkInfo>,
    notify: tokio::sync::Notify,
    /// Asks the worker to end the connection cleanly and connect again at once (a renewed
    /// certificate is loaded by the next attempt).
    reconnect: tokio::sync::Notify,
    /// Answers to renewal CSRs (`{root}/gw/{gw}/cert`), for the pairing module.
    renewals: tokio::sync::broadcast::Sender<Vec<u8>>,
    /// Requests dropped for their size since [`UplinkHandle::take_oversized`] last asked.
    oversized: std::sync::atomic::AtomicU64,
}

/// The send-time consent check for queued messages tied to a grant.
pub type Gate = Arc<dyn Fn(&str) -> bool + Send + Sync>;

impl Shared {
    /// Whether the grant a queued message belongs to still stands. Without a gate (sharing not
    /// wired) nothing tied to a grant is sent: deny by default.
    fn grant_allows(&self, grant: &str) -> bool {
        let gate = self.gate.lock().unwrap_or_else(|p| p.into_inner()).clone();
        gate.is_some_and(|g| g(grant))
    }

    fn link<R>(&self, f: impl FnOnce(&mut LinkInfo) -> R) -> R {
        // Display data only; a poisoned lock still holds usable figures.
        let mut g = self.link.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    fn set_state(&self, state: LinkState) {
        self.link(|l| {
            if l.state != Some(state) {
                l.state = Some(state);
                l.since_ms = Some(now_ms());
            }
        })
    }

    fn set_error(&self, e: LinkError) {
        self.link(|l| {
            l.last_error = Some(e);
            l.last_error_ms = Some(now_ms());
        })
    }
}

/// Size of a QoS 1 (or QoS 0) PUBLISH packet as rumqttc encodes it.
pub fn publish_packet_size(topic_len: usize, payload_len: usize, qos1: bool) -> usize {
    let remaining = 2 + topic_len + payload_len + if qos1 { 2 } else { 0 };
    let len_len = match remaining {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    };
    1 + len_len + remaining
}

/// The producer side of the uplink: cheap to clone.
#[derive(Clone)]
pub struct UplinkHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for UplinkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UplinkHandle")
            .field("gateway_id", &self.shared.gateway_id)
            .finish_non_exhaustive()
    }
}

impl UplinkHandle {
    /// The gateway id.
    pub fn gateway_id(&self) -> &str {
        &self.shared.gateway_id
    }

    /// This gateway's topics.
    pub fn topics(&self) -> &Topics {
        &self.shared.topics
    }

    /// Queues an event (QoS 1, next per-box `seq`). Blocks for a sled flush. Returns the seq.
    pub fn event(&self, kind: EventKind) -> Result<u64, UplinkError> {
        let topic = self.shared.topics.event();
        let ts = now_ms();
        // Size check with the largest seq, so the check cannot pass for one seq and fail later.
        let probe = serde_json::to_vec(&Event {
            seq: u64::MAX,
            ts,
            kind: kind.clone(),
        })
        .expect("event serialises");
        self.check_size(&topic, probe.len() as u64)?;
        let (_, seq) = self.shared.outbox.push_event(|seq| {
            let body = serde_json::to_vec(&Event { seq, ts, kind }).expect("event serialises");
            Record::inline(topic.clone(), false, body)
        })?;
        self.shared.notify.notify_one();
        Ok(seq)
    }

    /// Queues any QoS 1 message (for later modules: replies, audit entries, clip chunks).
    /// Refuses one that would exceed `max_packet_size`. Blocks for a sled flush.
    pub fn queue(&self, record: Record) -> Result<u64, UplinkError> {
        self.check_size(&record.topic, record.payload.len())?;
        let key = self.shared.outbox.push(record)?;
        self.shared.notify.notify_one();
        Ok(key)
    }

    fn check_size(&self, topic: &str, payload_len: u64) -> Result<(), UplinkError> {
        let size = publish_packet_size(topic.len(), payload_len as usize, true);
        if size > self.shared.max_packet_size {
            return Err(UplinkError::TooLarge {
                topic: topic.to_owned(),
                size,
                max: self.shared.max_packet_size,
            });
        }
        Ok(())
    }

    /// Sets the send-time check for queued messages tied to a grant (see [`Record::grant`]).
    pub fn set_gate(&self, gate: Gate) {
        *self.shared.gate.lock().unwrap_or_else(|p| p.into_inner()) = Some(gate);
        self.shared.notify.notify_one();
    }

    /// The largest payload a QoS 1 message to `topic` may carry under `uplink.max_packet_size`.
    pub fn max_payload(&self, topic: &str) -> usize {
        // Worst case for the remaining-length field (4 bytes) keeps this exact enough.
        self.shared
            .max_packet_size
            .saturating_sub(1 + 4 + 2 + topic.len() + 2)
    }

    /// Requests dropped for being larger than any valid request
    /// ([`crate::protocol::request::MAX_REQUEST_BYTES`]) since the last call; resets the count.
    pub fn take_oversized(&self) -> u64 {
        self.shared
            .oversized
            .swap(0, std::sync::atomic::Ordering::Relaxed)
    }

    /// The durable inbox of requests from the center.
    pub fn inbox(&self) -> &inbox::Inbox {
        &self.shared.inbox
    }

    /// Ends the current connection cleanly (no last will) and connects again at once, loading
    /// the TLS material anew: how a renewed certificate takes effect. Nothing queued is lost
    /// (unacknowledged outbox messages are sent again on the new connection).
    pub fn reconnect(&self) {
        self.shared.reconnect.notify_one();
    }

    /// Answers the center publishes on `{root}/gw/{gw}/cert` (renewal), from now on.
    pub fn renewal_results(&self) -> tokio::sync::broadcast::Receiver<Vec<u8>> {
        self.shared.renewals.subscribe()
    }

    /// Files owned by queued outbox records (held clip pieces).
    pub fn owned_files(&self) -> Result<std::collections::HashSet<PathBuf>, UplinkError> {
        Ok(self.shared.outbox.owned_files()?)
    }

    /// Deletes everything queued in the outbox and the request inbox (unpairing).
    /// Returns (outbox messages, inbox requests) deleted.
    pub fn clear_queues(&self) -> Result<(u64, usize), UplinkError> {
        let out = self.shared.outbox.clear()?;
        let inb = self.shared.inbox.clear()?;
        Ok((out, inb))
    }

    /// Sends a live-feed message at QoS 0, or drops it at once (never waits).
    pub fn publish_live(&self, topic: String, payload: Vec<u8>) -> Result<(), LiveRefused> {
        let size = publish_packet_size(topic.len(), payload.len(), false);
        if size > self.shared.max_packet_size {
            return Err(LiveRefused::TooLarge {
                size,
                max: self.shared.max_packet_size,
            });
        }
        if self.shared.link(|l| l.state) != Some(LinkState::Connected) {
            return Err(LiveRefused::Down);
        }
        self.shared
            .live_tx
            .try_send(LiveMessage { topic, payload })
            .map_err(|_| LiveRefused::Busy)
    }

    /// The link as `porchlight uplink` shows it.
    pub fn status(&self) -> LinkStatus {
        let (messages, bytes, limit, policy, lost) = self
            .shared
            .outbox
            .with_state(|s| (s.messages(), s.bytes(), s.limit(), s.policy(), s.lost()));
        let event_seq = self.shared.outbox.last_event_seq().unwrap_or(0);
        self.shared.link(|l| LinkStatus {
            state: l.state.unwrap_or(LinkState::Connecting),
            gateway_id: Some(self.shared.gateway_id.clone()),
            broker: Some(self.shared.broker.clone()),
            since_ms: l.since_ms,
            last_error: l.last_error.as_ref().map(|e| e.message.clone()),
            last_error_kind: l.last_error.as_ref().map(|e| e.kind),
            last_error_ms: l.last_error_ms,
            connects: l.connects,
            outbox_messages: messages,
            outbox_bytes: bytes,
            outbox_limit_bytes: limit,
            outbox_when_full: policy,
            outbox_lost: lost,
            last_puback_ms: l.last_puback_ms,
            event_seq,
        })
    }
}

/// A QoS 0 live-feed message on its way to the broker.
#[derive(Debug)]
pub struct LiveMessage {
    /// Full topic.
    pub topic: String,
    /// PLM1-framed payload.
    pub payload: Vec<u8>,
}

/// Why a live message was not taken (it is dropped: live is QoS 0 and degrades, never stalls).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LiveRefused {
    /// The city link is down.
    #[error("the city link is down")]
    Down,
    /// The link is slower than the feed; the queue is full.
    #[error("the city link is behind; live message dropped")]
    Busy,
    /// Larger than `max_packet_size`.
    #[error("live message of {size} bytes exceeds max_packet_size {max}")]
    TooLarge {
        /// Packet size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// Live messages queued towards the broker (about a second of sub-GOP fragments at 30 fps).
pub const LIVE_QUEUE: usize = 48;

/// The uplink worker. Create with [`Uplink::open`], run with [`Uplink::run`].
pub struct Uplink {
    live_rx: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<LiveMessage>>,
    shared: Arc<Shared>,
    settings: UplinkSettings,
    health: Arc<dyn HealthSource>,
    started: Instant,
}

impl Uplink {
    /// Opens the outbox in `db` and reads the gateway id from the certificate. The TLS material
    /// is loaded again at every connection attempt, so a renewed certificate is picked up
    /// without a restart; an expired one is reported by [`UplinkHandle::status`].
    pub fn open(
        settings: UplinkSettings,
        db: &sled::Db,
        health: Arc<dyn HealthSource>,
    ) -> Result<(Uplink, UplinkHandle), UplinkError> {
        let gateway_id = tls::gateway_id(&settings.cert_file)?;
        let outbox = Outbox::open(db, settings.outbox_limit, settings.when_full)?;
        let inbox = inbox::Inbox::open(db)?;
        let (live_tx, live_rx) = tokio::sync::mpsc::channel(LIVE_QUEUE);
        let shared = Arc::new(Shared {
            outbox,
            inbox,
            live_tx,
            gate: Mutex::new(None),
            topics: Topics::new(&settings.topic_root, &gateway_id),
            broker: format!("{}:{}", settings.host, settings.port),
            gateway_id,
            max_packet_size: settings.max_packet_size,
            link: Mutex::new(LinkInfo::default()),
            notify: tokio::sync::Notify::new(),
            reconnect: tokio::sync::Notify::new(),
            renewals: tokio::sync::broadcast::channel(4).0,
            oversized: std::sync::atomic::AtomicU64::new(0),
        });
        shared.set_state(LinkState::Connecting);
        let handle = UplinkHandle {
            shared: shared.clone(),
        };
        Ok((
            Uplink {
                live_rx: tokio::sync::Mutex::new(live_rx),
                shared,
                settings,
                health,
                started: Instant::now(),
            },
            handle,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_size_matches_mqtt_encoding() {
        // 1 fixed header + 1 length byte + 2 topic length + 1 topic + 2 pkid + 3 payload.
        assert_eq!(publish_packet_size(1, 3, true), 10);
        assert_eq!(publish_packet_size(1, 3, false), 8);
        // Remaining length 128 needs two bytes.
        assert_eq!(publish_packet_size(2, 122, true), 1 + 2 + 128);
    }

    #[test]
    fn network_timeout_covers_the_largest_packet_on_a_slow_link() {
        let mut s = UplinkSettings::new("b", 8883, "a".into(), "b".into(), "c".into());
        s.connect_timeout = Duration::from_secs(10);
        s.max_packet_size = 1 << 20;
        assert_eq!(s.network_timeout(), Duration::from_secs(32));
        s.max_packet_size = 64 << 10;
        assert_eq!(s.network_timeout(), Duration::from_secs(10));
    }
}
