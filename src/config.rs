//! Configuration: a TOML file, every key documented in `config/porchlight.example.toml`.
//!
//! Loading has two steps. serde reads the file into [`Config`] (unknown keys are errors, every
//! key has a default so an empty file — or no file — is a working configuration). Then
//! [`Config::validate`] checks the whole thing in one pass and returns **all** problems, so a
//! resident fixing a config sees every mistake at once, and produces a [`Validated`]
//! configuration with camera URLs parsed and passwords read from their files.
//!
//! Secrets: camera passwords live in [`Secret`], whose `Debug` and `Display` print
//! `<redacted>`. A camera URL must not carry credentials (`rtsp://user:pass@host/…` is rejected):
//! URLs are shown in the CLI and logs, passwords never are.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cameras::scanner::DiscoverySettings;
use crate::ingest::spec::{
    check_rtsp_url, valid_camera_id, CameraSpec, Credentials, Record, Transport,
};
use crate::ingest::IngestConfig;
use crate::pairing::PairingConfig;
use crate::protocol::units::{ByteSize, Dur};
use crate::secret::Secret;
use crate::uplink::parse_broker;
use crate::web::WebConfig;

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the store (segment files, sled index) and the API token live.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The local control API used by the `porchlight` CLI.
    #[serde(default)]
    pub api: ApiConfig,
    /// Segment store: quota and retention.
    #[serde(default)]
    pub store: StoreConfig,
    /// RTSP ingest tuning shared by all cameras.
    #[serde(default)]
    pub ingest: IngestConfig,
    /// The resident's cameras.
    #[serde(default)]
    pub cameras: Vec<CameraConfig>,
    /// The city link (MQTT over mutual TLS). Without `broker` and the identity files here, the
    /// box has a city link only once it is paired (`[pairing]`); the other keys still tune it.
    #[serde(default)]
    pub uplink: Option<UplinkConfig>,
    /// Pairing with the city: where to enroll, and certificate renewal.
    #[serde(default)]
    pub pairing: PairingConfig,
    /// Sharing with the center: how long asks wait, how fast live feeds may go.
    #[serde(default)]
    pub sharing: SharingConfig,
    /// The resident web UI on the home network.
    #[serde(default)]
    pub web: WebConfig,
    /// Finding cameras on the LAN: at start and periodically.
    #[serde(default)]
    pub discovery: DiscoveryConfig,
}

/// `[discovery]`: the daemon's own camera discovery (ONVIF WS-Discovery and mDNS), at start and
/// every `interval`. Results stay in memory and never leave the house; they feed
/// `GET /api/v1/discovery`, `porchlight cameras add --from-discovery` and the following of
/// added cameras whose address changed (DHCP).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// Run discovery in the daemon at all.
    #[serde(default = "default_discovery_enabled")]
    pub enabled: bool,
    /// Time between two discovery runs (at least 1m: discovery never floods the network).
    #[serde(default = "default_discovery_interval")]
    pub interval: Dur,
    /// How long each run listens for answers (1s to 30s).
    #[serde(default = "default_discovery_timeout")]
    pub timeout: Dur,
    /// Send multicast probes (WS-Discovery, mDNS) on the interfaces. `false`: only the unicast
    /// `hosts` and `ranges`.
    #[serde(default = "default_discovery_enabled")]
    pub multicast: bool,
    /// Only these interfaces (empty: every up, multicast-capable IPv4 interface).
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// Addresses also probed by unicast (cameras on networks that drop multicast).
    #[serde(default)]
    pub hosts: Vec<std::net::IpAddr>,
    /// Private ranges (at most a /22 each) probed host by host, paced, e.g. "192.168.1.0/24".
    #[serde(default)]
    pub ranges: Vec<String>,
}

fn default_discovery_enabled() -> bool {
    true
}
fn default_discovery_interval() -> Dur {
    Dur(Duration::from_secs(600))
}
fn default_discovery_timeout() -> Dur {
    Dur(Duration::from_secs(3))
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            enabled: default_discovery_enabled(),
            interval: default_discovery_interval(),
            timeout: default_discovery_timeout(),
            multicast: default_discovery_enabled(),
            interfaces: Vec::new(),
            hosts: Vec::new(),
            ranges: Vec::new(),
        }
    }
}

