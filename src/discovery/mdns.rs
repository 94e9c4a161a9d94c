//! mDNS / DNS-SD browsing (RFC 6762, RFC 6763) for cameras that advertise only that:
//! `_rtsp._tcp`, `_onvif._tcp` and Axis's `_axis-video._tcp`.
//!
//! Hand-rolled rather than the `mdns-sd` crate: one question and one answer format is all we
//! need, the parser stays pure and fuzzable like the WS-Discovery one, and the sockets stay
//! ours to pin to an interface. A query is a *legacy unicast* query (RFC 6762 §6.7): sent from
//! an ephemeral port to `224.0.0.251:5353`, so responders answer straight to that socket with
//! PTR, SRV, TXT and A records, and we never bind port 5353 (avahi may hold it).
//!
//! The parser ([`parse_packet`]) bounds everything a packet can claim: name compression
//! pointers must point backwards (no loops), names are at most 255 bytes, at most 256 records
//! are read, and every length is checked against the packet before use.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::net::{self, Interface};

/// The mDNS group.
pub const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
/// The mDNS port.
pub const PORT: u16 = 5353;
/// Service types browsed for.
pub const SERVICE_TYPES: [&str; 3] = [
    "_rtsp._tcp.local",
    "_onvif._tcp.local",
    "_axis-video._tcp.local",
];

const TYPE_A: u16 = 1;
const TYPE_PTR: u16 = 12;
const TYPE_TXT: u16 = 16;
const TYPE_SRV: u16 = 33;
const MAX_RECORDS: usize = 256;
const MAX_NAME: usize = 255;
const MAX_SERVICES: usize = 256;

/// Why a packet was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MdnsError {
    /// The packet ends inside a header, name or record.
    #[error("truncated DNS packet at byte {0}")]
    Truncated(usize),
    /// A name is malformed (forward or looping pointer, too long, bad label type).
    #[error("bad DNS name at byte {0}")]
    BadName(usize),
}

/// One resource record we use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// `service type → instance name`.
    Ptr {
        /// Owner (the service type, e.g. `_rtsp._tcp.local`).
        name: String,
        /// Instance full name (`Porch._rtsp._tcp.local`).
        target: String,
        /// TTL (0 is a goodbye).
        ttl: u32,
    },
    /// `instance → host:port`.
    Srv {
        /// Instance full name.
        name: String,
        /// Host name.
        target: String,
        /// Port.
        port: u16,
    },
    /// `instance → key=value…`.
    Txt {
        /// Instance full name.
        name: String,
        /// Entries, at most 32, each at most 255 bytes.
        entries: Vec<(String, String)>,
    },
    /// `host → IPv4`.
    A {
        /// Host name.
        name: String,
        /// Address.
        addr: Ipv4Addr,
    },
}

/// A parsed DNS message (only what we use).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Message id.
    pub id: u16,
    /// QR bit.
    pub is_response: bool,
    /// PTR/SRV/TXT/A records from every section.
    pub records: Vec<Record>,
}

/// A DNS-SD query (legacy unicast, so `id` is echoed) with one PTR question per type.
pub fn build_query(id: u16, service_types: &[&str]) -> Vec<u8> {
    let mut b = Vec::with_capacity(64 * service_types.len());
    b.extend_from_slice(&id.to_be_bytes());
    b.extend_from_slice(&[0, 0]); // standard query
    b.extend_from_slice(&(service_types.len() as u16).to_be_bytes());
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    for t in service_types {
        for label in t.split('.').filter(|l| !l.is_empty()) {
            b.push(label.len().min(63) as u8);
            b.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
        }
        b.push(0);
        b.extend_from_slice(&TYPE_PTR.to_be_bytes());
        b.extend_from_slice(&1u16.to_be_bytes()); // IN
    }
    b
}

