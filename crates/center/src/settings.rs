//! Where the broker is and who the center is: flags, environment variables, or a
//! `--config center.toml` with the same keys (flags win; relative paths in the file are
//! relative to the file).
//!
//! ```toml
//! broker = "mqtts://broker.city.example:8883"
//! ca = "city-ca.pem"
//! cert = "center.pem"
//! key = "center.key"     # mode 0600
//! root = "porchlight/v1" # optional
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::CenterError;

/// Default topic root.
pub const DEFAULT_ROOT: &str = "porchlight/v1";

/// Connection flags, shared by every subcommand that talks to the broker. They go **before**
/// the subcommand (`porchlight-center --key center.key request live --key request-key.pem`):
/// `request` has a `--key` of its own, the request key.
#[derive(clap::Args, Debug, Default)]
pub struct ConnectArgs {
    /// TOML file with `broker`, `ca`, `cert`, `key` and `root` (flags override it).
    #[arg(long, env = "PORCHLIGHT_CENTER_CONFIG")]
    pub config: Option<PathBuf>,
    /// The city broker, `mqtts://host[:port]` (port 8883 by default; TLS only).
    #[arg(long, env = "PORCHLIGHT_CENTER_BROKER")]
    pub broker: Option<String>,
    /// The city CA (PEM): the only trust anchor for the broker's certificate.
    #[arg(long, env = "PORCHLIGHT_CENTER_CA")]
    pub ca: Option<PathBuf>,
    /// The center's client certificate (PEM).
    #[arg(long, env = "PORCHLIGHT_CENTER_CERT")]
    pub cert: Option<PathBuf>,
    /// The center's client key (PEM, mode 0600).
    #[arg(long, env = "PORCHLIGHT_CENTER_KEY")]
    pub key: Option<PathBuf>,
    /// Topic root (default `porchlight/v1`).
    #[arg(long, env = "PORCHLIGHT_CENTER_ROOT")]
    pub root: Option<String>,
}

/// The `--config` file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    broker: Option<String>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    root: Option<String>,
}

/// Resolved connection settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Broker host (DNS name or IP); also the TLS server name.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// The city CA.
    pub ca: PathBuf,
    /// The center's certificate.
    pub cert: PathBuf,
    /// The center's key.
    pub key: PathBuf,
    /// Topic root without a trailing `/`.
    pub root: String,
}

impl Settings {
    /// `host:port`, for messages.
    pub fn broker(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Parses `mqtts://host[:port]`; anything else (plaintext `mqtt://`, a path, user info) is
/// refused.
pub fn parse_broker(raw: &str) -> Result<(String, u16), String> {
    let url = url::Url::parse(raw).map_err(|e| format!("--broker {raw:?}: {e}"))?;
    if url.scheme() != "mqtts" {
        return Err(format!(
            "--broker must start with mqtts:// (TLS); {}:// is refused",
            url.scheme()
        ));
    }
    if !url.username().is_empty()
        || url.password().is_some()
        || !matches!(url.path(), "" | "/")
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err("--broker takes only mqtts://host[:port]".into());
    }
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_owned(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        None => return Err(format!("--broker {raw:?} has no host")),
    };
    Ok((host, url.port().unwrap_or(8883)))
}

/// Whether `root` can be a topic root: non-empty, no wildcards, no empty levels.
pub fn valid_root(root: &str) -> bool {
    !root.is_empty()
        && !root.contains(['+', '#', '\0'])
        && root.split('/').all(|level| !level.is_empty())
}

impl ConnectArgs {
    /// Merges flags over the `--config` file and checks that everything needed is there.
    /// Every missing or bad value is reported at once.
    pub fn resolve(&self) -> Result<Settings, CenterError> {
        let (file, base) = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| CenterError::Config {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                let file: FileConfig = toml::from_str(&text).map_err(|e| CenterError::Config {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                (file, path.parent().map(Path::to_owned))
            }
            None => (FileConfig::default(), None),
        };
        let from_file = |p: Option<PathBuf>| match (&base, p) {
            (Some(base), Some(p)) if p.is_relative() => Some(base.join(p)),
            (_, p) => p,
        };
        let mut problems = Vec::new();
        let mut need = |flag: &str, v: Option<PathBuf>| {
            if v.is_none() {
                problems.push(format!(
                    "--{flag} FILE is required (or `{flag}` in --config)"
                ));
            }
            v.unwrap_or_default()
        };
        let ca = need("ca", self.ca.clone().or_else(|| from_file(file.ca.clone())));
        let cert = need(
            "cert",
            self.cert.clone().or_else(|| from_file(file.cert.clone())),
        );
        let key = need(
            "key",
            self.key.clone().or_else(|| from_file(file.key.clone())),
        );
        let (host, port) = match self.broker.clone().or(file.broker) {
            Some(b) => parse_broker(&b).unwrap_or_else(|e| {
                problems.push(e);
                (String::new(), 0)
            }),
            None => {
                problems.push(
                    "--broker mqtts://host:port is required (or `broker` in --config)".into(),
                );
                (String::new(), 0)
            }
        };
        let root = self
            .root
            .clone()
            .or(file.root)
            .unwrap_or_else(|| DEFAULT_ROOT.to_owned());
        let root = root.trim_end_matches('/').to_owned();
        if !valid_root(&root) {
            problems.push(format!(
                "--root {root:?} is not a topic root (no wildcards, no empty levels)"
            ));
        }
        if !problems.is_empty() {
            return Err(CenterError::Usage(problems.join("; ")));
        }
        Ok(Settings {
            host,
            port,
            ca,
            cert,
            key,
            root,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_are_mqtts_only() {
        assert_eq!(
            parse_broker("mqtts://127.0.0.1:8884").unwrap(),
            ("127.0.0.1".into(), 8884)
        );
        assert_eq!(
            parse_broker("mqtts://broker.example").unwrap(),
            ("broker.example".into(), 8883)
        );
        assert_eq!(parse_broker("mqtts://[::1]:1").unwrap(), ("::1".into(), 1));
        for bad in [
            "mqtt://x:1883",
            "x:1",
            "mqtts://u:p@x",
            "mqtts://x/topic",
            "mqtts://x?a=b",
        ] {
            assert!(parse_broker(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn roots_have_no_wildcards_or_empty_levels() {
        assert!(valid_root("porchlight/v1"));
        for bad in ["", "a/+/b", "a/#", "a//b", "/a"] {
            assert!(!valid_root(bad), "{bad}");
        }
    }

    #[test]
    fn config_file_fills_in_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("center.toml");
        std::fs::write(
            &cfg,
            "broker = \"mqtts://b.example:9\"\nca = \"ca.pem\"\ncert = \"/abs/c.pem\"\nkey = \"k.pem\"\n",
        )
        .unwrap();
        let args = ConnectArgs {
            config: Some(cfg),
            key: Some("/flag/k.pem".into()),
            ..Default::default()
        };
        let s = args.resolve().unwrap();
        assert_eq!((s.host.as_str(), s.port), ("b.example", 9));
        assert_eq!(s.ca, dir.path().join("ca.pem"));
        assert_eq!(s.cert, PathBuf::from("/abs/c.pem"));
        assert_eq!(s.key, PathBuf::from("/flag/k.pem"));
        assert_eq!(s.root, DEFAULT_ROOT);
    }

    #[test]
    fn every_missing_setting_is_reported_at_once() {
        let e = ConnectArgs::default().resolve().unwrap_err().to_string();
        for flag in ["--broker", "--ca", "--cert", "--key"] {
            assert!(e.contains(flag), "{e}");
        }
    }
}
