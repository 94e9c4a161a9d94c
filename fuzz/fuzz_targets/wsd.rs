//! Fuzzes the WS-Discovery datagram parser, the scope decoder and the collector that folds
//! datagrams into devices, plus the mDNS packet parser: no input may panic. Seeds: the
//! captures in `tests/data/onvif/` (ProbeMatches, Hello, Bye, hostile cases):
//!
//!   cargo +nightly fuzz run wsd fuzz/corpus/wsd tests/data/onvif

#![no_main]

use libfuzzer_sys::fuzz_target;
use porchlight::discovery::{mdns, wsd};

fuzz_target!(|data: &[u8]| {
    if let Ok(wsd::WsdMessage::ProbeMatches { matches, .. }) = wsd::parse_message(data) {
        for m in &matches {
            let _ = wsd::Scopes::parse(&m.scopes);
        }
    }
    let mut c = wsd::Collector::default();
    c.add_datagram(data, std::net::IpAddr::from([192, 0, 2, 1]));
    let _ = c.into_devices();
    let _ = mdns::parse_packet(data);
    let mut m = mdns::Collector::default();
    m.add_packet(data, std::net::IpAddr::from([192, 0, 2, 1]), 0);
    let _ = m.into_services();
});
