//! The enrollment and renewal decisions of `serve`, without MQTT: given the registry (under
//! its lock), a CSR message and the CA, what to answer and what to record.
//!
//! # Enrollment (`{root}/pair/{claim}/csr`)
//!
//! In this order:
//!
//! 1. the topic's claim level must be a normalized claim code the registry knows, else
//!    `code_unknown`;
//! 2. the message must be version 1 and its CSR a PKCS#10 request with an ECDSA P-256 key and
//!    a valid self-signature, else `bad_csr` (its CN and requested extensions are ignored:
//!    the center decides the certificate);
//! 3. a code already used: by the **same** key (SHA-256 of the SubjectPublicKeyInfo), the
//!    certificate issued then is sent again (a box that lost the answer retries), unless the
//!    box was revoked (`revoked`); by another key, `code_used`;
//! 4. a code past its expiry: `code_expired`;
//! 5. otherwise: a new gateway id `gw-` + 16 random hex digits, a certificate for it (CN = the
//!    gateway id, clientAuth, `lifetime` from an hour ago), the code marked used and bound to
//!    the key, the box recorded with the code's label and location.
//!
//! # Renewal (`{root}/gw/{gw}/csr`, over the box's own mutual-TLS link)
//!
//! The box must be in the registry and not revoked (`revoked`; an unknown id is `code_unknown`
//! with words that say so), the CSR valid as above and its CN equal to `gw` (`bad_csr`).
//! A new certificate with a new serial, same gateway id; the record follows (the old serial
//! stays in `serials` so a revocation lists it too).
//!
//! Every decision returns one audit line. Nothing here logs or stores a private key (the
//! center never sees one).

use rcgen::{PublicKeyData, SignatureAlgorithm};
use sha2::{Digest, Sha256};
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
use x509_parser::prelude::FromDer;

use porchlight_protocol::pairing::{
    display_claim, normalize_claim, CsrMessage, PairErrorCode, PairResult, VERSION,
};

use super::ca::CityCa;
use super::store::{audit_line, BoxRecord, CodeUse, Registry};

/// A CSR that parsed and verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Csr {
    /// The uncompressed EC point (what the certificate's subjectPublicKey carries).
    pub point: Vec<u8>,
    /// Its CN, if any.
    pub cn: Option<String>,
    /// SHA-256 (hex) of the DER SubjectPublicKeyInfo.
    pub key_sha256: String,
}

impl PublicKeyData for Csr {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

/// Parses a PEM CSR and checks it: PKCS#10, ECDSA P-256, self-signature valid.
pub fn parse_csr(pem_text: &str) -> Result<Csr, String> {
    let der = rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(pem_text.as_bytes());
    use rustls::pki_types::pem::PemObject;
    let der = der.map_err(|e| format!("not a PEM certificate request: {e}"))?;
    let (_, req) =
        x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref())
            .map_err(|e| format!("not a PKCS#10 certificate request: {e}"))?;
    let info = &req.certification_request_info;
    let spki = &info.subject_pki;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY || curve != Some(OID_EC_P256) {
        return Err("the key is not ECDSA P-256 (the only kind the city signs)".into());
    }
    req.verify_signature()
        .map_err(|e| format!("the request's signature does not verify: {e}"))?;
    let point = spki.subject_public_key.data.to_vec();
    if point.len() != 65 || point[0] != 4 {
        return Err("the P-256 key is not an uncompressed point".into());
    }
    let cn = info
        .subject
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .map(str::to_owned);
    Ok(Csr {
        point,
        cn,
        key_sha256: hex::encode(Sha256::digest(spki.raw)),
    })
}

/// What every answer needs besides the registry.
pub struct Context<'a> {
    /// The city CA.
    pub ca: &'a CityCa,
    /// The center's request key, SPKI PEM.
    pub request_key: &'a str,
    /// The city CA's signature over it ([`CityCa::sign_request_key`]), made once per service
    /// (ECDSA signatures are randomised: a retry must get the same answer).
    pub request_key_sig: Option<&'a str>,
    /// `--public-broker`.
    pub broker: Option<&'a str>,
    /// The topic root.
    pub root: &'a str,
    /// Certificate lifetime, seconds.
    pub lifetime_s: i64,
    /// Now, UTC ms.
    pub now_ms: i64,
}

/// An answer and the audit line that records it.
#[derive(Debug)]
pub struct Decision {
    /// What to publish.
    pub result: PairResult,
    /// One audit line.
    pub audit: serde_json::Value,
}