/// `[sharing]`: consent-enforced sharing. The rules themselves are the resident's, set with
/// `porchlight consent set` (kept in the store, not in this file).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharingConfig {
    /// How long an `ask` request waits for the resident before it expires.
    #[serde(default = "default_ask_timeout")]
    pub ask_timeout: Dur,
    /// Bitrate cap of one live feed, kbit/s: a slow uplink degrades (keyframes only) rather
    /// than stalls.
    #[serde(default = "default_live_max_kbps")]
    pub live_max_kbps: u64,
    /// Requests that fail before their signature verifies (junk, too large, unsigned) are
    /// written to the audit log as one summary per this period, not one entry each.
    #[serde(default = "default_rejected_summary")]
    pub rejected_summary: Dur,
}

fn default_ask_timeout() -> Dur {
    Dur(Duration::from_secs(600))
}
fn default_rejected_summary() -> Dur {
    Dur(Duration::from_secs(60))
}
fn default_live_max_kbps() -> u64 {
    8_000
}

impl Default for SharingConfig {
    fn default() -> Self {
        SharingConfig {
            ask_timeout: default_ask_timeout(),
            live_max_kbps: default_live_max_kbps(),
            rejected_summary: default_rejected_summary(),
        }
    }
}

/// `[uplink]`: the city broker and the box's identity. See `docs/protocol.md`. The four
/// identity keys (`broker`, `ca_file`, `cert_file`, `key_file`) come together or not at all:
/// without them the identity comes from pairing and the rest of this table tunes that link.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// `mqtts://host[:port]` (port 8883 by default). Plaintext `mqtt://` is refused.
    #[serde(default)]
    pub broker: Option<String>,
    /// The city CA (PEM): the only trust anchor; no system or web PKI roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The box's certificate (PEM); its CN is the gateway id.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The box's private key (PEM); must be mode 0600.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Root of every topic.
    #[serde(default = "default_topic_root")]
    pub topic_root: String,
    /// Time between heartbeats.
    #[serde(default = "default_heartbeat_interval")]
    pub heartbeat_interval: Dur,
    /// MQTT keepalive: the broker declares the box gone (and publishes the last will) after
    /// 1.5x this without traffic.
    #[serde(default = "default_keepalive")]
    pub keepalive: Dur,
    /// Time allowed for TCP, TLS and CONNECT (raised automatically to cover sending the largest
    /// packet at 32 KiB/s).
    #[serde(default = "default_uplink_connect_timeout")]
    pub connect_timeout: Dur,
    /// First reconnect delay; doubles on each failure.
    #[serde(default = "default_backoff_initial")]
    pub backoff_initial: Dur,
    /// Cap on the reconnect delay (plus up to 25 % jitter).
    #[serde(default = "default_backoff_max")]
    pub backoff_max: Dur,
    /// Largest MQTT packet sent or accepted; larger messages are refused locally.
    #[serde(default = "default_max_packet_size")]
    pub max_packet_size: ByteSize,
    /// Most bytes the durable outbox holds.
    #[serde(default = "default_outbox_limit")]
    pub outbox_limit: ByteSize,
    /// `reject_new` (keep what is queued, refuse new messages) or `drop_oldest`.
    #[serde(default)]
    pub outbox_when_full: crate::uplink::outbox::WhenFull,
    /// How long a graceful shutdown may spend sending what is queued.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: Dur,
    /// The center's Ed25519 public key (PEM, as `openssl pkey -pubout` writes it) that signs
    /// police requests. Without it every request is rejected (`no_request_key`).
    #[serde(default)]
    pub center_request_key_file: Option<PathBuf>,
}

/// `[api]`: the daemon's local control API.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address of the control API; loopback only (127.0.0.0/8 or ::1). It requires the token
    /// in `{data_dir}/api.token` on every request, and that token travels in plain HTTP: a
    /// non-loopback address is refused. The resident's remote access is the web UI.
    #[serde(default = "default_api_listen")]
    pub listen: SocketAddr,
}

/// `[store]`: how much video is kept.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Upper bound on the bytes of segment files; the oldest segments are evicted first.
    #[serde(default = "default_quota")]
    pub quota: ByteSize,
    /// Segments older than this are deleted even when the quota is not reached.
    #[serde(default = "default_retention")]
    pub retention: Dur,
    /// Memory sled may use for its page cache (its own default is 1 GiB).
    #[serde(default = "default_cache_capacity")]
    pub index_cache: ByteSize,
}

