//! One MQTT session of the center: rumqttc over rustls (ring), the city CA as the only trust
//! anchor and the center's certificate, both loaded by [`porchlight_protocol::tls::load`] (key
//! file 0600, certificate within its validity). Verification is never disabled.
//!
//! The session is clean (`clean_session = true`) with a random client id (`{cn}-{hex}`), so
//! several center commands can run side by side under one certificate. Incoming QoS 1
//! messages are acknowledged by rumqttc as they are read.

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, NetworkOptions,
    Outgoing, Packet, QoS, SubscribeFilter, SubscribeReasonCode, TlsConfiguration, Transport,
};

use super::settings::Settings;
use super::CenterError;
use porchlight_protocol::tls;

/// Time allowed for TCP, TLS and CONNECT.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest incoming packet: a PLM1 message carries one fragment (a GOP for stored clips).
pub const MAX_INCOMING_PACKET: usize = 64 << 20;
/// Largest outgoing packet (requests are at most 8 KiB).
const MAX_OUTGOING_PACKET: usize = 1 << 20;

/// A received message.
#[derive(Clone, Debug)]
pub struct Message {
    /// The topic.
    pub topic: String,
    /// The payload.
    pub payload: Bytes,
    /// The broker's retained flag.
    pub retained: bool,
}