impl Context<'_> {
    fn ok(&self, b: &BoxRecord) -> PairResult {
        PairResult {
            v: VERSION,
            ok: true,
            error: None,
            message: None,
            gateway_id: Some(b.gateway_id.clone()),
            certificate: Some(b.certificate.clone()),
            ca: Some(self.ca.pem.clone()),
            request_key: Some(self.request_key.to_owned()),
            // The CA vouches for the key, so a broker cannot swap it (checked by every box).
            request_key_sig: self.request_key_sig.map(str::to_owned),
            broker: self.broker.map(str::to_owned),
            topic_root: Some(self.root.to_owned()),
            not_after: Some(b.not_after),
        }
    }

    fn refuse(
        &self,
        event: &str,
        subject: serde_json::Value,
        code: PairErrorCode,
        message: String,
    ) -> Decision {
        let mut fields = serde_json::json!({
            "error": code,
            "message": message,
        });
        if let (Some(o), serde_json::Value::Object(s)) = (fields.as_object_mut(), subject) {
            o.extend(s);
        }
        Decision {
            audit: audit_line(event, self.now_ms, fields),
            result: PairResult::refused(code, message),
        }
    }
}

fn new_gateway_id(reg: &Registry) -> Result<String, String> {
    loop {
        let b = super::random_bytes::<8>().map_err(|e| format!("random source: {e}"))?;
        let id = format!("gw-{}", hex::encode(b));
        debug_assert!(porchlight_protocol::tls::valid_gateway_id(&id));
        if reg.find_box(&id).is_none() {
            return Ok(id);
        }
    }
}

/// Decides an enrollment CSR sent for `claim` (the topic level) and records it in `reg`.
pub fn enroll(reg: &mut Registry, ctx: &Context<'_>, claim: &str, msg: &[u8]) -> Decision {
    let subject = serde_json::json!({ "code": display_claim(claim) });
    let refuse =
        |code, message: String| ctx.refuse("enroll_refused", subject.clone(), code, message);
    let known = normalize_claim(claim).ok().filter(|c| c == claim);
    let Some(code) = known.and_then(|c| reg.codes.iter().find(|k| k.code == c).cloned()) else {
        return refuse(
            PairErrorCode::CodeUnknown,
            "no such claim code at this center".into(),
        );
    };
    let csr = match parse_message(msg) {
        Ok(c) => c,
        Err(m) => return refuse(PairErrorCode::BadCsr, m),
    };
    if let Some(used) = &code.used {
        if used.key_sha256 != csr.key_sha256 {
            return refuse(
                PairErrorCode::CodeUsed,
                "this claim code was already used by another box".into(),
            );
        }
        let Some(b) = reg.find_box(&used.gateway_id) else {
            return refuse(
                PairErrorCode::Internal,
                "the code is marked used but its box is not in the registry".into(),
            );
        };
        if b.revoked.is_some() {
            return refuse(PairErrorCode::Revoked, "the city revoked this box".into());
        }
        return Decision {
            result: ctx.ok(b),
            audit: audit_line(
                "enroll_resent",
                ctx.now_ms,
                serde_json::json!({
                    "code": display_claim(claim),
                    "gateway_id": b.gateway_id,
                    "serial": b.serial,
                }),
            ),
        };
    }
    if ctx.now_ms >= code.expires {
        return refuse(
            PairErrorCode::CodeExpired,
            "this claim code has expired".into(),
        );
    }
    let gw = match new_gateway_id(reg) {
        Ok(g) => g,
        Err(m) => return refuse(PairErrorCode::Internal, m),
    };
    let issued = match ctx
        .ca
        .issue_client(&gw, &csr, ctx.now_ms.div_euclid(1000), ctx.lifetime_s)
    {
        Ok(i) => i,
        Err(e) => return refuse(PairErrorCode::Internal, format!("cannot sign: {e}")),
    };
    let record = BoxRecord {
        gateway_id: gw.clone(),
        label: code.label.clone(),
        location: code.location,
        code: code.code.clone(),
        key_sha256: csr.key_sha256.clone(),
        serial: issued.serial.clone(),
        serials: vec![issued.serial.clone()],
        certificate: issued.pem,
        enrolled: ctx.now_ms,
        issued: ctx.now_ms,
        not_after: issued.not_after_ms,
        revoked: None,
    };
    if let Some(c) = reg.code_mut(&code.code) {
        c.used = Some(CodeUse {
            at: ctx.now_ms,
            key_sha256: csr.key_sha256.clone(),
            gateway_id: gw.clone(),
        });
    }
    let result = ctx.ok(&record);
    reg.boxes.push(record);
    Decision {
        result,
        audit: audit_line(
            "enrolled",
            ctx.now_ms,
            serde_json::json!({
                "code": display_claim(claim),
                "gateway_id": gw,
                "serial": issued.serial,
                "not_after": issued.not_after_ms,
                "key_sha256": csr.key_sha256,
            }),
        ),
    }
}

