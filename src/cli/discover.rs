//! `porchlight discover`: the cameras on the network (ONVIF WS-Discovery and mDNS), and with
//! `--probe ID` the `[[cameras]]` entry for one of them from its ONVIF media profiles.
//!
//! Discovery runs here, in the CLI process, not through the daemon: it needs no store, works
//! before the daemon was ever started, and its results go only to this terminal (see
//! [`crate::discovery`] for the full reasoning). Whether a found camera is already added is
//! asked of the running daemon (`GET /api/v1/cameras`: by ONVIF endpoint reference, then by
//! address); without a daemon, the configuration file's camera addresses are used.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::config::Config;
use crate::discovery::onvif;
use crate::discovery::{self, DiscoverOptions, DiscoveredCamera};
use crate::protocol::units::Dur;
use crate::secret::Secret;

/// Arguments of `porchlight discover`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// How long to listen for answers.
    #[arg(long, default_value = "3s")]
    pub timeout: Dur,
    /// Also probe this address directly (unicast), for networks that drop multicast.
    /// Repeatable.
    #[arg(long = "host", value_name = "IP")]
    pub hosts: Vec<IpAddr>,
    /// Also probe every host of this private range, unicast and paced (at most a /22;
    /// repeatable), e.g. 192.168.1.0/24: for networks that drop multicast.
    #[arg(long = "range", value_name = "CIDR")]
    pub ranges: Vec<crate::discovery::range::Range>,
    /// Probe only on this interface (repeatable; default: every up, multicast-capable one).
    #[arg(long = "interface", value_name = "NAME")]
    pub interfaces: Vec<String>,
    /// Include loopback interfaces (for testing against a responder on this machine).
    #[arg(long)]
    pub loopback: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Ask camera ID (from the list) for its streams over ONVIF and print a `[[cameras]]`
    /// entry; needs --username and --password-file.
    #[arg(long, value_name = "ID", requires_all = ["username", "password_file"])]
    pub probe: Option<String>,
    /// ONVIF user name (with --probe).
    #[arg(long)]
    pub username: Option<String>,
    /// File holding the ONVIF password (with --probe); the password is never printed.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
}

/// Which cameras exist already: discovery id → camera id, and address → camera id.
#[derive(Default)]
struct Added {
    by_discovery_id: HashMap<String, String>,
    by_address: HashMap<IpAddr, String>,
}

impl Added {
    fn camera(&self, c: &DiscoveredCamera) -> Option<&str> {
        self.by_discovery_id
            .get(&c.id)
            .or_else(|| self.by_address.get(&c.address))
            .map(String::as_str)
    }
}

/// Asks the running daemon which cameras it has; without one, reads the configuration file.
fn added_cameras(config: Option<&Path>) -> Added {
    let mut out = Added::default();
    let from_daemon = crate::cli::client::Client::from_config(config)
        .and_then(|c| c.get::<Vec<serde_json::Value>>("/api/v1/cameras"));
    if let Ok(cams) = from_daemon {
        for c in cams {
            let id = c["id"].as_str().unwrap_or_default().to_owned();
            if let Some(d) = c["onvif"]["discovery_id"].as_str() {
                out.by_discovery_id.insert(d.to_owned(), id.clone());
            }
            let addr = c["address"]
                .as_str()
                .and_then(|a| a.parse().ok())
                .or_else(|| {
                    c["url"]
                        .as_str()
                        .and_then(|u| url::Url::parse(u).ok())
                        .and_then(|u| crate::cameras::url_ip(&u))
                });
            if let Some(a) = addr {
                out.by_address.insert(a, id);
            }
        }
        return out;
    }
    let Ok(cfg) = Config::load_or_default(config) else {
        return out;
    };
    for c in &cfg.cameras {
        for u in std::iter::once(&c.url).chain(c.substream_url.as_ref()) {
            if let Some(a) = url::Url::parse(u)
                .ok()
                .and_then(|u| crate::cameras::url_ip(&u))
            {
                out.by_address.insert(a, c.id.clone());
            }
        }
    }
    out
}