/// `[[cameras]]`: one camera.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Stable id, `[A-Za-z0-9_-]{1,32}`; used in the CLI, file names and (later) requests.
    pub id: String,
    /// Name shown to the resident; defaults to the id.
    #[serde(default)]
    pub name: Option<String>,
    /// Main stream, `rtsp://host[:port]/path` (or `rtsps://`), without credentials.
    pub url: String,
    /// Optional lower-bitrate substream, same form as `url`.
    #[serde(default)]
    pub substream_url: Option<String>,
    /// RTSP user name (digest or basic auth, as the camera asks).
    #[serde(default)]
    pub username: Option<String>,
    /// RTSP password. Prefer `password_file`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// File holding the RTSP password (trailing newline ignored); should be mode 0600.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Which stream is recorded: `main`, `sub` or `off`.
    #[serde(default)]
    pub record: Record,
    /// Ingest and store the camera's AAC audio track, if it has one.
    #[serde(default)]
    pub audio: bool,
    /// `tcp` (default) or `udp`.
    #[serde(default)]
    pub transport: Transport,
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys or wrong types.
    #[error("config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's description, with line and column.
        message: String,
    },
    /// The values are inconsistent; every problem is listed.
    #[error("config has {} problem(s):\n  - {}", .0.len(), .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// A configuration that passed validation.
#[derive(Clone, Debug)]
pub struct Validated {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Control API address.
    pub api_listen: SocketAddr,
    /// Store quota in bytes.
    pub quota_bytes: u64,
    /// Store retention.
    pub retention: Duration,
    /// sled page cache bytes.
    pub index_cache_bytes: u64,
    /// Ingest tuning.
    pub ingest: IngestConfig,
    /// Cameras.
    pub cameras: Vec<CameraSpec>,
    /// The city link, when its identity is configured in `[uplink]` (not by pairing).
    pub uplink: Option<crate::uplink::UplinkSettings>,
    /// `[uplink]`'s tunables for a link whose identity comes from pairing (host, port and
    /// files are filled in from `{data_dir}/identity/`).
    pub uplink_tunables: crate::uplink::UplinkSettings,
    /// Pairing settings.
    pub pairing: PairingConfig,
    /// The center's request key (PEM text), when configured.
    pub center_request_key: Option<String>,
    /// Sharing tunables.
    pub sharing: crate::sharing::SharingOptions,
    /// The resident web UI; `None` when `web.enabled = false`.
    pub web: Option<WebConfig>,
    /// The daemon's camera discovery.
    pub discovery: DiscoverySettings,
}

fn default_data_dir() -> PathBuf {
    // systemd's StateDirectory= sets STATE_DIRECTORY; elsewhere a folder next to the user.
    std::env::var_os("STATE_DIRECTORY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("porchlight-data"))
}
fn default_api_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7878))
}
fn default_quota() -> ByteSize {
    ByteSize(4 << 30)
}
fn default_retention() -> Dur {
    Dur(Duration::from_secs(7 * 86_400))
}
fn default_cache_capacity() -> ByteSize {
    ByteSize(16 << 20)
}
fn default_backoff_initial() -> Dur {
    Dur(Duration::from_secs(1))
}
fn default_backoff_max() -> Dur {
    Dur(Duration::from_secs(60))
}
fn default_topic_root() -> String {
    "porchlight/v1".to_owned()
}
fn default_heartbeat_interval() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_keepalive() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_uplink_connect_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}
fn default_max_packet_size() -> ByteSize {
    ByteSize(1 << 20)
}
fn default_outbox_limit() -> ByteSize {
    ByteSize(64 << 20)
}
fn default_drain_timeout() -> Dur {
    Dur(Duration::from_secs(5))
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: default_api_listen(),
        }
    }
}
impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            quota: default_quota(),
            retention: default_retention(),
            index_cache: default_cache_capacity(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: default_data_dir(),
            api: ApiConfig::default(),
            store: StoreConfig::default(),
            ingest: IngestConfig::default(),
            cameras: Vec::new(),
            uplink: None,
            pairing: PairingConfig::default(),
            sharing: SharingConfig::default(),
            web: WebConfig::default(),
            discovery: DiscoveryConfig::default(),
        }
    }
}

