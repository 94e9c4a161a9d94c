//! `porchlight-center serve`: the enrollment service. Answers the CSRs of new boxes (claim
//! codes) and of paired boxes renewing their certificate.
//!
//! Subscribes (QoS 1) to `{root}/pair/+/csr` and `{root}/gw/+/csr` — as
//! `$share/GROUP/{root}/…` with `--shared GROUP`, so several `serve` workers (on one host with
//! one `--dir`, or wherever the state directory's `flock` holds) split the load, each CSR going
//! to one of them. For each message it takes the registry lock, re-reads the registry,
//! decides ([`super::enroll`]), writes the registry and the audit line, releases the lock and
//! only then publishes the answer (QoS 1, not retained) on `{root}/pair/{claim}/result` or
//! `{root}/gw/{gw}/cert`. A crash after the write but before the answer is harmless: the box
//! retries with the same key and gets the same certificate.
//!
//! The session is clean: a CSR published while no worker is connected is lost and the box's
//! retry brings it again. The connection is re-made on loss with capped backoff (1 s → 30 s);
//! SIGINT/SIGTERM end the service.
//!
//! Logs: one line per decision (code or gateway id, the outcome, the serial); never keys.

use std::process::ExitCode;
use std::time::Duration;

use porchlight_protocol::topics::{self, Leaf, Parsed};
use porchlight_protocol::units::Dur;

use super::ca::{CityCa, DirArg};
use super::connection::Connection;
use super::enroll::{self, Context};
use super::settings::{parse_broker, Settings};
use super::store::CenterDir;
use super::CenterError;

/// Arguments of `serve`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// State directory.
    #[command(flatten)]
    pub dir: DirArg,
    /// The broker boxes use after pairing, `mqtts://host:port`, sent in every answer (the box
    /// keeps its pairing broker's host when absent).
    #[arg(long)]
    pub public_broker: Option<String>,
    /// Lifetime of the certificates issued (boxes renew before the end).
    #[arg(long, default_value = "90d")]
    pub lifetime: Dur,
    /// Subscribe as a shared subscription `$share/GROUP/…` (several center workers).
    #[arg(long)]
    pub shared: Option<String>,
}

/// What a CSR topic is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CsrTopic {
    /// `{root}/pair/{claim}/csr`.
    Enroll(String),
    /// `{root}/gw/{gw}/csr`.
    Renew(String),
}

/// Parses a CSR topic under `root`.
pub fn parse_topic(root: &str, topic: &str) -> Option<CsrTopic> {
    match topics::parse(root, topic)? {
        Parsed::PairCsr { claim } => Some(CsrTopic::Enroll(claim.to_owned())),
        Parsed::Gateway {
            gw,
            leaf: Leaf::Csr,
        } => Some(CsrTopic::Renew(gw.to_owned())),
        _ => None,
    }
}

/// The subscriptions of `serve`.
pub fn filters(root: &str, shared: Option<&str>) -> Vec<String> {
    vec![
        topics::shared(shared, &topics::pair_csr(root, "+")),
        topics::shared(shared, &topics::every_gateway(root, Leaf::Csr)),
    ]
}

/// Runs until SIGINT/SIGTERM.
pub async fn run(s: &Settings, args: Args) -> Result<ExitCode, CenterError> {
    if let Some(b) = &args.public_broker {
        parse_broker(b)
            .map_err(|e| CenterError::Usage(e.replace("--broker", "--public-broker")))?;
    }
    if let Some(g) = &args.shared {
        if g.is_empty() || g.contains(['/', '+', '#']) {
            return Err(CenterError::Usage(
                "--shared GROUP must be one topic level without wildcards".into(),
            ));
        }
    }
    let lifetime_s = args.lifetime.0.as_secs() as i64;
    if lifetime_s < 3600 {
        return Err(CenterError::Usage("--lifetime must be at least 1h".into()));
    }
    let dir = CenterDir::new(&args.dir.dir);
    let ca = CityCa::load(&dir)?;
    let request_key =
        std::fs::read_to_string(dir.request_key_pub()).map_err(|source| CenterError::File {
            what: "request public key",
            path: dir.request_key_pub(),
            source,
        })?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| CenterError::Usage(format!("cannot watch SIGTERM: {e}")))?;
    let request_key_sig = ca.sign_request_key(&request_key)?;
    let service = Service {
        s,
        dir,
        ca,
        request_key_sig,
        request_key,
        broker: args.public_broker,
        lifetime_s,
        filters: filters(&s.root, args.shared.as_deref()),
    };
    tokio::select! {
        biased;
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        r = service.run() => return r,
    }
    tracing::info!("Stopping on a signal");
    Ok(ExitCode::SUCCESS)
}