fn u16_at(p: &[u8], i: usize) -> Result<u16, MdnsError> {
    p.get(i..i + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or(MdnsError::Truncated(i))
}

fn u32_at(p: &[u8], i: usize) -> Result<u32, MdnsError> {
    p.get(i..i + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(MdnsError::Truncated(i))
}

/// Reads a (possibly compressed) name at `start`; returns it and the offset after it.
fn read_name(p: &[u8], start: usize) -> Result<(String, usize), MdnsError> {
    let mut out = String::new();
    let mut pos = start;
    let mut end = None;
    // Every pointer must go strictly backwards from the label that holds it: no loops.
    let mut limit = start;
    loop {
        let len = *p.get(pos).ok_or(MdnsError::Truncated(pos))? as usize;
        match len & 0xc0 {
            0x00 if len == 0 => {
                return Ok((out, end.unwrap_or(pos + 1)));
            }
            0x00 => {
                let label = p
                    .get(pos + 1..pos + 1 + len)
                    .ok_or(MdnsError::Truncated(pos))?;
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&String::from_utf8_lossy(label));
                if out.len() > MAX_NAME * 2 {
                    return Err(MdnsError::BadName(pos));
                }
                pos += 1 + len;
            }
            0xc0 => {
                let target = (u16_at(p, pos)? & 0x3fff) as usize;
                if target >= limit {
                    return Err(MdnsError::BadName(pos));
                }
                end.get_or_insert(pos + 2);
                limit = target;
                pos = target;
            }
            _ => return Err(MdnsError::BadName(pos)),
        }
    }
}

fn parse_txt(rdata: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < rdata.len() && out.len() < 32 {
        let n = rdata[i] as usize;
        let Some(s) = rdata.get(i + 1..i + 1 + n) else {
            break;
        };
        i += 1 + n;
        let s = String::from_utf8_lossy(s);
        let (k, v) = s.split_once('=').unwrap_or((&s, ""));
        if !k.is_empty() {
            out.push((k.to_owned(), v.to_owned()));
        }
    }
    out
}

/// Parses one DNS message. Never panics.
pub fn parse_packet(p: &[u8]) -> Result<Packet, MdnsError> {
    let id = u16_at(p, 0)?;
    let flags = u16_at(p, 2)?;
    let qd = u16_at(p, 4)? as usize;
    let total = [6, 8, 10]
        .iter()
        .map(|&o| u16_at(p, o).map(usize::from))
        .sum::<Result<usize, _>>()?;
    let mut pos = 12;
    for _ in 0..qd.min(MAX_RECORDS) {
        let (_, next) = read_name(p, pos)?;
        pos = next + 4;
        if pos > p.len() {
            return Err(MdnsError::Truncated(pos));
        }
    }
    let mut records = Vec::new();
    for _ in 0..total.min(MAX_RECORDS) {
        let (name, next) = read_name(p, pos)?;
        let rtype = u16_at(p, next)?;
        let ttl = u32_at(p, next + 4)?;
        let rdlen = u16_at(p, next + 8)? as usize;
        let rstart = next + 10;
        let rdata = p
            .get(rstart..rstart + rdlen)
            .ok_or(MdnsError::Truncated(rstart))?;
        pos = rstart + rdlen;
        let rec = match rtype {
            TYPE_PTR => Record::Ptr {
                name,
                target: read_name(p, rstart)?.0,
                ttl,
            },
            TYPE_SRV if rdlen >= 7 => Record::Srv {
                name,
                port: u16_at(p, rstart + 4)?,
                target: read_name(p, rstart + 6)?.0,
            },
            TYPE_TXT => Record::Txt {
                name,
                entries: parse_txt(rdata),
            },
            TYPE_A if rdlen == 4 => Record::A {
                name,
                addr: Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]),
            },
            _ => continue,
        };
        records.push(rec);
    }
    Ok(Packet {
        id,
        is_response: flags & 0x8000 != 0,
        records,
    })
}

/// One advertised service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MdnsService {
    /// Instance name (the first label of the full name: `Porch Doorbell`).
    pub instance: String,
    /// Service type (`_rtsp._tcp`).
    pub service: String,
    /// Host name from SRV, if given.
    pub host: Option<String>,
    /// Port from SRV (0 when no SRV was seen).
    pub port: u16,
    /// The device's address: its A record, else the packet's source.
    pub address: IpAddr,
    /// TXT entries.
    pub txt: Vec<(String, String)>,
}