/// Decides a renewal CSR from box `gw` and records it in `reg`.
pub fn renew(reg: &mut Registry, ctx: &Context<'_>, gw: &str, msg: &[u8]) -> Decision {
    let subject = serde_json::json!({ "gateway_id": gw });
    let refuse =
        |code, message: String| ctx.refuse("renew_refused", subject.clone(), code, message);
    let Some(b) = reg.find_box(gw) else {
        return refuse(
            PairErrorCode::CodeUnknown,
            "this gateway id is not in the city's registry".into(),
        );
    };
    if b.revoked.is_some() {
        return refuse(PairErrorCode::Revoked, "the city revoked this box".into());
    }
    let csr = match parse_message(msg) {
        Ok(c) => c,
        Err(m) => return refuse(PairErrorCode::BadCsr, m),
    };
    if csr.cn.as_deref() != Some(gw) {
        return refuse(
            PairErrorCode::BadCsr,
            format!(
                "a renewal CSR's CN must be the gateway id {gw:?}, not {:?}",
                csr.cn.as_deref().unwrap_or("")
            ),
        );
    }
    let issued = match ctx
        .ca
        .issue_client(gw, &csr, ctx.now_ms.div_euclid(1000), ctx.lifetime_s)
    {
        Ok(i) => i,
        Err(e) => return refuse(PairErrorCode::Internal, format!("cannot sign: {e}")),
    };
    let b = reg.box_mut(gw).expect("found above");
    b.key_sha256 = csr.key_sha256.clone();
    b.serial = issued.serial.clone();
    b.serials.push(issued.serial.clone());
    b.certificate = issued.pem;
    b.issued = ctx.now_ms;
    b.not_after = issued.not_after_ms;
    let b = b.clone();
    Decision {
        result: ctx.ok(&b),
        audit: audit_line(
            "renewed",
            ctx.now_ms,
            serde_json::json!({
                "gateway_id": gw,
                "serial": issued.serial,
                "not_after": issued.not_after_ms,
                "key_sha256": csr.key_sha256,
            }),
        ),
    }
}

