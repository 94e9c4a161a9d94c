//! Porchlight: an edge gateway for residents' cameras (the box).
//!
//! # Layout
//!
//! Data flows one way, with few hops:
//!
//! ```text
//! cameras --RTSP--> ingest --Frame--> media::segmenter --GOP segment--> ingest::writer --> store
//!                     |                                                   (files + sled index)
//!                     '--> ingest::live (broadcast, pre-roll) --> sharing::live --gate--> uplink --> city
//!                                                                   (consent before every fragment)
//! city --request--> uplink::mqtt --> uplink::inbox (durable) --> sharing intake
//!      --> sharing::request (JWS, replay) --> consent::Engine::decide --> reply + audit
//!      --> grant: live feed (sharing::live) or clip (export::plan --> outbox of segment references)
//! resident --CLI--> api (loopback, token) --+--> consent / sharing / cameras / store export / audit
//! resident --browser--> web (session, CSRF) '
//! ```
//!
//! Layers, lowest first; a module imports only from its own layer or below, and nothing
//! imports [`daemon`] or [`cli`]:
//!
//! 1. **Leaf** (imports nothing of this crate): [`shutdown`] (the stop signal every task
//!    races), [`clock`] (UTC ms, formatting, a test seam), [`backoff`] (capped, jittered),
//!    [`secret`] (`Secret`, `RedactedUrl`, constant-time compare, the random source),
//!    [`fsutil`] (the one durable write), [`systemd`] (readiness, watchdog); and the wire
//!    protocol crate, re-exported as [`protocol`] (topics, messages, PLM1, signed requests and
//!    manifests, pairing messages, units, the mutual-TLS setup).
//! 2. **Pure domain**: [`media`] (fMP4 writing, GOP segmentation, progressive layout; no
//!    I/O) and [`consent`] (rules, decisions, grants, the send-time check; no I/O, no clock).
//! 3. **Storage**: [`store`] (segment files + sled index, quota, retention, crash recovery;
//!    knows nothing of the network) and [`audit`] (the hash chain).
//! 4. **Devices and the city link**: [`ingest`] (one worker per camera; [`ingest::spec`] is
//!    what a camera is), [`discovery`] (ONVIF, mDNS; results never leave the house),
//!    [`uplink`] (MQTT over mutual TLS, outbox, inbox, heartbeat), [`export`] (a range of one
//!    camera as one MP4).
//! 5. **Services**: [`cameras`] (the current camera set, run-time changes, periodic discovery),
//!    [`pairing`] (claim code → certificate, the city link's life cycle), [`sharing`] (where
//!    video meets consent), [`reporting`] (the heartbeat's contents and the events).
//! 6. **Front doors**: [`api`] (the control API and its state) and [`web`] (the resident UI
//!    over the same routes).
//! 7. **Wiring**: [`config`] (TOML → each module's settings), [`daemon`] (opens, spawns,
//!    shuts down in order), [`cli`] (one file per subcommand; `main.rs` is thin).
//!
//! Boundaries: video reaches the uplink only through [`sharing`], which asks [`consent`];
//! ingest and media never import the uplink; discovery results and camera URLs never leave the
//! house; camera passwords are [`secret::Secret`] and URLs shown anywhere are
//! [`secret::RedactedUrl`]. The reference city side is another crate (`porchlight-center`,
//! `crates/center`) that shares only [`protocol`] with the box.

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
pub mod reporting;
pub mod secret;
pub mod sharing;
pub mod shutdown;
pub mod store;
pub mod systemd;
pub mod uplink;
pub mod web;
