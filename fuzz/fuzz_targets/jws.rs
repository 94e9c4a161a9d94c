//! Fuzzes the JWS compact parser and the request verifier (signature, claims): no input may
//! panic. Seeds in `fuzz/corpus/jws/`.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use porchlight::sharing::request::{
    parse_compact, peek_jti, public_key_from_pem, RequestVerifier, VerifyOptions, MAX_REQUEST_BYTES,
};

/// The public key of the seeds' signer (an `openssl genpkey -algorithm ed25519` test key).
const PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAvchWRJDW7ae697iScWkbQBXf58COQWUGZSs/jrhVKSU=
-----END PUBLIC KEY-----
";

fn verifier() -> &'static RequestVerifier {
    static V: OnceLock<RequestVerifier> = OnceLock::new();
    V.get_or_init(|| {
        let key = public_key_from_pem(PUBLIC_PEM).expect("test key");
        RequestVerifier::new(key, "gw-test", VerifyOptions::default())
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = parse_compact(data, MAX_REQUEST_BYTES);
    let _ = peek_jti(data);
    let _ = verifier().verify(data, 1_700_000_100, |c| c == "porch");
});
