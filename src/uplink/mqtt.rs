//! The uplink worker: connect with capped, jittered backoff; on each connection publish the
//! retained online status, subscribe to `request`, send heartbeats and drain the outbox with
//! packet-id tracking; on shutdown publish offline, drain until the deadline, disconnect.

use std::error::Error as StdError;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill, MqttOptions,
    NetworkOptions, Outgoing, Packet, QoS, SubscribeReasonCode, TlsConfiguration, Transport,
};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::outbox::{Payload, Submitted};
use super::{publish_packet_size, LinkError, LinkErrorKind as K, LinkState, Uplink, WINDOW};
use crate::backoff::Backoff;
use crate::clock::now_ms;
use crate::protocol::messages::{EventKind, Heartbeat, OutboxReport, Status};
use crate::protocol::tls;
use crate::shutdown::Shutdown;

/// Requests rumqttc may hold before the event loop takes them: the outbox window plus status,
/// subscribe, heartbeats and the disconnect.
const CHANNEL_CAPACITY: usize = WINDOW + 64;

/// Live messages may occupy the client's queue only up to here, so the outbox window, status
/// and heartbeats always fit in what remains.
const LIVE_CLIENT_QUEUE: usize = CHANNEL_CAPACITY - WINDOW - 16;

/// How a connection ended.
enum Ended {
    /// Shutdown was asked for and handled.
    Shutdown,
    /// Closed on purpose by [`super::UplinkHandle::reconnect`] (renewed TLS material): a
    /// normal outcome, not a failure; reconnect at once.
    Reconnect,
    /// The connection failed; `connected` says whether it got as far as CONNACK.
    Failed { error: LinkError, connected: bool },
}

