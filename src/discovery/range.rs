//! Unicast WS-Discovery over a subnet range, for networks that drop multicast (many home
//! routers and VLANs do): `porchlight discover --range 192.168.1.0/24`, or `[discovery] ranges`.
//!
//! Limits, so this never becomes a network scanner:
//! - only private IPv4 ranges (RFC 1918: 10/8, 172.16/12, 192.168/16) and at most a /22
//!   (1022 hosts): discovery results never leave the house, and neither do probes;
//! - one Probe per host (no repeat), paced at [`RATE_PER_S`] datagrams per second from a single
//!   socket, so a /24 takes about 1.3 s and a /22 about 5 s of sending;
//! - replies are accepted only from addresses inside the range, and folded by the same
//!   [`super::wsd::Collector`] as multicast replies (deduplicated, capped, hostile-safe).
//!
//! mDNS is not probed by range: a unicast mDNS query per host would double the traffic for
//! devices that nearly all speak WS-Discovery when they speak ONVIF at all.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::debug;

use super::{net, wsd};

/// The widest range accepted (a /22: 1024 addresses).
pub const MAX_PREFIX_WIDTH: u8 = 22;
/// Probes sent per second.
pub const RATE_PER_S: u32 = 200;

/// An IPv4 range in CIDR form, checked to be private and at most a /22.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// Network address (host bits cleared).
    pub network: Ipv4Addr,
    /// Prefix length, 22..=32.
    pub prefix: u8,
}

/// Why a range was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RangeError {
    /// Not `A.B.C.D/N`.
    #[error("{0:?} is not a range like 192.168.1.0/24")]
    Syntax(String),
    /// Wider than a /22.
    #[error("{0} is too wide: at most a /{MAX_PREFIX_WIDTH} (1024 addresses) is probed")]
    TooWide(String),
    /// Not inside 10/8, 172.16/12 or 192.168/16.
    #[error("{0} is not a private home-network range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16)")]
    NotPrivate(String),
}

impl std::str::FromStr for Range {
    type Err = RangeError;

    fn from_str(s: &str) -> Result<Range, RangeError> {
        let t = s.trim();
        let syntax = || RangeError::Syntax(t.to_owned());
        let (ip, len) = t.split_once('/').ok_or_else(syntax)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| syntax())?;
        let prefix: u8 = len.parse().map_err(|_| syntax())?;
        if prefix > 32 {
            return Err(syntax());
        }
        if prefix < MAX_PREFIX_WIDTH {
            return Err(RangeError::TooWide(t.to_owned()));
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        let network = Ipv4Addr::from(u32::from(ip) & mask);
        // Every address of the range must be private; with prefix >= 22 checking the network
        // address against the (wider) private blocks is enough.
        if !network.is_private() {
            return Err(RangeError::NotPrivate(t.to_owned()));
        }
        Ok(Range { network, prefix })
    }
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Range {
    /// The host addresses (network and broadcast addresses left out below a /31).
    pub fn hosts(&self) -> Vec<Ipv4Addr> {
        let base = u32::from(self.network);
        let size = 1u32 << (32 - u32::from(self.prefix));
        let (first, last) = if size > 2 {
            (base + 1, base + size - 2)
        } else {
            (base, base + size - 1)
        };
        (first..=last).map(Ipv4Addr::from).collect()
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let IpAddr::V4(ip) = ip else { return false };
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.network)
    }
}

/// Sends one paced unicast Probe to every host of `ranges` and collects ProbeMatches until
/// `window` after the last one was sent.
pub fn probe(ranges: &[Range], window: Duration) -> std::io::Result<Vec<wsd::WsdDevice>> {
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    let probe = wsd::build_probe(&net::random_urn());
    let hosts: Vec<Ipv4Addr> = ranges.iter().flat_map(Range::hosts).collect();
    let gap = Duration::from_secs(1) / RATE_PER_S;
    let collector = Mutex::new(wsd::Collector::default());
    let sending_done = Mutex::new(None::<Instant>);
    let take = |d: &[u8], from: SocketAddr| {
        if ranges.iter().any(|r| r.contains(from.ip())) {
            collector
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .add_datagram(d, from.ip());
        }
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut next = Instant::now();
            for h in &hosts {
                if let Err(error) = sock.send_to(probe.as_bytes(), (*h, wsd::PORT)) {
                    debug!(%error, "A range probe could not be sent.");
                }
                next += gap;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            *sending_done.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        });
        // Receive while sending, then for the window after the last probe.
        let started = Instant::now();
        let max_send = gap * hosts.len() as u32 + Duration::from_secs(1);
        loop {
            let done = *sending_done.lock().unwrap_or_else(|p| p.into_inner());
            let deadline = match done {
                Some(t) => t + window,
                None => {
                    (Instant::now() + Duration::from_millis(200)).min(started + max_send + window)
                }
            };
            if let Err(error) = net::recv_until(&sock, deadline, take) {
                debug!(%error, "Range probe receive failed.");
                break;
            }
            if done.is_some() || Instant::now() >= started + max_send + window {
                break;
            }
        }
    });
    Ok(collector
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_devices())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_private_and_small() {
        let r: Range = "192.168.1.77/24".parse().unwrap();
        assert_eq!(r.to_string(), "192.168.1.0/24");
        assert_eq!(r.hosts().len(), 254);
        assert!(r.contains("192.168.1.9".parse().unwrap()));
        assert!(!r.contains("192.168.2.9".parse().unwrap()));
        assert_eq!("10.1.4.0/22".parse::<Range>().unwrap().hosts().len(), 1022);
        assert_eq!("172.16.0.5/32".parse::<Range>().unwrap().hosts().len(), 1);
        for (bad, want) in [
            ("10.0.0.0/21", "too wide"),
            ("8.8.8.0/24", "not a private"),
            ("127.0.0.0/24", "not a private"),
            ("172.32.0.0/24", "not a private"),
            ("192.168.1.0", "not a range"),
            ("192.168.1.0/33", "not a range"),
            ("fe80::/120", "not a range"),
        ] {
            let e = bad.parse::<Range>().unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }
}
