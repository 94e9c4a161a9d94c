//! ONVIF device and media services over plain HTTP: from a device service address to the RTSP
//! URLs of the camera's main and sub streams.
//!
//! The sequence ([`probe_device`]) is the one ONVIF clients settle on in practice:
//!
//! 1. `GetSystemDateAndTime`, unauthenticated: cameras reject a UsernameToken whose `Created`
//!    is minutes off their own clock, and camera clocks are often wrong (no NTP on an isolated
//!    VLAN), so every token is stamped with *camera* time (our clock plus the offset measured
//!    here).
//! 2. `GetDeviceInformation` (manufacturer, model, firmware, serial).
//! 3. `GetCapabilities` for the media service address; where that fails (ONVIF 2.x-only
//!    firmware drops it), `GetServices`; failing both, the device service address, where many
//!    cameras serve media too.
//! 4. Media `GetProfiles`, then `GetStreamUri` (RTP-Unicast over RTSP) for each video profile.
//!    The largest resolution becomes `url`, the smallest `substream_url`.
//!
//! Authentication: WS-Security UsernameToken with `PasswordDigest`
//! (`base64(sha1(nonce ‖ created ‖ password))`, ONVIF Core §5.12) on every call after step 1,
//! plus HTTP digest (RFC 7616, MD5 or SHA-256, `qop=auth`) when a camera answers 401 with
//! `WWW-Authenticate: Digest` (Hikvision firmware from 2017 on, some Dahua).
//!
//! Rules that hold whatever the camera answers:
//! - Credentials go only to the host the resident approved (the address the device was
//!   discovered at): a device URL, a media XAddr or a stream URI naming any other host is
//!   refused with [`OnvifError::OtherHost`] *before* anything is sent to it. HTTP redirects are
//!   not followed and no proxy is used, for the same reason.
//! - Stream URIs lose any user info and `user=`/`password=` query pairs before they are
//!   returned: the config keeps URLs and passwords apart.
//! - Responses are capped at 1 MiB and parsed by [`super::xml`] (no DTD, bounded).
//! - Nothing here logs a password; [`Secret`] does not print.

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine as _;
use tracing::debug;
use url::Url;

use super::xml::{Doc, Elem, Limits, XmlError};
use crate::secret::Secret;

/// SOAP 1.2 envelope.
pub const NS_SOAP: &str = "http://www.w3.org/2003/05/soap-envelope";
/// Device service.
pub const NS_TDS: &str = "http://www.onvif.org/ver10/device/wsdl";
/// Media service.
pub const NS_TRT: &str = "http://www.onvif.org/ver10/media/wsdl";
/// ONVIF schema types.
pub const NS_TT: &str = "http://www.onvif.org/ver10/schema";
const NS_WSSE: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
const NS_WSU: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
const PASSWORD_DIGEST: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest";
const BASE64_BINARY: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary";

/// Largest HTTP response read.
const MAX_RESPONSE: u64 = 1024 * 1024;
/// Most video profiles asked for a stream URI.
const MAX_PROFILES: usize = 8;
/// Longest text field kept (names, models, URIs).
const MAX_FIELD: usize = 512;

/// Why talking to a camera failed.
#[derive(Debug, thiserror::Error)]
pub enum OnvifError {
    /// An address names a host other than the approved one; nothing was sent to it.
    #[error("{what} {url} points at another host than the approved {approved}; refusing to send credentials there")]
    OtherHost {
        /// Which address (device URL, media XAddr, stream URI).
        what: &'static str,
        /// The address, credentials stripped.
        url: String,
        /// The approved address.
        approved: IpAddr,
    },
    /// A URL is not usable (not http, unparseable).
    #[error("bad {what} {url:?}: {reason}")]
    BadUrl {
        /// Which address.
        what: &'static str,
        /// The text, credentials stripped.
        url: String,
        /// Why.
        reason: String,
    },
    /// HTTP failed (connect, timeout, body too large).
    #[error("HTTP {action} to {url}: {message}")]
    Http {
        /// The ONVIF operation.
        action: &'static str,
        /// The endpoint.
        url: String,
        /// ureq's description.
        message: String,
    },
    /// The camera refused the credentials.
    #[error("{action}: the camera refused the user name or password ({detail})")]
    Unauthorized {
        /// The ONVIF operation.
        action: &'static str,
        /// The fault or status that said so.
        detail: String,
    },
    /// A SOAP fault.
    #[error("{action}: SOAP fault {code} {subcode}: {reason}")]
    Fault {
        /// The ONVIF operation.
        action: &'static str,
        /// `Code/Value`.
        code: String,
        /// `Subcode/Value` (e.g. `ter:ActionNotSupported`).
        subcode: String,
        /// `Reason/Text`.
        reason: String,
    },
    /// A non-2xx status without a SOAP fault.
    #[error("{action}: HTTP status {status}")]
    Status {
        /// The ONVIF operation.
        action: &'static str,
        /// The status.
        status: u16,
    },
    /// The response is not acceptable XML.
    #[error("{action}: {source}")]
    Xml {
        /// The ONVIF operation.
        action: &'static str,
        /// Why.
        source: XmlError,
    },
    /// The response lacks what the operation must return.
    #[error("{action}: response lacks {missing}")]
    Missing {
        /// The ONVIF operation.
        action: &'static str,
        /// What is missing.
        missing: &'static str,
    },
    /// The camera has no video profile with a usable stream URI.
    #[error("no usable stream: {0}")]
    NoStream(String),
}