impl Uplink {
    /// Runs until `shutdown`: connects, reconnects with capped jittered backoff (reset after a
    /// successful connection), and on shutdown drains as described in the module doc.
    pub async fn run(self, shutdown: Shutdown) {
        let mut backoff = Backoff::new(self.settings.backoff_initial, self.settings.backoff_max);
        loop {
            if shutdown.is_triggered() {
                break;
            }
            match self.run_once(&shutdown).await {
                Ended::Shutdown => break,
                Ended::Reconnect => {
                    self.shared.outbox.with_state(|s| s.on_disconnect());
                    info!("Reconnecting with the renewed certificate");
                    self.shared.set_state(LinkState::Connecting);
                    backoff.reset();
                }
                Ended::Failed { error, connected } => {
                    self.shared.outbox.with_state(|s| s.on_disconnect());
                    warn!(kind = error.kind.as_str(), error = %error.message, "City link failed");
                    self.shared.set_error(error);
                    self.shared.set_state(LinkState::Connecting);
                    if connected {
                        backoff.reset();
                    }
                    let delay = backoff.next_delay(fastrand::f64());
                    tokio::select! {
                        biased;
                        _ = shutdown.wait() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        if let Err(e) = self.shared.outbox.flush() {
            warn!(error = %e, "Outbox flush at shutdown failed");
        }
        self.shared.set_state(LinkState::Disconnected);
    }

    fn options(&self, tls: tls::TlsMaterial) -> MqttOptions {
        let s = &self.settings;
        let mut o = MqttOptions::new(tls.gateway_id.clone(), s.host.clone(), s.port);
        o.set_keep_alive(s.keepalive)
            .set_clean_session(false)
            // Requests are acknowledged only once they are in the durable inbox.
            .set_manual_acks(true)
            .set_max_packet_size(s.max_packet_size, s.max_packet_size)
            // Room for the window plus status and heartbeats, so rumqttc's own flow control
            // never blocks what we already bounded.
            .set_inflight(WINDOW as u16 + 8)
            .set_last_will(LastWill::new(
                self.shared.topics.status(),
                Status::will().to_json(),
                QoS::AtLeastOnce,
                true,
            ))
            .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                tls.config,
            )));
        o
    }

    async fn run_once(&self, shutdown: &Shutdown) -> Ended {
        let failed = |error: LinkError| Ended::Failed {
            error,
            connected: false,
        };
        let s = &self.settings;
        let (ca, cert, key) = (s.ca_file.clone(), s.cert_file.clone(), s.key_file.clone());
        let tls = match tokio::task::spawn_blocking(move || tls::load(&ca, &cert, &key)).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return failed(tls_error(&e)),
            Err(e) => return failed(other(format!("TLS loading panicked: {e}"))),
        };
        if tls.gateway_id != self.shared.gateway_id {
            return failed(LinkError {
                kind: K::Other,
                message: format!(
                    "the certificate's CN changed from {} to {} while running; restart the daemon",
                    self.shared.gateway_id, tls.gateway_id
                ),
            });
        }
        // Resolve first: rumqttc's error for a failed lookup does not say it was DNS.
        let timeout = s.network_timeout();
        let lookup = tokio::time::timeout(
            s.connect_timeout,
            tokio::net::lookup_host((s.host.as_str(), s.port)),
        );
        tokio::select! {
            biased;
            _ = shutdown.wait() => return Ended::Shutdown,
            r = lookup => match r {
                Err(_) => return failed(LinkError { kind: K::Dns, message: format!("DNS: no answer for {} within {:?}", s.host, s.connect_timeout) }),
                Ok(Err(e)) => return failed(LinkError { kind: K::Dns, message: format!("DNS: cannot resolve {}: {e}", s.host) }),
                Ok(Ok(_)) => {}
            }
        }

        let (client, mut el) = AsyncClient::new(self.options(tls), CHANNEL_CAPACITY);
        let mut net = NetworkOptions::new();
        net.set_connection_timeout(timeout.as_secs().max(1));
        // Small messages (replies, PUBACKs to requests, live fragments) must not wait for
        // Nagle and a delayed ACK (~40 ms on Linux; measured at the center by benches/fleet.rs).
        net.set_tcp_nodelay(true);
        el.set_network_options(net);

        let first = tokio::select! {
            biased;
            _ = shutdown.wait() => return Ended::Shutdown,
            r = el.poll() => r,
        };
        match first {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                debug!(session_present = ack.session_present, "CONNACK");
            }
            Ok(other) => {
                return failed(self::other(format!("expected CONNACK, got {other:?}")));
            }
            Err(e) => return failed(classify(&e, &self.settings, timeout)),
        }
        self.shared.link(|l| l.connects += 1);
        self.shared.set_state(LinkState::Connected);
        info!(gateway = %self.shared.gateway_id, broker = %self.shared.broker, "City link up");
        match self.connected(shutdown, &client, &mut el).await {
            Ok(ended) => ended,
            Err(error) => Ended::Failed {
                error,
                connected: true,
            },
        }
    }

    /// Publishes a non-outbox message, recording it in the bookkeeping first.
    fn publish_direct(
        &self,
        client: &AsyncClient,
        topic: String,
        qos: QoS,
        retain: bool,
        payload: Vec<u8>,
        watched: bool,
    ) -> bool {
        self.shared.outbox.with_state(|s| {
            if watched {
                s.submit_watched()
            } else {
                s.submit_untracked()
            }
        });
        match client.try_publish(topic, qos, retain, payload) {
            Ok(()) => true,
            Err(e) => {
                self.shared.outbox.with_state(|s| s.unsubmit_last());
                debug!(error = %e, "MQTT client queue full; message skipped");
                false
            }
        }
    }

    /// Hands queued outbox messages to the client while the window allows.
    fn fill_window(&self, client: &AsyncClient) -> Result<(), LinkError> {
        loop {
            let Some(key) = self.shared.outbox.with_state(|s| s.next_to_send(WINDOW)) else {
                return Ok(());
            };
            let record = match self.shared.outbox.get(key) {
                Ok(Some(r)) => r,
                Ok(None) | Err(_) => {
                    // Dropped by the full policy after admission, or damaged: skip it.
                    warn!(key, "Outbox record missing or damaged; skipped");
                    self.shared.outbox.with_state(|s| s.unsubmit_last());
                    let _ = self.shared.outbox.discard(key);
                    continue;
                }
            };
            if let Some(grant) = &record.grant {
                if !self.shared.grant_allows(grant) {
                    // Consent checked again at send time: the grant ended, the chunk stays home.
                    debug!(key, grant, "Queued message of an ended grant dropped");
                    self.shared.outbox.with_state(|s| s.unsubmit_last());
                    let _ = self.shared.outbox.discard(key);
                    continue;
                }
            }
            let payload = match record.payload {
                Payload::Inline(b) => b,
                Payload::FramedFile {
                    header,
                    path,
                    offset,
                    len,
                } => match read_range(&path, offset, len) {
                    Ok(b) => [header, b].concat(),
                    Err(e) => {
                        warn!(key, file = %path.display(), error = %e, "Queued file range unreadable (evicted?); dropped");
                        self.shared.outbox.with_state(|s| s.unsubmit_last());
                        let _ = self.shared.outbox.discard(key);
                        continue;
                    }
                },
                Payload::FileRange { path, offset, len } => match read_range(&path, offset, len) {
                    Ok(b) => b,
                    Err(e) => {
                        warn!(key, file = %path.display(), error = %e, "Queued file range unreadable; dropped");
                        self.shared.outbox.with_state(|s| s.unsubmit_last());
                        let _ = self.shared.outbox.discard(key);
                        continue;
                    }
                },
            };
            if publish_packet_size(record.topic.len(), payload.len(), true)
                > self.settings.max_packet_size
            {
                // Queued under a larger limit before a config change: sending would loop.
                warn!(key, topic = %record.topic, "Queued message exceeds max_packet_size; dropped");
                self.shared.outbox.with_state(|s| s.unsubmit_last());
                let _ = self.shared.outbox.discard(key);
                continue;
            }
            if let Err(e) =
                client.try_publish(record.topic, QoS::AtLeastOnce, record.retain, payload)
            {
                // The client's request queue is full (acknowledgements of a burst of requests
                // share it): the message stays queued and goes on a later turn. A closed
                // event loop shows as an error of the next poll.
                debug!(key, error = %e, "MQTT client queue full; publish deferred");
                self.shared.outbox.with_state(|s| s.unsubmit_last());
                return Ok(());
            }
        }
    }

    async fn heartbeat(&self, client: &AsyncClient, seq: u64) {
        let health = self.health.clone();
        let report = match tokio::task::spawn_blocking(move || health.report()).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "Health report panicked; heartbeat skipped");
                return;
            }
        };
        let outbox = self.shared.outbox.with_state(|s| OutboxReport {
            messages: s.messages(),
            bytes: s.bytes(),
        });
        let hb = Heartbeat::new(
            now_ms(),
            seq,
            env!("CARGO_PKG_VERSION"),
            self.started.elapsed().as_secs(),
            outbox,
            report,
        );
        let body = serde_json::to_vec(&hb).expect("heartbeat serialises");
        let topic = self.shared.topics.heartbeat();
        if publish_packet_size(topic.len(), body.len(), false) > self.settings.max_packet_size {
            warn!(
                bytes = body.len(),
                "Heartbeat exceeds max_packet_size; skipped"
            );
            return;
        }
        self.publish_direct(client, topic, QoS::AtMostOnce, false, body, false);
    }

    /// Queues an `outbox_full` event once messages were lost and there is room again.
    fn report_losses(&self) {
        let Some(lost) = self.shared.outbox.with_state(|s| s.take_loss_report(4096)) else {
            return;
        };
        let handle = super::UplinkHandle {
            shared: self.shared.clone(),
        };
        let policy = self.settings.when_full;
        if let Err(e) = handle.event(EventKind::OutboxFull { lost, policy }) {
            warn!(error = %e, "Could not queue the outbox_full event");
            self.shared.outbox.with_state(|s| s.restore_loss(lost));
        }
    }

    async fn connected(
        &self,
        shutdown: &Shutdown,
        client: &AsyncClient,
        el: &mut EventLoop,
    ) -> Result<Ended, LinkError> {
        self.shared.outbox.with_state(|s| s.on_disconnect());
        self.publish_direct(
            client,
            self.shared.topics.status(),
            QoS::AtLeastOnce,
            true,
            Status::online(now_ms(), env!("CARGO_PKG_VERSION")).to_json(),
            false,
        );
        let request_topic = self.shared.topics.request();
        let cert_topic = self.shared.topics.cert();
        for t in [&request_topic, &cert_topic] {
            if let Err(e) = client.try_subscribe(t.clone(), QoS::AtLeastOnce) {
                return Err(other(format!("cannot subscribe: {e}")));
            }
        }
        let mut reconnect = false;
        let mut hb_tick = tokio::time::interval(self.settings.heartbeat_interval);
        hb_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut hb_seq = 0u64;
        let mut live_rx = self.live_rx.lock().await;
        // Live messages queued while the link was down are stale: drop them.
        while live_rx.try_recv().is_ok() {}
        // Set at shutdown: (deadline, packet id of the offline status once known, its ack).
        let mut draining: Option<Instant> = None;
        let mut offline_pkid: Option<u16> = None;
        let mut offline_acked = false;
        // Acknowledgements the client's request queue had no room for: retried every turn.
        // A lost PUBACK would hold the broker's in-flight window for the rest of the
        // connection, and with 20 of them nothing more would be delivered.
        let mut unacked: std::collections::VecDeque<rumqttc::Publish> = Default::default();
        loop {
            while let Some(p) = unacked.front() {
                if client.try_ack(p).is_err() {
                    break;
                }
                unacked.pop_front();
            }
            self.fill_window(client)?;
            if draining.is_some()
                && offline_acked
                && self.shared.outbox.with_state(|s| s.messages() == 0)
            {
                break;
            }
            let deadline = draining.unwrap_or_else(Instant::now);
            tokio::select! {
                biased;
                _ = shutdown.wait(), if draining.is_none() => {
                    info!("Shutting down the city link: publishing offline status, draining the outbox");
                    draining = Some(Instant::now() + self.settings.drain_timeout);
                    self.publish_direct(
                        client,
                        self.shared.topics.status(),
                        QoS::AtLeastOnce,
                        true,
                        Status::offline(now_ms(), env!("CARGO_PKG_VERSION")).to_json(),
                        true,
                    );
                }
                _ = tokio::time::sleep_until(deadline), if draining.is_some() => {
                    let left = self.shared.outbox.with_state(|s| s.messages());
                    warn!(left, offline_acked, "Drain deadline reached; the rest stays queued");
                    break;
                }
                ev = el.poll() => {
                    let ev = ev.map_err(|e| classify(&e, &self.settings, self.settings.network_timeout()))?;
                    match ev {
                        Event::Outgoing(Outgoing::Publish(pkid)) => {
                            let what = self
                                .shared
                                .outbox
                                .with_state(|s| s.on_outgoing_publish(pkid))
                                .map_err(|e| other(e.to_string()))?;
                            if what == Submitted::Watched {
                                offline_pkid = Some(pkid);
                            }
                        }
                        Event::Outgoing(Outgoing::AwaitAck(pkid)) => {
                            // The broker acknowledged out of order and rumqttc parked a packet:
                            // start a clean connection rather than guess which key it carries.
                            return Err(other(format!("packet id collision on {pkid}; reconnecting")));
                        }
                        Event::Incoming(Packet::PubAck(ack)) => {
                            if offline_pkid == Some(ack.pkid) {
                                offline_acked = true;
                                offline_pkid = None;
                            }
                            if let Some(key) = self.shared.outbox.with_state(|s| s.on_puback(ack.pkid)) {
                                if let Err(e) = self.shared.outbox.remove(key) {
                                    warn!(key, error = %e, "Cannot delete an acknowledged outbox message");
                                }
                                self.shared.link(|l| l.last_puback_ms = Some(now_ms()));
                                self.report_losses();
                            }
                        }
                        Event::Incoming(Packet::SubAck(ack))
                            if ack.return_codes.iter().any(|c| matches!(c, SubscribeReasonCode::Failure)) =>
                        {
                            let e = LinkError {
                                kind: K::Acl,
                                message: format!("refused by ACL: the broker does not let this gateway subscribe to {request_topic}"),
                            };
                            warn!(error = %e.message, "Subscription refused");
                            self.shared.set_error(e);
                        }
                        Event::Incoming(Packet::Publish(p)) if p.topic == cert_topic => {
                            // Not durable: a lost answer means the renewal is asked again.
                            let _ = self.shared.renewals.send(p.payload.to_vec());
                            if client.try_ack(&p).is_err() {
                                unacked.push_back(p);
                            }
                        }
                        Event::Incoming(Packet::Publish(p)) => {
                            if p.topic != request_topic {
                                warn!(topic = %p.topic, "Message on an unexpected topic ignored");
                                if client.try_ack(&p).is_err() {
                                    unacked.push_back(p);
                                }
                                continue;
                            }
                            // Larger than any valid request: acknowledged and dropped before
                            // anything is written (a flood must not reach the disk), counted for
                            // sharing's summary of rejected requests.
                            if p.payload.len() > crate::protocol::request::MAX_REQUEST_BYTES {
                                self.shared
                                    .oversized
                                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                debug!(bytes = p.payload.len(), "Oversized request dropped");
                                if client.try_ack(&p).is_err() {
                                    unacked.push_back(p);
                                }
                                continue;
                            }
                            match self.shared.inbox.put(&p.payload) {
                                Ok(key) => {
                                    debug!(key, bytes = p.payload.len(), "Request received");
                                    // Stored: acknowledged now or, if the client is busy, on
                                    // a later turn of this loop.
                                    if client.try_ack(&p).is_err() {
                                        unacked.push_back(p);
                                    }
                                }
                                // Not acknowledged: the broker redelivers it on the next connection.
                                Err(e) => warn!(error = %e, "Request not taken in"),
                            }
                        }
                        _ => {}
                    }
                }
                _ = hb_tick.tick(), if draining.is_none() => {
                    self.heartbeat(client, hb_seq).await;
                    hb_seq += 1;
                }
                _ = self.shared.notify.notified(), if draining.is_none() => {}
                _ = self.shared.reconnect.notified(), if draining.is_none() => {
                    reconnect = true;
                    break;
                }
                Some(m) = live_rx.recv(), if draining.is_none() => {
                    // A full client queue means the link is behind: drop live, never wait, and
                    // always leave room for the outbox window and status.
                    let queued = self.shared.outbox.with_state(|s| s.queued());
                    if queued >= LIVE_CLIENT_QUEUE
                        || !self.publish_direct(client, m.topic, QoS::AtMostOnce, false, m.payload, false)
                    {
                        debug!(queued, "Live message dropped: the link is behind");
                    }
                }
            }
        }
        // Clean DISCONNECT: the broker discards the last will (the offline status is already
        // published and acknowledged, or the deadline passed).
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                match el.poll().await {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        if reconnect {
            return Ok(Ended::Reconnect);
        }
        info!("City link closed");
        Ok(Ended::Shutdown)
    }
}

