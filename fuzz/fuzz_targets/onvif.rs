//! Fuzzes the ONVIF response parsers (faults, GetSystemDateAndTime, GetDeviceInformation,
//! GetCapabilities, GetServices, GetProfiles, GetStreamUri), the stream-URI and service-address checks, and
//! the HTTP digest challenge parser: no input may panic. Seeds: the recorded responses in
//! `tests/data/onvif/`:
//!
//!   cargo +nightly fuzz run onvif fuzz/corpus/onvif tests/data/onvif

#![no_main]

use libfuzzer_sys::fuzz_target;
use porchlight::discovery::onvif;

fuzz_target!(|data: &[u8]| {
    let approved = std::net::IpAddr::from([192, 0, 2, 64]);
    let _ = onvif::parse_system_date_and_time(data);
    let _ = onvif::parse_device_information(data);
    if let Ok(Some(x)) = onvif::parse_capabilities(data) {
        let _ = onvif::checked_service_url("media", &x, approved);
    }
    if let Ok(Some(x)) = onvif::parse_services(data) {
        let _ = onvif::checked_service_url("media", &x, approved);
    }
    let _ = onvif::parse_profiles(data);
    if let Ok(uri) = onvif::parse_stream_uri(data) {
        let _ = onvif::checked_stream_uri(&uri, approved);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = onvif::checked_stream_uri(s, approved);
        if let Some(mut c) = onvif::digest_client([s]) {
            let _ = c.respond(&http_auth::PasswordParams {
                username: "admin",
                password: "pw",
                uri: "/onvif/device_service",
                method: "POST",
                body: None,
            });
        }
    }
});