/// `GetDeviceInformation`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeviceInfo {
    /// Manufacturer.
    pub manufacturer: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Firmware version.
    pub firmware: Option<String>,
    /// Serial number.
    pub serial: Option<String>,
    /// Hardware id.
    pub hardware_id: Option<String>,
}

/// One media profile from `GetProfiles`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// Profile token (used in `GetStreamUri`).
    pub token: String,
    /// Display name.
    pub name: String,
    /// Video encoding (`H264`, `H265`, `JPEG`), when the profile has a video encoder.
    pub encoding: Option<String>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// A profile with its stream URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stream {
    /// The profile.
    pub profile: Profile,
    /// RTSP URI, credentials stripped, host checked.
    pub uri: Url,
}

/// What [`probe_device`] learned.
#[derive(Clone, Debug)]
pub struct DeviceReport {
    /// Identity.
    pub info: DeviceInfo,
    /// Camera clock minus ours, seconds (0 when unknown).
    pub clock_offset_s: i64,
    /// Video streams, largest resolution first.
    pub streams: Vec<Stream>,
}

impl DeviceReport {
    /// The main stream (largest resolution).
    pub fn main(&self) -> Option<&Url> {
        self.streams.first().map(|s| &s.uri)
    }

    /// The substream (smallest resolution), when different from the main stream.
    pub fn sub(&self) -> Option<&Url> {
        let last = self.streams.last().map(|s| &s.uri)?;
        (self.streams.len() > 1 && Some(last) != self.main()).then_some(last)
    }
}

// ---------------------------------------------------------------------------------------------
// Pure: requests.

/// A WS-Security UsernameToken with PasswordDigest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsernameToken {
    /// User name.
    pub username: String,
    /// `base64(sha1(nonce ‖ created ‖ password))`.
    pub digest: String,
    /// Base64 of the raw nonce.
    pub nonce_b64: String,
    /// `Created`, camera time, `YYYY-MM-DDTHH:MM:SSZ`.
    pub created: String,
}

impl UsernameToken {
    /// Computes the token for `nonce` and `created` (camera time).
    pub fn new(username: &str, password: &Secret, nonce: &[u8], created: &str) -> UsernameToken {
        use sha1::Digest as _;
        let mut h = sha1::Sha1::new();
        h.update(nonce);
        h.update(created.as_bytes());
        h.update(password.expose().as_bytes());
        let b64 = base64::engine::general_purpose::STANDARD;
        UsernameToken {
            username: username.to_owned(),
            digest: b64.encode(h.finalize()),
            nonce_b64: b64.encode(nonce),
            created: created.to_owned(),
        }
    }

    fn header(&self) -> String {
        format!(
            concat!(
                r#"<s:Header><wsse:Security s:mustUnderstand="1" xmlns:wsse="{wsse}" xmlns:wsu="{wsu}">"#,
                r#"<wsse:UsernameToken><wsse:Username>{u}</wsse:Username>"#,
                r#"<wsse:Password Type="{pd}">{d}</wsse:Password>"#,
                r#"<wsse:Nonce EncodingType="{b64}">{n}</wsse:Nonce>"#,
                r#"<wsu:Created>{c}</wsu:Created></wsse:UsernameToken></wsse:Security></s:Header>"#
            ),
            wsse = NS_WSSE,
            wsu = NS_WSU,
            pd = PASSWORD_DIGEST,
            b64 = BASE64_BINARY,
            u = super::xml::escape(&self.username),
            d = self.digest,
            n = self.nonce_b64,
            c = super::xml::escape(&self.created),
        )
    }
}

/// The ONVIF operations used, with their SOAP action and body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op<'a> {
    /// `tds:GetSystemDateAndTime`.
    GetSystemDateAndTime,
    /// `tds:GetDeviceInformation`.
    GetDeviceInformation,
    /// `tds:GetCapabilities` (All).
    GetCapabilities,
    /// `tds:GetServices` (the ONVIF 2.x replacement of GetCapabilities; some newer firmware
    /// answers only this).
    GetServices,
    /// `trt:GetProfiles`.
    GetProfiles,
    /// `trt:GetStreamUri` for a profile token.
    GetStreamUri(&'a str),
}

