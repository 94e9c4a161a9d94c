//! Interfaces and sockets for link-local discovery: which IPv4 interfaces to probe on, and UDP
//! sockets pinned to one of them.
//!
//! A probe goes out on *every* suitable interface, not only the default route's: a box with a
//! wired LAN and a camera VLAN must see both. Suitable means up, multicast-capable, IPv4, and
//! not loopback (unless asked, for tests). Each socket is bound to the interface's address and
//! has `IP_MULTICAST_IF` set to it, so the kernel never picks the route, and a multicast TTL of
//! 1 (link-local; nothing is routed off the LAN).
//!
//! [`local_addrs`] lists every address of the box (both families), for the web UI's `Host`
//! allowlist.

use std::ffi::CStr;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

/// One IPv4 address of a network interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// Kernel name (`eth0`).
    pub name: String,
    /// Its IPv4 address.
    pub addr: Ipv4Addr,
    /// Its netmask.
    pub netmask: Ipv4Addr,
    /// Whether it is a loopback interface.
    pub loopback: bool,
}

impl Interface {
    /// Whether `ip` is on this interface's subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let m = u32::from(self.netmask);
        u32::from(self.addr) & m == u32::from(ip) & m
    }
}

/// The IPv4 interfaces that are up and multicast-capable (loopback included only when
/// `include_loopback`, which tests use; `lo` is never multicast-flagged, so it is taken as is).
/// `only`, when not empty, restricts to those interface names.
pub fn interfaces(include_loopback: bool, only: &[String]) -> io::Result<Vec<Interface>> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free with freeifaddrs below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, valid until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points at a sockaddr whose family we check first.
        let family = unsafe { (*ifa.ifa_addr).sa_family } as i32;
        if family != libc::AF_INET {
            continue;
        }
        let flags = ifa.ifa_flags;
        let up = flags & libc::IFF_UP as u32 != 0;
        let loopback = flags & libc::IFF_LOOPBACK as u32 != 0;
        let multicast = flags & libc::IFF_MULTICAST as u32 != 0;
        if !up || (loopback && !include_loopback) || (!loopback && !multicast) {
            continue;
        }
        // SAFETY: family is AF_INET, so the sockaddr is a sockaddr_in.
        let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
        let addr = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        let netmask = if ifa.ifa_netmask.is_null() {
            Ipv4Addr::new(255, 255, 255, 255)
        } else {
            // SAFETY: the netmask of an AF_INET address is a sockaddr_in.
            let m = unsafe { &*(ifa.ifa_netmask as *const libc::sockaddr_in) };
            Ipv4Addr::from(u32::from_be(m.sin_addr.s_addr))
        };
        // SAFETY: ifa_name is a NUL-terminated C string owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        if !only.is_empty() && !only.contains(&name) {
            continue;
        }
        out.push(Interface {
            name,
            addr,
            netmask,
            loopback,
        });
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// Every address (IPv4 and IPv6, loopback included) of the interfaces that are up: the
/// addresses this box can be reached at, for the web UI's `Host` allowlist
/// (`crate::web::hosts`). Read fresh on every call, so a DHCP change needs no restart.
pub fn local_addrs() -> io::Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free with freeifaddrs below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, valid until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_flags & libc::IFF_UP as u32 == 0 {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points at a sockaddr whose family we check first.
        match unsafe { (*ifa.ifa_addr).sa_family } as i32 {
            libc::AF_INET => {
                // SAFETY: family is AF_INET, so the sockaddr is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            }
            libc::AF_INET6 => {
                // SAFETY: family is AF_INET6, so the sockaddr is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
            _ => {}
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// A UDP socket bound to `iface` (ephemeral port), sending multicast out of it only, TTL
/// `ttl`, with multicast loopback on (so a responder on the same host, or on `lo`, is heard).
pub fn multicast_sender(iface: &Interface, ttl: u32) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.bind(&SocketAddr::V4(SocketAddrV4::new(iface.addr, 0)).into())?;
    s.set_multicast_if_v4(&iface.addr)?;
    s.set_multicast_ttl_v4(ttl)?;
    s.set_multicast_loop_v4(true)?;
    Ok(s.into())
}

/// A UDP socket bound to `0.0.0.0:port` with `SO_REUSEADDR`, joined to `group` on every
/// interface in `ifaces`: a listener for announcements (WS-Discovery Hello/Bye).
pub fn group_listener(port: u16, group: Ipv4Addr, ifaces: &[Interface]) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)).into())?;
    let mut joined = 0;
    for i in ifaces {
        if s.join_multicast_v4(&group, &i.addr).is_ok() {
            joined += 1;
        }
    }
    if joined == 0 && !ifaces.is_empty() {
        return Err(io::Error::other("could not join the multicast group"));
    }
    Ok(s.into())
}

/// Receives datagrams on `sock` until `deadline`, handing each (bytes, source) to `f`.
/// Datagrams are read into a 64 KiB buffer (the UDP maximum), so none is ever truncated into
/// something that parses differently.
pub fn recv_until(
    sock: &UdpSocket,
    deadline: Instant,
    mut f: impl FnMut(&[u8], SocketAddr),
) -> io::Result<()> {
    let mut buf = vec![0u8; 65_536];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(());
        }
        sock.set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))?;
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => f(&buf[..n], from),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(())
            }
            // ICMP port unreachable from an earlier unicast probe: keep listening.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
            Err(e) => return Err(e),
        }
    }
}

/// 16 random bytes from the kernel (message ids, nonces): [`crate::secret::random_bytes`].
pub fn random_bytes() -> [u8; 16] {
    crate::secret::random_bytes::<16>()
}

/// A random `urn:uuid:` (version 4).
pub fn random_urn() -> String {
    let mut b = random_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed_only_when_asked() {
        let all = interfaces(true, &[]).unwrap();
        assert!(all.iter().any(|i| i.loopback && i.addr.is_loopback()));
        assert!(interfaces(false, &[]).unwrap().iter().all(|i| !i.loopback));
        let lo = interfaces(true, &["lo".to_owned()]).unwrap();
        assert!(lo.iter().all(|i| i.name == "lo"));
    }

    #[test]
    fn local_addresses_include_loopback() {
        let all = local_addrs().unwrap();
        assert!(all.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{all:?}");
    }

    #[test]
    fn urn_is_a_v4_uuid() {
        let u = random_urn();
        assert_eq!(u.len(), 45, "{u}");
        assert_eq!(&u[23..24], "4");
        assert_ne!(u, random_urn());
    }

    #[test]
    fn subnet_check() {
        let i = Interface {
            name: "x".into(),
            addr: Ipv4Addr::new(10, 0, 0, 5),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            loopback: false,
        };
        assert!(i.contains(Ipv4Addr::new(10, 0, 0, 200)));
        assert!(!i.contains(Ipv4Addr::new(10, 0, 1, 5)));
    }
}