impl Config {
    /// Reads and parses a config file (no validation yet).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses config text.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Loads `path` if given, else the embedded defaults.
    pub fn load_or_default(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(p) => Config::load(p),
            None => Ok(Config::default()),
        }
    }

    /// Checks everything and returns all problems at once.
    pub fn validate(&self) -> Result<Validated, ConfigError> {
        let mut problems = Vec::new();
        if self.store.quota.0 < (1 << 20) {
            problems.push(format!(
                "store.quota {} is too small: at least 1 MiB is needed to hold a few segments",
                self.store.quota
            ));
        }
        if let Some(total) = filesystem_size(&self.data_dir) {
            if self.store.quota.0 > total {
                problems.push(format!(
                    "store.quota {} is larger than the disk holding {} ({})",
                    self.store.quota,
                    self.data_dir.display(),
                    ByteSize(total)
                ));
            }
        }
        if self.store.retention.0 < Duration::from_secs(60) {
            problems.push(format!(
                "store.retention {} is too short: at least 1m",
                self.store.retention
            ));
        }
        if self.store.index_cache.0 < (1 << 20) {
            problems.push("store.index_cache must be at least 1 MiB".to_owned());
        }
        let ing = &self.ingest;
        if ing.read_timeout.0 < Duration::from_secs(1) {
            problems.push("ingest.read_timeout must be at least 1s".to_owned());
        }
        if ing.connect_timeout.0 < Duration::from_secs(1) {
            problems.push("ingest.connect_timeout must be at least 1s".to_owned());
        }
        if ing.backoff_initial.0 < Duration::from_millis(100) {
            problems.push("ingest.backoff_initial must be at least 100ms".to_owned());
        }
        if ing.backoff_max.0 < ing.backoff_initial.0 {
            problems.push(format!(
                "ingest.backoff_max {} is less than ingest.backoff_initial {}",
                ing.backoff_max, ing.backoff_initial
            ));
        }

        let mut cameras = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, cam) in self.cameras.iter().enumerate() {
            let who = if cam.id.is_empty() {
                format!("cameras[{i}]")
            } else {
                format!("camera {:?}", cam.id)
            };
            let before = problems.len();
            if !valid_camera_id(&cam.id) {
                problems.push(format!(
                    "{who}: id must be 1-32 characters of A-Z, a-z, 0-9, '_' or '-'"
                ));
            } else if !seen.insert(cam.id.clone()) {
                problems.push(format!("{who}: id is used by another camera"));
            }
            let url = check_rtsp_url(&who, "url", &cam.url, &mut problems);
            let sub = cam
                .substream_url
                .as_deref()
                .and_then(|u| check_rtsp_url(&who, "substream_url", u, &mut problems));
            if cam.record == Record::Sub && cam.substream_url.is_none() {
                problems.push(format!("{who}: record = \"sub\" needs a substream_url"));
            }
            let password = match (&cam.password, &cam.password_file) {
                (Some(_), Some(_)) => {
                    problems.push(format!("{who}: set password or password_file, not both"));
                    None
                }
                (Some(p), None) => Some(p.clone()),
                (None, Some(path)) => match std::fs::read_to_string(path) {
                    Ok(text) => Some(Secret::new(text.trim_end_matches(['\r', '\n']))),
                    Err(e) => {
                        problems.push(format!(
                            "{who}: cannot read password_file {}: {e}",
                            path.display()
                        ));
                        None
                    }
                },
                (None, None) => None,
            };
            let credentials = match (&cam.username, password) {
                (Some(u), p) => Some(Credentials {
                    username: u.clone(),
                    password: p.unwrap_or_else(|| Secret::new("")),
                }),
                (None, Some(_)) => {
                    problems.push(format!("{who}: a password is set but no username"));
                    None
                }
                (None, None) => None,
            };
            if problems.len() == before {
                if let Some(url) = url {
                    cameras.push(CameraSpec {
                        id: cam.id.clone(),
                        name: cam.name.clone().unwrap_or_else(|| cam.id.clone()),
                        url,
                        substream_url: sub,
                        credentials,
                        record: cam.record,
                        audio: cam.audio,
                        transport: cam.transport,
                    });
                }
            }
        }

        let (uplink, uplink_tunables) = match &self.uplink {
            Some(u) => check_uplink(u, &mut problems),
            None => (
                None,
                crate::uplink::UplinkSettings::new(
                    "",
                    8883,
                    PathBuf::new(),
                    PathBuf::new(),
                    PathBuf::new(),
                ),
            ),
        };
        check_pairing(&self.pairing, &mut problems);
        let center_request_key = self
            .uplink
            .as_ref()
            .and_then(|u| u.center_request_key_file.as_ref())
            .and_then(|path| match std::fs::read_to_string(path) {
                Ok(pem) => match crate::sharing::request::public_key_from_pem(&pem) {
                    Ok(_) => Some(pem),
                    Err(e) => {
                        problems.push(format!(
                            "uplink.center_request_key_file {}: not an Ed25519 public key: {e}",
                            path.display()
                        ));
                        None
                    }
                },
                Err(e) => {
                    problems.push(format!(
                        "uplink.center_request_key_file {}: {e}",
                        path.display()
                    ));
                    None
                }
            });
        if self.sharing.ask_timeout.0 < Duration::from_secs(10) {
            problems.push("sharing.ask_timeout must be at least 10s".to_owned());
        }
        if !self.api.listen.ip().is_loopback() {
            problems.push(format!(
                "api.listen {} is not a loopback address: the control API's token would cross the \
                 network in plain HTTP; use 127.0.0.1:PORT (the web UI serves the LAN)",
                self.api.listen
            ));
        }
        if self.sharing.rejected_summary.0 < Duration::from_secs(1) {
            problems.push("sharing.rejected_summary must be at least 1s".to_owned());
        }
        if self.sharing.live_max_kbps < 64 {
            problems.push("sharing.live_max_kbps must be at least 64".to_owned());
        }
        if self.web.session_idle.0 < Duration::from_secs(60) {
            problems.push("web.session_idle must be at least 1m".to_owned());
        }
        if self.web.session_max.0 < self.web.session_idle.0 {
            problems.push(format!(
                "web.session_max {} is less than web.session_idle {}",
                self.web.session_max, self.web.session_idle
            ));
        }

        for name in &self.web.hosts {
            if let Err(e) = crate::api::hosts::check_host_name(name) {
                problems.push(format!("web.hosts: {e}"));
            }
        }
        let discovery = self.discovery.check(&mut problems);

        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        Ok(Validated {
            discovery,
            data_dir: self.data_dir.clone(),
            api_listen: self.api.listen,
            quota_bytes: self.store.quota.0,
            retention: self.store.retention.0,
            index_cache_bytes: self.store.index_cache.0,
            ingest: self.ingest.clone(),
            cameras,
            uplink,
            uplink_tunables,
            pairing: self.pairing.clone(),
            center_request_key,
            sharing: crate::sharing::SharingOptions {
                ask_timeout: self.sharing.ask_timeout.0,
                live_max_bitrate: self.sharing.live_max_kbps.saturating_mul(1000),
                clock: crate::clock::Clock::system(),
                unverified_summary_every: self.sharing.rejected_summary.0,
                reject_issued_before: None,
            },
            web: self.web.enabled.then(|| self.web.clone()),
        })
    }
}

