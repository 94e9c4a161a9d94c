//! Enrollment and renewal on the box's side: the CSR, the exchange with the city's pairing
//! listener, and the checks every answer must pass before the box trusts it.
//!
//! The pairing listener authenticates the *server* only (by the city CA the resident or the
//! image supplies; verification is never disabled). The box proves nothing yet: it holds a
//! claim code, and the broker's ACL lets a client speak only about the code it connected with
//! (client id = code). What comes back is checked: the certificate must carry the key this box
//! generated, chain to the CA in the answer, and name the gateway id in the answer.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, MqttOptions, Packet, QoS,
    SubscribeReasonCode, TlsConfiguration, Transport,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};

use super::identity::{IdentityError, IdentityFiles, IdentityInfo};
use crate::protocol::pairing::{self as protocol, CsrMessage, PairErrorCode, PairResult};

/// Why pairing (or renewal) did not work, in words a resident understands.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    /// The claim code is malformed.
    #[error("{0}")]
    BadCode(String),
    /// Something needed is not configured (no pairing broker, no CA).
    #[error("{0}")]
    Setup(String),
    /// The city refused the CSR.
    #[error("{}{}", code.explain(), message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Refused {
        /// Why.
        code: PairErrorCode,
        /// The center's words.
        message: Option<String>,
    },
    /// The pairing listener cannot be reached.
    #[error("cannot reach the city's pairing service at {broker}: {message}")]
    Unreachable {
        /// `host:port`.
        broker: String,
        /// Why.
        message: String,
    },
    /// The pairing listener's certificate is not signed by the CA the box was given.
    #[error("CA mismatch: the pairing service at {broker} is not signed by the city CA given to this box (wrong --ca, or not the city's server)")]
    CaMismatch {
        /// `host:port`.
        broker: String,
    },
    /// The pairing listener refused the bootstrap credentials or the subscription.
    #[error("the city's pairing service refused this box: {0}")]
    NotAuthorized(String),
    /// No answer in time.
    #[error("no answer from the city's pairing service within {0:?} (is the city's pairing service running? try again later)")]
    Timeout(Duration),
    /// The answer does not fit what the box asked for.
    #[error("the city's answer cannot be used: {0}")]
    BadAnswer(String),
    /// The identity could not be stored.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The box's identity is set in the configuration file.
    #[error("this box's city identity is set in the configuration file ([uplink]); edit that file instead")]
    Configured,
    /// Already paired.
    #[error("this box is already paired as {0}; unpair it first")]
    AlreadyPaired(String),
    /// Not paired.
    #[error("this box is not paired")]
    NotPaired,
}

impl PairError {
    /// A stable machine-readable code (API, UI).
    pub fn code(&self) -> &'static str {
        match self {
            PairError::BadCode(_) => "bad_code",
            PairError::Setup(_) => "not_configured",
            PairError::Refused { code, .. } => match code {
                PairErrorCode::CodeUnknown => "code_unknown",
                PairErrorCode::CodeUsed => "code_used",
                PairErrorCode::CodeExpired => "code_expired",
                PairErrorCode::Revoked => "revoked",
                PairErrorCode::BadCsr => "bad_csr",
                PairErrorCode::Internal => "center_error",
            },
            PairError::Unreachable { .. } => "broker_unreachable",
            PairError::CaMismatch { .. } => "ca_mismatch",
            PairError::NotAuthorized(_) => "not_authorized",
            PairError::Timeout(_) => "timeout",
            PairError::BadAnswer(_) => "bad_answer",
            PairError::Identity(_) => "storage",
            PairError::Configured => "configured",
            PairError::AlreadyPaired(_) => "already_paired",
            PairError::NotPaired => "not_paired",
        }
    }
}

/// Where and how to enroll.
#[derive(Clone)]
pub struct Enrollment {
    /// The normalized claim code (also the MQTT client id).
    pub code: String,
    /// Pairing listener host.
    pub host: String,
    /// Pairing listener port.
    pub port: u16,
    /// The CA (PEM) that must have signed the pairing listener's certificate.
    pub ca_pem: Vec<u8>,
    /// Bootstrap user name.
    pub username: String,
    /// Bootstrap password (public; see [`protocol`]).
    pub password: String,
    /// Topic root.
    pub topic_root: String,
    /// How long to wait for the answer.
    pub timeout: Duration,
}

