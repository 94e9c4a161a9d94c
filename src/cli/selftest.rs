//! `porchlight selftest`: a short check that this build works on this machine.
//!
//! Meant for cross builds (run under `qemu-aarch64`/`qemu-arm` by `.ci/cross`) and for a
//! freshly flashed box: it touches the parts most likely to break on another architecture or
//! libc — sled and the file store (atomics, mmap-free file I/O, fsync), ring's assembly (TLS
//! key shares and randomness), Ed25519 and SHA-256 — without a camera, a broker or the network.
//!
//! Each check prints one line; the last line is `OK` and the exit status is 0 only when every
//! check passed. The scratch store lives in a fresh directory under `--dir` (default: the system
//! temporary directory) and is removed afterwards.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use sha2::Digest;

use crate::sharing::request::{RequestError, RequestVerifier, VerifyOptions};
use crate::store::{NewSegment, Store, StoreOptions};

/// Arguments of `porchlight selftest`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to create the scratch store (a new subdirectory, removed afterwards). Point it at
    /// the data disk to check that filesystem too.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Runs every check and prints `OK` when all passed.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let base = args.dir.unwrap_or_else(std::env::temp_dir);
    check("sha256", sha256)?;
    check("ed25519 request signature", ed25519)?;
    check("rustls (ring) client hello", tls)?;
    check("store (sled index + segment files)", || store(&base))?;
    println!("OK");
    Ok(ExitCode::SUCCESS)
}

fn check(name: &str, f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
    let started = Instant::now();
    f().with_context(|| format!("selftest {name} failed"))?;
    println!("ok  {name} ({} ms)", started.elapsed().as_millis());
    Ok(())
}

/// FIPS 180-2 test vectors ("abc" and the empty string).
fn sha256() -> anyhow::Result<()> {
    let abc = hex::encode(sha2::Sha256::digest(b"abc"));
    ensure!(
        abc == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "sha256(\"abc\") = {abc}"
    );
    let empty = hex::encode(sha2::Sha256::digest(b""));
    ensure!(
        empty == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "sha256(\"\") = {empty}"
    );
    Ok(())
}

/// The public key of [`SIGNED_REQUEST`]: Ed25519 from the seed `[0x5e; 32]` (SPKI PEM).
const REQUEST_KEY_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAgUZkDwJJOvT7xU/jM4jnXcLJN64LdyfMKyr7G3UZmj4=
-----END PUBLIC KEY-----";

/// A live request signed once, on an x86_64 build, with the key of [`REQUEST_KEY_PEM`]; the
/// test `fixed_request_is_the_seeds_signature` re-creates it (Ed25519 is deterministic).
const SIGNED_REQUEST: &str = concat!(
    "eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCJ9.",
    "eyJqdGkiOiJzZWxmdGVzdC0xIiwiaWF0IjoxNzY3MjI1NjAwLCJleHAiOjE3NjcyMjkyMDAsImd3Ijoi",
    "c2VsZnRlc3QtZ3ciLCJraW5kIjoibGl2ZSIsImNhbWVyYSI6ImZyb250LWRvb3IiLCJkdXJhdGlvbl9z",
    "IjozMCwicmVhc29uIjoicG9yY2hsaWdodCBzZWxmdGVzdCIsInJlcXVlc3RlciI6InNlbGZ0ZXN0Iiwi",
    "ZW1lcmdlbmN5IjpmYWxzZX0",
    ".5JdJXVwpaK2oyVupM6jv2wt-GADV8lCGNH1gpNDi_cu3PmeZbA0tPhgO1Odc-QnPpbyKaMPwcJabfczqfrarAw"
);

/// When [`SIGNED_REQUEST`] is checked: one second after it was issued.
const REQUEST_NOW_S: i64 = 1_767_225_601;

