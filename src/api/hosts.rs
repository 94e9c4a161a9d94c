//! Which `Host` (and `Origin`) a listener answers to: the defence against DNS rebinding.
//!
//! A page on `attacker.example` whose name is rebound to the box's LAN address is, to the
//! browser, same-origin with the box: it may read answers and send the `Origin` and `Host` of
//! its own name. What it cannot change is that name. So every request on the web UI's listener
//! and on the control API's listener must name the box, or it is answered `421 bad_host`
//! before any route runs (the page, `/auth/*`, the API, static assets, the fallback).
//!
//! - **Web UI** ([`HostPolicy::web`]): `porchlight.local`, the names in `[web] hosts`,
//!   `localhost`, `127.0.0.1`, `[::1]`, and IP literals of the box's own interfaces (read with
//!   getifaddrs at request time, [`crate::discovery::net::local_addrs`], only when the `Host`
//!   is an IP literal). An IP literal is never an attacker's name, but an IP that is not the
//!   box's is not meant for it either. A port is optional (a `80 → 8080` redirect keeps none);
//!   when given it must be the listener's.
//! - **Control API** ([`HostPolicy::api`]): `127.0.0.1`, `[::1]`, `localhost` and the literal
//!   address of `[api] listen` (what the CLI puts in `Host`), always with the listener's port.
//!
//! State-changing requests on the web UI are then checked for `Origin` against the same list
//! ([`HostPolicy::allows_origin`]), not against the request's own `Host`, which the rebinding
//! page controls as much as its `Origin`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::debug;

use super::ApiError;

/// The name the appliance announces with avahi.
pub const MDNS_NAME: &str = "porchlight.local";

/// The hosts one listener answers to.
#[derive(Clone, Debug)]
pub struct HostPolicy {
    /// The listener's port: an explicit port must be this one.
    port: u16,
    /// Whether a `Host` without a port is accepted.
    port_optional: bool,
    /// Allowed names, lower case, without a trailing dot.
    names: Vec<String>,
    /// Allowed IP literals besides the interfaces'.
    ips: Vec<IpAddr>,
    /// Whether any address of the box's own interfaces is allowed.
    own_addresses: bool,
}

/// A `Host` or `Origin` authority, parsed.
#[derive(Debug, PartialEq, Eq)]
enum Authority {
    Ip(IpAddr, Option<u16>),
    Name(String, Option<u16>),
}

impl HostPolicy {
    /// The web UI's policy on `port`, with the extra names of `[web] hosts`.
    pub fn web(port: u16, extra: &[String]) -> HostPolicy {
        let mut names = vec![MDNS_NAME.to_owned(), "localhost".to_owned()];
        names.extend(extra.iter().map(|n| normalize_name(n)));
        HostPolicy {
            port,
            port_optional: true,
            names,
            ips: vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()],
            own_addresses: true,
        }
    }

    /// The control API's policy for a listener bound to `listen`: loopback only, plus the
    /// bound address itself (the CLI sends `Host: {api.listen}`), port required.
    pub fn api(listen: SocketAddr) -> HostPolicy {
        let mut ips: Vec<IpAddr> = vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()];
        if !ips.contains(&listen.ip()) {
            ips.push(listen.ip());
        }
        HostPolicy {
            port: listen.port(),
            port_optional: false,
            names: vec!["localhost".to_owned()],
            ips,
            own_addresses: false,
        }
    }

    /// Whether a `Host` header value (`name[:port]`, `v4[:port]`, `[v6][:port]`) names this
    /// listener.
    pub fn allows(&self, host: &str) -> bool {
        self.allows_with(host, || {
            crate::discovery::net::local_addrs().unwrap_or_else(|e| {
                debug!(error = %e, "Cannot list the interfaces' addresses");
                Vec::new()
            })
        })
    }

    /// Whether an `Origin` header value (`http(s)://authority`) is a page of this listener.
    /// `null` and anything with a path are not.
    pub fn allows_origin(&self, origin: &str) -> bool {
        let rest = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        match rest {
            Some(authority) if !authority.contains('/') => self.allows(authority),
            _ => false,
        }
    }

    fn allows_with(&self, host: &str, own: impl FnOnce() -> Vec<IpAddr>) -> bool {
        let Some(authority) = parse(host) else {
            return false;
        };
        let port = match &authority {
            Authority::Ip(_, p) | Authority::Name(_, p) => *p,
        };
        match port {
            Some(p) if p != self.port => return false,
            None if !self.port_optional => return false,
            _ => {}
        }
        match authority {
            Authority::Name(name, _) => self.names.contains(&name),
            Authority::Ip(ip, _) => {
                self.ips.contains(&ip) || (self.own_addresses && own().contains(&ip))
            }
        }
    }
}

/// Lower case, one trailing dot (the absolute form) dropped.
fn normalize_name(name: &str) -> String {
    let n = name.trim().to_ascii_lowercase();
    n.strip_suffix('.').map(str::to_owned).unwrap_or(n)
}

