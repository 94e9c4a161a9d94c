//! Clip manifests: what a clip contains, signed by the box, so the center can prove the video
//! it holds is what the box sent (chain of custody).
//!
//! The manifest is `{request_id, camera, from, to, fragments, bytes, sha256}` where `from`/`to`
//! are the UTC ms the clip covers, `fragments` the number of PLM1 fragment messages, `bytes`
//! the length of the concatenated init and fragment bodies, and `sha256` their SHA-256
//! (lowercase hex). The signed bytes are the manifest's **canonical JSON**: exactly those seven
//! keys, sorted, no whitespace (what `serde_json` writes for a sorted map). The end message's
//! body is the manifest plus `alg` (`ES256`, `EdDSA` or `PS256`, after the box's key type) and
//! `signature` (base64url without padding; ECDSA signatures are ASN.1 DER as in X.509), made
//! with the private key of the box's client certificate — the certificate the center issued
//! and the broker authenticated, so the center verifies with its public key.

use std::path::Path;

use base64::Engine as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use rustls::SignatureScheme;
use serde::{Deserialize, Serialize};

/// What a clip contains.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The request id.
    pub request_id: String,
    /// The camera id.
    pub camera: String,
    /// First ms covered (UTC).
    pub from: i64,
    /// End of what is covered (UTC ms).
    pub to: i64,
    /// Fragment messages sent.
    pub fragments: u64,
    /// Bytes of the concatenated bodies.
    pub bytes: u64,
    /// SHA-256 of the concatenated bodies, lowercase hex.
    pub sha256: String,
}

/// Why a manifest could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The key file could not be read or parsed (its bytes are never shown).
    #[error("cannot read the box key {path}: {reason}")]
    Key {
        /// The key file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The key type is not one we sign with.
    #[error("the box key type cannot sign manifests (need ECDSA P-256, Ed25519 or RSA)")]
    Unsupported,
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(String),
}

impl Manifest {
    /// The bytes that are signed: canonical JSON (sorted keys, no whitespace).
    pub fn canonical(&self) -> Vec<u8> {
        // serde_json's map is a BTreeMap (no `preserve_order`): keys come out sorted.
        let v = serde_json::to_value(self).expect("manifest serialises");
        serde_json::to_vec(&v).expect("value serialises")
    }

    /// The end message body: the manifest, `alg` and `signature`.
    pub fn signed_body(&self, key_file: &Path) -> Result<Vec<u8>, SignError> {
        let (alg, sig) = sign(key_file, &self.canonical())?;
        let mut v = serde_json::to_value(self).expect("manifest serialises");
        v["alg"] = serde_json::Value::String(alg.to_owned());
        v["signature"] =
            serde_json::Value::String(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig));
        Ok(serde_json::to_vec(&v).expect("value serialises"))
    }
}

/// Signs `msg` with the PEM private key in `key_file`; returns the JOSE-style algorithm name
/// and the signature.
pub fn sign(key_file: &Path, msg: &[u8]) -> Result<(&'static str, Vec<u8>), SignError> {
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| SignError::Key {
        path: key_file.display().to_string(),
        reason: e.to_string(),
    })?;
    let signing =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|_| SignError::Unsupported)?;
    let schemes = [
        (SignatureScheme::ECDSA_NISTP256_SHA256, "ES256"),
        (SignatureScheme::ED25519, "EdDSA"),
        (SignatureScheme::RSA_PSS_SHA256, "PS256"),
    ];
    for (scheme, alg) in schemes {
        if let Some(signer) = signing.choose_scheme(&[scheme]) {
            let sig = signer
                .sign(msg)
                .map_err(|e| SignError::Sign(e.to_string()))?;
            return Ok((alg, sig));
        }
    }
    Err(SignError::Unsupported)
}

/// Why a manifest signature does not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// The certificate could not be read or parsed.
    #[error("box certificate: {0}")]
    Certificate(String),
    /// `alg` is not one the box uses.
    #[error("unknown signature algorithm {0:?}")]
    Algorithm(String),
    /// `signature` is not base64url.
    #[error("signature is not base64url")]
    Encoding,
    /// The signature does not match the manifest and the certificate's key.
    #[error("signature does not verify with the box's certificate")]
    Invalid,
}

