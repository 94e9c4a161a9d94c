//! WS-Discovery (SOAP-over-UDP, `239.255.255.250:3702`) as ONVIF cameras speak it.
//!
//! Pure half: [`build_probe`] writes a Probe for `dn:NetworkVideoTransmitter`;
//! [`parse_message`] turns one datagram into a [`WsdMessage`] (ProbeMatches, Hello, Bye) under
//! [`Limits::DATAGRAM`], and [`Scopes::parse`] reads the ONVIF scopes
//! (`onvif://www.onvif.org/name/…`, `hardware/…`, `location/…`, percent-decoded).
//!
//! I/O half: [`probe`] sends the Probe out of every suitable interface (see [`super::net`]),
//! and unicast to each `--host` for networks that drop multicast, listens for replies and for
//! Hello/Bye announcements for the window, and deduplicates by endpoint reference (SOAP-over-UDP
//! repeats every unicast reply — the PyPI `wsdiscovery` responder sends each ProbeMatch twice —
//! and a device on two interfaces answers twice).
//!
//! Both the 2005/04 discovery namespace (ONVIF) and the 2009/01 one (WS-DD 1.1), and both
//! WS-Addressing namespaces, are accepted on input; anything else, however it is prefixed, is
//! not a discovery message.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::net::{self, Interface};
use super::xml::{Doc, Elem, Limits, XmlError};

/// The WS-Discovery multicast group.
pub const GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 255, 250);
/// The WS-Discovery port.
pub const PORT: u16 = 3702;

/// SOAP 1.2 envelope.
pub const NS_SOAP: &str = "http://www.w3.org/2003/05/soap-envelope";
/// WS-Addressing (2004/08), used by ONVIF's WS-Discovery.
pub const NS_ADDRESSING: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing";
/// WS-Addressing 1.0.
pub const NS_ADDRESSING_10: &str = "http://www.w3.org/2005/08/addressing";
/// WS-Discovery (2005/04), which ONVIF uses.
pub const NS_DISCOVERY: &str = "http://schemas.xmlsoap.org/ws/2005/04/discovery";
/// WS-Discovery 1.1 (2009/01).
pub const NS_DISCOVERY_11: &str = "http://docs.oasis-open.org/ws-dd/ns/discovery/2009/01";
/// ONVIF network WSDL (`dn:NetworkVideoTransmitter`).
pub const NS_DN: &str = "http://www.onvif.org/ver10/network/wsdl";
/// ONVIF device WSDL (`tds:Device`).
pub const NS_TDS: &str = "http://www.onvif.org/ver10/device/wsdl";

/// Most matches taken from one ProbeMatches message.
const MAX_MATCHES: usize = 16;
/// Most scopes kept per match.
const MAX_SCOPES: usize = 64;
/// Most XAddrs kept per match.
const MAX_XADDRS: usize = 8;
/// Longest endpoint reference, scope or XAddr kept.
const MAX_FIELD: usize = 512;
/// Most devices one probe collects (a home has ~16 cameras; anything past this is a flood).
const MAX_DEVICES: usize = 256;

/// Why a datagram is not a usable WS-Discovery message.
#[derive(Debug, thiserror::Error)]
pub enum WsdError {
    /// The XML was refused (see [`XmlError`]).
    #[error("bad XML: {0}")]
    Xml(#[from] XmlError),
    /// The root is not a SOAP 1.2 envelope.
    #[error("not a SOAP 1.2 envelope (root is {{{ns}}}{local})")]
    NotSoap {
        /// Root namespace.
        ns: String,
        /// Root local name.
        local: String,
    },
    /// The envelope has no Body.
    #[error("SOAP envelope has no Body")]
    NoBody,
    /// A ProbeMatch/Hello without an endpoint reference address.
    #[error("match without an EndpointReference/Address")]
    NoEndpoint,
}

/// One device as described by a ProbeMatch or Hello.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsdMatch {
    /// Endpoint reference address, normally `urn:uuid:…`: the device's stable identity.
    pub endpoint: String,
    /// Types as (namespace, local name).
    pub types: Vec<(String, String)>,
    /// Scope URIs as sent.
    pub scopes: Vec<String>,
    /// Device service addresses (`http://ip/onvif/device_service`).
    pub xaddrs: Vec<String>,
}