fn parse_message(msg: &[u8]) -> Result<Csr, String> {
    let m: CsrMessage =
        serde_json::from_slice(msg).map_err(|e| format!("not a CSR message: {e}"))?;
    if m.v != VERSION {
        return Err(format!("protocol version {} is not {VERSION}", m.v));
    }
    parse_csr(&m.csr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{self, CityCa};
    use crate::store::{CenterDir, ClaimCode};
    use rcgen::{CertificateParams, DnType, KeyPair};

    fn csr_pem(key: &KeyPair, cn: &str) -> String {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.serialize_request(key).unwrap().pem().unwrap()
    }

    fn msg(pem: &str) -> Vec<u8> {
        serde_json::to_vec(&CsrMessage {
            v: 1,
            csr: pem.into(),
            version: "t".into(),
            ts: 0,
        })
        .unwrap()
    }

    fn setup() -> (tempfile::TempDir, CityCa) {
        let tmp = tempfile::tempdir().unwrap();
        ca::run(ca::Args {
            command: ca::CaCommand::Init(ca::InitArgs {
                dir: ca::DirArg {
                    dir: tmp.path().join("c"),
                },
                name: "t".into(),
                years: 1,
            }),
        })
        .unwrap();
        let ca = CityCa::load(&CenterDir::new(tmp.path().join("c"))).unwrap();
        (tmp, ca)
    }

    fn code(c: &str, expires: i64) -> ClaimCode {
        ClaimCode {
            code: c.into(),
            label: Some("Elm St 4".into()),
            location: Some(crate::geo::LatLon { lat: 1.0, lon: 2.0 }),
            issued: 0,
            expires,
            used: None,
        }
    }

    #[test]
    fn enrollment_cases_in_order() {
        let (_t, ca) = setup();
        let ctx = Context {
            ca: &ca,
            request_key: "PUB",
            request_key_sig: Some("SIG"),
            broker: Some("mqtts://b:8883"),
            root: "porchlight/v1",
            lifetime_s: 90 * 86_400,
            now_ms: 1_000_000,
        };
        let mut reg = Registry::default();
        reg.codes.push(code("AAAABBBBCCCC", 2_000_000));
        reg.codes.push(code("DDDDEEEEFFFF", 500));
        let k1 = KeyPair::generate().unwrap();
        let k2 = KeyPair::generate().unwrap();
        let m1 = msg(&csr_pem(&k1, "whatever"));
        let m2 = msg(&csr_pem(&k2, "x"));
        let err = |d: &Decision| d.result.error;

        assert_eq!(
            err(&enroll(&mut reg, &ctx, "ZZZZZZZZZZZZ", &m1)),
            Some(PairErrorCode::CodeUnknown)
        );
        assert_eq!(
            err(&enroll(&mut reg, &ctx, "aaaabbbbcccc", &m1)),
            Some(PairErrorCode::CodeUnknown)
        );
        assert_eq!(
            err(&enroll(&mut reg, &ctx, "AAAABBBBCCCC", b"{}")),
            Some(PairErrorCode::BadCsr)
        );
        assert_eq!(
            err(&enroll(&mut reg, &ctx, "DDDDEEEEFFFF", &m1)),
            Some(PairErrorCode::CodeExpired)
        );

        let first = enroll(&mut reg, &ctx, "AAAABBBBCCCC", &m1);
        assert!(first.result.ok, "{first:?}");
        let gw = first.result.gateway_id.clone().unwrap();
        assert!(gw.starts_with("gw-") && porchlight_protocol::tls::valid_gateway_id(&gw));
        assert_eq!(first.result.broker.as_deref(), Some("mqtts://b:8883"));
        assert_eq!(first.result.request_key.as_deref(), Some("PUB"));
        assert_eq!(reg.boxes.len(), 1);
        assert_eq!(reg.boxes[0].label.as_deref(), Some("Elm St 4"));
        assert_eq!(first.audit["event"], "enrolled");

        let again = enroll(&mut reg, &ctx, "AAAABBBBCCCC", &m1);
        assert_eq!(again.result, first.result, "same key: same answer");
        assert_eq!(
            err(&enroll(&mut reg, &ctx, "AAAABBBBCCCC", &m2)),
            Some(PairErrorCode::CodeUsed)
        );
        assert_eq!(reg.boxes.len(), 1);

        // Renewal: CN must be the gateway id; a new serial; revoked boxes are refused.
        assert_eq!(
            err(&renew(&mut reg, &ctx, &gw, &m2)),
            Some(PairErrorCode::BadCsr)
        );
        let r = renew(&mut reg, &ctx, &gw, &msg(&csr_pem(&k2, &gw)));
        assert!(r.result.ok, "{r:?}");
        assert_ne!(r.result.certificate, first.result.certificate);
        assert_eq!(reg.boxes[0].serials.len(), 2);
        assert_eq!(
            err(&renew(&mut reg, &ctx, "gw-nope", &m2)),
            Some(PairErrorCode::CodeUnknown)
        );
        reg.boxes[0].revoked = Some(1);
        assert_eq!(
            err(&renew(&mut reg, &ctx, &gw, &msg(&csr_pem(&k2, &gw)))),
            Some(PairErrorCode::Revoked)
        );
    }

    #[test]
    fn an_empty_subject_as_the_box_sends_it_enrolls() {
        let (_t, ca) = setup();
        let ctx = Context {
            ca: &ca,
            request_key: "PUB",
            request_key_sig: Some("SIG"),
            broker: None,
            root: "porchlight/v1",
            lifetime_s: 86_400,
            now_ms: 1_000,
        };
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        let pem = p.serialize_request(&key).unwrap().pem().unwrap();
        assert_eq!(parse_csr(&pem).unwrap().cn, None);
        let mut reg = Registry::default();
        reg.codes.push(code("AAAABBBBCCCC", 2_000));
        let d = enroll(&mut reg, &ctx, "AAAABBBBCCCC", &msg(&pem));
        assert!(d.result.ok, "{d:?}");
        assert_eq!(d.result.broker, None);
    }

    #[test]
    fn only_p256_csrs_with_valid_signatures_pass() {
        let k = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        assert!(parse_csr(&csr_pem(&k, "x")).unwrap_err().contains("P-256"));
        let k = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        assert!(parse_csr(&csr_pem(&k, "x")).is_err());
        let k = KeyPair::generate().unwrap();
        let good = csr_pem(&k, "gw-1");
        let c = parse_csr(&good).unwrap();
        assert_eq!(c.cn.as_deref(), Some("gw-1"));
        // Flip one bit inside the base64 body (in the signature area near the end).
        let mut lines: Vec<String> = good.lines().map(str::to_owned).collect();
        let n = lines.len() - 2;
        let mut bytes = lines[n].clone().into_bytes();
        let i = bytes.len() / 2;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        lines[n] = String::from_utf8(bytes).unwrap();
        assert!(parse_csr(&lines.join("\n")).is_err());
        assert!(parse_csr("junk").is_err());
    }
}
