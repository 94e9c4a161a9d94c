//! Porchlight: an edge gateway for residents' cameras.
//!
//! # Layout
//!
//! Data flows one way, with few hops:
//!
//! ```text
//! cameras --RTSP--> ingest --Frame--> media::segmenter --GOP fragment--> store (files + sled index)
//!                                  '--> ingest::live (broadcast with pre-roll, for sharing later)
//! resident --CLI--> api (loopback HTTP, token) --> store export / camera status
//! ```
//!
//! - [`config`]: the TOML configuration, validated in one pass that reports every problem.
//! - [`consent`]: the consent engine, pure: per-camera rules, decisions, grants and the
//!   send-time check for every fragment that leaves the box.
//! - [`discovery`]: finding cameras on the LAN (ONVIF WS-Discovery, mDNS) and their RTSP URLs
//!   (ONVIF media); hostile-input-safe parsers, results never leave the house.
//! - [`ingest`]: one worker per camera (retina RTSP session, read timeout, capped jittered
//!   backoff forever), camera health, and the live broadcast.
//! - [`media`]: pure fMP4 writing, GOP segmentation and MP4 export; no I/O.
//! - [`sharing`]: where video meets consent; so far the verification of the center's signed
//!   requests (JWS EdDSA, replay guard).
//! - [`store`]: segment files plus a sled index, quota and retention, crash recovery. Knows
//!   nothing of the network.
//! - [`audit`]: the hash-chained audit log in sled (append, verify against the center's
//!   anchor, export).
//! - [`export`]: a time range of one camera as one MP4 (segment choice, gaps, streaming).
//! - [`api`]: the daemon's local control API, which the `porchlight` CLI talks to (sled allows
//!   one process per database, so the daemon owns it).
//! - [`web`]: the resident web UI (embedded page, sessions, CSRF, setup code, live preview)
//!   over the same control routes, on the LAN.
//! - [`cameras`]: the current camera set (configuration file + added at run time, persisted),
//!   their workers, the daemon's periodic discovery and following cameras that moved.
//! - [`daemon`]: wiring, named tasks and ordered shutdown.
//! - [`cli`]: one file per subcommand.
//! - [`center`]: the reference city center (`porchlight-center`: keygen, request, receive, watch).
//! - [`systemd`]: readiness and watchdog notifications.
//!
//! Boundaries: ingest and media never import an uplink; discovery results and camera URLs never
//! leave the house; camera passwords are held in [`config::Secret`], which never prints.

pub use porchlight_protocol as protocol;

pub mod api;
pub mod audit;
pub mod backoff;
pub mod cameras;
pub mod cli;
pub mod clock;
pub mod config;
pub mod consent;
pub mod daemon;
pub mod discovery;
pub mod export;
pub mod fsutil;
pub mod ingest;
pub mod media;
pub mod pairing;
pub mod secret;
pub mod sharing;
pub mod shutdown;
pub mod store;
pub mod systemd;
pub mod uplink;
pub mod web;
