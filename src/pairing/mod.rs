//! Pairing: the box's identity (key, certificate, city CA, the center's request key) and how
//! it gets one — a claim code, a CSR, a certificate — and renews it, without a restart.
//!
//! - [`protocol`]: the pairing messages and topics, shared with the reference center.
//! - [`identity`]: the stored identity in `{data_dir}/identity/` (key 0600, atomic switch).
//! - [`enroll`]: the CSR, the exchange with the city's pairing listener, and the checks every
//!   answer passes (the certificate carries our key, chains to the CA, names the gateway id).
//! - [`link`]: [`link::CityLink`], which starts, renews and stops the uplink at run time and
//!   attaches sharing to it.
//!
//! Unpaired, the box works locally (ingest, buffer, export, UI) and says so in its status.

pub mod enroll;
pub mod identity;
pub mod link;