impl DiscoveryConfig {
    /// Checks `[discovery]`, adding every problem.
    fn check(&self, problems: &mut Vec<String>) -> DiscoverySettings {
        if self.interval.0 < Duration::from_secs(60) {
            problems.push(format!(
                "discovery.interval {} is too short: at least 1m (discovery must not flood the network)",
                self.interval
            ));
        }
        if self.timeout.0 < Duration::from_secs(1) || self.timeout.0 > Duration::from_secs(30) {
            problems.push(format!(
                "discovery.timeout {} must be between 1s and 30s",
                self.timeout
            ));
        }
        if self.hosts.len() > 64 {
            problems.push("discovery.hosts lists more than 64 addresses; use ranges".to_owned());
        }
        let mut ranges = Vec::new();
        for r in &self.ranges {
            match r.parse::<crate::discovery::range::Range>() {
                Ok(r) => ranges.push(r),
                Err(e) => problems.push(format!("discovery.ranges: {e}")),
            }
        }
        if ranges.len() > 4 {
            problems.push("discovery.ranges lists more than 4 ranges".to_owned());
        }
        if self.enabled && !self.multicast && self.hosts.is_empty() && ranges.is_empty() {
            problems.push(
                "discovery.multicast = false needs discovery.hosts or discovery.ranges (or set discovery.enabled = false)"
                    .to_owned(),
            );
        }
        DiscoverySettings {
            enabled: self.enabled,
            interval: self.interval.0,
            timeout: self.timeout.0,
            options: crate::discovery::DiscoverOptions {
                timeout: self.timeout.0,
                hosts: self.hosts.clone(),
                interfaces: self.interfaces.clone(),
                include_loopback: false,
                wsd: true,
                mdns: true,
                multicast: self.multicast,
                ranges,
            },
        }
    }
}

