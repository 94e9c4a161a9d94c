//! Secrets that never print, URLs that cannot carry credentials, and the one random source.
//!
//! Leaf layer: imports nothing of this crate.
//! - [`Secret`]: camera passwords (and other secrets the box must hand on) print as
//!   `<redacted>` in `Debug` and `Display`, so a log line or error cannot leak them by accident.
//! - [`RedactedUrl`]: a URL whose only constructor removes user info; types that are shown,
//!   logged or serialized hold this, never a raw URL ("redacted by type, not by care").
//! - [`constant_time_eq`]: comparing tokens without a timing side channel.
//! - [`random_bytes`] / [`random_token`]: the kernel's CSPRNG through ring, for tokens, setup
//!   codes, nonces and message ids.

use std::fmt;

use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use url::Url;

/// A secret string (camera password) that never prints.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself, for handing to the RTSP client only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Whether a URL query key names a credential (`?user=…&password=…`, as some cameras take
/// them): such pairs are stripped wherever a URL is shown and refused where one is configured.
pub fn is_credential_key(key: &str) -> bool {
    matches!(
        key.to_ascii_lowercase().as_str(),
        "user" | "username" | "password" | "pass" | "passwd" | "pwd" | "token" | "auth"
    )
}

/// `url` without user info and without credential query pairs ([`is_credential_key`]).
pub fn strip_credentials(url: &mut Url) {
    let _ = url.set_username("");
    let _ = url.set_password(None);
    if url.query().is_some() {
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| !is_credential_key(k))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if kept.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(kept);
        }
    }
}

/// A URL (as text) with any user info removed; the only way to build one strips it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct RedactedUrl(String);

impl RedactedUrl {
    /// `raw` without user name, password or credential query pairs. An unparseable URL keeps
    /// only what follows its last `@` and loses its query, so a password cannot leak through a
    /// typo either.
    pub fn new(raw: &str) -> RedactedUrl {
        RedactedUrl(match Url::parse(raw) {
            Ok(mut u) => {
                strip_credentials(&mut u);
                u.to_string()
            }
            Err(_) => {
                let rest = match raw.rfind('@') {
                    Some(at) => format!("<credentials removed>@{}", &raw[at + 1..]),
                    None => raw.to_owned(),
                };
                match rest.split_once('?') {
                    Some((before, _)) => format!("{before}?<query removed>"),
                    None => rest,
                }
            }
        })
    }

    /// The redacted text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&Url> for RedactedUrl {
    fn from(u: &Url) -> RedactedUrl {
        RedactedUrl::new(u.as_str())
    }
}

impl fmt::Display for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A URL with any user info removed, for messages (see [`RedactedUrl`]).
pub fn redact_url(raw: &str) -> String {
    RedactedUrl::new(raw).0
}

/// Whether `a == b`, in time that depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `N` bytes from the kernel's CSPRNG.
///
/// Panics if the kernel refuses (`getrandom(2)` does not fail on Linux ≥ 3.17 once the pool
/// is seeded; a box that cannot get randomness must not make tokens or keys).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .expect("the system CSPRNG failed");
    b
}

/// A fresh random token: 32 bytes as 64 hex characters.
pub fn random_token() -> String {
    hex::encode(random_bytes::<32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "<redacted> <redacted>");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn redacted_url_removes_user_info_even_when_unparseable() {
        assert_eq!(
            RedactedUrl::new("rtsp://u:p@192.0.2.1:554/a").as_str(),
            "rtsp://192.0.2.1:554/a"
        );
        assert!(!redact_url("rtsp://u:p@@bad url").contains(":p"));
        assert_eq!(
            redact_url("rtsp://cam/s?channel=1&user=admin&password=hunter2"),
            "rtsp://cam/s?channel=1"
        );
        assert_eq!(redact_url("rtsp://cam/s?PWD=x"), "rtsp://cam/s");
        assert!(!redact_url("rtsp ://cam/s?password=hunter2").contains("hunter2"));
        let u = Url::parse("rtsp://admin:pw@cam/x").unwrap();
        assert_eq!(RedactedUrl::from(&u).to_string(), "rtsp://cam/x");
        assert_eq!(
            serde_json::to_string(&RedactedUrl::new("rtsp://a:b@h/")).unwrap(),
            "\"rtsp://h/\""
        );
    }

    #[test]
    fn constant_time_eq_compares_bytes_and_lengths() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn random_tokens_differ_and_are_hex() {
        let (a, b) = (random_token(), random_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
