//! Camera discovery: which cameras are on the resident's network, and how to stream them.
//!
//! # Sources
//!
//! - [`wsd`]: ONVIF WS-Discovery. A Probe for `dn:NetworkVideoTransmitter` goes out of every
//!   suitable IPv4 interface (and unicast to `--host` addresses, for networks that drop
//!   multicast); ProbeMatches and Hello/Bye announcements are collected for a window and
//!   deduplicated by endpoint reference.
//! - [`mdns`]: DNS-SD browse for `_rtsp._tcp`, `_onvif._tcp` and `_axis-video._tcp` (doorbells
//!   and cameras that speak only mDNS).
//! - [`onvif`]: with the resident's user name and password, the device and media services give
//!   the model, and the RTSP URLs of the main and sub streams.
//! - [`range`]: paced unicast WS-Discovery over a private range (at most a /22), for networks
//!   that drop multicast.
//!
//! [`discover`] runs both browsers at once for the same window and merges by address: one IP is
//! one device, named by its WS-Discovery endpoint reference when it has one (stable across DHCP
//! changes), else by its mDNS instance name. The [`DiscoveredCamera::id`] is a short hash of
//! that name, so it is stable across runs and never reveals the raw reference.
//!
//! # Design
//!
//! Parsing is pure and separate from I/O (`parse_*`, `build_*`, the `Collector`s): every parser
//! is unit-tested on captures in `tests/data/onvif/` and has a fuzz target. The I/O is blocking
//! `std` sockets in scoped threads — one per interface, a few seconds each — because discovery
//! is a short burst, not a service.
//!
//! `porchlight discover` runs discovery in the CLI process rather than through the daemon's API:
//! it needs no store (sled is the only reason other subcommands go through the daemon), it
//! works before a daemon was ever started (first setup), its sockets live only for the window,
//! and the results go to the resident's terminal and nowhere else. The daemon's periodic
//! discovery ([`crate::cameras::scanner`]) calls the same [`discover`] and keeps its latest
//! result in memory for the control API.
//!
//! # Hostile input
//!
//! Any host on the LAN can answer a probe, so every reply is untrusted:
//! - XML is parsed by [`xml`]: no DTD (`<!DOCTYPE` is refused, so no entity expansion, no XXE),
//!   capped size (a datagram ≤ 64 KiB, an HTTP body ≤ 1 MiB), element count, depth and text
//!   length; matched by namespace URI, not prefix.
//! - DNS packets are parsed with backwards-only compression pointers and bounded names and
//!   record counts.
//! - Every kept field is capped; device and service counts are capped; nothing panics on input
//!   (fuzzed).
//! - Camera credentials are sent only to the address the device was discovered at (or the
//!   address the resident typed): XAddrs, media addresses and stream URIs that name another
//!   host are refused before any request ([`onvif::OnvifError::OtherHost`]).
//! - Multicast goes out with TTL 1 (WS-Discovery) or 255 on the link-local mDNS group, once plus
//!   one repeat per window: discovery never floods the network.
//!
//! # Privacy
//!
//! Discovery results never leave the house: this module is not imported by the uplink, and
//! addresses, names and URLs of discovered devices are never put in heartbeats, events or logs
//! above debug level.

pub mod mdns;
pub mod net;
pub mod onvif;
pub mod range;
pub mod wsd;
pub mod xml;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

/// Where a camera was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// A WS-Discovery ProbeMatch or Hello.
    WsDiscovery,
    /// An mDNS/DNS-SD service.
    Mdns,
}

/// A camera found on the network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DiscoveredCamera {
    /// Short stable id (12 hex digits of a SHA-256 of the endpoint reference or mDNS name).
    pub id: String,
    /// Name from the ONVIF `name` scope or the mDNS instance name.
    pub name: Option<String>,
    /// Manufacturer, when a scope or TXT record says.
    pub manufacturer: Option<String>,
    /// Model (ONVIF `hardware` scope, or a TXT `model`/`md`).
    pub model: Option<String>,
    /// ONVIF `location` scope.
    pub location: Option<String>,
    /// The address replies came from: the only host credentials may go to.
    pub address: IpAddr,
    /// ONVIF device service addresses (as advertised; checked against `address` before use).
    pub xaddrs: Vec<String>,
    /// Whether it answered as an ONVIF device.
    pub onvif: bool,
    /// RTSP port, when an `_rtsp._tcp` service announced it.
    pub rtsp_port: Option<u16>,
    /// RTSP path hint from a TXT `path` entry.
    pub rtsp_path: Option<String>,
    /// Where it was seen.
    pub sources: Vec<Source>,
    /// WS-Discovery endpoint reference or mDNS full name (what `id` hashes).
    pub key: String,
}

impl DiscoveredCamera {
    /// The device service addresses credentials may go to: the advertised XAddrs on the
    /// address the device answered from, else the standard path on that address.
    pub fn device_urls(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .xaddrs
            .iter()
            .filter(|x| {
                url::Url::parse(x)
                    .is_ok_and(|u| u.scheme() == "http" && onvif::same_host(&u, self.address))
            })
            .cloned()
            .collect();
        if out.is_empty() {
            let host = match self.address {
                IpAddr::V4(a) => a.to_string(),
                IpAddr::V6(a) => format!("[{a}]"),
            };
            out.push(format!("http://{host}/onvif/device_service"));
        }
        out
    }
}