impl Op<'_> {
    /// Operation name, for errors.
    pub fn name(&self) -> &'static str {
        match self {
            Op::GetSystemDateAndTime => "GetSystemDateAndTime",
            Op::GetDeviceInformation => "GetDeviceInformation",
            Op::GetCapabilities => "GetCapabilities",
            Op::GetServices => "GetServices",
            Op::GetProfiles => "GetProfiles",
            Op::GetStreamUri(_) => "GetStreamUri",
        }
    }

    /// The SOAP action URI.
    pub fn action(&self) -> String {
        let ns = match self {
            Op::GetProfiles | Op::GetStreamUri(_) => "http://www.onvif.org/ver10/media/wsdl",
            _ => "http://www.onvif.org/ver10/device/wsdl",
        };
        format!("{ns}/{}", self.name())
    }

    fn body(&self) -> String {
        match self {
            Op::GetSystemDateAndTime | Op::GetDeviceInformation => {
                format!(r#"<tds:{0} xmlns:tds="{NS_TDS}"/>"#, self.name())
            }
            Op::GetCapabilities => format!(
                r#"<tds:GetCapabilities xmlns:tds="{NS_TDS}"><tds:Category>All</tds:Category></tds:GetCapabilities>"#
            ),
            Op::GetServices => format!(
                r#"<tds:GetServices xmlns:tds="{NS_TDS}"><tds:IncludeCapability>false</tds:IncludeCapability></tds:GetServices>"#
            ),
            Op::GetProfiles => format!(r#"<trt:GetProfiles xmlns:trt="{NS_TRT}"/>"#),
            Op::GetStreamUri(token) => format!(
                concat!(
                    r#"<trt:GetStreamUri xmlns:trt="{trt}" xmlns:tt="{tt}"><trt:StreamSetup>"#,
                    r#"<tt:Stream>RTP-Unicast</tt:Stream><tt:Transport><tt:Protocol>RTSP</tt:Protocol></tt:Transport>"#,
                    r#"</trt:StreamSetup><trt:ProfileToken>{tok}</trt:ProfileToken></trt:GetStreamUri>"#
                ),
                trt = NS_TRT,
                tt = NS_TT,
                tok = super::xml::escape(token)
            ),
        }
    }

    /// The whole SOAP envelope, with the token's header when given.
    pub fn envelope(&self, token: Option<&UsernameToken>) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="{NS_SOAP}">{}<s:Body>{}</s:Body></s:Envelope>"#,
            token.map(UsernameToken::header).unwrap_or_default(),
            self.body()
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Pure: responses.

/// Parses a SOAP response: the envelope's Body, or the fault in it as an error.
pub fn parse_envelope(op: Op<'_>, bytes: &[u8]) -> Result<Doc, OnvifError> {
    let action = op.name();
    let doc =
        Doc::parse(bytes, Limits::HTTP).map_err(|source| OnvifError::Xml { action, source })?;
    let env = doc.root();
    if !env.is(NS_SOAP, "Envelope") {
        return Err(OnvifError::Missing {
            action,
            missing: "a SOAP 1.2 Envelope",
        });
    }
    let body = env.child(NS_SOAP, "Body").ok_or(OnvifError::Missing {
        action,
        missing: "Body",
    })?;
    if let Some(f) = body.child(NS_SOAP, "Fault") {
        let v =
            |path: &[(&str, &str)]| f.path(path).map(|e| e.text_capped(200)).unwrap_or_default();
        let code = v(&[(NS_SOAP, "Code"), (NS_SOAP, "Value")]);
        let subcode = v(&[(NS_SOAP, "Code"), (NS_SOAP, "Subcode"), (NS_SOAP, "Value")]);
        let reason = v(&[(NS_SOAP, "Reason"), (NS_SOAP, "Text")]);
        if subcode.ends_with("NotAuthorized") || subcode.ends_with("FailedAuthentication") {
            return Err(OnvifError::Unauthorized {
                action,
                detail: format!("{subcode} {reason}").trim().to_owned(),
            });
        }
        return Err(OnvifError::Fault {
            action,
            code,
            subcode,
            reason,
        });
    }
    Ok(doc)
}

fn body(doc: &Doc) -> Elem<'_> {
    // parse_envelope checked that it exists.
    doc.root()
        .child(NS_SOAP, "Body")
        .unwrap_or_else(|| doc.root())
}

fn num<T: std::str::FromStr>(e: Option<Elem<'_>>) -> Option<T> {
    e.and_then(|e| e.text().parse().ok())
}

/// The camera's UTC clock from `GetSystemDateAndTime`, when it gives one.
pub fn parse_system_date_and_time(bytes: &[u8]) -> Result<Option<jiff::Timestamp>, OnvifError> {
    let doc = parse_envelope(Op::GetSystemDateAndTime, bytes)?;
    let Some(utc) = body(&doc).find(NS_TT, "UTCDateTime") else {
        return Ok(None);
    };
    let date = utc.child(NS_TT, "Date");
    let time = utc.child(NS_TT, "Time");
    let f = |e: Option<Elem<'_>>, n: &str| num::<i32>(e.and_then(|e| e.child(NS_TT, n)));
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(s)) = (
        f(date, "Year"),
        f(date, "Month"),
        f(date, "Day"),
        f(time, "Hour"),
        f(time, "Minute"),
        f(time, "Second"),
    ) else {
        return Ok(None);
    };
    let ts = (|| -> Option<jiff::Timestamp> {
        let dt = jiff::civil::DateTime::new(
            i16::try_from(y).ok()?,
            i8::try_from(mo).ok()?,
            i8::try_from(d).ok()?,
            i8::try_from(h).ok()?,
            i8::try_from(mi).ok()?,
            // Leap seconds (60) and sloppy firmware: clamp.
            i8::try_from(s.min(59)).ok()?,
            0,
        )
        .ok()?;
        dt.to_zoned(jiff::tz::TimeZone::UTC)
            .ok()
            .map(|z| z.timestamp())
    })();
    Ok(ts)
}