/// Parses `host[:port]`; `None` for anything that is not a plain authority (user info, a bare
/// IPv6 address, an empty or non-numeric port, characters no DNS name has).
fn parse(s: &str) -> Option<Authority> {
    let port = |p: &str| -> Option<Option<u16>> {
        if p.is_empty() {
            return Some(None);
        }
        let p = p.strip_prefix(':')?;
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok().map(Some)
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, tail) = rest.split_once(']')?;
        let ip: Ipv6Addr = ip.parse().ok()?;
        return Some(Authority::Ip(IpAddr::V6(ip), port(tail)?));
    }
    let (host, p) = match s.rsplit_once(':') {
        Some((h, p)) => (h, port(&format!(":{p}"))?),
        None => (s, None),
    };
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Some(Authority::Ip(IpAddr::V4(ip), p));
    }
    check_host_name(host).ok()?;
    Some(Authority::Name(normalize_name(host), p))
}

/// Checks a DNS name as `[web] hosts` takes it: letters, digits, `-` and `.`, labels of 1 to
/// 63 characters not starting or ending with `-`, at most 253 characters, no port, not an IP
/// literal (the box's own addresses are allowed without listing them).
pub fn check_host_name(name: &str) -> Result<(), String> {
    let n = name.strip_suffix('.').unwrap_or(name);
    if n.is_empty() || n.len() > 253 {
        return Err(format!("{name:?} is not a DNS name (1 to 253 characters)"));
    }
    if n.parse::<IpAddr>().is_ok() {
        return Err(format!(
            "{name:?} is an IP address; the box's own addresses are allowed without listing them"
        ));
    }
    for label in n.split('.') {
        let ok = (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "{name:?} is not a DNS name (labels of letters, digits and inner '-', no port)"
            ));
        }
    }
    Ok(())
}

/// Middleware: `421 bad_host` unless the request's `Host` header (and the authority of an
/// absolute-form request target, when there is one) names this listener.
pub async fn require_host(
    State(policy): State<Arc<HostPolicy>>,
    req: Request,
    next: Next,
) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    let target = req.uri().authority().map(|a| a.as_str().to_owned());
    let ok = match (&host, &target) {
        (None, None) => false,
        _ => [&host, &target]
            .into_iter()
            .flatten()
            .all(|h| policy.allows(h)),
    };
    if !ok {
        debug!(host = ?host, target = ?target, "Request for another host refused");
        return ApiError::BadHost(host.unwrap_or_default()).into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> Vec<IpAddr> {
        vec!["192.168.1.5".parse().unwrap(), "fd00::5".parse().unwrap()]
    }

    #[test]
    fn the_web_ui_answers_to_its_names_and_the_boxs_addresses_on_its_port() {
        let p = HostPolicy::web(8080, &["Box.Home.Arpa.".to_owned()]);
        for host in [
            "porchlight.local",
            "porchlight.local:8080",
            "PORCHLIGHT.LOCAL.:8080",
            "box.home.arpa:8080",
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "[::1]",
            "192.168.1.5:8080",
            "[fd00::5]:8080",
        ] {
            assert!(p.allows_with(host, own), "{host}");
        }
        for host in [
            "evil.example:8080",
            "evil.example",
            "porchlight.local:8081",
            "porchlight.local.evil.example:8080",
            "192.168.1.6:8080",
            "10.0.0.1",
            "user@porchlight.local:8080",
            "porchlight.local:",
            "porchlight.local:80x",
            "::1",
            "[::1]x",
            "",
            "porch light.local",
        ] {
            assert!(!p.allows_with(host, own), "{host}");
        }
    }

    #[test]
    fn the_control_api_answers_to_loopback_with_its_port_only() {
        let p = HostPolicy::api("127.0.0.1:7878".parse().unwrap());
        for host in ["127.0.0.1:7878", "[::1]:7878", "localhost:7878"] {
            assert!(p.allows_with(host, own), "{host}");
        }
        for host in [
            "127.0.0.1",
            "localhost",
            "evil.example:7878",
            "porchlight.local:7878",
            "192.168.1.5:7878",
            "127.0.0.1:7879",
        ] {
            assert!(!p.allows_with(host, own), "{host}");
        }
        let lan = HostPolicy::api("192.168.1.5:7878".parse().unwrap());
        assert!(lan.allows_with("192.168.1.5:7878", Vec::new));
    }

    #[test]
    fn origins_are_checked_against_the_list_not_the_host() {
        let p = HostPolicy::web(8080, &[]);
        assert!(p.allows_origin("http://127.0.0.1:8080"));
        assert!(p.allows_origin("https://porchlight.local"));
        assert!(!p.allows_origin("http://evil.example:8080"));
        assert!(!p.allows_origin("null"));
        assert!(!p.allows_origin("http://127.0.0.1:8080/x"));
        assert!(!p.allows_origin("ftp://127.0.0.1:8080"));
    }

    #[test]
    fn configured_names_must_be_dns_names() {
        assert!(check_host_name("box.home.arpa").is_ok());
        assert!(check_host_name("porchlight.").is_ok());
        for bad in [
            "",
            "192.168.1.5",
            "::1",
            "box:8080",
            "*.home.arpa",
            "-box.home",
            "a..b",
        ] {
            assert!(check_host_name(bad).is_err(), "{bad}");
        }
    }
}
