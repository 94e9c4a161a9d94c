//! Pairing: the box's identity (key, certificate, city CA, the center's request key) and how
//! it gets one — a claim code, a CSR, a certificate — and renews it.
//!
//! - [`protocol`]: the pairing messages and topics, shared with the reference center.

pub mod protocol;