/// `GetDeviceInformation`.
pub fn parse_device_information(bytes: &[u8]) -> Result<DeviceInfo, OnvifError> {
    let doc = parse_envelope(Op::GetDeviceInformation, bytes)?;
    let r = body(&doc)
        .child(NS_TDS, "GetDeviceInformationResponse")
        .ok_or(OnvifError::Missing {
            action: "GetDeviceInformation",
            missing: "GetDeviceInformationResponse",
        })?;
    let f = |n: &str| {
        r.child(NS_TDS, n)
            .map(|e| clean(e.text(), 128))
            .filter(|s| !s.is_empty())
    };
    Ok(DeviceInfo {
        manufacturer: f("Manufacturer"),
        model: f("Model"),
        firmware: f("FirmwareVersion"),
        serial: f("SerialNumber"),
        hardware_id: f("HardwareId"),
    })
}

/// The media service address from `GetCapabilities`, when given.
pub fn parse_capabilities(bytes: &[u8]) -> Result<Option<String>, OnvifError> {
    let doc = parse_envelope(Op::GetCapabilities, bytes)?;
    Ok(body(&doc)
        .find(NS_TDS, "Capabilities")
        .and_then(|c| c.path(&[(NS_TT, "Media"), (NS_TT, "XAddr")]))
        .map(|x| x.text_capped(MAX_FIELD))
        .filter(|s| !s.is_empty()))
}

/// The media (ver10) service address from `GetServices`, when listed.
pub fn parse_services(bytes: &[u8]) -> Result<Option<String>, OnvifError> {
    let doc = parse_envelope(Op::GetServices, bytes)?;
    let Some(r) = body(&doc).child(NS_TDS, "GetServicesResponse") else {
        return Err(OnvifError::Missing {
            action: "GetServices",
            missing: "GetServicesResponse",
        });
    };
    let media = r
        .children()
        .filter(|c| c.is(NS_TDS, "Service"))
        .take(64)
        .find(|svc| {
            svc.child(NS_TDS, "Namespace")
                .is_some_and(|n| n.text().trim() == NS_TRT)
        })
        .and_then(|svc| svc.child(NS_TDS, "XAddr"))
        .map(|x| x.text_capped(MAX_FIELD))
        .filter(|s| !s.is_empty());
    Ok(media)
}

/// `GetProfiles`: every profile (with or without video).
pub fn parse_profiles(bytes: &[u8]) -> Result<Vec<Profile>, OnvifError> {
    let doc = parse_envelope(Op::GetProfiles, bytes)?;
    let r = body(&doc)
        .child(NS_TRT, "GetProfilesResponse")
        .ok_or(OnvifError::Missing {
            action: "GetProfiles",
            missing: "GetProfilesResponse",
        })?;
    let mut out = Vec::new();
    for p in r.children().filter(|c| c.is(NS_TRT, "Profiles")).take(64) {
        let Some(token) = p
            .attr("token")
            .map(|t| clean(t, 64))
            .filter(|t| !t.is_empty())
        else {
            continue;
        };
        let name = p
            .child(NS_TT, "Name")
            .map(|n| clean(n.text(), 64))
            .unwrap_or_else(|| token.clone());
        let vec = p.child(NS_TT, "VideoEncoderConfiguration");
        let res = vec.and_then(|v| v.child(NS_TT, "Resolution"));
        out.push(Profile {
            token,
            name,
            encoding: vec
                .and_then(|v| v.child(NS_TT, "Encoding"))
                .map(|e| clean(e.text(), 16)),
            width: num(res.and_then(|r| r.child(NS_TT, "Width"))).unwrap_or(0),
            height: num(res.and_then(|r| r.child(NS_TT, "Height"))).unwrap_or(0),
        });
    }
    Ok(out)
}

/// `GetStreamUri`: the URI as sent (check and strip it with [`checked_stream_uri`]).
pub fn parse_stream_uri(bytes: &[u8]) -> Result<String, OnvifError> {
    let doc = parse_envelope(Op::GetStreamUri(""), bytes)?;
    body(&doc)
        .child(NS_TRT, "GetStreamUriResponse")
        .and_then(|r| r.path(&[(NS_TRT, "MediaUri"), (NS_TT, "Uri")]))
        .map(|u| u.text_capped(MAX_FIELD))
        .filter(|s| !s.is_empty())
        .ok_or(OnvifError::Missing {
            action: "GetStreamUri",
            missing: "MediaUri/Uri",
        })
}

/// Trims, drops control characters, caps.
fn clean(s: &str, max: usize) -> String {
    let s: String = s.trim().chars().filter(|c| !c.is_control()).collect();
    super::xml::cap(&s, max).into_owned()
}

/// Whether `url`'s host is exactly `approved` (an IP literal; host names are not resolved, so
/// a name never matches).
pub fn same_host(url: &Url, approved: IpAddr) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(a)) => IpAddr::V4(a) == approved,
        Some(url::Host::Ipv6(a)) => IpAddr::V6(a) == approved,
        // `rtsp:` is not a "special" scheme to the URL standard, so its IPv4 hosts come back as
        // opaque names: accept exactly a dotted-quad literal, nothing that merely starts like one.
        Some(url::Host::Domain(d)) => d
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| IpAddr::V4(a) == approved),
        None => false,
    }
}

