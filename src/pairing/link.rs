//! The city link over the daemon's lifetime: started at boot from the configuration or the
//! stored identity, started by pairing, renewed in place, stopped by unpairing — all without a
//! restart.
//!
//! [`CityLink`] owns the running uplink worker. Pairing, unpairing and renewal are serialized
//! by one async lock, so the resident pressing "pair" twice or unpairing during a renewal
//! cannot interleave. Sharing follows through [`Sharing::attach`] / [`Sharing::detach`].

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tracing::{info, warn, Instrument};

use super::enroll::{self, Enrollment, PairError};
use super::identity::{self, Identity};
use super::PairingConfig;
use crate::audit::{Actor, AuditKind, NewEntry};
use crate::protocol::messages::EventKind;
use crate::protocol::pairing::{self as protocol, PairResult};
use crate::sharing::{Sharing, SharingLink};
use crate::shutdown::{Shutdown, ShutdownTrigger};
use crate::store::Store;
use crate::uplink::outbox::Record;
use crate::uplink::{HealthSource, Uplink, UplinkHandle, UplinkSettings};

/// Where pairing stands.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PairingState {
    /// No identity: the box works locally, nothing goes to the city.
    Unpaired,
    /// A claim code is being enrolled.
    Pairing,
    /// Paired by `porchlight pair` (identity in the data directory).
    Paired,
    /// The identity comes from the configuration file (`[uplink]` cert and key).
    Configured,
}

impl PairingState {
    /// Whether the box has an identity for the city link.
    pub fn has_identity(self) -> bool {
        matches!(self, PairingState::Paired | PairingState::Configured)
    }
}

/// Where pairing stands, as the API and the UI show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PairingStatus {
    /// The state.
    pub state: PairingState,
    /// The gateway id, when paired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_id: Option<String>,
    /// The broker of the city link, when paired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// When the certificate expires (UTC ms), when paired by pairing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_after: Option<i64>,
    /// When the certificate was last issued (pairing or renewal), UTC ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<i64>,
    /// The last pairing or renewal failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<StatusError>,
}

/// A failure as shown to the resident.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StatusError {
    /// Stable code ([`PairError::code`]).
    pub code: String,
    /// Plain words.
    pub message: String,
}

struct Running {
    handle: UplinkHandle,
    trigger: ShutdownTrigger,
    task: JoinHandle<()>,
    renewal: Option<JoinHandle<()>>,
    drain_timeout: Duration,
}

/// A configured identity (`[uplink]` with files), which pairing does not touch.
pub struct Configured {
    /// Its settings.
    pub settings: UplinkSettings,
    /// The center's request key (PEM), from `uplink.center_request_key_file`.
    pub request_key: Option<String>,
}

/// The city link manager. See the module doc.
pub struct CityLink {
    data_dir: PathBuf,
    store: Arc<Store>,
    health: Arc<dyn HealthSource>,
    sharing: Arc<Sharing>,
    tunables: UplinkSettings,
    pairing: PairingConfig,
    configured: Option<Configured>,
    lock: tokio::sync::Mutex<Option<Running>>,
    /// Held (inside the blocking tasks) while identity files are written or deleted: a renewal
    /// cancelled by unpairing may still be finishing its write, and must not resurrect an
    /// identity that unpairing deleted (it checks the gateway is still current under it).
    files: Arc<Mutex<()>>,
    current: RwLock<Option<UplinkHandle>>,
    status: Mutex<PairingStatus>,
    me: std::sync::Weak<CityLink>,
}

fn unpaired() -> PairingStatus {
    PairingStatus {
        state: PairingState::Unpaired,
        gateway_id: None,
        broker: None,
        not_after: None,
        issued_at: None,
        last_error: None,
    }
}

impl CityLink {
    /// A manager; nothing runs until [`CityLink::start_at_boot`].
    pub fn new(
        data_dir: PathBuf,
        store: Arc<Store>,
        health: Arc<dyn HealthSource>,
        sharing: Arc<Sharing>,
        tunables: UplinkSettings,
        pairing: PairingConfig,
        configured: Option<Configured>,
    ) -> Arc<CityLink> {
        Arc::new_cyclic(|me| CityLink {
            data_dir,
            store,
            health,
            sharing,
            tunables,
            pairing,
            configured,
            lock: tokio::sync::Mutex::new(None),
            files: Arc::new(Mutex::new(())),
            current: RwLock::new(None),
            status: Mutex::new(unpaired()),
            me: me.clone(),
        })
    }