/// Verifies an end-message body (the manifest with `alg` and `signature`) against the box's
/// certificate (PEM): the center's chain-of-custody check.
pub fn verify_body(body: &serde_json::Value, cert_pem: &[u8]) -> Result<(), VerifyError> {
    let alg = body["alg"].as_str().unwrap_or_default().to_owned();
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body["signature"].as_str().unwrap_or_default())
        .map_err(|_| VerifyError::Encoding)?;
    let mut signed = body.clone();
    if let Some(o) = signed.as_object_mut() {
        o.remove("alg");
        o.remove("signature");
    }
    let msg = serde_json::to_vec(&signed).expect("value serialises");
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem)
        .map_err(|e| VerifyError::Certificate(e.to_string()))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| VerifyError::Certificate(e.to_string()))?;
    let key = cert.public_key().subject_public_key.data.to_vec();
    let algorithm: &dyn ring::signature::VerificationAlgorithm = match alg.as_str() {
        "ES256" => &ring::signature::ECDSA_P256_SHA256_ASN1,
        "EdDSA" => &ring::signature::ED25519,
        "PS256" => &ring::signature::RSA_PSS_2048_8192_SHA256,
        other => return Err(VerifyError::Algorithm(other.to_owned())),
    };
    ring::signature::UnparsedPublicKey::new(algorithm, key)
        .verify(&msg, &sig)
        .map_err(|_| VerifyError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            request_id: "r1".into(),
            camera: "front".into(),
            from: 1,
            to: 2,
            fragments: 3,
            bytes: 4,
            sha256: "ab".into(),
        }
    }

    #[test]
    fn canonical_form_has_sorted_keys_and_no_whitespace() {
        assert_eq!(
            String::from_utf8(manifest().canonical()).unwrap(),
            r#"{"bytes":4,"camera":"front","fragments":3,"from":1,"request_id":"r1","sha256":"ab","to":2}"#
        );
    }

    #[test]
    fn an_ecdsa_p256_key_signs_and_openssl_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        let ok = std::process::Command::new("openssl")
            .args([
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
            ])
            .arg(&key)
            .status()
            .expect("openssl is installed (apt-get install openssl)");
        assert!(ok.success());
        let pkcs8 = dir.path().join("key8.pem");
        let ok = std::process::Command::new("openssl")
            .args(["pkcs8", "-topk8", "-nocrypt", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(&pkcs8)
            .status()
            .unwrap();
        assert!(ok.success());
        let m = manifest();
        let body = m.signed_body(&pkcs8).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["alg"], "ES256");
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(v["signature"].as_str().unwrap())
            .unwrap();
        // An independent verifier: openssl with the public key.
        let pubkey = dir.path().join("pub.pem");
        let msg = dir.path().join("msg");
        let sigf = dir.path().join("sig");
        std::fs::write(&msg, m.canonical()).unwrap();
        std::fs::write(&sigf, sig).unwrap();
        assert!(std::process::Command::new("openssl")
            .args(["ec", "-pubout", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(&pubkey)
            .status()
            .unwrap()
            .success());
        let out = std::process::Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(&pubkey)
            .arg("-signature")
            .arg(&sigf)
            .arg(&msg)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );

        // Our own verifier agrees, with a certificate for that key; and refuses a tampered body.
        let cert = dir.path().join("cert.pem");
        assert!(std::process::Command::new("openssl")
            .args(["req", "-new", "-x509", "-days", "1", "-subj", "/CN=gw-1", "-key"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .status()
            .unwrap()
            .success());
        let pem = std::fs::read(&cert).unwrap();
        assert_eq!(verify_body(&v, &pem), Ok(()));
        let mut tampered = v.clone();
        tampered["bytes"] = serde_json::json!(5);
        assert_eq!(verify_body(&tampered, &pem), Err(VerifyError::Invalid));
        let mut bad_alg = v.clone();
        bad_alg["alg"] = serde_json::json!("none");
        assert!(matches!(
            verify_body(&bad_alg, &pem),
            Err(VerifyError::Algorithm(_))
        ));
    }
}