fn read_range(path: &std::path::Path, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0; len as usize];
    f.read_exact(&mut buf)?;
    Ok(buf)
}

fn other(message: String) -> LinkError {
    LinkError {
        kind: K::Other,
        message,
    }
}

fn tls_error(e: &tls::TlsError) -> LinkError {
    let kind = match e {
        tls::TlsError::Expired { .. } | tls::TlsError::NotYetValid { .. } => K::CertificateExpired,
        _ => K::Certificate,
    };
    LinkError {
        kind,
        message: e.to_string(),
    }
}

/// Finds a rustls error inside an error chain (tokio-rustls wraps it in `io::Error`, whose
/// `source()` skips the wrapped error itself, hence `get_ref`).
fn find_rustls<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    if let Some(r) = e.downcast_ref::<rustls::Error>() {
        return Some(r);
    }
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        if let Some(inner) = io.get_ref() {
            if let Some(r) = find_rustls(inner) {
                return Some(r);
            }
        }
    }
    e.source().and_then(find_rustls)
}

fn find_io<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a std::io::Error> {
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        return Some(io);
    }
    e.source().and_then(find_io)
}

/// Plain words for a connection failure.
fn classify(e: &ConnectionError, s: &super::UplinkSettings, timeout: Duration) -> LinkError {
    let broker = format!("{}:{}", s.host, s.port);
    if let Some(r) = find_rustls(e) {
        let message = tls::plain_tls(r);
        let kind = match r {
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
            | rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature) => {
                K::CaMismatch
            }
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateExpired) => {
                K::CertificateExpired
            }
            rustls::Error::AlertReceived(_) => K::CertificateRefused,
            _ => K::Tls,
        };
        return LinkError { kind, message };
    }
    match e {
        ConnectionError::NetworkTimeout => {
            return LinkError {
                kind: K::Timeout,
                message: format!("timeout: no answer from the broker {broker} within {timeout:?}"),
            }
        }
        ConnectionError::FlushTimeout => {
            return LinkError {
                kind: K::Timeout,
                message: format!("timeout: sending to the broker {broker} stalled for {timeout:?}"),
            }
        }
        ConnectionError::ConnectionRefused(code) => {
            let (kind, what) = match code {
                ConnectReturnCode::NotAuthorized => (K::NotAuthorized, "not authorized"),
                ConnectReturnCode::BadUserNamePassword => (
                    K::NotAuthorized,
                    "bad user name or password (certificate identity)",
                ),
                ConnectReturnCode::BadClientId => (K::NotAuthorized, "client id refused"),
                ConnectReturnCode::ServiceUnavailable => (K::Other, "service unavailable"),
                _ => (K::Other, "refused"),
            };
            return LinkError {
                kind,
                message: format!("refused by the broker at CONNECT: {what}"),
            };
        }
        _ => {}
    }
    if let Some(io) = find_io(e) {
        use std::io::ErrorKind as Io;
        let (kind, message) = match io.kind() {
            Io::ConnectionRefused => (
                K::ConnectionRefused,
                format!("connection refused: nothing listens at {broker} (is the broker running?)"),
            ),
            Io::TimedOut => (K::Timeout, format!("timeout connecting to {broker}")),
            Io::ConnectionReset | Io::UnexpectedEof | Io::ConnectionAborted | Io::BrokenPipe => (
                K::ConnectionLost,
                format!("connection lost: the broker {broker} closed the connection ({io})"),
            ),
            _ => (K::Other, format!("network error with {broker}: {io}")),
        };
        return LinkError { kind, message };
    }
    other(format!("MQTT error with {broker}: {e}"))
}
