//! What a camera is, once validated: its id, stream URLs (never with credentials), credentials
//! held as [`Secret`], what is recorded and how RTP travels.
//!
//! The configuration file (`[[cameras]]`), the camera registry (added at run time) and the API
//! all produce a [`CameraSpec`] through the checks here; ingest, cameras and sharing consume it.

use url::Url;

use crate::secret::{redact_url, Secret};

pub use crate::protocol::ids::valid_camera_id;

/// What goes to disk for a camera.
#[derive(Clone, Copy, Debug, Default, serde::Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Record {
    /// Record the main stream.
    #[default]
    Main,
    /// Record the substream (`substream_url`), which is kinder to the SD card.
    Sub,
    /// Record nothing; the camera is still watched and its live feed available.
    Off,
}

/// RTP transport to the camera.
#[derive(Clone, Copy, Debug, Default, serde::Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// RTP interleaved on the RTSP TCP connection (works through NAT and firewalls).
    #[default]
    Tcp,
    /// RTP over UDP (less latency, loses packets on busy Wi-Fi).
    Udp,
}

/// Credentials for one camera, ready for the RTSP client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: Secret,
}

/// A camera after validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CameraSpec {
    /// Stable id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Main stream URL (no credentials in it).
    pub url: Url,
    /// Substream URL.
    pub substream_url: Option<Url>,
    /// Credentials, when the camera needs them.
    pub credentials: Option<Credentials>,
    /// What is recorded.
    pub record: Record,
    /// Whether audio is ingested.
    pub audio: bool,
    /// RTP transport.
    pub transport: Transport,
}

impl CameraSpec {
    /// The URL recorded to disk: the substream when `record = "sub"`, else the main stream.
    pub fn recorded_url(&self) -> &Url {
        match (self.record, &self.substream_url) {
            (Record::Sub, Some(sub)) => sub,
            _ => &self.url,
        }
    }
}

/// Parses and checks an RTSP URL (scheme, no credentials, a host), adding problems.
pub fn check_rtsp_url(who: &str, key: &str, raw: &str, problems: &mut Vec<String>) -> Option<Url> {
    let url = match Url::parse(raw) {
        Ok(u) => u,
        Err(e) => {
            problems.push(format!(
                "{who}: {key} {:?} is not a URL: {e}",
                redact_url(raw)
            ));
            return None;
        }
    };
    let mut ok = true;
    if !matches!(url.scheme(), "rtsp" | "rtsps") {
        problems.push(format!(
            "{who}: {key} must start with rtsp:// or rtsps://, not {}://",
            url.scheme()
        ));
        ok = false;
    }
    if !url.username().is_empty() || url.password().is_some() {
        problems.push(format!(
            "{who}: {key} contains credentials; remove them from the URL ({}) and set \
             username and password_file instead",
            redact_url(raw)
        ));
        ok = false;
    }
    if url
        .query_pairs()
        .any(|(k, _)| crate::secret::is_credential_key(&k))
    {
        problems.push(format!(
            "{who}: {key} carries a credential in its query string ({}); remove it from the \
             URL and set username and password_file instead",
            redact_url(raw)
        ));
        ok = false;
    }
    if url.host_str().is_none_or(str::is_empty) {
        problems.push(format!("{who}: {key} has no host"));
        ok = false;
    }
    ok.then_some(url)
}