impl WsdMatch {
    /// Whether the types name an ONVIF camera (`dn:NetworkVideoTransmitter`, or the
    /// `tds:Device` some older firmware answers with).
    pub fn is_camera(&self) -> bool {
        self.types.iter().any(|(ns, l)| {
            (ns == NS_DN && l == "NetworkVideoTransmitter") || (ns == NS_TDS && l == "Device")
        })
    }
}

/// A parsed WS-Discovery datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WsdMessage {
    /// Replies to a Probe.
    ProbeMatches {
        /// The MessageID of the Probe answered, when given.
        relates_to: Option<String>,
        /// The matches (at most 16).
        matches: Vec<WsdMatch>,
    },
    /// A device announcing itself.
    Hello(WsdMatch),
    /// A device leaving.
    Bye {
        /// Its endpoint reference.
        endpoint: String,
    },
    /// Any other discovery message (another client's Probe, Resolve…).
    Other,
}

/// ONVIF scopes, decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scopes {
    /// `onvif://www.onvif.org/name/…`.
    pub name: Option<String>,
    /// `onvif://www.onvif.org/hardware/…` (the model, usually).
    pub hardware: Option<String>,
    /// `onvif://www.onvif.org/location/…`.
    pub location: Option<String>,
    /// `onvif://www.onvif.org/Profile/…` (Streaming, T, G…).
    pub profiles: Vec<String>,
    /// `onvif://www.onvif.org/manufacturer/…` (or `mfr/`), not in the core spec but common.
    pub manufacturer: Option<String>,
}

impl Scopes {
    /// Reads the ONVIF scopes; other scopes are ignored. Values are percent-decoded, control
    /// characters dropped, and cut to 128 bytes.
    pub fn parse(scopes: &[String]) -> Scopes {
        let mut s = Scopes::default();
        for scope in scopes {
            let Some(rest) = scope
                .strip_prefix("onvif://www.onvif.org/")
                .or_else(|| scope.strip_prefix("ONVIF://www.onvif.org/"))
            else {
                continue;
            };
            let Some((category, value)) = rest.split_once('/') else {
                continue;
            };
            let value = percent_decode(value.trim_end_matches('/'));
            if value.is_empty() {
                continue;
            }
            let slot = match category.to_ascii_lowercase().as_str() {
                "name" => &mut s.name,
                "hardware" => &mut s.hardware,
                "location" | "location/city" | "location/country" => &mut s.location,
                "manufacturer" | "mfr" => &mut s.manufacturer,
                "profile" => {
                    if s.profiles.len() < 8 && !s.profiles.contains(&value) {
                        s.profiles.push(value);
                    }
                    continue;
                }
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(value);
            }
        }
        s
    }
}

/// Percent-decodes `s` (invalid escapes kept literally), as lossy UTF-8 without control
/// characters, at most 128 bytes.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len().min(256));
    let mut i = 0;
    while i < b.len() && out.len() < 256 {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    let text: String = String::from_utf8_lossy(&out)
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    super::xml::cap(text.trim(), 128).into_owned()
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A Probe for `dn:NetworkVideoTransmitter` with the given `urn:uuid:` message id.
pub fn build_probe(message_id: &str) -> String {
    format!(
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<s:Envelope xmlns:s="{soap}" xmlns:a="{wsa}" xmlns:d="{wsd}" xmlns:dn="{dn}" xmlns:tds="{tds}">"#,
            r#"<s:Header>"#,
            r#"<a:Action s:mustUnderstand="1">{wsd}/Probe</a:Action>"#,
            r#"<a:MessageID>{id}</a:MessageID>"#,
            r#"<a:ReplyTo><a:Address>{wsa}/role/anonymous</a:Address></a:ReplyTo>"#,
            r#"<a:To s:mustUnderstand="1">urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To>"#,
            r#"</s:Header>"#,
            r#"<s:Body><d:Probe><d:Types>dn:NetworkVideoTransmitter</d:Types></d:Probe></s:Body>"#,
            r#"</s:Envelope>"#
        ),
        soap = NS_SOAP,
        wsa = NS_ADDRESSING,
        wsd = NS_DISCOVERY,
        dn = NS_DN,
        tds = NS_TDS,
        id = super::xml::escape(message_id),
    )
}