/// What [`discover`] does.
#[derive(Clone, Debug)]
pub struct DiscoverOptions {
    /// Listening window.
    pub timeout: Duration,
    /// Hosts to probe by unicast too.
    pub hosts: Vec<IpAddr>,
    /// Only these interfaces (empty: all suitable ones).
    pub interfaces: Vec<String>,
    /// Include loopback interfaces (tests).
    pub include_loopback: bool,
    /// Run WS-Discovery.
    pub wsd: bool,
    /// Run the mDNS browse.
    pub mdns: bool,
    /// Send multicast on the interfaces (false: only the unicast `hosts` and `ranges`).
    pub multicast: bool,
    /// Private ranges to probe host by host (paced; see [`range`]).
    pub ranges: Vec<range::Range>,
}

impl Default for DiscoverOptions {
    fn default() -> Self {
        DiscoverOptions {
            timeout: Duration::from_secs(3),
            hosts: Vec::new(),
            interfaces: Vec::new(),
            include_loopback: false,
            wsd: true,
            mdns: true,
            multicast: true,
            ranges: Vec::new(),
        }
    }
}

/// Why discovery could not run at all (a source that merely found nothing is not an error).
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// Interfaces could not be listed.
    #[error("cannot list network interfaces: {0}")]
    Interfaces(std::io::Error),
    /// No interface to probe on and no host given.
    #[error("no up, multicast-capable IPv4 interface{0}; give --host ADDRESS to probe one camera directly")]
    NoInterface(String),
    /// Neither source could send anything.
    #[error("could not send any probe: {0}")]
    Send(std::io::Error),
}

/// The short id of a discovery key.
pub fn short_id(key: &str) -> String {
    use sha2::Digest as _;
    hex::encode(&sha2::Sha256::digest(key.as_bytes())[..6])
}

/// Merges WS-Discovery devices and mDNS services into cameras, one per address. Pure.
pub fn merge(wsd: Vec<wsd::WsdDevice>, mdns: Vec<mdns::MdnsService>) -> Vec<DiscoveredCamera> {
    let mut by_addr: BTreeMap<IpAddr, DiscoveredCamera> = BTreeMap::new();
    for d in wsd {
        let cam = by_addr
            .entry(d.address)
            .or_insert_with(|| DiscoveredCamera {
                id: short_id(&d.endpoint),
                name: d.scopes.name.clone(),
                manufacturer: d.scopes.manufacturer.clone(),
                model: d.scopes.hardware.clone(),
                location: d.scopes.location.clone(),
                address: d.address,
                xaddrs: Vec::new(),
                onvif: true,
                rtsp_port: None,
                rtsp_path: None,
                sources: vec![Source::WsDiscovery],
                key: d.endpoint.clone(),
            });
        // A second endpoint at the same address (an NVR's channels): keep the first identity,
        // add its XAddrs.
        for x in d.xaddrs {
            if !cam.xaddrs.contains(&x) && cam.xaddrs.len() < 8 {
                cam.xaddrs.push(x);
            }
        }
    }
    for s in mdns {
        let full = format!("{}.{}", s.instance, s.service);
        let txt = |keys: &[&str]| {
            s.txt
                .iter()
                .find(|(k, v)| keys.iter().any(|w| k.eq_ignore_ascii_case(w)) && !v.is_empty())
                .map(|(_, v)| xml::cap(v, 128).into_owned())
        };
        let cam = by_addr
            .entry(s.address)
            .or_insert_with(|| DiscoveredCamera {
                id: short_id(&full),
                name: Some(s.instance.clone()),
                manufacturer: None,
                model: None,
                location: None,
                address: s.address,
                xaddrs: Vec::new(),
                onvif: false,
                rtsp_port: None,
                rtsp_path: None,
                sources: Vec::new(),
                key: full.clone(),
            });
        if !cam.sources.contains(&Source::Mdns) {
            cam.sources.push(Source::Mdns);
        }
        cam.name.get_or_insert_with(|| s.instance.clone());
        if cam.manufacturer.is_none() {
            cam.manufacturer = txt(&["manufacturer", "vendor", "mf"]);
        }
        if cam.model.is_none() {
            cam.model = txt(&["model", "md", "hw"]);
        }
        match s.service.as_str() {
            "_rtsp._tcp" if s.port != 0 => {
                cam.rtsp_port.get_or_insert(s.port);
                if cam.rtsp_path.is_none() {
                    cam.rtsp_path = txt(&["path"]);
                }
            }
            "_onvif._tcp" => cam.onvif = true,
            _ => {}
        }
    }
    by_addr.into_values().collect()
}

fn join<T>(h: std::thread::ScopedJoinHandle<'_, std::io::Result<T>>) -> std::io::Result<T> {
    h.join()
        .unwrap_or_else(|_| Err(std::io::Error::other("discovery thread panicked")))
}