/// A connected session.
pub struct Connection {
    client: AsyncClient,
    events: EventLoop,
    broker: String,
    /// Messages that arrived while waiting for an acknowledgement.
    inbox: VecDeque<Message>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("broker", &self.broker)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects and waits for the CONNACK.
    pub async fn open(s: &Settings) -> Result<Connection, CenterError> {
        let (ca, cert, key) = (s.ca.clone(), s.cert.clone(), s.key.clone());
        let material = tokio::task::spawn_blocking(move || tls::load(&ca, &cert, &key))
            .await
            .map_err(|e| CenterError::Usage(format!("TLS loading panicked: {e}")))??;
        let suffix = hex::encode(super::random_bytes::<4>().map_err(|e| CenterError::File {
            what: "random source",
            path: "getrandom(2)".into(),
            source: e,
        })?);
        let mut o = MqttOptions::new(
            format!("{}-{suffix}", material.gateway_id),
            s.host.clone(),
            s.port,
        );
        o.set_keep_alive(Duration::from_secs(30))
            .set_clean_session(true)
            .set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET)
            .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                material.config,
            )));
        let (client, mut events) = AsyncClient::new(o, 64);
        let mut net = NetworkOptions::new();
        net.set_connection_timeout(CONNECT_TIMEOUT.as_secs());
        // rumqttc leaves Nagle on: a PUBACK followed at once by our own PUBLISH (serve's
        // answer to a CSR) then waits for the broker's delayed ACK, ~40 ms on Linux
        // (measured: enrollment 44 ms with Nagle; docs/performance.md, "Fleet").
        net.set_tcp_nodelay(true);
        events.set_network_options(net);
        let broker = s.broker();
        let connect_err = |message: String| CenterError::Connect {
            broker: broker.clone(),
            message,
        };
        let first = tokio::time::timeout(CONNECT_TIMEOUT + Duration::from_secs(1), events.poll())
            .await
            .map_err(|_| connect_err(format!("no answer within {CONNECT_TIMEOUT:?}")))?;
        match first {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {}
            Ok(other) => return Err(connect_err(format!("expected CONNACK, got {other:?}"))),
            Err(e) => return Err(connect_err(plain(&e))),
        }
        tracing::debug!(broker = %broker, "Connected");
        Ok(Connection {
            client,
            events,
            broker,
            inbox: VecDeque::new(),
        })
    }

    fn lost(&self, e: &ConnectionError) -> CenterError {
        CenterError::Lost {
            broker: self.broker.clone(),
            message: plain(e),
        }
    }

    fn request_failed(&self, e: rumqttc::ClientError) -> CenterError {
        CenterError::Lost {
            broker: self.broker.clone(),
            message: format!("cannot queue a packet: {e}"),
        }
    }

    /// Polls once; keeps incoming publishes in the inbox and returns the other events.
    async fn poll(&mut self) -> Result<Event, CenterError> {
        let ev = self.events.poll().await.map_err(|e| self.lost(&e))?;
        if let Event::Incoming(Packet::Publish(p)) = &ev {
            self.inbox.push_back(Message {
                topic: p.topic.clone(),
                payload: p.payload.clone(),
                retained: p.retain,
            });
        }
        Ok(ev)
    }

    /// Subscribes to `topics` at QoS 1 and waits for the SUBACK; a refused filter (the
    /// broker's ACL) is an error.
    pub async fn subscribe(&mut self, topics: &[String]) -> Result<(), CenterError> {
        let filters: Vec<SubscribeFilter> = topics
            .iter()
            .map(|t| SubscribeFilter::new(t.clone(), QoS::AtLeastOnce))
            .collect();
        self.client
            .subscribe_many(filters)
            .await
            .map_err(|e| self.request_failed(e))?;
        loop {
            if let Event::Incoming(Packet::SubAck(ack)) = self.poll().await? {
                for (code, topic) in ack.return_codes.iter().zip(topics) {
                    if *code == SubscribeReasonCode::Failure {
                        return Err(CenterError::SubscribeRefused {
                            topic: topic.clone(),
                        });
                    }
                }
                return Ok(());
            }
        }
    }

    /// Publishes at QoS 1 (not retained) and waits for the broker's PUBACK.
    ///
    /// Mosquitto acknowledges a publish its ACL forbids and drops it silently (MQTT 3.1.1
    /// has no way to say no), so a PUBACK means "the broker has it", not "the box got it".
    pub async fn publish(&mut self, topic: &str, payload: Vec<u8>) -> Result<(), CenterError> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .map_err(|e| self.request_failed(e))?;
        let mut pkid = None;
        loop {
            match self.poll().await? {
                Event::Outgoing(Outgoing::Publish(id)) => pkid = Some(id),
                Event::Incoming(Packet::PubAck(ack)) if Some(ack.pkid) == pkid => return Ok(()),
                _ => {}
            }
        }
    }

    /// The next message (first the ones that arrived while waiting for acknowledgements).
    pub async fn next_message(&mut self) -> Result<Message, CenterError> {
        loop {
            if let Some(m) = self.inbox.pop_front() {
                return Ok(m);
            }
            self.poll().await?;
        }
    }

    /// Sends DISCONNECT and gives the event loop a moment to flush it.
    pub async fn close(mut self) {
        if self.client.disconnect().await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Ok(ev) = self.events.poll().await {
                    if matches!(ev, Event::Outgoing(Outgoing::Disconnect)) {
                        break;
                    }
                }
            })
            .await;
        }
    }
}

fn find<'a, T: StdError + 'static>(e: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    if let Some(t) = e.downcast_ref::<T>() {
        return Some(t);
    }
    e.source().and_then(find::<T>)
}

/// Plain words for a connection error: TLS problems in the uplink's words, refusals, I/O.
fn plain(e: &ConnectionError) -> String {
    if let Some(r) = find::<rustls::Error>(e) {
        return tls::plain_tls(r).replace("uplink.broker", "--broker");
    }
    match e {
        ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized)
        | ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword) => {
            return "refused by the broker at CONNECT: not authorized".into()
        }
        ConnectionError::ConnectionRefused(code) => {
            return format!("refused by the broker at CONNECT: {code:?}")
        }
        ConnectionError::NetworkTimeout => return "timeout: no answer from the broker".into(),
        _ => {}
    }
    if let Some(io) = find::<std::io::Error>(e) {
        if io.kind() == std::io::ErrorKind::ConnectionRefused {
            return "connection refused: nothing listens there (is the broker running?)".into();
        }
        return io.to_string();
    }
    e.to_string()
}