fn is_wsd(e: &Elem<'_>, local: &str) -> bool {
    (e.ns() == NS_DISCOVERY || e.ns() == NS_DISCOVERY_11) && e.local() == local
}

fn is_wsa(e: &Elem<'_>, local: &str) -> bool {
    (e.ns() == NS_ADDRESSING || e.ns() == NS_ADDRESSING_10) && e.local() == local
}

fn wsd_child<'a>(e: &Elem<'a>, local: &str) -> Option<Elem<'a>> {
    e.children().find(|c| is_wsd(c, local))
}

fn parse_match(m: &Elem<'_>) -> Result<WsdMatch, WsdError> {
    let endpoint = m
        .children()
        .find(|c| is_wsa(c, "EndpointReference"))
        .and_then(|epr| epr.children().find(|c| is_wsa(c, "Address")))
        .map(|a| a.text_capped(MAX_FIELD))
        .filter(|s| !s.is_empty())
        .ok_or(WsdError::NoEndpoint)?;
    let types = wsd_child(m, "Types")
        .map(|t| t.qnames().to_vec())
        .unwrap_or_default();
    let list = |local: &str, max: usize| -> Vec<String> {
        wsd_child(m, local)
            .map(|e| {
                e.text()
                    .split_ascii_whitespace()
                    .filter(|s| s.len() <= MAX_FIELD)
                    .take(max)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(WsdMatch {
        endpoint,
        types,
        scopes: list("Scopes", MAX_SCOPES),
        xaddrs: list("XAddrs", MAX_XADDRS),
    })
}

/// Parses one WS-Discovery datagram. Never panics; every refusal is a [`WsdError`].
pub fn parse_message(datagram: &[u8]) -> Result<WsdMessage, WsdError> {
    let doc = Doc::parse(datagram, Limits::DATAGRAM)?;
    let env = doc.root();
    if !env.is(NS_SOAP, "Envelope") {
        return Err(WsdError::NotSoap {
            ns: super::xml::cap(env.ns(), 100).into_owned(),
            local: super::xml::cap(env.local(), 100).into_owned(),
        });
    }
    let header = env.child(NS_SOAP, "Header");
    let relates_to = header
        .and_then(|h| h.children().find(|c| is_wsa(c, "RelatesTo")))
        .map(|r| r.text_capped(MAX_FIELD));
    let body = env.child(NS_SOAP, "Body").ok_or(WsdError::NoBody)?;
    for el in body.children() {
        if is_wsd(&el, "ProbeMatches") {
            let matches = el
                .children()
                .filter(|c| is_wsd(c, "ProbeMatch"))
                .take(MAX_MATCHES)
                .filter_map(|m| parse_match(&m).ok())
                .collect();
            return Ok(WsdMessage::ProbeMatches {
                relates_to,
                matches,
            });
        }
        if is_wsd(&el, "Hello") {
            return Ok(WsdMessage::Hello(parse_match(&el)?));
        }
        if is_wsd(&el, "Bye") {
            return Ok(WsdMessage::Bye {
                endpoint: parse_match(&el)?.endpoint,
            });
        }
    }
    Ok(WsdMessage::Other)
}

/// A camera found by WS-Discovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsdDevice {
    /// Endpoint reference (stable identity).
    pub endpoint: String,
    /// The address the reply came from: the only host credentials may later go to.
    pub address: IpAddr,
    /// Decoded ONVIF scopes.
    pub scopes: Scopes,
    /// Device service addresses as advertised (not yet checked against `address`).
    pub xaddrs: Vec<String>,
    /// Whether it was heard in a Hello rather than a ProbeMatch.
    pub announced: bool,
}

/// What [`probe`] does.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// How long to listen.
    pub timeout: Duration,
    /// Interfaces to probe on (from [`net::interfaces`]).
    pub interfaces: Vec<Interface>,
    /// Hosts to probe by unicast as well.
    pub hosts: Vec<IpAddr>,
    /// Also listen on the group for Hello/Bye during the window.
    pub listen_announcements: bool,
}

/// Folds received messages into the device set: dedupe by endpoint (first address wins,
/// XAddrs merged), Bye removes, non-cameras are ignored. Pure, so it is tested without sockets.
#[derive(Debug, Default)]
pub struct Collector {
    devices: BTreeMap<String, WsdDevice>,
    gone: Vec<String>,
}

impl Collector {
    /// Takes one datagram from `from`.
    pub fn add_datagram(&mut self, datagram: &[u8], from: IpAddr) {
        match parse_message(datagram) {
            Ok(WsdMessage::ProbeMatches { matches, .. }) => {
                for m in matches {
                    self.add_match(m, from, false);
                }
            }
            Ok(WsdMessage::Hello(m)) => self.add_match(m, from, true),
            // Only the address that announced a device may say it left: a spoofed Bye from
            // elsewhere on the LAN does not make a real camera disappear.
            Ok(WsdMessage::Bye { endpoint }) => match self.devices.get(&endpoint) {
                Some(d) if d.address != from => {
                    debug!(%from, announced_by = %d.address, "Ignoring a Bye from another address.");
                }
                _ => {
                    self.devices.remove(&endpoint);
                    self.gone.push(endpoint);
                }
            },
            Ok(WsdMessage::Other) => {}
            Err(error) => debug!(%from, %error, "Ignoring an unusable WS-Discovery datagram."),
        }
    }

    fn add_match(&mut self, m: WsdMatch, from: IpAddr, announced: bool) {
        if !m.is_camera() {
            return;
        }
        if let Some(d) = self.devices.get_mut(&m.endpoint) {
            for x in m.xaddrs {
                if d.xaddrs.len() < MAX_XADDRS && !d.xaddrs.contains(&x) {
                    d.xaddrs.push(x);
                }
            }
            return;
        }
        if self.devices.len() >= MAX_DEVICES {
            return;
        }
        self.gone.retain(|g| g != &m.endpoint);
        self.devices.insert(
            m.endpoint.clone(),
            WsdDevice {
                endpoint: m.endpoint,
                address: from,
                scopes: Scopes::parse(&m.scopes),
                xaddrs: m.xaddrs,
                announced,
            },
        );
    }

    /// The devices, ordered by endpoint reference.
    pub fn into_devices(self) -> Vec<WsdDevice> {
        self.devices.into_values().collect()
    }
}

/// Probes on every interface in `opts` and each unicast host, and collects for the window.
/// Per-interface failures (an interface without a multicast route…) are logged and skipped;
/// only when nothing at all could be sent is it an error.
pub fn probe(opts: &ProbeOptions) -> std::io::Result<Vec<WsdDevice>> {
    let message_id = net::random_urn();
    let probe = build_probe(&message_id);
    let deadline = Instant::now() + opts.timeout;
    let collector = Mutex::new(Collector::default());
    let mut sockets: Vec<(UdpSocket, SocketAddr, String)> = Vec::new();
    let mut last_error = None;
    let group = SocketAddr::V4(SocketAddrV4::new(GROUP, PORT));
    for iface in &opts.interfaces {
        match net::multicast_sender(iface, 1) {
            Ok(s) => sockets.push((s, group, iface.name.clone())),
            Err(e) => {
                warn!(interface = %iface.name, error = %e, "Cannot open a WS-Discovery socket.");
                last_error = Some(e);
            }
        }
    }
    for host in &opts.hosts {
        let bind: SocketAddr = match host {
            IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        match UdpSocket::bind(bind) {
            Ok(s) => sockets.push((s, SocketAddr::new(*host, PORT), host.to_string())),
            Err(e) => last_error = Some(e),
        }
    }
    let listener = if opts.listen_announcements && !opts.interfaces.is_empty() {
        net::group_listener(PORT, GROUP, &opts.interfaces)
            .map_err(|e| debug!(error = %e, "Not listening for WS-Discovery Hello/Bye."))
            .ok()
    } else {
        None
    };
    let mut sent = 0;
    std::thread::scope(|scope| {
        for (sock, dest, label) in &sockets {
            // Send now and once more shortly after (SOAP-over-UDP's repeat, for a lossy
            // Wi-Fi link); replies to both carry the same RelatesTo and are deduplicated.
            match sock.send_to(probe.as_bytes(), dest) {
                Ok(_) => sent += 1,
                Err(e) => {
                    warn!(target_ = %label, error = %e, "Cannot send the WS-Discovery probe.");
                    last_error = Some(e);
                    continue;
                }
            }
            let collector = &collector;
            let probe = &probe;
            scope.spawn(move || {
                let resend = Instant::now() + Duration::from_millis(250);
                let only_from = (!dest.ip().is_multicast()).then(|| dest.ip());
                let mut take = |d: &[u8], from: SocketAddr| {
                    if only_from.is_some_and(|h| h != from.ip()) {
                        return;
                    }
                    collector.lock().unwrap().add_datagram(d, from.ip());
                };
                let _ = net::recv_until(sock, resend.min(deadline), &mut take);
                if Instant::now() < deadline {
                    let _ = sock.send_to(probe.as_bytes(), dest);
                }
                if let Err(e) = net::recv_until(sock, deadline, &mut take) {
                    debug!(error = %e, "WS-Discovery receive failed.");
                }
            });
        }
        if let Some(l) = &listener {
            let collector = &collector;
            scope.spawn(move || {
                let _ = net::recv_until(l, deadline, |d, from| {
                    collector.lock().unwrap().add_datagram(d, from.ip())
                });
            });
        }
    });
    if sent == 0 {
        if let Some(e) = last_error {
            return Err(e);
        }
    }
    Ok(collector.into_inner().unwrap().into_devices())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/onvif")
            .join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn probe_is_well_formed_and_asks_for_nvt() {
        let p = build_probe("urn:uuid:1");
        let doc = Doc::parse(p.as_bytes(), Limits::DATAGRAM).unwrap();
        let types = doc.root().find(NS_DISCOVERY, "Types").unwrap();
        assert_eq!(
            types.qnames(),
            &[(NS_DN.to_owned(), "NetworkVideoTransmitter".to_owned())]
        );
        assert_eq!(parse_message(p.as_bytes()).unwrap(), WsdMessage::Other);
    }

    #[test]
    fn probe_match_hikvision_style() {
        let WsdMessage::ProbeMatches { matches, .. } =
            parse_message(&data("probematch_hikvision.xml")).unwrap()
        else {
            panic!("not ProbeMatches")
        };
        assert_eq!(matches.len(), 1);
        let m = &matches[0];
        assert!(m.is_camera());
        assert_eq!(m.endpoint, "urn:uuid:54575a4e-4d31-3130-3530-bcbac2f06bc3");
        assert_eq!(m.xaddrs, ["http://192.0.2.64/onvif/device_service"]);
        let s = Scopes::parse(&m.scopes);
        assert_eq!(s.name.as_deref(), Some("Front Door"));
        assert_eq!(s.hardware.as_deref(), Some("DS-2CD2143G2-I"));
        assert_eq!(s.location.as_deref(), Some("porch"));
        assert!(s.profiles.contains(&"Streaming".to_owned()));
    }

    #[test]
    fn probe_match_dahua_style_tdn_prefix_two_xaddrs() {
        let WsdMessage::ProbeMatches { matches, .. } =
            parse_message(&data("probematch_dahua.xml")).unwrap()
        else {
            panic!()
        };
        assert!(matches[0].is_camera(), "{:?}", matches[0].types);
        assert_eq!(matches[0].xaddrs.len(), 2);
        let s = Scopes::parse(&matches[0].scopes);
        assert_eq!(s.hardware.as_deref(), Some("IPC-HDW2431T"));
        assert_eq!(s.name.as_deref(), Some("Dahua"));
    }

    #[test]
    fn probe_match_from_python_wsdiscovery() {
        let WsdMessage::ProbeMatches {
            matches,
            relates_to,
        } = parse_message(&data("probematch_wsdiscovery_py.xml")).unwrap()
        else {
            panic!()
        };
        assert!(relates_to.is_some());
        assert!(matches[0].is_camera());
        assert_eq!(
            Scopes::parse(&matches[0].scopes).name.as_deref(),
            Some("Porch Cam")
        );
    }

    #[test]
    fn hello_and_bye() {
        let WsdMessage::Hello(m) = parse_message(&data("hello_axis.xml")).unwrap() else {
            panic!()
        };
        assert!(m.is_camera());
        let bye = parse_message(&data("bye_axis.xml")).unwrap();
        assert_eq!(
            bye,
            WsdMessage::Bye {
                endpoint: m.endpoint.clone()
            }
        );
        let mut c = Collector::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        c.add_datagram(&data("hello_axis.xml"), ip);
        assert_eq!(c.devices.len(), 1);
        // A Bye spoofed from another address leaves the camera listed.
        c.add_datagram(&data("bye_axis.xml"), "192.0.2.99".parse().unwrap());
        assert_eq!(c.devices.len(), 1);
        c.add_datagram(&data("bye_axis.xml"), ip);
        assert!(c.into_devices().is_empty());
    }

    #[test]
    fn duplicates_collapse_by_endpoint() {
        let mut c = Collector::default();
        let ip: IpAddr = "192.0.2.64".parse().unwrap();
        for _ in 0..3 {
            c.add_datagram(&data("probematch_hikvision.xml"), ip);
        }
        c.add_datagram(&data("probematch_dahua.xml"), "192.0.2.65".parse().unwrap());
        let d = c.into_devices();
        assert_eq!(d.len(), 2);
        let hik = d
            .iter()
            .find(|d| d.endpoint.starts_with("urn:uuid:5457"))
            .unwrap();
        assert_eq!(hik.address, ip);
    }

    #[test]
    fn wrong_namespaces_are_not_matches() {
        match parse_message(&data("hostile_wrong_namespace.xml")) {
            Ok(WsdMessage::Other) | Err(_) => {}
            other => panic!("accepted: {other:?}"),
        }
    }

    #[test]
    fn hostile_inputs_are_refused_without_panic() {
        for f in [
            "hostile_billion_laughs.xml",
            "hostile_xxe.xml",
            "hostile_huge_scopes.xml",
            "hostile_truncated.xml",
        ] {
            let r = parse_message(&data(f));
            assert!(
                matches!(r, Err(_) | Ok(WsdMessage::ProbeMatches { .. })),
                "{f}: {r:?}"
            );
            if let Ok(WsdMessage::ProbeMatches { matches, .. }) = r {
                for m in matches {
                    assert!(m.scopes.len() <= MAX_SCOPES && m.endpoint.len() <= MAX_FIELD);
                }
            }
        }
        assert!(matches!(
            parse_message(&data("hostile_billion_laughs.xml")),
            Err(WsdError::Xml(XmlError::Doctype))
        ));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("Front%20Door"), "Front Door");
        assert_eq!(percent_decode("bad%zzx%4"), "bad%zzx%4");
        assert_eq!(percent_decode("a%00b%0Ac"), "abc");
        assert_eq!(percent_decode("%E6%97%A5"), "日");
        assert_eq!(percent_decode(&"%41".repeat(1000)).len(), 128);
    }
}