/// Parses an HTTP service address and checks it names the approved host.
pub fn checked_service_url(
    what: &'static str,
    raw: &str,
    approved: IpAddr,
) -> Result<Url, OnvifError> {
    let url = Url::parse(raw.trim()).map_err(|e| OnvifError::BadUrl {
        what,
        url: crate::secret::redact_url(raw),
        reason: e.to_string(),
    })?;
    if url.scheme() != "http" {
        return Err(OnvifError::BadUrl {
            what,
            url: crate::secret::redact_url(raw),
            reason: "only http:// is supported".into(),
        });
    }
    if !same_host(&url, approved) {
        return Err(OnvifError::OtherHost {
            what,
            url: crate::secret::redact_url(raw),
            approved,
        });
    }
    Ok(url)
}

/// A stream URI made safe for the config: rtsp(s) only, user info and credential-looking query
/// pairs removed, host checked against `approved`.
pub fn checked_stream_uri(raw: &str, approved: IpAddr) -> Result<Url, OnvifError> {
    let what = "stream URI";
    let mut url = Url::parse(raw.trim()).map_err(|e| OnvifError::BadUrl {
        what,
        url: crate::secret::redact_url(raw),
        reason: e.to_string(),
    })?;
    if !matches!(url.scheme(), "rtsp" | "rtsps") {
        return Err(OnvifError::BadUrl {
            what,
            url: crate::secret::redact_url(raw),
            reason: "not rtsp://".into(),
        });
    }
    crate::secret::strip_credentials(&mut url);
    if !same_host(&url, approved) {
        return Err(OnvifError::OtherHost {
            what,
            url: url.to_string(),
            approved,
        });
    }
    Ok(url)
}

// ---------------------------------------------------------------------------------------------
// HTTP digest (RFC 7616; RFC 2617's MD5 and qop=auth; RFC 2069 without qop): http-auth,
// the crate retina uses for RTSP, with its digest scheme.

/// The digest client for the first `Digest` challenge among `WWW-Authenticate` values. Only
/// Digest is answered: Basic over plain HTTP would put the camera's password on the LAN.
pub fn digest_client<'a>(
    headers: impl IntoIterator<Item = &'a str>,
) -> Option<http_auth::DigestClient> {
    headers.into_iter().find_map(|h| {
        if h.len() > 4096 {
            return None;
        }
        let challenges = http_auth::parse_challenges(h).ok()?;
        challenges
            .iter()
            .filter(|c| c.scheme.eq_ignore_ascii_case("digest"))
            .find_map(|c| http_auth::DigestClient::try_from(c).ok())
    })
}

/// The `Authorization` value answering `client`'s challenge for `POST uri`.
fn digest_authorization(
    client: &mut http_auth::DigestClient,
    uri: &str,
    username: &str,
    password: &Secret,
) -> Result<String, String> {
    client.respond(&http_auth::PasswordParams {
        username,
        password: password.expose(),
        uri,
        method: "POST",
        body: None,
    })
}

// ---------------------------------------------------------------------------------------------
// I/O.

/// What [`probe_device`] needs.
#[derive(Clone, Debug)]
pub struct ProbeRequest {
    /// The device service address (an XAddr from discovery).
    pub device_url: String,
    /// The only host credentials may go to: where the device was discovered (or the address
    /// the resident typed).
    pub approved: IpAddr,
    /// ONVIF user name.
    pub username: String,
    /// ONVIF password.
    pub password: Secret,
    /// Per-request timeout.
    pub timeout: Duration,
}

struct Client<'a> {
    agent: ureq::Agent,
    req: &'a ProbeRequest,
    offset_s: i64,
    digest: Option<http_auth::DigestClient>,
}

impl Client<'_> {
    fn token(&self) -> UsernameToken {
        let created = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_secs(self.offset_s))
            .unwrap_or_else(|_| jiff::Timestamp::now())
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        UsernameToken::new(
            &self.req.username,
            &self.req.password,
            &super::net::random_bytes(),
            &created,
        )
    }

    /// POSTs `op` to `url` (already host-checked), answering one HTTP digest challenge.
    fn call(&mut self, url: &Url, op: Op<'_>, auth: bool) -> Result<Vec<u8>, OnvifError> {
        let action = op.name();
        let http = |e: ureq::Error| OnvifError::Http {
            action,
            url: url.to_string(),
            message: e.to_string(),
        };
        for attempt in 0..2 {
            let token = auth.then(|| self.token());
            let body = op.envelope(token.as_ref());
            let mut rb = self.agent.post(url.as_str()).header(
                "Content-Type",
                format!(
                    r#"application/soap+xml; charset=utf-8; action="{}""#,
                    op.action()
                ),
            );
            if let Some(client) = &mut self.digest {
                let uri = match url.query() {
                    Some(q) => format!("{}?{q}", url.path()),
                    None => url.path().to_owned(),
                };
                let value =
                    digest_authorization(client, &uri, &self.req.username, &self.req.password)
                        .map_err(|detail| OnvifError::Unauthorized {
                            action,
                            detail: format!("cannot answer the digest challenge: {detail}"),
                        })?;
                rb = rb.header("Authorization", value);
            }
            let resp = rb.send(body.as_bytes()).map_err(http)?;
            let status = resp.status().as_u16();
            let challenge = digest_client(
                resp.headers()
                    .get_all("www-authenticate")
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
            );
            let bytes = resp
                .into_body()
                .with_config()
                .limit(MAX_RESPONSE)
                .read_to_vec()
                .map_err(http)?;
            debug!(action, status, bytes = bytes.len(), "ONVIF reply.");
            if status == 401 {
                if let (Some(client), 0) = (challenge, attempt) {
                    self.digest = Some(client);
                    continue;
                }
                return Err(OnvifError::Unauthorized {
                    action,
                    detail: "HTTP 401".into(),
                });
            }
            if !(200..300).contains(&status) {
                // A SOAP fault travels with 400/500; surface it, else the status.
                return Err(match parse_envelope(op, &bytes) {
                    Err(e @ (OnvifError::Fault { .. } | OnvifError::Unauthorized { .. })) => e,
                    _ => OnvifError::Status { action, status },
                });
            }
            return Ok(bytes);
        }
        Err(OnvifError::Unauthorized {
            action,
            detail: "HTTP 401 after digest".into(),
        })
    }
}