fn eq_name(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

/// Folds packets into services of the browsed types. Pure.
#[derive(Debug, Default)]
pub struct Collector {
    services: BTreeMap<String, MdnsService>,
}

impl Collector {
    /// Takes one packet from `from`, answering `expect_id`.
    pub fn add_packet(&mut self, packet: &[u8], from: IpAddr, expect_id: u16) {
        let pkt = match parse_packet(packet) {
            Ok(p) if p.is_response && (p.id == expect_id || p.id == 0) => p,
            Ok(_) => return,
            Err(error) => {
                debug!(%from, %error, "Ignoring an unusable mDNS packet.");
                return;
            }
        };
        for r in &pkt.records {
            let Record::Ptr { name, target, ttl } = r else {
                continue;
            };
            let Some(stype) = SERVICE_TYPES.iter().find(|t| eq_name(t, name)) else {
                continue;
            };
            let key = target.to_ascii_lowercase();
            if *ttl == 0 {
                self.services.remove(&key);
                continue;
            }
            if self.services.len() >= MAX_SERVICES && !self.services.contains_key(&key) {
                continue;
            }
            let suffix = format!(".{stype}");
            let instance = target
                .strip_suffix(&suffix)
                .or_else(|| target.strip_suffix(&format!("{suffix}.")))
                .unwrap_or(target);
            let mut svc = MdnsService {
                instance: super::xml::cap(instance, 128).into_owned(),
                service: stype.trim_end_matches(".local").to_owned(),
                host: None,
                port: 0,
                address: from,
                txt: Vec::new(),
            };
            for r in &pkt.records {
                match r {
                    Record::Srv {
                        name,
                        target: h,
                        port,
                    } if eq_name(name, target) => {
                        svc.host = Some(super::xml::cap(h, 255).into_owned());
                        svc.port = *port;
                    }
                    Record::Txt { name, entries } if eq_name(name, target) => {
                        svc.txt = entries.clone();
                    }
                    _ => {}
                }
            }
            if let Some(h) = &svc.host {
                if let Some(addr) = pkt.records.iter().find_map(|r| match r {
                    Record::A { name, addr } if eq_name(name, h) => Some(*addr),
                    _ => None,
                }) {
                    svc.address = IpAddr::V4(addr);
                }
            }
            self.services.entry(key).or_insert(svc);
        }
    }

    /// The services, ordered by full name.
    pub fn into_services(self) -> Vec<MdnsService> {
        self.services.into_values().collect()
    }
}

/// Browses on every interface (and each unicast host) for `timeout`.
pub fn browse(
    interfaces: &[Interface],
    hosts: &[IpAddr],
    timeout: Duration,
) -> std::io::Result<Vec<MdnsService>> {
    let id = u16::from_be_bytes([net::random_bytes()[0], net::random_bytes()[1]]) | 1;
    let query = build_query(id, &SERVICE_TYPES);
    let deadline = Instant::now() + timeout;
    let collector = Mutex::new(Collector::default());
    let mut sockets = Vec::new();
    let mut last_error = None;
    for iface in interfaces {
        // RFC 6762 §11: mDNS is sent with IP TTL 255 (receivers may check it).
        match net::multicast_sender(iface, 255) {
            Ok(s) => sockets.push((s, SocketAddr::V4(SocketAddrV4::new(GROUP, PORT)))),
            Err(e) => {
                warn!(interface = %iface.name, error = %e, "Cannot open an mDNS socket.");
                last_error = Some(e);
            }
        }
    }
    for h in hosts.iter().filter(|h| h.is_ipv4()) {
        match std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) {
            Ok(s) => sockets.push((s, SocketAddr::new(*h, PORT))),
            Err(e) => last_error = Some(e),
        }
    }
    let mut sent = 0;
    std::thread::scope(|scope| {
        for (sock, dest) in &sockets {
            if let Err(e) = sock.send_to(&query, dest) {
                debug!(%dest, error = %e, "Cannot send the mDNS query.");
                last_error = Some(e);
                continue;
            }
            sent += 1;
            let collector = &collector;
            let query = &query;
            scope.spawn(move || {
                let again = Instant::now() + Duration::from_millis(500);
                let mut take = |d: &[u8], from: SocketAddr| {
                    collector.lock().unwrap().add_packet(d, from.ip(), id)
                };
                let _ = net::recv_until(sock, again.min(deadline), &mut take);
                if Instant::now() < deadline {
                    let _ = sock.send_to(query, dest);
                }
                let _ = net::recv_until(sock, deadline, &mut take);
            });
        }
    });
    if sent == 0 {
        if let Some(e) = last_error {
            return Err(e);
        }
    }
    Ok(collector.into_inner().unwrap().into_services())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a response the way zeroconf and avahi do (with compression).
    fn response(id: u16) -> Vec<u8> {
        let mut b = vec![];
        b.extend_from_slice(&id.to_be_bytes());
        b.extend_from_slice(&[0x84, 0x00, 0, 0, 0, 1, 0, 0, 0, 3]);
        // PTR _rtsp._tcp.local -> Porch Doorbell._rtsp._tcp.local
        let svc_off = b.len();
        for l in ["_rtsp", "_tcp", "local"] {
            b.push(l.len() as u8);
            b.extend_from_slice(l.as_bytes());
        }
        b.push(0);
        b.extend_from_slice(&[0, 12, 0, 1, 0, 0, 0x11, 0x94]);
        let inst = b"Porch Doorbell";
        b.extend_from_slice(&((inst.len() + 3) as u16).to_be_bytes());
        let inst_off = b.len();
        b.push(inst.len() as u8);
        b.extend_from_slice(inst);
        b.extend_from_slice(&[0xc0, svc_off as u8]);
        // SRV
        b.extend_from_slice(&[0xc0, inst_off as u8, 0, 33, 0x80, 1, 0, 0, 0, 120]);
        let host = b"\x08doorbell\xc0";
        b.extend_from_slice(&((6 + host.len() + 1) as u16).to_be_bytes());
        b.extend_from_slice(&[0, 0, 0, 0, 0x02, 0x2a]); // port 554
        let host_off = b.len();
        b.extend_from_slice(host);
        b.push((svc_off + 11) as u8); // -> "local"
                                      // TXT
        b.extend_from_slice(&[0xc0, inst_off as u8, 0, 16, 0x80, 1, 0, 0, 0x11, 0x94]);
        let txt = b"\x0cpath=/live/1\x06vendor";
        b.extend_from_slice(&(txt.len() as u16).to_be_bytes());
        b.extend_from_slice(txt);
        // A
        b.extend_from_slice(&[0xc0, host_off as u8, 0, 1, 0x80, 1, 0, 0, 0, 120, 0, 4]);
        b.extend_from_slice(&[192, 0, 2, 33]);
        b
    }

    #[test]
    fn query_has_one_ptr_question_per_type() {
        let q = build_query(7, &SERVICE_TYPES);
        assert_eq!(&q[..6], &[0, 7, 0, 0, 0, 3]);
        let p = parse_packet(&q).unwrap();
        assert!(!p.is_response && p.records.is_empty());
    }

    #[test]
    fn response_with_compression_becomes_a_service() {
        let r = response(9);
        let p = parse_packet(&r).unwrap();
        assert_eq!(p.records.len(), 4, "{p:?}");
        let mut c = Collector::default();
        c.add_packet(&r, "192.0.2.99".parse().unwrap(), 9);
        c.add_packet(&r, "192.0.2.99".parse().unwrap(), 9);
        let s = c.into_services();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].instance, "Porch Doorbell");
        assert_eq!(s[0].service, "_rtsp._tcp");
        assert_eq!(s[0].port, 554);
        assert_eq!(s[0].host.as_deref(), Some("doorbell.local"));
        assert_eq!(s[0].address, "192.0.2.33".parse::<IpAddr>().unwrap());
        assert_eq!(
            s[0].txt,
            [
                ("path".to_owned(), "/live/1".to_owned()),
                ("vendor".to_owned(), String::new())
            ]
        );
    }

    #[test]
    fn other_ids_and_queries_are_ignored() {
        let mut c = Collector::default();
        c.add_packet(&response(9), "192.0.2.99".parse().unwrap(), 10);
        c.add_packet(
            &build_query(9, &SERVICE_TYPES),
            "192.0.2.99".parse().unwrap(),
            9,
        );
        assert!(c.into_services().is_empty());
    }

    #[test]
    fn pointer_loops_and_truncation_are_errors() {
        // A name that points at itself.
        let mut p = vec![0, 1, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        p.extend_from_slice(&[0xc0, 12, 0, 12, 0, 1, 0, 0, 0, 1, 0, 2, 0xc0, 24]);
        assert!(matches!(parse_packet(&p), Err(MdnsError::BadName(_))));
        let r = response(1);
        for n in 0..r.len() {
            let _ = parse_packet(&r[..n]);
        }
        assert!(parse_packet(&r[..r.len() - 1]).is_err());
        // Random bytes never panic.
        let mut rng = fastrand::Rng::with_seed(6);
        for _ in 0..2000 {
            let len = rng.usize(0..200);
            let mut b: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            if b.len() > 12 && rng.bool() {
                let n = r.len().min(b.len());
                b[..n].copy_from_slice(&r[..n]);
                let i = rng.usize(0..b.len());
                b[i] = rng.u8(..);
            }
            let _ = parse_packet(&b);
        }
    }
}
