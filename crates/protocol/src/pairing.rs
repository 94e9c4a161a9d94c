//! The pairing part of wire protocol v1 (`docs/protocol.md`, "Pairing"): claim codes, the CSR
//! message and the result, shared by the box (`porchlight::pairing`) and the reference center
//! (`porchlight-center serve`). Topics are in [`crate::topics`].
//!
//! # Enrollment (unauthenticated pairing listener, server-authenticated TLS)
//!
//! The box connects with MQTT client id = the normalized claim code and the bootstrap
//! user name/password (public, baked into the firmware: the broker's ACL confines it to
//! `{root}/pair/%c/…`, so a client can only speak about the code it connected with). It
//! subscribes to `{root}/pair/{claim}/result`, then publishes a [`CsrMessage`] to
//! `{root}/pair/{claim}/csr` (QoS 1). The center answers with a [`PairResult`] on `result`
//! (QoS 1). A retry with the same key for the same code gets the same answer again; a
//! different key for a used code gets `code_used`.
//!
//! # Renewal (the box's own mutual-TLS link)
//!
//! The box publishes a [`CsrMessage`] to `{root}/gw/{gw}/csr`; the center answers with a
//! [`PairResult`] on `{root}/gw/{gw}/cert`. The CSR's CN must be the box's gateway id (which
//! the broker's per-box ACL already binds to the topic).

use serde::{Deserialize, Serialize};

/// Protocol version carried in every pairing message (`v`).
pub const VERSION: u32 = 1;

/// Crockford base32 without I, L, O, U: what a claim code is written in.
pub const CLAIM_ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Characters in a claim code (60 bits).
pub const CLAIM_LEN: usize = 12;

/// Default bootstrap MQTT user name for the pairing listener (not a secret; see module doc).
pub const BOOTSTRAP_USERNAME: &str = "porchlight-pair";

/// Default bootstrap MQTT password for the pairing listener (not a secret; see module doc).
pub const BOOTSTRAP_PASSWORD: &str = "porchlight-pair";

/// Normalizes what a resident typed into the canonical claim code: upper case, dashes and
/// spaces removed, `O`→`0`, `I`/`L`→`1`; 12 characters of [`CLAIM_ALPHABET`].
pub fn normalize_claim(input: &str) -> Result<String, String> {
    let mut out = String::with_capacity(CLAIM_LEN);
    for c in input.chars() {
        let c = match c.to_ascii_uppercase() {
            '-' | ' ' | '\t' => continue,
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        };
        if !c.is_ascii() || !CLAIM_ALPHABET.contains(&(c as u8)) {
            return Err(format!(
                "the claim code contains {c:?}; codes use digits and letters except I, L, O, U"
            ));
        }
        out.push(c);
    }
    if out.len() != CLAIM_LEN {
        return Err(format!(
            "a claim code has {CLAIM_LEN} characters (like ABCD-EFGH-JKMN); this one has {}",
            out.len()
        ));
    }
    Ok(out)
}

/// `ABCDEFGHJKMN` → `ABCD-EFGH-JKMN`, for printing on labels and letters.
pub fn display_claim(code: &str) -> String {
    code.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

/// The bytes the city CA signs to vouch for a request key: a fixed context line, then the
/// key's PEM exactly as sent. The context keeps the signature from meaning anything else (a
/// certificate's DER never starts with it).
pub fn request_key_statement(request_key_pem: &str) -> Vec<u8> {
    let mut m = b"porchlight request key v1\n".to_vec();
    m.extend_from_slice(request_key_pem.as_bytes());
    m
}

/// Checks `sig` (base64url) over [`request_key_statement`] of `request_key_pem` against each
/// certificate of `ca_pem` (the CA the box already trusts); `Ok` if one of them signed it.
pub fn verify_request_key(ca_pem: &str, request_key_pem: &str, sig: &str) -> Result<(), String> {
    use base64::Engine as _;
    use rustls::pki_types::pem::PemObject;
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| "the request key signature is not base64url".to_owned())?;
    let msg = request_key_statement(request_key_pem);
    let mut any = false;
    for der in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let der = der.map_err(|e| format!("CA is not PEM: {e}"))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| format!("CA certificate: {e}"))?;
        any = true;
        let spki = cert.public_key();
        let key = spki.subject_public_key.data.as_ref();
        let oid = spki.algorithm.algorithm.to_id_string();
        let algs: &[&dyn ring::signature::VerificationAlgorithm] = match oid.as_str() {
            // id-ecPublicKey: P-256 (what `porchlight-center ca init` makes), or P-384.
            "1.2.840.10045.2.1" => &[
                &ring::signature::ECDSA_P256_SHA256_ASN1,
                &ring::signature::ECDSA_P384_SHA384_ASN1,
            ],
            "1.3.101.112" => &[&ring::signature::ED25519],
            "1.2.840.113549.1.1.1" => &[&ring::signature::RSA_PKCS1_2048_8192_SHA256],
            _ => &[],
        };
        if algs.iter().any(|a| {
            ring::signature::UnparsedPublicKey::new(*a, key)
                .verify(&msg, &sig)
                .is_ok()
        }) {
            return Ok(());
        }
    }
    Err(if any {
        "the request key is not signed by the city CA".to_owned()
    } else {
        "no CA certificate to check the request key against".to_owned()
    })
}