/// Asks a device for its identity **without credentials** (`GetDeviceInformation` with no
/// token; many cameras answer it openly). Used to recognise a camera that moved before any
/// credential goes to its new address. `approved` is the address being checked: nothing is
/// sent anywhere else. A camera that demands credentials answers [`OnvifError::Unauthorized`].
pub fn identify(
    device_url: &str,
    approved: IpAddr,
    timeout: Duration,
) -> Result<DeviceInfo, OnvifError> {
    let device = checked_service_url("device service address", device_url, approved)?;
    let req = ProbeRequest {
        device_url: device_url.to_owned(),
        approved,
        username: String::new(),
        password: Secret::new(""),
        timeout,
    };
    let mut c = Client {
        agent: agent(timeout),
        req: &req,
        offset_s: 0,
        digest: None,
        // No HTTP digest either: an empty user name is all a challenge would get.
    };
    parse_device_information(&c.call(&device, Op::GetDeviceInformation, false)?)
}

/// Whether an ONVIF device answers at `device_url` at all (unauthenticated
/// `GetSystemDateAndTime`, which every ONVIF device must answer).
pub fn answers(device_url: &str, approved: IpAddr, timeout: Duration) -> bool {
    let Ok(device) = checked_service_url("device service address", device_url, approved) else {
        return false;
    };
    let req = ProbeRequest {
        device_url: device_url.to_owned(),
        approved,
        username: String::new(),
        password: Secret::new(""),
        timeout,
    };
    let mut c = Client {
        agent: agent(timeout),
        req: &req,
        offset_s: 0,
        digest: None,
    };
    c.call(&device, Op::GetSystemDateAndTime, false)
        .and_then(|b| parse_system_date_and_time(&b))
        .is_ok()
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .max_redirects(0)
        .proxy(None)
        .build()
        .new_agent()
}

/// [`probe_device`] on each candidate device address in turn (all on `approved`), returning
/// the first that works with the address it worked at, or the last error.
pub fn probe_first(
    device_urls: &[String],
    approved: IpAddr,
    username: &str,
    password: &Secret,
    timeout: Duration,
) -> Result<(DeviceReport, String), OnvifError> {
    let mut last = None;
    for url in device_urls {
        let req = ProbeRequest {
            device_url: url.clone(),
            approved,
            username: username.to_owned(),
            password: password.clone(),
            timeout,
        };
        match probe_device(&req) {
            Ok(r) => return Ok((r, url.clone())),
            // The camera said no to these credentials: asking again elsewhere changes nothing.
            Err(e @ OnvifError::Unauthorized { .. }) => return Err(e),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        OnvifError::NoStream("the camera has no device address on its own host".into())
    }))
}