/// Checks `[pairing]`, adding every problem.
fn check_pairing(p: &PairingConfig, problems: &mut Vec<String>) {
    if let Some(b) = &p.broker {
        if let Err(e) = parse_broker("pairing.broker", b) {
            problems.push(e);
        }
    }
    if let Some(ca) = &p.ca_file {
        if let Err(e) = std::fs::metadata(ca) {
            problems.push(format!("pairing.ca_file {}: {e}", ca.display()));
        }
    }
    if !valid_topic_root(&p.topic_root) {
        problems.push(format!(
            "pairing.topic_root {:?} must be non-empty, without wildcards (+ #) or leading/trailing '/'",
            p.topic_root
        ));
    }
    if p.timeout.0 < Duration::from_secs(1) {
        problems.push("pairing.timeout must be at least 1s".to_owned());
    }
}

use crate::protocol::topics::valid_root as valid_topic_root;

/// Checks `[uplink]`, adding every problem; returns the settings of a configured identity (when
/// the four identity keys are there and there is no problem) and the tunables for a paired one.
fn check_uplink(
    u: &UplinkConfig,
    problems: &mut Vec<String>,
) -> (
    Option<crate::uplink::UplinkSettings>,
    crate::uplink::UplinkSettings,
) {
    use crate::protocol::tls;
    let before = problems.len();
    let mut host_port = None;
    let identity = match (&u.broker, &u.ca_file, &u.cert_file, &u.key_file) {
        (Some(broker), Some(ca_file), Some(cert_file), Some(key_file)) => {
            match parse_broker("uplink.broker", broker) {
                Ok(hp) => host_port = Some(hp),
                Err(e) => problems.push(e),
            }
            if let Err(e) = std::fs::metadata(ca_file) {
                problems.push(format!("uplink.ca_file {}: {e}", ca_file.display()));
            }
            if let Err(e) = tls::gateway_id(cert_file) {
                problems.push(format!("uplink: {e}"));
            }
            if let Err(e) = tls::check_key_mode(key_file) {
                problems.push(format!("uplink: {e}"));
            }
            Some((ca_file.clone(), cert_file.clone(), key_file.clone()))
        }
        (None, None, None, None) => None,
        _ => {
            problems.push(
                "uplink: broker, ca_file, cert_file and key_file go together (a configured identity) \
                 or are all left out (the identity comes from pairing)"
                    .to_owned(),
            );
            None
        }
    };
    let root = &u.topic_root;
    if !valid_topic_root(root) {
        problems.push(format!(
            "uplink.topic_root {root:?} must be non-empty, without wildcards (+ #) or leading/trailing '/'"
        ));
    }
    if u.heartbeat_interval.0 < Duration::from_secs(1) {
        problems.push("uplink.heartbeat_interval must be at least 1s".to_owned());
    }
    if u.keepalive.0 < Duration::from_secs(5) || u.keepalive.0 > Duration::from_secs(65_535) {
        problems.push("uplink.keepalive must be between 5s and 65535s".to_owned());
    }
    if u.connect_timeout.0 < Duration::from_secs(1) {
        problems.push("uplink.connect_timeout must be at least 1s".to_owned());
    }
    if u.backoff_initial.0 < Duration::from_millis(100) {
        problems.push("uplink.backoff_initial must be at least 100ms".to_owned());
    }
    if u.backoff_max.0 < u.backoff_initial.0 {
        problems.push(format!(
            "uplink.backoff_max {} is less than uplink.backoff_initial {}",
            u.backoff_max, u.backoff_initial
        ));
    }
    if u.max_packet_size.0 < 4096 || u.max_packet_size.0 > 256 << 20 {
        problems.push("uplink.max_packet_size must be between 4 KiB and 256 MiB".to_owned());
    }
    if u.outbox_limit.0 < u.max_packet_size.0 {
        problems.push(format!(
            "uplink.outbox_limit {} is smaller than uplink.max_packet_size {}",
            u.outbox_limit, u.max_packet_size
        ));
    }
    let (host, port) = host_port.unwrap_or_default();
    let (ca_file, cert_file, key_file) = identity.clone().unwrap_or_default();
    let settings = crate::uplink::UplinkSettings {
        host,
        port,
        ca_file,
        cert_file,
        key_file,
        topic_root: u.topic_root.clone(),
        heartbeat_interval: u.heartbeat_interval.0,
        keepalive: u.keepalive.0,
        connect_timeout: u.connect_timeout.0,
        backoff_initial: u.backoff_initial.0,
        backoff_max: u.backoff_max.0,
        max_packet_size: u.max_packet_size.0 as usize,
        outbox_limit: u.outbox_limit.0,
        when_full: u.outbox_when_full,
        drain_timeout: u.drain_timeout.0,
    };
    let configured = (identity.is_some() && problems.len() == before).then(|| settings.clone());
    (configured, settings)
}

