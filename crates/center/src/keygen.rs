//! `porchlight-center keygen --out DIR`: the center's Ed25519 request key pair.
//!
//! - `DIR/request-key.pem`: the private key, PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`),
//!   created with mode 0600 (never wider, not even for a moment).
//! - `DIR/request-key.pub.pem`: the public key, SPKI PEM (`-----BEGIN PUBLIC KEY-----`) as
//!   `openssl pkey -pubout` writes it: what a box's `uplink.center_request_key_file` takes.
//!
//! The private key is PKCS#8 v1 (RFC 5208 form, no embedded public key), the form OpenSSL
//! writes and reads. The 32 secret bytes come from the kernel CSPRNG. Existing files are not overwritten unless
//! `--force` is given.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey, KeypairBytes};
use ed25519_dalek::SigningKey;

use super::CenterError;

/// File name of the private key.
pub const PRIVATE_FILE: &str = "request-key.pem";
/// File name of the public key.
pub const PUBLIC_FILE: &str = "request-key.pub.pem";

/// Arguments of `keygen`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory for `request-key.pem` and `request-key.pub.pem` (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace existing key files.
    #[arg(long)]
    pub force: bool,
}

/// The PEM texts of a key pair: (private PKCS#8, public SPKI).
pub fn encode(key: &SigningKey) -> Result<(String, String), String> {
    // PKCS#8 v1 (no embedded public key), as `openssl genpkey -algorithm ed25519` writes it:
    // OpenSSL 3 refuses the v2 form that `SigningKey::to_pkcs8_pem` produces.
    let private = KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_pem(LineEnding::LF)
    .map_err(|e| format!("cannot encode the private key: {e}"))?;
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| format!("cannot encode the public key: {e}"))?;
    Ok((private.to_string(), public))
}

fn write(path: &Path, text: &str, mode: u32, force: bool) -> Result<(), CenterError> {
    let err = |source| CenterError::File {
        what: "key file",
        path: path.to_owned(),
        source,
    };
    if force {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
    }
    // create_new + mode: the file never exists with wider permissions, and an existing key
    // is never silently replaced.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                CenterError::Key {
                    path: path.to_owned(),
                    message: "exists; not overwritten (use --force to replace the key)".into(),
                }
            } else {
                err(e)
            }
        })?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)
}

/// Writes a fresh key pair into `args.out` and prints the two paths.
pub fn run(args: Args) -> Result<ExitCode, CenterError> {
    std::fs::create_dir_all(&args.out).map_err(|source| CenterError::File {
        what: "output directory",
        path: args.out.clone(),
        source,
    })?;
    let private_path = args.out.join(PRIVATE_FILE);
    let public_path = args.out.join(PUBLIC_FILE);
    let secret = super::random_bytes::<32>().map_err(|source| CenterError::File {
        what: "random source",
        path: "getrandom(2)".into(),
        source,
    })?;
    let key = SigningKey::from_bytes(&secret);
    let (private, public) = encode(&key).map_err(|message| CenterError::Key {
        path: private_path.clone(),
        message,
    })?;
    write(&private_path, &private, 0o600, args.force)?;
    write(&public_path, &public, 0o644, args.force)?;
    if let Ok(dir) = std::fs::File::open(&args.out) {
        let _ = dir.sync_all();
    }
    println!("private key: {} (mode 0600)", private_path.display());
    println!(
        "public key:  {} (give this one to the boxes)",
        public_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Reads the center's private request key (PKCS#8 PEM). The file must be mode 0600.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, CenterError> {
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    porchlight_protocol::tls::check_key_mode(path)?;
    let text = std::fs::read_to_string(path).map_err(|source| CenterError::File {
        what: "request key",
        path: path.to_owned(),
        source,
    })?;
    SigningKey::from_pkcs8_pem(text.trim()).map_err(|e| CenterError::Key {
        path: path.to_owned(),
        // The pkcs8 error names the structure problem, never the key bytes.
        message: format!("not an Ed25519 private key in PKCS#8 PEM: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    use porchlight_protocol::request::public_key_from_pem;

    /// `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout` (the same pair as in
    /// the request verifier's tests).
    const OPENSSL_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIE2NBbZX07FuUauZ2CoSsY5aohRyzvMsxlIPERhts9er
-----END PRIVATE KEY-----
";
    const OPENSSL_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAvchWRJDW7ae697iScWkbQBXf58COQWUGZSs/jrhVKSU=
-----END PUBLIC KEY-----
";

    #[test]
    fn encoding_is_byte_for_byte_what_openssl_writes() {
        let key = SigningKey::from_pkcs8_pem(OPENSSL_PRIVATE_PEM).unwrap();
        let (private, public) = encode(&key).unwrap();
        assert_eq!(private, OPENSSL_PRIVATE_PEM);
        assert_eq!(public, OPENSSL_PUBLIC_PEM);
    }

    #[test]
    fn encoded_pair_round_trips_and_public_key_reads_as_the_box_reads_it() {
        let key = SigningKey::from_bytes(&[9u8; 32]);
        let (private, public) = encode(&key).unwrap();
        assert!(private.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        let back = SigningKey::from_pkcs8_pem(&private).unwrap();
        assert_eq!(back.to_bytes(), key.to_bytes());
        assert_eq!(public_key_from_pem(&public).unwrap(), key.verifying_key());
    }
}