/// Asks the device at `req.device_url` for its identity and streams. Credentials go only to
/// `req.approved`.
pub fn probe_device(req: &ProbeRequest) -> Result<DeviceReport, OnvifError> {
    let device = checked_service_url("device service address", &req.device_url, req.approved)?;
    let mut c = Client {
        agent: agent(req.timeout),
        req,
        offset_s: 0,
        digest: None,
    };
    // 1. Clock, unauthenticated. A camera that refuses it still gets tokens in our time.
    let before = jiff::Timestamp::now();
    match c
        .call(&device, Op::GetSystemDateAndTime, false)
        .and_then(|b| parse_system_date_and_time(&b))
    {
        Ok(Some(cam)) => {
            c.offset_s = cam.as_second() - before.as_second();
            debug!(offset_s = c.offset_s, "Camera clock offset measured.");
        }
        Ok(None) => debug!("Camera sent no UTC time; assuming our clock."),
        Err(error) => debug!(%error, "GetSystemDateAndTime failed; assuming our clock."),
    }
    // 2. Identity.
    let info = parse_device_information(&c.call(&device, Op::GetDeviceInformation, true)?)?;
    // 3. Media address; a lying XAddr is an error, never a request.
    let media = match c
        .call(&device, Op::GetCapabilities, true)
        .and_then(|b| parse_capabilities(&b))
    {
        Ok(Some(x)) => checked_service_url("media service address", &x, req.approved)?,
        Ok(None) => device.clone(),
        Err(e @ OnvifError::Unauthorized { .. }) => return Err(e),
        Err(error) => {
            debug!(%error, "GetCapabilities failed; asking GetServices.");
            match c
                .call(&device, Op::GetServices, true)
                .and_then(|b| parse_services(&b))
            {
                Ok(Some(x)) => checked_service_url("media service address", &x, req.approved)?,
                Err(e @ OnvifError::Unauthorized { .. }) => return Err(e),
                Ok(None) | Err(_) => {
                    debug!(
                        "GetServices gave no media address; trying media on the device address."
                    );
                    device.clone()
                }
            }
        }
    };
    // 4. Profiles and stream URIs.
    let profiles = parse_profiles(&c.call(&media, Op::GetProfiles, true)?)?;
    let mut streams = Vec::new();
    let mut problems = Vec::new();
    for p in profiles
        .into_iter()
        .filter(|p| p.encoding.is_some())
        .take(MAX_PROFILES)
    {
        let uri = c
            .call(&media, Op::GetStreamUri(&p.token), true)
            .and_then(|b| parse_stream_uri(&b))
            .and_then(|raw| checked_stream_uri(&raw, req.approved));
        match uri {
            Ok(uri) if !streams.iter().any(|s: &Stream| s.uri == uri) => {
                streams.push(Stream { profile: p, uri })
            }
            Ok(_) => {}
            Err(e) => problems.push(format!("profile {}: {e}", p.token)),
        }
    }
    if streams.is_empty() {
        return Err(OnvifError::NoStream(if problems.is_empty() {
            "the camera lists no video profile".into()
        } else {
            problems.join("; ")
        }));
    }
    streams.sort_by_key(|s| {
        std::cmp::Reverse(u64::from(s.profile.width) * u64::from(s.profile.height))
    });
    Ok(DeviceReport {
        info,
        clock_offset_s: c.offset_s,
        streams,
    })
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

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn username_token_matches_the_onvif_core_formula() {
        // Vector computed independently: python3 -c "import hashlib,base64;
        // print(base64.b64encode(hashlib.sha1(bytes(range(16))+b'2026-11-26T10:00:00Z'+b'pass').digest()))"
        let nonce: Vec<u8> = (0u8..16).collect();
        let t = UsernameToken::new(
            "admin",
            &Secret::new("pass"),
            &nonce,
            "2026-11-26T10:00:00Z",
        );
        assert_eq!(t.nonce_b64, "AAECAwQFBgcICQoLDA0ODw==");
        assert_eq!(t.digest, "P++aT3T8cJa2VxKEXyebECSzBnE=");
        let env = Op::GetProfiles.envelope(Some(&t));
        assert!(!env.contains("pass<") && !env.contains(">pass"));
        let doc = Doc::parse(env.as_bytes(), Limits::HTTP).unwrap();
        assert!(doc.root().find(NS_WSSE, "UsernameToken").is_some());
        assert!(doc.root().find(NS_TRT, "GetProfiles").is_some());
    }

    #[test]
    fn http_digest_rfc2617_example() {
        let mut c = digest_client([
            r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        ])
        .unwrap();
        let h = c
            .respond_with_testing_cnonce(
                &http_auth::PasswordParams {
                    username: "Mufasa",
                    password: "Circle Of Life",
                    uri: "/dir/index.html",
                    method: "GET",
                    body: None,
                },
                "0a4f113b",
            )
            .unwrap();
        assert!(
            h.contains(r#"response="6629fae49393a05397450978507c4ef1""#),
            "{h}"
        );
        assert!(
            h.contains("nc=00000001") && h.contains(r#"opaque="5ccc069c403ebaf9f0171e9517f40e41""#)
        );
    }

    #[test]
    fn only_digest_challenges_are_answered() {
        // Basic would send the password in clear over HTTP.
        assert!(digest_client([r#"Basic realm="x""#]).is_none());
        assert!(digest_client([r#"Digest realm="unterminated"#]).is_none());
        // The Digest among several challenges (Hikvision sends Basic and Digest).
        let mut c = digest_client([
            r#"Basic realm="cam""#,
            r#"Digest realm="cam", nonce="n1", qop="auth""#,
        ])
        .unwrap();
        let h = digest_authorization(&mut c, "/onvif/device_service", "admin", &Secret::new("pw"))
            .unwrap();
        assert!(
            h.starts_with("Digest ") && h.contains(r#"username="admin""#),
            "{h}"
        );
        assert!(!h.contains("pw\""), "{h}");
        // RFC 2069 (no qop), as some older Dahua firmware answers.
        let mut old = digest_client([r#"Digest realm="cam", nonce="n2""#]).unwrap();
        let h = digest_authorization(
            &mut old,
            "/onvif/device_service",
            "admin",
            &Secret::new("pw"),
        )
        .unwrap();
        assert!(!h.contains("qop="), "{h}");
        let long = format!(r#"Digest realm="{}", nonce="n""#, "x".repeat(5000));
        assert!(digest_client([long.as_str()]).is_none());
    }

    #[test]
    fn system_date_and_time_hikvision() {
        let t = parse_system_date_and_time(&data("getsystemdateandtime_hikvision.xml"))
            .unwrap()
            .unwrap();
        assert_eq!(t.to_string(), "2026-11-26T09:14:07Z");
    }

    #[test]
    fn device_information_axis() {
        let i = parse_device_information(&data("getdeviceinformation_axis.xml")).unwrap();
        assert_eq!(i.manufacturer.as_deref(), Some("AXIS"));
        assert_eq!(i.model.as_deref(), Some("M3106-L Mk II"));
        assert_eq!(i.serial.as_deref(), Some("ACCC8E000001"));
    }

    #[test]
    fn capabilities_media_xaddr_hikvision() {
        assert_eq!(
            parse_capabilities(&data("getcapabilities_hikvision.xml"))
                .unwrap()
                .as_deref(),
            Some("http://192.0.2.64/onvif/Media")
        );
    }

    #[test]
    fn services_axis_media_ver10_xaddr() {
        // Axis style (hand-written in their layout): a ver20 media service listed before the
        // ver10 one this client speaks; only ver10 is taken.
        assert_eq!(
            parse_services(&data("getservices_axis.xml"))
                .unwrap()
                .as_deref(),
            Some("http://192.0.2.70/onvif/services")
        );
        assert!(parse_services(&data("getcapabilities_hikvision.xml")).is_err());
        assert!(matches!(
            parse_services(&data("fault_notauthorized.xml")),
            Err(OnvifError::Unauthorized { .. })
        ));
    }

    #[test]
    fn profiles_hikvision_main_and_sub() {
        let p = parse_profiles(&data("getprofiles_hikvision.xml")).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].token, "Profile_1");
        assert_eq!((p[0].width, p[0].height), (2688, 1520));
        assert_eq!(p[1].encoding.as_deref(), Some("H264"));
        assert_eq!((p[1].width, p[1].height), (640, 360));
    }

    #[test]
    fn profiles_reolink_without_video_encoder_are_kept_without_encoding() {
        let p = parse_profiles(&data("getprofiles_reolink.xml")).unwrap();
        assert_eq!(p.len(), 3);
        assert!(p[2].encoding.is_none());
    }

    #[test]
    fn stream_uri_dahua_is_stripped_of_credentials() {
        let raw = parse_stream_uri(&data("getstreamuri_dahua.xml")).unwrap();
        assert!(raw.contains("password="), "{raw}");
        let u = checked_stream_uri(&raw, ip("192.0.2.65")).unwrap();
        assert_eq!(
            u.as_str(),
            "rtsp://192.0.2.65:554/cam/realmonitor?channel=1&subtype=0&unicast=true&proto=Onvif"
        );
    }

    #[test]
    fn stream_uri_user_info_is_stripped() {
        let u = checked_stream_uri(
            "rtsp://admin:secret@192.0.2.9/Streaming/Channels/101",
            ip("192.0.2.9"),
        )
        .unwrap();
        assert_eq!(u.as_str(), "rtsp://192.0.2.9/Streaming/Channels/101");
    }

    #[test]
    fn lying_addresses_are_refused() {
        let lying = parse_capabilities(&data("hostile_lying_xaddr.xml"))
            .unwrap()
            .unwrap();
        let e = checked_service_url("media service address", &lying, ip("192.0.2.64")).unwrap_err();
        assert!(matches!(e, OnvifError::OtherHost { .. }), "{e}");
        for (raw, what) in [
            (
                "http://192.0.2.64.evil.example/onvif",
                "name that starts with the IP",
            ),
            ("http://evil.example/onvif", "host name"),
            ("https://192.0.2.64/onvif", "https (unsupported)"),
            ("http://192.0.2.640/x", "bad IP"),
        ] {
            assert!(
                checked_service_url("x", raw, ip("192.0.2.64")).is_err(),
                "{what}"
            );
        }
        assert!(matches!(
            checked_stream_uri("rtsp://u:p@198.51.100.7/live", ip("192.0.2.64")),
            Err(OnvifError::OtherHost { url, .. }) if !url.contains("u:p")
        ));
        assert!(checked_service_url(
            "x",
            "http://192.0.2.64:8080/onvif/device_service",
            ip("192.0.2.64")
        )
        .is_ok());
    }

    #[test]
    fn faults_are_typed() {
        assert!(matches!(
            parse_profiles(&data("fault_notauthorized.xml")),
            Err(OnvifError::Unauthorized { .. })
        ));
        match parse_stream_uri(&data("fault_actionnotsupported.xml")) {
            Err(OnvifError::Fault { subcode, .. }) => {
                assert!(subcode.contains("ActionNotSupported"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hostile_responses_are_errors_not_panics() {
        for f in [
            "hostile_billion_laughs.xml",
            "hostile_xxe.xml",
            "hostile_truncated.xml",
            "hostile_wrong_namespace.xml",
            "probematch_hikvision.xml",
        ] {
            let d = data(f);
            assert!(parse_profiles(&d).is_err(), "{f}");
            assert!(parse_stream_uri(&d).is_err(), "{f}");
            assert!(parse_device_information(&d).is_err(), "{f}");
            assert!(parse_services(&d).is_err(), "{f}");
        }
        let huge = vec![b'<'; 2 * 1024 * 1024];
        assert!(matches!(
            parse_profiles(&huge),
            Err(OnvifError::Xml {
                source: XmlError::TooLarge { .. },
                ..
            })
        ));
    }
}
