//! Porchlight wire protocol v1: the contract between a box and the city center
//! (`docs/protocol.md` is its normative text).
//!
//! Both sides depend on this crate and on nothing of each other:
//! - [`topics`]: the topic grammar, built and parsed in one place;
//! - [`messages`]: status (retained, last will), heartbeat, events, replies and their status
//!   words;
//! - [`framing`]: PLM1, the binary frame around live and clip fMP4;
//! - [`request`]: signed requests (JWS EdDSA) and their claims;
//! - [`manifest`]: the signed clip manifest (chain of custody);
//! - [`pairing`]: claim codes and the enrollment/renewal messages;
//! - [`ids`]: camera, request and gateway id grammars (each becomes a topic level);
//! - [`tls`]: the mutual-TLS setup both ends use (city CA as the only anchor, ring provider);
//! - [`units`]: durations and byte sizes as people write them (`10m`, `4GiB`), for config
//!   files and command lines on both sides.
//!
//! What a box may send is chosen field by field in [`messages`]: camera ids, state words,
//! stream parameters and counters, never addresses, URLs, names or credentials.

pub mod framing;
pub mod ids;
pub mod manifest;
pub mod messages;
pub mod pairing;
pub mod request;
pub mod tls;
pub mod topics;
pub mod units;