/// Runs discovery (and the probe when asked).
pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let opts = DiscoverOptions {
        timeout: args.timeout.0.max(Duration::from_millis(100)),
        hosts: args.hosts.clone(),
        interfaces: args.interfaces.clone(),
        include_loopback: args.loopback,
        ranges: args.ranges.clone(),
        ..DiscoverOptions::default()
    };
    let cams = discovery::discover(&opts)?;
    if let Some(id) = &args.probe {
        return probe(&cams, id, &args);
    }
    let added = added_cameras(config);
    if args.json {
        let rows: Vec<serde_json::Value> = cams
            .iter()
            .map(|c| {
                let mut v = serde_json::to_value(c).unwrap_or_default();
                let camera = added.camera(c);
                v["configured"] = camera.is_some().into();
                v["added"] = camera.is_some().into();
                v["camera_id"] = camera.into();
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if cams.is_empty() {
        println!(
            "no cameras found in {} (a router or VLAN may drop multicast: try --host IP or --range CIDR)",
            args.timeout
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<12}  {:<24}  {:<28}  {:<15}  {:<5}  ADDED",
        "ID", "NAME", "MAKE/MODEL", "ADDRESS", "ONVIF"
    );
    for c in &cams {
        let make = match (&c.manufacturer, &c.model) {
            (Some(m), Some(md)) => format!("{m} {md}"),
            (Some(x), None) | (None, Some(x)) => x.clone(),
            (None, None) => "-".into(),
        };
        println!(
            "{:<12}  {:<24}  {:<28}  {:<15}  {:<5}  {}",
            c.id,
            c.name.as_deref().unwrap_or("-"),
            make,
            c.address.to_string(),
            if c.onvif { "yes" } else { "no" },
            match added.camera(c) {
                Some(id) => format!("yes ({id})"),
                None => "no".to_owned(),
            }
        );
    }
    println!("\nadd one: porchlight cameras add --from-discovery ID --username USER --password-file FILE");
    println!("(or print its [[cameras]] entry: porchlight discover --probe ID --username USER --password-file FILE)");
    Ok(ExitCode::SUCCESS)
}

/// A config-safe camera id from a display name.
fn suggest_id(c: &DiscoveredCamera) -> String {
    crate::cameras::id_from_name(c.name.as_deref(), &format!("cam-{}", c.id))
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn probe(cams: &[DiscoveredCamera], id: &str, args: &Args) -> anyhow::Result<ExitCode> {
    let Some(cam) = cams.iter().find(|c| c.id == id) else {
        bail!(
            "no camera with id {id} answered (found: {}); run `porchlight discover` again, or add --host IP",
            if cams.is_empty() {
                "none".to_owned()
            } else {
                cams.iter().map(|c| c.id.as_str()).collect::<Vec<_>>().join(", ")
            }
        );
    };
    let username = args.username.clone().unwrap_or_default();
    let pw_path = args.password_file.as_ref().expect("clap requires it");
    let password = std::fs::read_to_string(pw_path)
        .with_context(|| format!("cannot read the password file {}", pw_path.display()))?;
    let password = Secret::new(password.trim_end_matches(['\r', '\n']));
    // Only XAddrs on the address the device answered from; a camera that advertises
    // none there is asked at the standard path on that address.
    let (report, _) = onvif::probe_first(
        &cam.device_urls(),
        cam.address,
        &username,
        &password,
        Duration::from_secs(10),
    )
    .with_context(|| format!("ONVIF probe of camera {id} at {}", cam.address))?;
    print_entry(cam, &report, &username, pw_path);
    Ok(ExitCode::SUCCESS)
}

fn print_entry(cam: &DiscoveredCamera, r: &onvif::DeviceReport, username: &str, pw: &Path) {
    let make = [r.info.manufacturer.as_deref(), r.info.model.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    println!(
        "# {} ({make}) at {}, discovery id {}",
        cam.name.as_deref().unwrap_or("camera"),
        cam.address,
        cam.id
    );
    if r.clock_offset_s.abs() > 60 {
        println!(
            "# note: the camera's clock is {} s off; set it to NTP",
            r.clock_offset_s
        );
    }
    for s in &r.streams {
        println!(
            "#   profile {:?}: {} {}x{}",
            s.profile.name,
            s.profile.encoding.as_deref().unwrap_or("?"),
            s.profile.width,
            s.profile.height
        );
    }
    println!("[[cameras]]");
    println!("id = {}", toml_str(&suggest_id(cam)));
    if let Some(n) = &cam.name {
        println!("name = {}", toml_str(n));
    }
    if let Some(u) = r.main() {
        println!("url = {}", toml_str(u.as_str()));
    }
    if let Some(u) = r.sub() {
        println!("substream_url = {}", toml_str(u.as_str()));
    }
    println!("username = {}", toml_str(username));
    let abs = std::fs::canonicalize(pw).unwrap_or_else(|_| pw.to_owned());
    println!("password_file = {}", toml_str(&abs.display().to_string()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cam(name: Option<&str>) -> DiscoveredCamera {
        DiscoveredCamera {
            id: "abcdef012345".into(),
            name: name.map(Into::into),
            manufacturer: None,
            model: None,
            location: None,
            address: "192.0.2.1".parse().unwrap(),
            xaddrs: vec![],
            onvif: true,
            rtsp_port: None,
            rtsp_path: None,
            sources: vec![],
            key: "k".into(),
        }
    }

    #[test]
    fn suggested_ids_are_valid_config_ids() {
        assert_eq!(suggest_id(&cam(Some("Front Door"))), "front-door");
        assert_eq!(
            suggest_id(&cam(Some("AXIS M3106-L Mk II"))),
            "axis-m3106-l-mk-ii"
        );
        assert_eq!(suggest_id(&cam(Some("日本"))), "cam-abcdef012345");
        assert_eq!(suggest_id(&cam(None)), "camera");
        assert!(crate::ingest::spec::valid_camera_id(&suggest_id(&cam(
            Some(&"x".repeat(80))
        ))));
    }
}