/// Verifies the fixed request with the same code the uplink uses, then refuses a copy with one
/// signature bit flipped.
fn ed25519() -> anyhow::Result<()> {
    let verifier =
        RequestVerifier::from_pem(REQUEST_KEY_PEM, "selftest-gw", VerifyOptions::default())?;
    let known = |camera: &str| camera == "front-door";
    let valid = verifier
        .verify(SIGNED_REQUEST.as_bytes(), REQUEST_NOW_S, known)
        .context("the fixed request did not verify")?;
    ensure!(valid.jti == "selftest-1", "wrong jti {:?}", valid.jti);

    let mut tampered = SIGNED_REQUEST.as_bytes().to_vec();
    // The second character of the signature part: flips signature bits, keeps the base64url
    // canonical (a change in the last character could only touch the padding bits).
    let at = SIGNED_REQUEST.rfind('.').context("not a compact JWS")? + 2;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    match verifier.verify(&tampered, REQUEST_NOW_S, known) {
        Err(RequestError::BadSignature) => Ok(()),
        other => bail!("a tampered signature gave {other:?}"),
    }
}

/// Builds a client configuration on ring's provider and produces a ClientHello (an X25519 key
/// share and randomness from ring).
fn tls() -> anyhow::Result<()> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("porchlight.invalid")?;
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name)?;
    let mut hello = Vec::new();
    conn.write_tls(&mut hello)?;
    // A TLS record of type handshake (22) holding a ClientHello (1).
    ensure!(
        hello.len() > 100 && hello[0] == 22 && hello[5] == 1,
        "unexpected ClientHello ({} bytes)",
        hello.len()
    );
    Ok(())
}

/// Opens a store, writes an init and a segment, reads them back, reopens and reads again.
fn store(base: &Path) -> anyhow::Result<()> {
    let dir = base.join(format!(
        "porchlight-selftest-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    ));
    let result = store_in(&dir);
    let removed = std::fs::remove_dir_all(&dir);
    result?;
    removed.with_context(|| format!("remove {}", dir.display()))
}

fn store_in(dir: &Path) -> anyhow::Result<()> {
    const CAMERA: &str = "selftest";
    let init = b"ftyp....moov selftest init segment".to_vec();
    let fragment: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 31 % 251) as u8).collect();
    let opts = StoreOptions::new(64 * 1024 * 1024, Duration::from_secs(24 * 3600));
    let start_ms = jiff::Timestamp::now().as_millisecond() - 2_000;

    let (store, _) = Store::open(dir, opts.clone())?;
    let init_id = store.put_init(CAMERA, &init)?;
    let meta = store.put_segment(
        CAMERA,
        NewSegment {
            init: init_id,
            start_ms,
            end_ms: start_ms + 1_000,
            video_frames: 25,
            audio_frames: 0,
            bytes: Bytes::from(fragment.clone()),
        },
    )?;
    ensure!(
        store.read_segment(&meta)? == fragment,
        "segment read back differs"
    );
    ensure!(
        store.read_init(CAMERA, init_id)? == init,
        "init read back differs"
    );
    store.flush()?;
    drop(store);

    let (store, report) = Store::open(dir, opts)?;
    ensure!(report.is_clean(), "reopening needed recovery: {report:?}");
    let again = store
        .segment(CAMERA, start_ms)?
        .context("the segment is gone after reopening")?;
    ensure!(again == meta, "index entry changed across reopen");
    ensure!(
        store.read_segment(&again)? == fragment,
        "segment differs after reopen"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sharing::request;
    use ed25519_dalek::pkcs8::EncodePublicKey;

    #[test]
    fn fixed_request_is_the_seeds_signature() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[0x5e; 32]);
        let pem = key
            .verifying_key()
            .to_public_key_pem(Default::default())
            .unwrap();
        assert_eq!(pem.trim(), REQUEST_KEY_PEM);
        let claims = request::Claims {
            jti: "selftest-1".into(),
            iat: REQUEST_NOW_S - 1,
            exp: REQUEST_NOW_S + 3_599,
            gw: "selftest-gw".into(),
            kind: request::RequestKind::Live,
            camera: "front-door".into(),
            from: None,
            to: None,
            duration_s: Some(30),
            target: None,
            reason: Some("porchlight selftest".into()),
            case: None,
            requester: Some("selftest".into()),
            emergency: false,
        };
        assert_eq!(
            crate::protocol::request::sign_request(&claims, &key),
            SIGNED_REQUEST
        );
    }

    #[test]
    fn selftest_passes_on_the_build_host() {
        let dir = tempfile::tempdir().unwrap();
        sha256().unwrap();
        ed25519().unwrap();
        tls().unwrap();
        store(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