    /// The running uplink, if any.
    pub fn uplink(&self) -> Option<UplinkHandle> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Where pairing stands.
    pub fn status(&self) -> PairingStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_status(&self, f: impl FnOnce(&mut PairingStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Starts the link from the configuration or the stored identity; stays unpaired
    /// otherwise. Queues the `started` event.
    pub async fn start_at_boot(&self) -> anyhow::Result<()> {
        let mut running = self.lock.lock().await;
        if let Some(c) = &self.configured {
            let r = self.start(c.settings.clone(), c.request_key.clone(), true, None)?;
            self.set_status(|s| {
                *s = PairingStatus {
                    state: PairingState::Configured,
                    gateway_id: Some(r.handle.gateway_id().to_owned()),
                    broker: Some(format!("mqtts://{}:{}", c.settings.host, c.settings.port)),
                    ..unpaired()
                }
            });
            *running = Some(r);
            return Ok(());
        }
        match identity::load(&self.data_dir) {
            Ok(Some(id)) => {
                let r = self.start_identity(&id, true)?;
                *running = Some(r);
            }
            Ok(None) => info!("Not paired with a city: the box works locally"),
            Err(e) => {
                warn!(error = %e, "The stored identity is unreadable; the box is not paired (pair it again)");
                self.set_status(|s| {
                    s.last_error = Some(StatusError {
                        code: "storage".into(),
                        message: e.to_string(),
                    })
                });
            }
        }
        Ok(())
    }

    fn settings_for(&self, id: &Identity) -> anyhow::Result<UplinkSettings> {
        let (host, port) = crate::uplink::parse_broker("identity broker", &id.info.broker)
            .map_err(anyhow::Error::msg)?;
        let mut s = self.tunables.clone();
        s.host = host;
        s.port = port;
        s.ca_file = id.ca_file();
        s.cert_file = id.cert_file();
        s.key_file = id.key_file();
        s.topic_root = id.info.topic_root.clone();
        Ok(s)
    }

    fn start_identity(&self, id: &Identity, started_event: bool) -> anyhow::Result<Running> {
        let settings = self.settings_for(id)?;
        let r = self.start(
            settings,
            id.request_key(),
            started_event,
            Some(id.info.gateway_id.clone()),
        )?;
        let info = id.info.clone();
        self.set_status(|s| {
            *s = PairingStatus {
                state: PairingState::Paired,
                gateway_id: Some(info.gateway_id.clone()),
                broker: Some(info.broker.clone()),
                not_after: Some(info.not_after),
                issued_at: Some(info.issued_at),
                last_error: None,
            }
        });
        Ok(r)
    }

    fn start(
        &self,
        settings: UplinkSettings,
        request_key: Option<String>,
        started_event: bool,
        renew_for: Option<String>,
    ) -> anyhow::Result<Running> {
        use anyhow::Context;
        let drain_timeout = settings.drain_timeout;
        let key_file = settings.key_file.clone();
        let (uplink, handle) = Uplink::open(settings, self.store.db(), self.health.clone())
            .context("cannot start the city uplink")?;
        info!(gateway = %handle.gateway_id(), "City uplink configured");
        if started_event {
            // Tells the center the box (re)started; queued like every event.
            if let Err(e) = handle.event(EventKind::Started {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            }) {
                warn!(error = %e, "Could not queue the started event");
            }
        }
        let verifier = match &request_key {
            Some(pem) => Some(
                crate::sharing::request::RequestVerifier::from_pem(
                    pem,
                    handle.gateway_id(),
                    Default::default(),
                )
                .context("center request key")?,
            ),
            None => None,
        };
        let (trigger, shutdown) = Shutdown::new();
        let task = tokio::spawn(
            uplink
                .run(shutdown.clone())
                .instrument(tracing::info_span!("uplink")),
        );
        self.sharing.attach(SharingLink {
            uplink: handle.clone(),
            verifier,
            box_key: Some(key_file),
        });
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(handle.clone());
        let renewal = renew_for.and_then(|gw| {
            let me = self.me.upgrade()?;
            Some(tokio::spawn(
                me.renewal_loop(handle.clone(), gw, shutdown)
                    .instrument(tracing::info_span!("renewal")),
            ))
        });
        Ok(Running {
            handle,
            trigger,
            task,
            renewal,
            drain_timeout,
        })
    }

    async fn stop(&self, r: Running) {
        if let Some(t) = &r.renewal {
            t.abort();
        }
        r.trigger.trigger();
        let deadline = r.drain_timeout + Duration::from_secs(3);
        if tokio::time::timeout(deadline, r.task).await.is_err() {
            warn!("City uplink did not stop within {deadline:?}");
        }
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Stops the link at daemon shutdown: offline status, outbox drained until the deadline.
    pub async fn shutdown(&self) {
        let r = self.lock.lock().await.take();
        if let Some(r) = r {
            info!("Shutting down: draining the city uplink");
            self.stop(r).await;
        }
    }

    /// Pairs the box: claim code → key and CSR → the city's answer → identity stored → link
    /// started. `broker`/`ca_pem` default to `[pairing]` in the configuration.
    pub async fn pair(
        &self,
        code: &str,
        broker: Option<&str>,
        ca_pem: Option<Vec<u8>>,
    ) -> Result<PairingStatus, PairError> {
        let mut running = self.lock.lock().await;
        if self.configured.is_some() {
            return Err(PairError::Configured);
        }
        if let Some(r) = running.as_ref() {
            return Err(PairError::AlreadyPaired(r.handle.gateway_id().to_owned()));
        }
        let result = self.enroll(code, broker, ca_pem).await;
        match result {
            Ok(id) => {
                let gw = id.info.gateway_id.clone();
                let r = match self.start_identity(&id, false) {
                    Ok(r) => r,
                    Err(e) => {
                        let e = PairError::Setup(format!(
                            "paired as {gw}, but the link did not start (it is tried again at the next start): {e:#}"
                        ));
                        self.set_status(|s| {
                            *s = PairingStatus {
                                state: PairingState::Paired,
                                gateway_id: Some(gw.clone()),
                                broker: Some(id.info.broker.clone()),
                                not_after: Some(id.info.not_after),
                                issued_at: Some(id.info.issued_at),
                                last_error: Some(StatusError {
                                    code: e.code().into(),
                                    message: e.to_string(),
                                }),
                            }
                        });
                        return Err(e);
                    }
                };
                *running = Some(r);
                if let Err(e) = self.sharing.append_audit(
                    NewEntry::new(crate::clock::now_ms(), AuditKind::Pairing, Actor::Resident)
                        .detail(serde_json::json!({"action": "paired", "gateway_id": gw, "broker": id.info.broker, "not_after": id.info.not_after})),
                ) {
                    warn!(error = %e, "Audit of the pairing failed");
                }
                info!(gateway = %gw, "Paired with the city");
                Ok(self.status())
            }
            Err(e) => {
                warn!(code = e.code(), error = %e, "Pairing failed");
                self.set_status(|s| {
                    *s = PairingStatus {
                        last_error: Some(StatusError {
                            code: e.code().into(),
                            message: e.to_string(),
                        }),
                        ..unpaired()
                    }
                });
                Err(e)
            }
        }
    }

    async fn enroll(
        &self,
        code: &str,
        broker: Option<&str>,
        ca_pem: Option<Vec<u8>>,
    ) -> Result<Identity, PairError> {
        let code = protocol::normalize_claim(code).map_err(PairError::BadCode)?;
        let broker = broker
            .map(str::to_owned)
            .or_else(|| self.pairing.broker.clone())
            .ok_or_else(|| {
                PairError::Setup(
                    "no pairing service is set: give the city's pairing address (--broker mqtts://host:port) or set pairing.broker".into(),
                )
            })?;
        let (host, port) =
            crate::uplink::parse_broker("the pairing broker", &broker).map_err(PairError::Setup)?;
        let ca_pem = match ca_pem {
            Some(p) => p,
            None => {
                let path = self.pairing.ca_file.clone().ok_or_else(|| {
                    PairError::Setup(
                        "no city CA is set: give the city's CA certificate (--ca FILE) or set pairing.ca_file".into(),
                    )
                })?;
                std::fs::read(&path).map_err(|e| {
                    PairError::Setup(format!(
                        "cannot read pairing.ca_file {}: {e}",
                        path.display()
                    ))
                })?
            }
        };
        self.set_status(|s| {
            *s = PairingStatus {
                state: PairingState::Pairing,
                ..unpaired()
            }
        });
        let data_dir = self.data_dir.clone();
        let c = code.clone();
        let key = tokio::task::spawn_blocking(move || identity::pending_key(&data_dir, &c))
            .await
            .map_err(|e| PairError::Setup(format!("key generation panicked: {e}")))??;
        let csr = enroll::make_csr(&key, None)?;
        let e = Enrollment {
            code,
            host: host.clone(),
            port,
            ca_pem,
            username: self.pairing.bootstrap_username.clone(),
            password: self.pairing.bootstrap_password.expose().to_owned(),
            topic_root: self.pairing.topic_root.clone(),
            timeout: self.pairing.timeout.0,
        };
        info!(broker = %format!("{host}:{port}"), "Pairing: CSR sent, waiting for the city");
        let answer = enroll::exchange(&e, enroll::csr_message(csr)).await?;
        // The answer is tied to the CA that authenticated the pairing listener.
        let pairing_ca = String::from_utf8_lossy(&e.ca_pem).into_owned();
        let anchors = enroll::Anchors {
            ca_pem: &pairing_ca,
            request_key: None,
        };
        let (files, info) = enroll::accept(
            answer,
            &key,
            None,
            anchors,
            (&host, 8883),
            &self.pairing.topic_root,
        )?;
        let data_dir = self.data_dir.clone();
        let lock = self.files.clone();
        let id = tokio::task::spawn_blocking(move || {
            let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
            let id = identity::install(&data_dir, &files, &info);
            identity::clear_pending(&data_dir);
            id
        })
        .await
        .map_err(|e| PairError::Setup(format!("storing the identity panicked: {e}")))??;
        Ok(id)
    }

    /// Forgets the identity: sharing stops (grants revoked, audited), the link says offline
    /// and closes, whatever was queued for the old identity is deleted, the key is deleted.
    pub async fn unpair(&self) -> Result<PairingStatus, PairError> {
        let mut running = self.lock.lock().await;
        if self.configured.is_some() {
            return Err(PairError::Configured);
        }
        let Some(r) = running.take() else {
            return Err(PairError::NotPaired);
        };
        let gw = r.handle.gateway_id().to_owned();
        // Audited while the link still runs, so the center sees it too.
        if let Err(e) = self.sharing.append_audit(
            NewEntry::new(crate::clock::now_ms(), AuditKind::Pairing, Actor::Resident)
                .detail(serde_json::json!({"action": "unpaired", "gateway_id": gw})),
        ) {
            warn!(error = %e, "Audit of the unpairing failed");
        }
        if let Err(e) = self.sharing.detach() {
            warn!(error = %e, "Ending grants at unpairing failed");
        }
        let handle = r.handle.clone();
        self.stop(r).await;
        match handle.clear_queues() {
            Ok((out, inb)) => info!(
                outbox = out,
                inbox = inb,
                "Queued messages of the old identity deleted"
            ),
            Err(e) => warn!(error = %e, "Could not clear the queues of the old identity"),
        }
        self.sharing.clean_held();
        let data_dir = self.data_dir.clone();
        let lock = self.files.clone();
        tokio::task::spawn_blocking(move || {
            let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
            identity::remove(&data_dir)
        })
        .await
        .map_err(|e| PairError::Setup(format!("unpairing panicked: {e}")))??;
        info!(gateway = %gw, "Unpaired: the box works locally");
        self.set_status(|s| *s = unpaired());
        Ok(self.status())
    }

    /// Checks the certificate's remaining life every minute and renews it when less than
    /// `pairing.renew_before` is left. Failures back off (1 min doubling to 6 h).
    async fn renewal_loop(self: Arc<Self>, handle: UplinkHandle, gw: String, shutdown: Shutdown) {
        let mut wait = Duration::from_secs(2);
        let mut backoff = Duration::from_secs(60);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = Duration::from_secs(60);
            let not_after = match self.status().not_after {
                Some(n) => n,
                None => continue,
            };
            let left_ms = not_after - crate::clock::now_ms();
            if left_ms > self.pairing.renew_before.0.as_millis() as i64 {
                continue;
            }
            info!(left_s = left_ms / 1000, "Renewing the box's certificate");
            match self.renew_once(&handle, &gw).await {
                Ok(()) => backoff = Duration::from_secs(60),
                Err(e) => {
                    warn!(code = e.code(), error = %e, "Certificate renewal failed; will retry");
                    self.set_status(|s| {
                        s.last_error = Some(StatusError {
                            code: e.code().into(),
                            message: format!("renewal: {e}"),
                        })
                    });
                    wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(6 * 3600));
                }
            }
        }
    }

    async fn renew_once(&self, handle: &UplinkHandle, gw: &str) -> Result<(), PairError> {
        let data_dir = self.data_dir.clone();
        let purpose = format!("renew:{gw}");
        let key = tokio::task::spawn_blocking(move || identity::pending_key(&data_dir, &purpose))
            .await
            .map_err(|e| PairError::Setup(format!("key generation panicked: {e}")))??;
        let csr = enroll::make_csr(&key, Some(gw))?;
        // Subscribed before the CSR is queued, so the answer cannot slip past.
        let mut answers = handle.renewal_results();
        let topic = handle.topics().csr();
        let h = handle.clone();
        let body = enroll::csr_message(csr);
        tokio::task::spawn_blocking(move || h.queue(Record::inline(topic, false, body)))
            .await
            .map_err(|e| PairError::Setup(format!("queueing panicked: {e}")))?
            .map_err(|e| PairError::Setup(format!("cannot queue the renewal CSR: {e}")))?;
        let timeout = self.pairing.timeout.0.max(Duration::from_secs(60));
        let raw = tokio::time::timeout(timeout, async {
            loop {
                match answers.recv().await {
                    Ok(raw) => return Some(raw),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return None,
                }
            }
        })
        .await
        .map_err(|_| PairError::Timeout(timeout))?
        .ok_or(PairError::Timeout(timeout))?;
        let answer: PairResult = serde_json::from_slice(&raw)
            .map_err(|e| PairError::BadAnswer(format!("not a pairing result: {e}")))?;
        let current = identity::load(&self.data_dir)?.ok_or(PairError::NotPaired)?;
        let (host, port) = crate::uplink::parse_broker("identity broker", &current.info.broker)
            .map_err(PairError::BadAnswer)?;
        // Pinned: the CA and the request key held now (an answer cannot replace them).
        let held_ca = std::fs::read_to_string(current.ca_file())
            .map_err(|e| PairError::Setup(format!("cannot read the current city CA: {e}")))?;
        let held_key = current.request_key();
        let anchors = enroll::Anchors {
            ca_pem: &held_ca,
            request_key: held_key.as_deref(),
        };
        let (files, mut info) = match enroll::accept(
            answer,
            &key,
            Some(gw),
            anchors,
            (&host, port),
            &current.info.topic_root,
        ) {
            Ok(ok) => ok,
            Err(e) => {
                warn!(gateway = %gw, error = %e, "Renewal answer refused; the identity is unchanged");
                if let Err(ae) = self.sharing.append_audit(
                    NewEntry::new(crate::clock::now_ms(), AuditKind::Pairing, Actor::Gateway)
                        .detail(serde_json::json!({
                            "action": "renewal_refused",
                            "gateway_id": gw,
                            "reason": e.code(),
                            "detail": e.to_string(),
                        })),
                ) {
                    warn!(error = %ae, "Audit of a refused renewal failed");
                }
                return Err(e);
            }
        };
        let key_rotated =
            files.request_key_pem.as_deref().map(str::trim) != held_key.as_deref().map(str::trim);
        info.paired_at = current.info.paired_at;
        // The broker and topic root stay what pairing set (a renewal is not a move).
        info.broker = current.info.broker.clone();
        info.topic_root = current.info.topic_root.clone();
        let data_dir = self.data_dir.clone();
        let lock = self.files.clone();
        let gw_now = gw.to_owned();
        let id = tokio::task::spawn_blocking(move || {
            let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
            // Unpaired meanwhile (this task outlives a cancelled renewal): write nothing.
            let id = identity::install_if_current(&data_dir, &gw_now, &files, &info)?
                .ok_or(PairError::NotPaired)?;
            identity::clear_pending(&data_dir);
            Ok::<_, PairError>(id)
        })
        .await
        .map_err(|e| PairError::Setup(format!("storing the identity panicked: {e}")))??;
        handle.reconnect();
        let (na, ia) = (id.info.not_after, id.info.issued_at);
        self.set_status(|s| {
            s.not_after = Some(na);
            s.issued_at = Some(ia);
            s.last_error = None;
        });
        if let Err(e) = self.sharing.append_audit(
            NewEntry::new(crate::clock::now_ms(), AuditKind::Pairing, Actor::Gateway).detail(
                serde_json::json!({"action": "renewed", "gateway_id": gw, "not_after": na, "request_key_rotated": key_rotated}),
            ),
        ) {
            warn!(error = %e, "Audit of the renewal failed");
        }
        info!(gateway = %gw, not_after = na, "Certificate renewed; reconnecting with it");
        Ok(())
    }
}