struct Service<'a> {
    s: &'a Settings,
    dir: CenterDir,
    ca: CityCa,
    request_key: String,
    /// The CA's signature over `request_key`, made once at start.
    request_key_sig: String,
    broker: Option<String>,
    lifetime_s: i64,
    filters: Vec<String>,
}

impl Service<'_> {
    async fn run(&self) -> Result<ExitCode, CenterError> {
        let mut backoff = Duration::from_secs(1);
        loop {
            match self.run_once().await {
                Err(e @ (CenterError::Lost { .. } | CenterError::Connect { .. })) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "Broker link down; retrying");
                }
                Err(e) => return Err(e),
                Ok(()) => backoff = Duration::from_secs(1),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    async fn run_once(&self) -> Result<(), CenterError> {
        let mut conn = Connection::open(self.s).await?;
        conn.subscribe(&self.filters).await?;
        eprintln!("Serving {}", self.filters.join(" "));
        loop {
            let msg = conn.next_message().await?;
            let Some(what) = parse_topic(&self.s.root, &msg.topic) else {
                tracing::debug!(topic = %msg.topic, "Not a CSR topic; ignored");
                continue;
            };
            let (topic, result) = self.decide(&what, &msg.payload)?;
            let payload = serde_json::to_vec(&result).expect("result serializes");
            conn.publish(&topic, payload).await?;
        }
    }

    /// Decides under the registry lock; returns the answer topic and payload.
    fn decide(
        &self,
        what: &CsrTopic,
        payload: &[u8],
    ) -> Result<(String, porchlight_protocol::pairing::PairResult), CenterError> {
        let ctx = Context {
            ca: &self.ca,
            request_key: &self.request_key,
            request_key_sig: Some(&self.request_key_sig),
            broker: self.broker.as_deref(),
            root: &self.s.root,
            lifetime_s: self.lifetime_s,
            now_ms: jiff::Timestamp::now().as_millisecond(),
        };
        let d = self.dir.update(|reg| {
            let d = match what {
                CsrTopic::Enroll(claim) => enroll::enroll(reg, &ctx, claim, payload),
                CsrTopic::Renew(gw) => enroll::renew(reg, &ctx, gw, payload),
            };
            let line = d.audit.clone();
            Ok((d, vec![line]))
        })?;
        let event = d.audit["event"].as_str().unwrap_or("");
        match &d.result.error {
            None => tracing::info!(
                event,
                code = %d.audit["code"].as_str().unwrap_or("-"),
                gateway_id = %d.result.gateway_id.as_deref().unwrap_or("-"),
                serial = %d.audit["serial"].as_str().unwrap_or("-"),
                "Certificate sent"
            ),
            Some(code) => tracing::warn!(
                event,
                code = %d.audit["code"].as_str().unwrap_or("-"),
                gateway_id = %d.audit["gateway_id"].as_str().unwrap_or("-"),
                error = ?code,
                message = %d.result.message.as_deref().unwrap_or(""),
                "CSR refused"
            ),
        }
        let topic = match what {
            CsrTopic::Enroll(claim) => topics::pair_result(&self.s.root, claim),
            CsrTopic::Renew(gw) => topics::Topics::new(&self.s.root, gw).cert(),
        };
        Ok((topic, d.result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_topics_parse_and_others_do_not() {
        let r = "porchlight/v1";
        assert_eq!(
            parse_topic(r, "porchlight/v1/pair/ABCDEFGHJKMN/csr"),
            Some(CsrTopic::Enroll("ABCDEFGHJKMN".into()))
        );
        assert_eq!(
            parse_topic(r, "porchlight/v1/gw/gw-1/csr"),
            Some(CsrTopic::Renew("gw-1".into()))
        );
        for bad in [
            "porchlight/v1/gw/gw-1/status",
            "porchlight/v1/pair/X/result",
            "porchlight/v1/pair//csr",
            "porchlight/v1/gw/gw-1/csr/x",
            "other/gw/gw-1/csr",
            "porchlight/v1x/gw/g/csr",
        ] {
            assert_eq!(parse_topic(r, bad), None, "{bad}");
        }
        assert_eq!(
            filters(r, Some("centers")),
            vec![
                "$share/centers/porchlight/v1/pair/+/csr",
                "$share/centers/porchlight/v1/gw/+/csr"
            ]
        );
    }
}