/// A PKCS#10 CSR (PEM) for `key`, with `cn` as the subject's CN when given.
pub fn make_csr(key: &rcgen::KeyPair, cn: Option<&str>) -> Result<String, PairError> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| PairError::BadAnswer(format!("CSR parameters: {e}")))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(cn) = cn {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
    }
    let csr = params
        .serialize_request(key)
        .map_err(|e| PairError::BadAnswer(format!("cannot make the CSR: {e}")))?;
    csr.pem()
        .map_err(|e| PairError::BadAnswer(format!("cannot encode the CSR: {e}")))
}

/// The CSR message as sent.
pub fn csr_message(csr_pem: String) -> Vec<u8> {
    serde_json::to_vec(&CsrMessage {
        v: protocol::VERSION,
        csr: csr_pem,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ts: crate::clock::now_ms(),
    })
    .expect("CSR message serialises")
}

fn server_only_tls(ca_pem: &[u8]) -> Result<rustls::ClientConfig, PairError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        let c = c.map_err(|e| PairError::Setup(format!("the city CA is not PEM: {e}")))?;
        roots
            .add(c)
            .map_err(|e| PairError::Setup(format!("the city CA is not usable: {e}")))?;
    }
    if roots.is_empty() {
        return Err(PairError::Setup(
            "the city CA file holds no certificate".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PairError::Setup(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn classify(e: &ConnectionError, broker: &str) -> PairError {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(r) = s.downcast_ref::<rustls::Error>() {
            return match r {
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer
                    | rustls::CertificateError::BadSignature,
                ) => PairError::CaMismatch {
                    broker: broker.to_owned(),
                },
                other => PairError::Unreachable {
                    broker: broker.to_owned(),
                    message: crate::protocol::tls::plain_tls(other),
                },
            };
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(r) = inner.downcast_ref::<rustls::Error>() {
                    if matches!(
                        r,
                        rustls::Error::InvalidCertificate(
                            rustls::CertificateError::UnknownIssuer
                                | rustls::CertificateError::BadSignature
                        )
                    ) {
                        return PairError::CaMismatch {
                            broker: broker.to_owned(),
                        };
                    }
                }
            }
        }
        src = s.source();
    }
    match e {
        ConnectionError::ConnectionRefused(
            ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNamePassword,
        ) => PairError::NotAuthorized("bootstrap credentials refused".into()),
        ConnectionError::ConnectionRefused(c) => {
            PairError::NotAuthorized(format!("refused at CONNECT ({c:?})"))
        }
        ConnectionError::NetworkTimeout => PairError::Unreachable {
            broker: broker.to_owned(),
            message: "no answer (timeout)".into(),
        },
        ConnectionError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            PairError::Unreachable {
                broker: broker.to_owned(),
                message: "connection refused (nothing listens there)".into(),
            }
        }
        other => PairError::Unreachable {
            broker: broker.to_owned(),
            message: other.to_string(),
        },
    }
}

/// Sends `csr_json` for the claim code and waits for the center's [`PairResult`].
pub async fn exchange(e: &Enrollment, csr_json: Vec<u8>) -> Result<PairResult, PairError> {
    let broker = format!("{}:{}", e.host, e.port);
    let tls = server_only_tls(&e.ca_pem)?;
    let csr_topic = crate::protocol::topics::pair_csr(&e.topic_root, &e.code);
    let result_topic = crate::protocol::topics::pair_result(&e.topic_root, &e.code);
    let mut o = MqttOptions::new(e.code.clone(), e.host.clone(), e.port);
    o.set_credentials(e.username.clone(), e.password.clone())
        .set_keep_alive(Duration::from_secs(30))
        // No session left behind at the broker: if the answer is lost with the connection,
        // the box asks again with the same key and the center sends the same certificate.
        .set_clean_session(true)
        .set_max_packet_size(256 << 10, 256 << 10)
        .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(tls),
        )));
    let (client, mut el) = AsyncClient::new(o, 10);
    let mut net = rumqttc::NetworkOptions::new();
    net.set_connection_timeout(e.timeout.as_secs().clamp(1, 30));
    net.set_tcp_nodelay(true);
    el.set_network_options(net);
    client
        .subscribe(result_topic.clone(), QoS::AtLeastOnce)
        .await
        .map_err(|err| PairError::Unreachable {
            broker: broker.clone(),
            message: err.to_string(),
        })?;
    let deadline = tokio::time::Instant::now() + e.timeout;
    let mut csr = Some(csr_json);
    let answer = loop {
        let ev = match tokio::time::timeout_at(deadline, el.poll()).await {
            Err(_) => return Err(PairError::Timeout(e.timeout)),
            Ok(Err(err)) => return Err(classify(&err, &broker)),
            Ok(Ok(ev)) => ev,
        };
        match ev {
            Event::Incoming(Packet::SubAck(ack)) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, SubscribeReasonCode::Failure))
                {
                    return Err(PairError::NotAuthorized(
                        "the broker does not let this box wait for its answer (ACL)".into(),
                    ));
                }
                if let Some(body) = csr.take() {
                    client
                        .publish(csr_topic.clone(), QoS::AtLeastOnce, false, body)
                        .await
                        .map_err(|err| PairError::Unreachable {
                            broker: broker.clone(),
                            message: err.to_string(),
                        })?;
                }
            }
            Event::Incoming(Packet::Publish(p)) if p.topic == result_topic => {
                break p.payload.to_vec();
            }
            _ => {}
        }
    };
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Ok(ev) = el.poll().await {
            if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    })
    .await;
    serde_json::from_slice(&answer)
        .map_err(|err| PairError::BadAnswer(format!("not a pairing result: {err}")))
}