/// Whether two PEM bundles hold the same set of certificates (by DER, order and text around
/// them ignored). An unreadable bundle equals nothing.
pub fn same_certificates(a: &str, b: &str) -> bool {
    use rustls::pki_types::pem::PemObject;
    let set = |pem: &str| -> Option<std::collections::BTreeSet<Vec<u8>>> {
        rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
            .map(|c| c.ok().map(|c| c.as_ref().to_vec()))
            .collect()
    };
    match (set(a), set(b)) {
        (Some(x), Some(y)) => !x.is_empty() && x == y,
        _ => false,
    }
}

/// Box → center: a certificate signing request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsrMessage {
    /// [`VERSION`].
    pub v: u32,
    /// PKCS#10 CSR, PEM, ECDSA P-256. Its CN is ignored at enrollment (the center assigns
    /// the gateway id) and must be the gateway id at renewal.
    pub csr: String,
    /// The box's software version.
    pub version: String,
    /// When it was sent, UTC milliseconds.
    pub ts: i64,
}

/// Why the center refused a CSR. Serialized in snake_case (`code_unknown`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PairErrorCode {
    /// No such claim code.
    CodeUnknown,
    /// The code was already used by another box (another key).
    CodeUsed,
    /// The code is past its expiry.
    CodeExpired,
    /// The box was revoked by the city (renewal only).
    Revoked,
    /// The CSR could not be parsed, is not P-256, or its signature is wrong.
    BadCsr,
    /// Something failed at the center.
    Internal,
}

impl PairErrorCode {
    /// Plain words for a resident.
    pub fn explain(self) -> &'static str {
        match self {
            PairErrorCode::CodeUnknown => {
                "the city does not know this claim code; check it for typos"
            }
            PairErrorCode::CodeUsed => {
                "this claim code was already used to pair another box; ask the city for a new one"
            }
            PairErrorCode::CodeExpired => "this claim code has expired; ask the city for a new one",
            PairErrorCode::Revoked => "the city has revoked this box",
            PairErrorCode::BadCsr => "the city could not read the box's certificate request",
            PairErrorCode::Internal => "the city's pairing service failed; try again later",
        }
    }
}

/// Center → box: the answer to a [`CsrMessage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairResult {
    /// [`VERSION`].
    pub v: u32,
    /// Whether a certificate was issued.
    pub ok: bool,
    /// When `ok` is false: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<PairErrorCode>,
    /// When `ok` is false: more words (never secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The gateway id (the certificate's CN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_id: Option<String>,
    /// The box's certificate, PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// The city CA chain, PEM: the trust anchor for the broker from now on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// The center's Ed25519 request key (SPKI PEM) that signs requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_key: Option<String>,
    /// The city CA's signature over [`request_key_statement`] of `request_key` (base64url, no
    /// padding; ECDSA as ASN.1 DER). Without it a box takes no request key it does not already
    /// hold: a broker cannot hand it another one (see [`verify_request_key`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_key_sig: Option<String>,
    /// The broker for normal operation, `mqtts://host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// Topic root for normal operation (default `porchlight/v1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_root: Option<String>,
    /// The certificate's notAfter, UTC milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<i64>,
}

impl PairResult {
    /// A refusal.
    pub fn refused(code: PairErrorCode, message: impl Into<String>) -> PairResult {
        PairResult {
            v: VERSION,
            ok: false,
            error: Some(code),
            message: Some(message.into()),
            gateway_id: None,
            certificate: None,
            ca: None,
            request_key: None,
            request_key_sig: None,
            broker: None,
            topic_root: None,
            not_after: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_codes_normalize_what_people_type() {
        assert_eq!(normalize_claim("abcd-efgh-jkmn").unwrap(), "ABCDEFGHJKMN");
        assert_eq!(
            normalize_claim(" 0OIL 2345 6789").unwrap(),
            "0011".to_owned() + "23456789"
        );
        assert!(normalize_claim("ABCD-EFGH-JKMU")
            .unwrap_err()
            .contains("'U'"));
        assert!(normalize_claim("ABCD")
            .unwrap_err()
            .contains("12 characters"));
        assert!(normalize_claim("ABCD/EFGH+JKMN").is_err());
        assert_eq!(display_claim("ABCDEFGHJKMN"), "ABCD-EFGH-JKMN");
    }

    #[test]
    fn refusals_serialize_in_snake_case() {
        let r = PairResult::refused(PairErrorCode::CodeUsed, "x");
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["error"], "code_used");
        assert_eq!(j["ok"], false);
        assert!(j.get("certificate").is_none());
        let back: PairResult = serde_json::from_value(j).unwrap();
        assert_eq!(back, r);
    }
}