/// Total size of the filesystem holding `path` (or its nearest existing ancestor).
fn filesystem_size(path: &Path) -> Option<u64> {
    let mut p = path;
    loop {
        if p.as_os_str().is_empty() {
            p = Path::new(".");
        }
        if p.exists() {
            break;
        }
        p = p.parent()?;
    }
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_blocks as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(text: &str) -> Vec<String> {
        match Config::parse(text).unwrap().validate() {
            Err(ConfigError::Invalid(p)) => p,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn the_control_api_stays_on_loopback_and_urls_carry_no_query_credentials() {
        let p = invalid("[api]\nlisten = \"0.0.0.0:7878\"\n").join("\n");
        assert!(
            p.contains("api.listen 0.0.0.0:7878 is not a loopback"),
            "{p}"
        );
        let ok = Config::parse("[api]\nlisten = \"[::1]:7878\"\n").unwrap();
        assert!(ok.validate().is_ok());
        let p = invalid(
            "[[cameras]]\nid = \"c\"\nurl = \"rtsp://192.0.2.1/s?user=admin&password=hunter2\"\n",
        )
        .join("\n");
        assert!(p.contains("credential in its query string"), "{p}");
        assert!(!p.contains("hunter2"), "{p}");
    }

    #[test]
    fn empty_config_is_valid_with_defaults() {
        let v = Config::parse("").unwrap().validate().unwrap();
        assert_eq!(v.api_listen, default_api_listen());
        assert!(v.api_listen.ip().is_loopback());
        assert!(v.cameras.is_empty());
        assert_eq!(v.quota_bytes, 4 << 30);
    }

    #[test]
    fn web_section_defaults_to_the_lan_and_checks_session_times() {
        let v = Config::parse("").unwrap().validate().unwrap();
        let web = v.web.expect("the UI is on by default");
        assert_eq!(web.listen, WebConfig::default().listen);
        assert!(web.listen.ip().is_unspecified());
        let off = Config::parse("[web]\nenabled = false\n").unwrap();
        assert!(off.validate().unwrap().web.is_none());
        let p = invalid("[web]\nsession_idle = \"10s\"\nsession_max = \"5s\"\n");
        let all = p.join("\n");
        assert!(
            all.contains("web.session_idle") && all.contains("web.session_max"),
            "{all}"
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::parse("[store]\nquotta = \"1 GiB\"\n").unwrap_err();
        assert!(err.contains("quotta"), "{err}");
    }

    #[test]
    fn credentials_in_url_are_rejected_without_echoing_the_password() {
        let p = invalid(
            r#"[[cameras]]
id = "front"
url = "rtsp://admin:hunter2@192.0.2.10/stream1"
"#,
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("contains credentials"), "{p:?}");
        assert!(!p[0].contains("hunter2"), "password leaked: {p:?}");
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let p = invalid(
            r#"[store]
quota = "100 KiB"
retention = "10s"
[ingest]
backoff_initial = "10s"
backoff_max = "1s"
[[cameras]]
id = "bad id!"
url = "http://192.0.2.1/"
[[cameras]]
id = "a"
url = "rtsp://192.0.2.2/"
record = "sub"
password = "x"
password_file = "/nonexistent"
[[cameras]]
id = "a"
url = "rtsp://192.0.2.3/"
"#,
        );
        let all = p.join("\n");
        for needle in [
            "store.quota",
            "store.retention",
            "backoff_max",
            "id must be",
            "rtsp://",
            "substream_url",
            "not both",
            "used by another camera",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn password_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let text = format!(
            "[[cameras]]\nid = \"c1\"\nurl = \"rtsp://127.0.0.1:8554/x\"\nusername = \"u\"\npassword_file = {:?}\n",
            pw
        );
        let v = Config::parse(&text).unwrap().validate().unwrap();
        let creds = v.cameras[0].credentials.as_ref().unwrap();
        assert_eq!(creds.password.expose(), "s3cret");
        assert_eq!(format!("{:?}", v.cameras[0]).matches("s3cret").count(), 0);
    }

    #[test]
    fn quota_larger_than_the_disk_is_rejected() {
        let p = invalid("[store]\nquota = \"1000000 TiB\"\n");
        assert!(p[0].contains("larger than the disk"), "{p:?}");
    }

    #[test]
    fn discovery_section_is_validated_with_every_problem() {
        let v = Config::parse("").unwrap().validate().unwrap();
        assert!(v.discovery.enabled);
        assert_eq!(v.discovery.interval, Duration::from_secs(600));
        let p = invalid(
            "[discovery]\ninterval = \"10s\"\ntimeout = \"1m\"\nmulticast = false\nranges = [\"8.8.8.0/24\", \"10.0.0.0/16\"]\n",
        )
        .join("\n");
        for needle in [
            "discovery.interval",
            "discovery.timeout",
            "not a private",
            "too wide",
            "discovery.multicast = false needs",
        ] {
            assert!(p.contains(needle), "missing {needle:?} in:\n{p}");
        }
        let v = Config::parse(
            "[discovery]\nmulticast = false\nhosts = [\"192.168.1.64\"]\nranges = [\"192.168.1.0/24\"]\n",
        )
        .unwrap()
        .validate()
        .unwrap();
        assert!(!v.discovery.options.multicast);
        assert_eq!(v.discovery.options.ranges.len(), 1);
    }

    #[test]
    fn web_hosts_must_be_dns_names() {
        let p = invalid("[web]\nhosts = [\"box.home.arpa\", \"192.168.1.5\", \"box:8080\"]\n");
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p.iter().all(|e| e.starts_with("web.hosts: ")), "{p:?}");
        let v = Config::parse("[web]\nhosts = [\"box.home.arpa\"]\n").unwrap();
        assert_eq!(v.validate().unwrap().web.unwrap().hosts, ["box.home.arpa"]);
    }

    #[test]
    fn example_config_loads_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/porchlight.example.toml");
        let cfg = Config::load(&path).unwrap();
        // The example's password_file points at a system path; validate what does not need it.
        assert!(!cfg.cameras.is_empty(), "the example should show a camera");
        let mut cfg = cfg;
        for c in &mut cfg.cameras {
            c.password_file = None;
            c.password = Some(Secret::new("x"));
        }
        cfg.data_dir = std::env::temp_dir();
        // The example's [uplink] points at provisioned files; it must parse, and is checked
        // with real files in `uplink_section_validates_with_real_files`.
        assert!(cfg.uplink.is_some(), "the example should show [uplink]");
        cfg.uplink = None;
        cfg.validate().unwrap();
    }

    fn pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "gw-7");
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        let (c, k, a) = (dir.join("gw.pem"), dir.join("gw.key"), dir.join("ca.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        std::fs::write(&a, ca.pem()).unwrap();
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
        (a, c, k)
    }

    #[test]
    fn uplink_section_validates_with_real_files() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = pki(dir.path());
        let text = format!(
            "[uplink]\nbroker = \"mqtts://broker.example:8884\"\nca_file = {ca:?}\ncert_file = {cert:?}\nkey_file = {key:?}\n"
        );
        let v = Config::parse(&text).unwrap().validate().unwrap();
        let u = v.uplink.unwrap();
        assert_eq!((u.host.as_str(), u.port), ("broker.example", 8884));
        assert_eq!(u.topic_root, "porchlight/v1");
        assert_eq!(crate::protocol::tls::gateway_id(&cert).unwrap(), "gw-7");
    }

    #[test]
    fn uplink_problems_are_all_reported() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = pki(dir.path());
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let text = format!(
            "[uplink]\nbroker = \"mqtt://broker.example\"\nca_file = {ca:?}\ncert_file = {ca:?}\nkey_file = {key:?}\ntopic_root = \"a/#\"\nheartbeat_interval = \"10ms\"\nmax_packet_size = \"1 MiB\"\noutbox_limit = \"1 KiB\"\n"
        );
        let _ = cert;
        let all = invalid(&text).join("\n");
        for needle in [
            "mqtts://",
            "not a valid gateway id",
            "chmod 600",
            "topic_root",
            "heartbeat_interval",
            "outbox_limit",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }
}
