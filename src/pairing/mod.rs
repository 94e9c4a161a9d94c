//! Pairing: the box's identity (key, certificate, city CA, the center's request key) and how
//! it gets one — a claim code, a CSR, a certificate — and renews it, without a restart.
//!
//! - [`crate::protocol::pairing`] and [`crate::protocol::topics`]: the pairing messages and
//!   topics, shared with the reference center.
//! - [`identity`]: the stored identity in `{data_dir}/identity/` (key 0600, atomic switch).
//! - [`enroll`]: the CSR, the exchange with the city's pairing listener, and the checks every
//!   answer passes (the certificate carries our key, chains to the CA, names the gateway id).
//! - [`link`]: [`link::CityLink`], which starts, renews and stops the uplink at run time and
//!   attaches sharing to it.
//!
//! Unpaired, the box works locally (ingest, buffer, export, UI) and says so in its status.

pub mod enroll;
pub mod identity;
pub mod link;

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::protocol::units::Dur;
use crate::secret::Secret;

/// `[pairing]`: enrollment with the city (`porchlight pair`, `docs/protocol.md`, "Pairing")
/// and renewal of the box's certificate. The identity pairing produces lives in
/// `{data_dir}/identity/` (private key 0600), not in this file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairingConfig {
    /// The city's pairing listener, `mqtts://host[:port]`, used when `porchlight pair` gets no
    /// `--broker` (an appliance image sets it for its city).
    #[serde(default)]
    pub broker: Option<String>,
    /// The city CA (PEM) that authenticates the pairing listener, used when `porchlight pair`
    /// gets no `--ca`. Verification is never disabled: without a CA there is no pairing.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// MQTT user name on the pairing listener. Not a secret: the broker's ACL confines it to
    /// `{topic_root}/pair/{claim code}/…` of the code the box connects with.
    #[serde(default = "default_bootstrap_username")]
    pub bootstrap_username: String,
    /// MQTT password on the pairing listener (public, like the user name).
    #[serde(default = "default_bootstrap_password")]
    pub bootstrap_password: Secret,
    /// Topic root of the pairing topics.
    #[serde(default = "default_topic_root")]
    pub topic_root: String,
    /// How long `porchlight pair` waits for the city's answer.
    #[serde(default = "default_pairing_timeout")]
    pub timeout: Dur,
    /// Renew the certificate when less than this is left of it (a new key and CSR over the
    /// box's own link; no restart, nothing queued is lost).
    #[serde(default = "default_renew_before")]
    pub renew_before: Dur,
}

fn default_bootstrap_username() -> String {
    crate::protocol::pairing::BOOTSTRAP_USERNAME.to_owned()
}
fn default_bootstrap_password() -> Secret {
    Secret::new(crate::protocol::pairing::BOOTSTRAP_PASSWORD)
}
fn default_pairing_timeout() -> Dur {
    Dur(Duration::from_secs(60))
}
fn default_renew_before() -> Dur {
    Dur(Duration::from_secs(30 * 86_400))
}

impl Default for PairingConfig {
    fn default() -> Self {
        PairingConfig {
            broker: None,
            ca_file: None,
            bootstrap_username: default_bootstrap_username(),
            bootstrap_password: default_bootstrap_password(),
            topic_root: default_topic_root(),
            timeout: default_pairing_timeout(),
            renew_before: default_renew_before(),
        }
    }
}

fn default_topic_root() -> String {
    crate::protocol::topics::DEFAULT_ROOT.to_owned()
}