/// What the box already trusts when it reads an answer, so that no answer can replace it.
///
/// - At pairing: `ca_pem` is the CA the resident gave (`--ca`, `pairing.ca_file`), the one that
///   authenticated the pairing listener; there is no request key yet.
/// - At renewal: the current identity's `ca.pem` and request key.
#[derive(Clone, Copy, Debug)]
pub struct Anchors<'a> {
    /// The city CA, PEM.
    pub ca_pem: &'a str,
    /// The center's request key held now, SPKI PEM.
    pub request_key: Option<&'a str>,
}

/// Checks a [`PairResult`] against the key the box generated, the trust anchors it already
/// holds (and, at renewal, its gateway id), and turns it into the files and facts to store.
///
/// Pinning, so that whoever can publish on the answer topic (a compromised broker, a center
/// account) gains nothing:
/// - the answer's CA must be the anchored CA (same certificates); the certificate must chain
///   to it. The CA is never replaced by an answer;
/// - a request key is taken only if it is the one already held, or if the anchored CA signed it
///   ([`crate::protocol::pairing::verify_request_key`]: this is how the city rotates it). An
///   answer without a key keeps the one held;
/// - the topic root must be a valid root.
pub fn accept(
    result: PairResult,
    key: &rcgen::KeyPair,
    expect_gw: Option<&str>,
    anchors: Anchors<'_>,
    default_broker: (&str, u16),
    default_root: &str,
) -> Result<(IdentityFiles, IdentityInfo), PairError> {
    if !result.ok {
        return Err(PairError::Refused {
            code: result.error.unwrap_or(PairErrorCode::Internal),
            message: result.message,
        });
    }
    let bad = |m: &str| PairError::BadAnswer(m.to_owned());
    let gw = result.gateway_id.ok_or_else(|| bad("no gateway id"))?;
    if !crate::protocol::tls::valid_gateway_id(&gw) {
        return Err(bad("the gateway id is not usable as a topic level"));
    }
    if let Some(expect) = expect_gw {
        if gw != expect {
            return Err(PairError::BadAnswer(format!(
                "the renewed certificate is for {gw}, not this box ({expect})"
            )));
        }
    }
    let cert_pem = result.certificate.ok_or_else(|| bad("no certificate"))?;
    if let Some(ca) = &result.ca {
        if !crate::protocol::pairing::same_certificates(ca, anchors.ca_pem) {
            return Err(bad(
                "the answer carries another CA than the city CA this box trusts; refused \
                 (a CA is never replaced by an answer)",
            ));
        }
    }
    let ca_pem = anchors.ca_pem.to_owned();
    let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| PairError::BadAnswer(format!("certificate is not PEM: {e}")))?;
    let (cn, not_before, not_after) =
        crate::protocol::tls::certificate_identity(&cert).map_err(PairError::BadAnswer)?;
    if cn != gw {
        return Err(PairError::BadAnswer(format!(
            "the certificate names {cn}, the answer {gw}"
        )));
    }
    let (_, parsed) = x509_parser::parse_x509_certificate(&cert)
        .map_err(|e| PairError::BadAnswer(format!("certificate: {e}")))?;
    if parsed.tbs_certificate.subject_pki.raw
        != rcgen::PublicKeyData::subject_public_key_info(key).as_slice()
    {
        return Err(bad(
            "the certificate does not carry the key this box generated",
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let c = c.map_err(|e| PairError::BadAnswer(format!("CA is not PEM: {e}")))?;
        roots
            .add(c)
            .map_err(|e| PairError::BadAnswer(format!("CA: {e}")))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .map_err(|e| PairError::BadAnswer(format!("CA: {e}")))?;
    verifier
        .verify_client_cert(&cert, &[], UnixTime::now())
        .map_err(|e| {
            PairError::BadAnswer(format!(
                "the certificate does not chain to the city CA this box trusts: {e}"
            ))
        })?;
    let request_key = match (&result.request_key, anchors.request_key) {
        (None, held) => held.map(str::to_owned),
        (Some(k), Some(held)) if k.trim() == held.trim() => Some(held.to_owned()),
        (Some(k), _) => {
            let sig = result.request_key_sig.as_deref().ok_or_else(|| {
                bad("the answer carries a request key the city CA did not sign; refused")
            })?;
            crate::protocol::pairing::verify_request_key(anchors.ca_pem, k, sig)
                .map_err(PairError::BadAnswer)?;
            crate::sharing::request::public_key_from_pem(k).map_err(|e| {
                PairError::BadAnswer(format!("the center's request key is not Ed25519: {e}"))
            })?;
            Some(k.clone())
        }
    };
    if let Some(root) = &result.topic_root {
        if !crate::protocol::topics::valid_root(root) {
            return Err(bad(
                "the topic root in the answer is not a valid topic root",
            ));
        }
    }
    let broker = match &result.broker {
        Some(b) => {
            let (h, p) = crate::uplink::parse_broker("the broker in the answer", b)
                .map_err(PairError::BadAnswer)?;
            format!("mqtts://{h}:{p}")
        }
        None => format!("mqtts://{}:{}", default_broker.0, default_broker.1),
    };
    let now = crate::clock::now_ms();
    Ok((
        IdentityFiles {
            key_pem: key.serialize_pem(),
            cert_pem,
            ca_pem,
            request_key_pem: request_key,
        },
        IdentityInfo {
            gateway_id: gw,
            broker,
            topic_root: result.topic_root.unwrap_or_else(|| default_root.to_owned()),
            paired_at: now,
            issued_at: now,
            not_before: not_before * 1000,
            not_after: not_after * 1000,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "test city CA");
        (p.self_signed(&key).unwrap(), key)
    }

    fn issue(
        ca: &(rcgen::Certificate, rcgen::KeyPair),
        box_key: &rcgen::KeyPair,
        cn: &str,
    ) -> String {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let params = ca_params();
        let issuer = rcgen::Issuer::from_params(&params, &ca.1);
        p.signed_by(box_key, &issuer).unwrap().pem()
    }

    fn ca_params() -> rcgen::CertificateParams {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "test city CA");
        p
    }

    fn anchors(ca_pem: &str) -> Anchors<'_> {
        Anchors {
            ca_pem,
            request_key: None,
        }
    }

    fn ok_result(cert: String, ca: String, gw: &str) -> PairResult {
        PairResult {
            v: 1,
            ok: true,
            error: None,
            message: None,
            gateway_id: Some(gw.into()),
            certificate: Some(cert),
            ca: Some(ca),
            request_key: None,
            request_key_sig: None,
            broker: Some("mqtts://city.example:8883".into()),
            topic_root: None,
            not_after: None,
        }
    }

    #[test]
    fn a_good_answer_is_accepted_and_a_foreign_key_is_not() {
        let ca = ca();
        let ca_pem = ca.0.pem();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = issue(&ca, &key, "gw-abc");
        let (files, info) = accept(
            ok_result(cert.clone(), ca.0.pem(), "gw-abc"),
            &key,
            None,
            anchors(&ca.0.pem()),
            ("pair.example", 8884),
            "porchlight/v1",
        )
        .unwrap();
        assert_eq!(info.gateway_id, "gw-abc");
        assert_eq!(info.broker, "mqtts://city.example:8883");
        assert!(info.not_after > info.not_before);
        assert!(files.key_pem.contains("PRIVATE KEY"));

        // Someone else's key in the certificate.
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let e = accept(
            ok_result(issue(&ca, &other, "gw-abc"), ca.0.pem(), "gw-abc"),
            &key,
            None,
            anchors(&ca_pem),
            ("p", 1),
            "r",
        )
        .unwrap_err();
        assert!(e.to_string().contains("does not carry the key"), "{e}");

        // Signed by another CA than the one in the answer.
        let rogue = super::tests::ca();
        let e = accept(
            ok_result(issue(&rogue, &key, "gw-abc"), ca.0.pem(), "gw-abc"),
            &key,
            None,
            anchors(&ca_pem),
            ("p", 1),
            "r",
        )
        .unwrap_err();
        assert!(e.to_string().contains("does not chain"), "{e}");

        // Renewal for another box.
        let e = accept(
            ok_result(cert, ca.0.pem(), "gw-abc"),
            &key,
            Some("gw-other"),
            anchors(&ca_pem),
            ("p", 1),
            "r",
        )
        .unwrap_err();
        assert!(e.to_string().contains("not this box"), "{e}");
    }

    #[test]
    fn refusals_become_plain_words() {
        let ca_pem = ca().0.pem();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let e = accept(
            PairResult::refused(PairErrorCode::CodeUsed, "used on 2026-11-01"),
            &key,
            None,
            anchors(&ca_pem),
            ("p", 1),
            "r",
        )
        .unwrap_err();
        assert_eq!(e.code(), "code_used");
        assert!(e.to_string().contains("already used"), "{e}");
    }

    #[test]
    fn csr_carries_the_key() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let pem = make_csr(&key, Some("gw-1")).unwrap();
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&pem).unwrap();
        use rcgen::PublicKeyData;
        assert_eq!(parsed.public_key.der_bytes(), key.public_key_raw());
    }

    /// A request key vouched for by `ca`, as `porchlight-center serve` sends it.
    fn signed_key(ca: &(rcgen::Certificate, rcgen::KeyPair), pem: &str) -> String {
        use base64::Engine as _;
        use rcgen::SigningKey as _;
        let sig =
            ca.1.sign(&crate::protocol::pairing::request_key_statement(pem))
                .unwrap();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig)
    }

    fn ed25519_pem(seed: u8) -> String {
        use ed25519_dalek::pkcs8::EncodePublicKey;
        ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
            .verifying_key()
            .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .unwrap()
    }

    #[test]
    fn trust_anchors_are_pinned_against_the_answer() {
        let city = ca();
        let city_pem = city.0.pem();
        let rogue = ca();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let held = ed25519_pem(1);
        let renewal = Anchors {
            ca_pem: &city_pem,
            request_key: Some(&held),
        };

        // A rogue CA in the answer, even with a certificate it issued: refused.
        let mut r = ok_result(issue(&rogue, &key, "gw-a"), rogue.0.pem(), "gw-a");
        let e = accept(r.clone(), &key, Some("gw-a"), renewal, ("p", 1), "r").unwrap_err();
        assert!(e.to_string().contains("another CA"), "{e}");
        // The rogue CA alongside the real one: still another set, refused.
        r.ca = Some(format!("{city_pem}{}", rogue.0.pem()));
        let e = accept(r, &key, Some("gw-a"), renewal, ("p", 1), "r").unwrap_err();
        assert!(e.to_string().contains("another CA"), "{e}");

        // A new request key without the city CA's signature, or signed by a rogue CA: refused.
        let cert = issue(&city, &key, "gw-a");
        let mut r = ok_result(cert.clone(), city_pem.clone(), "gw-a");
        r.request_key = Some(ed25519_pem(2));
        let e = accept(r.clone(), &key, Some("gw-a"), renewal, ("p", 1), "r").unwrap_err();
        assert!(e.to_string().contains("did not sign"), "{e}");
        r.request_key_sig = Some(signed_key(&rogue, &ed25519_pem(2)));
        let e = accept(r.clone(), &key, Some("gw-a"), renewal, ("p", 1), "r").unwrap_err();
        assert!(e.to_string().contains("not signed by the city CA"), "{e}");

        // Signed by the city CA: a rotation, accepted.
        r.request_key_sig = Some(signed_key(&city, &ed25519_pem(2)));
        let (files, _) = accept(r, &key, Some("gw-a"), renewal, ("p", 1), "r").unwrap();
        assert_eq!(
            files.request_key_pem.as_deref(),
            Some(ed25519_pem(2).as_str())
        );

        // No key in the answer, or the same one unsigned: the held key stays.
        let r = ok_result(cert.clone(), city_pem.clone(), "gw-a");
        let (files, _) = accept(r, &key, Some("gw-a"), renewal, ("p", 1), "r").unwrap();
        assert_eq!(files.request_key_pem.as_deref(), Some(held.as_str()));
        let mut r = ok_result(cert.clone(), city_pem.clone(), "gw-a");
        r.request_key = Some(held.clone());
        let (files, _) = accept(r, &key, Some("gw-a"), renewal, ("p", 1), "r").unwrap();
        assert_eq!(files.request_key_pem.as_deref(), Some(held.as_str()));
        assert!(crate::protocol::pairing::same_certificates(
            &files.ca_pem,
            &city_pem
        ));

        // A topic root with a wildcard: refused.
        let mut r = ok_result(cert, city_pem.clone(), "gw-a");
        r.topic_root = Some("porchlight/#".into());
        let e = accept(r, &key, Some("gw-a"), renewal, ("p", 1), "r").unwrap_err();
        assert!(e.to_string().contains("topic root"), "{e}");
    }
}
