//! Sharing: where video meets consent.
//!
//! Video reaches the uplink only through this module, and only as the consent engine
//! ([`crate::consent`]) allows, checked again for every fragment at send time. Requests from the
//! center enter here too: [`request`] verifies the signed JWS (signature, gateway, time,
//! replay, camera, fields) before anything is decided.

pub mod live;
pub mod request;
pub mod service;

pub use service::{Sharing, SharingError, SharingLink, SharingOptions};