/// Runs WS-Discovery and the mDNS browse at once for `opts.timeout` and merges the results.
pub fn discover(opts: &DiscoverOptions) -> Result<Vec<DiscoveredCamera>, DiscoveryError> {
    let ifaces = if opts.multicast {
        net::interfaces(opts.include_loopback, &opts.interfaces)
            .map_err(DiscoveryError::Interfaces)?
    } else {
        Vec::new()
    };
    if ifaces.is_empty() && opts.hosts.is_empty() && opts.ranges.is_empty() {
        let which = if opts.interfaces.is_empty() {
            String::new()
        } else {
            format!(" named {}", opts.interfaces.join(", "))
        };
        return Err(DiscoveryError::NoInterface(which));
    }
    tracing::debug!(
        interfaces = ?ifaces.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        "Discovering cameras."
    );
    let (w, m, r) = std::thread::scope(|s| {
        let r = (opts.wsd && !opts.ranges.is_empty())
            .then(|| s.spawn(|| range::probe(&opts.ranges, opts.timeout)));
        let w = (opts.wsd && (!ifaces.is_empty() || !opts.hosts.is_empty())).then(|| {
            s.spawn(|| {
                wsd::probe(&wsd::ProbeOptions {
                    timeout: opts.timeout,
                    interfaces: ifaces.clone(),
                    hosts: opts.hosts.clone(),
                    listen_announcements: true,
                })
            })
        });
        let m = opts
            .mdns
            .then(|| s.spawn(|| mdns::browse(&ifaces, &opts.hosts, opts.timeout)));
        (w.map(join), m.map(join), r.map(join))
    });
    let ranged = match r {
        Some(Ok(v)) => v,
        Some(Err(error)) => {
            tracing::warn!(%error, "The range probe failed.");
            Vec::new()
        }
        None => Vec::new(),
    };
    let (w, m) = match (w, m) {
        (Some(Err(e)), None | Some(Err(_))) | (None, Some(Err(e))) => {
            return Err(DiscoveryError::Send(e))
        }
        (w, m) => (w, m),
    };
    let wsd = match w {
        Some(Ok(v)) => v,
        Some(Err(error)) => {
            tracing::warn!(%error, "WS-Discovery failed; showing mDNS results only.");
            Vec::new()
        }
        None => Vec::new(),
    };
    let mdns = match m {
        Some(Ok(v)) => v,
        Some(Err(error)) => {
            tracing::warn!(%error, "mDNS browse failed; showing WS-Discovery results only.");
            Vec::new()
        }
        None => Vec::new(),
    };
    let mut wsd = wsd;
    wsd.extend(ranged);
    Ok(merge(wsd, mdns))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wsd_dev(endpoint: &str, addr: &str) -> wsd::WsdDevice {
        wsd::WsdDevice {
            endpoint: endpoint.into(),
            address: addr.parse().unwrap(),
            scopes: wsd::Scopes {
                name: Some("Front Door".into()),
                hardware: Some("DS-2CD2143G2-I".into()),
                ..Default::default()
            },
            xaddrs: vec![format!("http://{addr}/onvif/device_service")],
            announced: false,
        }
    }

    fn svc(instance: &str, service: &str, addr: &str, port: u16) -> mdns::MdnsService {
        mdns::MdnsService {
            instance: instance.into(),
            service: service.into(),
            host: None,
            port,
            address: addr.parse().unwrap(),
            txt: vec![
                ("path".into(), "/live".into()),
                ("model".into(), "DB1".into()),
            ],
        }
    }

    #[test]
    fn same_address_merges_and_keeps_the_wsd_identity() {
        let cams = merge(
            vec![wsd_dev("urn:uuid:1", "192.0.2.10")],
            vec![svc("Front", "_rtsp._tcp", "192.0.2.10", 8554)],
        );
        assert_eq!(cams.len(), 1);
        let c = &cams[0];
        assert_eq!(c.id, short_id("urn:uuid:1"));
        assert_eq!(c.sources, [Source::WsDiscovery, Source::Mdns]);
        assert_eq!(c.rtsp_port, Some(8554));
        assert_eq!(c.model.as_deref(), Some("DS-2CD2143G2-I"));
        assert!(c.onvif);
    }

    #[test]
    fn mdns_only_devices_are_listed_with_txt_hints() {
        let cams = merge(
            vec![],
            vec![
                svc("Doorbell", "_rtsp._tcp", "192.0.2.11", 554),
                svc("Doorbell", "_onvif._tcp", "192.0.2.11", 80),
            ],
        );
        assert_eq!(cams.len(), 1);
        assert_eq!(cams[0].id, short_id("Doorbell._rtsp._tcp"));
        assert_eq!(cams[0].rtsp_path.as_deref(), Some("/live"));
        assert_eq!(cams[0].model.as_deref(), Some("DB1"));
        assert!(cams[0].onvif);
    }

    #[test]
    fn ids_are_short_and_stable() {
        assert_eq!(short_id("urn:uuid:1"), short_id("urn:uuid:1"));
        assert_eq!(short_id("x").len(), 12);
        assert_ne!(short_id("a"), short_id("b"));
    }
}
