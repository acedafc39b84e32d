//! One client connection: CONNECT, then a loop over socket reads, session
//! wake-ups, keep alive and takeover. The protocol handlers (one per packet
//! type) only touch this connection's state, the session and the broker.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::VecDeque;

use bytes::BytesMut;
use ferrymq_shared::boundary::{BoxFuture, Durable, LogError, Pulled};
use hashbrown::HashMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{oneshot, watch};

use crate::broker::Broker;
use crate::protocol::codec::{self, CodecError};
use crate::protocol::packet::{
    reason, Ack, ConnAck, ConnAckProperties, Connect, Disconnect, Packet, Protocol, Publish, QoS,
    SubAck, Subscribe, UnsubAck, Unsubscribe, Will,
};
use crate::session::{ClientId, Delivery, OutState, RoutedMessage, Session, SubOptions};

/// Buffers larger than this are released once empty, so a burst does not pin
/// memory on a connection that goes quiet.
const IDLE_BUF_LIMIT: usize = 64 * 1024;

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// Socket error.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Bad packet from the client.
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    /// No CONNECT in time.
    #[error("no CONNECT within the connect timeout")]
    ConnectTimeout,
    /// The client broke the protocol; the reason code was sent (v5).
    #[error("protocol violation 0x{0:02x}")]
    Protocol(u8),
}

/// How the main loop ended.
enum Exit {
    /// Client sent DISCONNECT (will suppressed unless reason 0x04).
    Disconnect { send_will: bool },
    /// Closed by us or the network: the will is published.
    Abnormal,
    /// Another connection took the session over.
    TakenOver,
    /// Broker shutdown.
    Shutdown,
}

struct Conn {
    broker: Arc<Broker>,
    protocol: Protocol,
    client_id: ClientId,
    username: Option<String>,
    conn_id: u64,
    session: Arc<Session>,
    keep_alive: u16,
    will: Option<Will>,
    aliases_in: HashMap<u16, String>,
    aliases_out: HashMap<String, u16>,
    client_receive_max: u16,
    client_max_packet: Option<u32>,
    client_alias_max: u16,
    connect_expiry_zero: bool,
    wbuf: BytesMut,
    rate: RateLimiter,
    /// QoS 1/2 publishes waiting for the L role's durability, in arrival order.
    acks: VecDeque<PendingAck>,
    /// A read of this session's stored queue in progress.
    fetching: Option<BoxFuture<Result<Pulled, LogError>>>,
    /// After a failed or empty store read, when to try again.
    fetch_retry_at: Option<tokio::time::Instant>,
    /// Whether the last read carried a publish.
    published: bool,
    /// Reads are paused until then (store pressure), whichever branch wakes first.
    paused_until: Option<tokio::time::Instant>,
}

/// A publish whose acknowledgement waits for durability.
struct PendingAck {
    pkid: u16,
    qos: QoS,
    /// Reason code to send once durable.
    code: u8,
    durable: Durable,
}

/// Serve one accepted socket until it closes.
pub async fn serve<S>(
    broker: Arc<Broker>,
    stream: S,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
    tls_cn: Option<String>,
) -> Result<(), ConnectionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    // Buffers start empty and grow with traffic: idle devices are the common
    // case, and 8 KiB of buffers per idle connection would dominate its cost.
    let mut rbuf = BytesMut::new();
    let max_in = broker.config.max_packet_size as usize;

    // CONNECT must arrive within the connect timeout; anything else first is refused.
    let connect_timeout = Duration::from_secs(broker.config.connect_timeout_secs);
    let connect = tokio::time::timeout(connect_timeout, async {
        loop {
            match codec::decode(&mut rbuf, None, max_in) {
                Ok(Some(Packet::Connect(c))) => return Ok(c),
                Ok(Some(_)) => return Err(ConnectionError::Protocol(reason::PROTOCOL_ERROR)),
                Ok(None) => {}
                Err(e) => return Err(ConnectionError::Codec(e)),
            }
            if reader.read_buf(&mut rbuf).await? == 0 {
                return Err(ConnectionError::Io(
                    std::io::ErrorKind::UnexpectedEof.into(),
                ));
            }
        }
    })
    .await;
    let connect = match connect {
        Ok(Ok(c)) => c,
        Ok(Err(ConnectionError::Codec(e)))
            if e.reason_code() == reason::UNSUPPORTED_PROTOCOL_VERSION =>
        {
            // A client of an unknown version gets a CONNACK it can read (3.1.1 layout).
            let mut b = BytesMut::new();
            let ack = Packet::ConnAck(ConnAck {
                reason: reason::UNSUPPORTED_PROTOCOL_VERSION,
                ..ConnAck::default()
            });
            if codec::encode(&ack, Protocol::V4, &mut b, None).is_ok() {
                let _ = writer.write_all(&b).await;
            }
            return Err(ConnectionError::Codec(e));
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(ConnectionError::ConnectTimeout),
    };
    let protocol = connect.protocol.unwrap_or(Protocol::V4);
    let mut wbuf = BytesMut::new();
    let mut connect = connect;
    // Mutual TLS: the verified certificate's CN is the user name.
    let cn_user = tls_cn.filter(|_| broker.config.tls.as_ref().is_some_and(|t| t.cn_as_username));
    if let Some(cn) = &cn_user {
        connect.username = Some(cn.clone());
    }

    // Password checks cost milliseconds of CPU: keep them off the async workers.
    let authenticated = cn_user.is_some()
        || match (&broker.passwords, &connect.username) {
            (Some(_), Some(user)) => {
                let b = broker.clone();
                let user = user.clone();
                let pw = connect.password.clone().unwrap_or_default();
                tokio::task::spawn_blocking(move || {
                    b.passwords.as_ref().is_some_and(|p| p.verify(&user, &pw))
                })
                .await
                .unwrap_or(false)
            }
            _ => false,
        };

    let Some((mut conn, kick_rx, session_present)) =
        accept_connect(&broker, &connect, protocol, authenticated, &mut wbuf)
    else {
        writer.write_all(&wbuf).await?;
        writer.shutdown().await.ok();
        return Ok(());
    };
    conn.wbuf = wbuf;
    tracing::debug!(client = %conn.client_id, %peer, ?protocol, session_present, "connected");
    broker
        .stats
        .clients_connected
        .fetch_add(1, Ordering::Relaxed);
    metrics::gauge!("ferrymq_mqtt_connections").increment(1.0);

    if session_present {
        conn.resend_inflight();
    }
    conn.drain();
    // The CONNECT (with its will, credentials, properties) is not needed any more.
    drop(connect);
    let exit = conn
        .run(&mut reader, &mut writer, &mut rbuf, kick_rx, &mut shutdown)
        .await;
    let _ = writer.write_all(&conn.wbuf).await;
    let _ = writer.shutdown().await;
    // Counted as closed only once the last bytes (a server DISCONNECT) are out,
    // so a broker shutdown that waits for the count does not cut them off.
    broker
        .stats
        .clients_connected
        .fetch_sub(1, Ordering::AcqRel);
    broker.connection_closed.notify_waiters();
    metrics::gauge!("ferrymq_mqtt_connections").decrement(1.0);
    let send_will = match &exit {
        Ok(Exit::Disconnect { send_will }) => *send_will,
        Ok(Exit::TakenOver) | Ok(Exit::Abnormal) | Err(_) => true,
        Ok(Exit::Shutdown) => false,
    };
    conn.detach(send_will);
    exit.map(|_| ())
}

/// Validate CONNECT, attach or create the session, write CONNACK into `wbuf`.
/// None = refused (CONNACK with the reason is in `wbuf`).
fn accept_connect(
    broker: &Arc<Broker>,
    c: &Connect,
    protocol: Protocol,
    authenticated: bool,
    wbuf: &mut BytesMut,
) -> Option<(Conn, oneshot::Receiver<u8>, bool)> {
    let cfg = &broker.config;
    let refuse = |wbuf: &mut BytesMut, code: u8| {
        let ack = Packet::ConnAck(ConnAck {
            reason: code,
            ..ConnAck::default()
        });
        let _ = codec::encode(&ack, protocol, wbuf, None);
        None
    };
    if c.authentication_method.is_some() {
        // No enhanced authentication method is configured.
        return refuse(wbuf, reason::BAD_AUTHENTICATION_METHOD);
    }
    match (&c.username, &broker.passwords) {
        (Some(_), Some(_)) if !authenticated => {
            metrics::counter!("ferrymq_mqtt_auth_failures_total").increment(1);
            return refuse(wbuf, reason::BAD_USER_NAME_OR_PASSWORD);
        }
        (None, _) if !cfg.anonymous_allowed() => {
            metrics::counter!("ferrymq_mqtt_auth_failures_total").increment(1);
            return refuse(wbuf, reason::NOT_AUTHORIZED);
        }
        _ => {}
    }
    let mut assigned = None;
    let client_id: ClientId = if c.client_id.is_empty() {
        if protocol == Protocol::V4 && !c.clean_start {
            return refuse(wbuf, reason::CLIENT_IDENTIFIER_NOT_VALID);
        }
        let id = format!("ferrymq-{:016x}", rand_u64());
        assigned = Some(id.clone());
        Arc::from(id)
    } else {
        Arc::from(c.client_id.as_str())
    };
    let expiry = match protocol {
        Protocol::V4 if c.clean_start => 0,
        Protocol::V4 => u32::MAX,
        Protocol::V5 => c
            .session_expiry_interval
            .unwrap_or(0)
            .min(cfg.max_session_expiry),
    };
    let keep_alive = c.keep_alive.min(cfg.max_keep_alive);
    let conn_id = broker.next_connection_id();
    let (kick_tx, kick_rx) = oneshot::channel();

    let _guard = broker.session_lock.lock();
    let existing = broker.session(&client_id);
    let (session, present) = match existing {
        Some(s) if !c.clean_start => {
            let mut st = s.state.lock();
            if let Some(k) = st.kick.take() {
                let _ = k.send(reason::SESSION_TAKEN_OVER);
            }
            st.connection = Some(conn_id);
            st.kick = Some(kick_tx);
            st.expiry_secs = expiry;
            st.generation += 1;
            drop(st);
            (s, true)
        }
        other => {
            if let Some(old) = other {
                if let Some(k) = old.state.lock().kick.take() {
                    let _ = k.send(reason::SESSION_TAKEN_OVER);
                }
                broker.remove_session(&old);
            }
            let s = Arc::new(Session::new(client_id.clone(), expiry));
            {
                let mut st = s.state.lock();
                st.connection = Some(conn_id);
                st.kick = Some(kick_tx);
                st.generation = 1;
            }
            broker.insert_session(s.clone());
            (s, false)
        }
    };
    drop(_guard);
    if expiry > 0 {
        broker.persist_session(&session);
    }

    let mut props = ConnAckProperties::default();
    if protocol == Protocol::V5 {
        props.receive_maximum = Some(cfg.receive_maximum);
        props.maximum_packet_size = Some(cfg.max_packet_size);
        props.topic_alias_maximum = Some(cfg.topic_alias_maximum);
        props.assigned_client_identifier = assigned;
        props.retain_available = Some(1);
        props.wildcard_subscription_available = Some(1);
        props.subscription_identifiers_available = Some(1);
        props.shared_subscription_available = Some(1);
        if c.session_expiry_interval.unwrap_or(0) != expiry {
            props.session_expiry_interval = Some(expiry);
        }
        if keep_alive != c.keep_alive {
            props.server_keep_alive = Some(keep_alive);
        }
    }
    let ack = Packet::ConnAck(ConnAck {
        session_present: present,
        reason: reason::SUCCESS,
        properties: props,
    });
    let _ = codec::encode(&ack, protocol, wbuf, None);

    let mut will = c.will.clone();
    if let Some(w) = will.as_mut() {
        if protocol == Protocol::V4 {
            w.delay_interval = 0;
        }
    }
    Some((
        Conn {
            broker: broker.clone(),
            protocol,
            client_id,
            username: c.username.clone(),
            conn_id,
            session,
            keep_alive,
            will,
            aliases_in: HashMap::new(),
            aliases_out: HashMap::new(),
            client_receive_max: c.receive_maximum.unwrap_or(u16::MAX).max(1),
            client_max_packet: c.maximum_packet_size,
            client_alias_max: c.topic_alias_maximum.unwrap_or(0),
            connect_expiry_zero: protocol == Protocol::V5 && expiry == 0,
            wbuf: BytesMut::new(),
            rate: RateLimiter::new(broker.config.max_publish_rate, broker.config.max_byte_rate),
            acks: VecDeque::new(),
            fetching: None,
            fetch_retry_at: None,
            published: false,
            paused_until: None,
        },
        kick_rx,
        present,
    ))
}

/// A random id for an assigned client identifier. Falls back to the clock
/// only if the OS has no randomness to give (ids must merely not collide).
fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        return std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
    }
    u64::from_ne_bytes(b)
}

impl Conn {
    async fn run<R, W>(
        &mut self,
        reader: &mut R,
        writer: &mut W,
        rbuf: &mut BytesMut,
        mut kick: oneshot::Receiver<u8>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Exit, ConnectionError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let max_in = self.broker.config.max_packet_size as usize;
        let ka = Duration::from_millis(self.keep_alive as u64 * 1500);
        let mut deadline = tokio::time::Instant::now() + ka;
        let session = self.session.clone();
        let mut read_hint = 0usize;
        loop {
            if !self.wbuf.is_empty() {
                writer.write_all(&self.wbuf).await?;
                self.wbuf.clear();
                if self.wbuf.capacity() > IDLE_BUF_LIMIT {
                    self.wbuf = BytesMut::new();
                }
            }
            if rbuf.is_empty() && rbuf.capacity() > IDLE_BUF_LIMIT {
                *rbuf = BytesMut::new();
            }
            // Grow the read buffer with the traffic: an idle device keeps a few
            // hundred bytes, a busy publisher reads in large chunks (one syscall
            // for many packets).
            if rbuf.capacity() - rbuf.len() < 256 {
                rbuf.reserve(read_hint.clamp(512, IDLE_BUF_LIMIT));
            }
            // Rate limits are enforced by not reading: the client's own socket backs up.
            if let Some(wait) = self.rate.wait() {
                tokio::time::sleep(wait).await;
            }
            // A store that cannot keep up slows publishers the same way, before
            // it refuses anything (RocketMQ's "broker busy"). Only connections
            // that publish are paused, so subscribers keep draining.
            // Only a connection whose last read carried a publish is paused.
            if std::mem::take(&mut self.published) {
                if let Some((why, d)) = self.broker.log.as_ref().and_then(|l| l.pressure()) {
                    metrics::counter!("ferrymq_mqtt_publish_throttled_total", "reason" => why.label())
                        .increment(1);
                    self.paused_until = Some(tokio::time::Instant::now() + d);
                }
            }
            // A client that keeps sending while its publishes wait for the disk
            // is not read until they are acknowledged: its pending acks are bounded.
            let can_read = self.acks.len() < self.broker.config.receive_maximum as usize;
            let has_acks = !self.acks.is_empty();
            let has_fetch = self.fetching.is_some();
            let retry_at = self.fetch_retry_at;
            let pause_until = self
                .paused_until
                .filter(|t| *t > tokio::time::Instant::now());
            tokio::select! {
                n = async {
                    if let Some(t) = pause_until {
                        tokio::time::sleep_until(t).await;
                    }
                    reader.read_buf(rbuf).await
                }, if can_read => {
                    let n = n?;
                    if n == 0 {
                        return Ok(Exit::Abnormal);
                    }
                    // A read that filled the buffer asks for a bigger one next time.
                    read_hint = if rbuf.capacity() == rbuf.len() { n * 4 } else { n };
                    deadline = tokio::time::Instant::now() + ka;
                    loop {
                        match codec::decode(rbuf, Some(self.protocol), max_in) {
                            Ok(Some(p)) => {
                                if let Some(exit) = self.handle(p)? {
                                    return Ok(exit);
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                self.disconnect(e.reason_code());
                                return Err(e.into());
                            }
                        }
                    }
                    // Under ASYNC_FLUSH most are durable already: ack them in this write.
                    self.ack_ready()?;
                    self.drain();
                }
                r = front_ack(&mut self.acks), if has_acks => {
                    if let Some(p) = self.acks.pop_front() {
                        self.finish_ack(p, r)?;
                    }
                    self.ack_ready()?;
                }
                r = poll_fetch(&mut self.fetching), if has_fetch => {
                    self.fetching = None;
                    self.on_fetched(r);
                    self.drain();
                }
                _ = async {
                    if let Some(t) = retry_at {
                        tokio::time::sleep_until(t).await;
                    }
                }, if retry_at.is_some() => {
                    self.fetch_retry_at = None;
                    self.drain();
                }
                _ = session.notify.notified() => self.drain(),
                _ = tokio::time::sleep_until(deadline), if self.keep_alive > 0 => {
                    self.disconnect(reason::KEEP_ALIVE_TIMEOUT);
                    return Ok(Exit::Abnormal);
                }
                code = &mut kick => {
                    self.disconnect(code.unwrap_or(reason::SESSION_TAKEN_OVER));
                    return Ok(Exit::TakenOver);
                }
                _ = shutdown.changed() => {
                    self.disconnect(reason::SERVER_SHUTTING_DOWN);
                    return Ok(Exit::Shutdown);
                }
            }
        }
    }

    /// Acknowledge the publishes at the head of the queue whose durability is
    /// already confirmed, without waiting.
    fn ack_ready(&mut self) -> Result<(), ConnectionError> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        while let Some(front) = self.acks.front_mut() {
            match front.durable.as_mut().poll(&mut cx) {
                std::task::Poll::Ready(r) => {
                    if let Some(p) = self.acks.pop_front() {
                        self.finish_ack(p, r)?;
                    }
                }
                std::task::Poll::Pending => break,
            }
        }
        Ok(())
    }

    /// The L role answered for one publish: PUBACK/PUBREC it, or tell the
    /// client why not. Never a success ack for a message that is not stored.
    fn finish_ack(
        &mut self,
        p: PendingAck,
        r: Result<(), LogError>,
    ) -> Result<(), ConnectionError> {
        match r {
            Ok(()) => {
                self.ack(p.qos, p.pkid, p.code);
                Ok(())
            }
            Err(e) => self.refuse_publish(p.qos, p.pkid, &e),
        }
    }

    /// A publish the L role refused or could not confirm: v5 hears the reason
    /// code; 3.1.1 has none, so the connection closes and the client resends
    /// the unacknowledged message when it reconnects.
    fn refuse_publish(&mut self, qos: QoS, pkid: u16, e: &LogError) -> Result<(), ConnectionError> {
        let code = e.mqtt_reason();
        metrics::counter!("ferrymq_mqtt_publishes_refused_total", "reason" => format!("0x{code:02X}"))
            .increment(1);
        tracing::debug!(client = %self.client_id, %e, "publish refused by the store");
        if qos == QoS::ExactlyOnce {
            self.session.state.lock().incoming_qos2.remove(&pkid);
        }
        if qos == QoS::AtMostOnce {
            return Ok(());
        }
        if self.protocol == Protocol::V5 {
            self.ack(qos, pkid, code);
            Ok(())
        } else {
            Err(ConnectionError::Protocol(code))
        }
    }

    /// A store read of the session queue returned.
    fn on_fetched(&mut self, r: Result<Pulled, LogError>) {
        let pulled = match r {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(client = %self.client_id, %e, "reading the session queue failed; retrying in 1 s");
                self.fetch_retry_at = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                return;
            }
        };
        let client = self.client_id.clone();
        let mut st = self.session.state.lock();
        let Some(next) = st.stored.as_ref().map(|q| q.next) else {
            return;
        };
        let got = !pulled.messages.is_empty() || pulled.next_offset > next;
        tracing::debug!(
            client = %self.client_id,
            next,
            read = pulled.messages.len(),
            next_offset = pulled.next_offset,
            subscriptions = st.subscriptions.len(),
            "session queue read"
        );
        for pm in pulled.messages {
            if pm.offset < next {
                continue;
            }
            let msg = Arc::new(crate::broker::from_mqtt_message(
                pm.message,
                pm.stored_at_ms,
            ));
            if let Some(d) = own_delivery(&st.subscriptions, &client, msg, pm.offset) {
                st.insert_stored(d, pm.offset);
            }
        }
        if let Some(q) = st.stored.as_mut() {
            q.examined = q.examined.max(pulled.next_offset);
            q.end = q.end.max(pulled.next_offset);
        }
        drop(st);
        if !got {
            // Known to exist but not readable yet: try again shortly.
            self.fetch_retry_at = Some(tokio::time::Instant::now() + Duration::from_millis(100));
        }
    }

    /// Queue a server DISCONNECT (v5 only; 3.1.1 has none, the socket just closes).
    fn disconnect(&mut self, code: u8) {
        if self.protocol == Protocol::V5 {
            let p = Packet::Disconnect(Disconnect {
                reason: code,
                ..Disconnect::default()
            });
            let _ = codec::encode(&p, self.protocol, &mut self.wbuf, self.client_max_packet);
        }
    }

    fn send(&mut self, p: Packet) {
        if let Err(e) = codec::encode(&p, self.protocol, &mut self.wbuf, self.client_max_packet) {
            tracing::debug!(client = %self.client_id, %e, "packet not sent");
        }
    }

    fn handle(&mut self, p: Packet) -> Result<Option<Exit>, ConnectionError> {
        match p {
            Packet::Publish(p) => self.on_publish(p)?,
            Packet::PubAck(a) => self.on_ack(a.pkid, OutState::AwaitPubAck),
            Packet::PubRec(a) => self.on_pubrec(a),
            Packet::PubComp(a) => self.on_ack(a.pkid, OutState::AwaitPubComp),
            Packet::PubRel(a) => self.on_pubrel(a),
            Packet::Subscribe(s) => self.on_subscribe(s)?,
            Packet::Unsubscribe(u) => self.on_unsubscribe(u),
            Packet::PingReq => self.send(Packet::PingResp),
            Packet::Disconnect(d) => return self.on_disconnect(d).map(Some),
            Packet::Connect(_) => {
                // A second CONNECT is a protocol error.
                self.disconnect(reason::PROTOCOL_ERROR);
                return Err(ConnectionError::Protocol(reason::PROTOCOL_ERROR));
            }
            Packet::Auth(_) => {
                // No enhanced authentication method is configured.
                self.disconnect(reason::BAD_AUTHENTICATION_METHOD);
                return Err(ConnectionError::Protocol(reason::BAD_AUTHENTICATION_METHOD));
            }
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                self.disconnect(reason::PROTOCOL_ERROR);
                return Err(ConnectionError::Protocol(reason::PROTOCOL_ERROR));
            }
        }
        Ok(None)
    }

    fn on_disconnect(&mut self, d: Disconnect) -> Result<Exit, ConnectionError> {
        if let Some(exp) = d.session_expiry_interval {
            if self.connect_expiry_zero && exp != 0 {
                self.disconnect(reason::PROTOCOL_ERROR);
                return Err(ConnectionError::Protocol(reason::PROTOCOL_ERROR));
            }
            self.session.state.lock().expiry_secs = exp.min(self.broker.config.max_session_expiry);
        }
        Ok(Exit::Disconnect {
            send_will: d.reason == reason::DISCONNECT_WITH_WILL,
        })
    }

    fn ack(&mut self, qos: QoS, pkid: u16, code: u8) {
        let a = Ack {
            pkid,
            reason: code,
            ..Ack::default()
        };
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send(Packet::PubAck(a)),
            QoS::ExactlyOnce => self.send(Packet::PubRec(a)),
        }
    }

    fn on_publish(&mut self, mut p: Publish) -> Result<(), ConnectionError> {
        let stats = &self.broker.stats;
        stats.messages_received.fetch_add(1, Ordering::Relaxed);
        stats
            .bytes_received
            .fetch_add(p.payload.len() as u64, Ordering::Relaxed);
        let m = &self.broker.metrics;
        m.received[p.qos as usize].increment(1);
        m.bytes_received.increment(p.payload.len() as u64);
        self.rate.record(p.payload.len());

        // Topic alias (inbound).
        if let Some(alias) = p.properties.topic_alias.take() {
            if alias == 0 || alias > self.broker.config.topic_alias_maximum {
                self.disconnect(reason::TOPIC_ALIAS_INVALID);
                return Err(ConnectionError::Protocol(reason::TOPIC_ALIAS_INVALID));
            }
            if p.topic.is_empty() {
                match self.aliases_in.get(&alias) {
                    Some(t) => p.topic = t.clone(),
                    None => {
                        self.disconnect(reason::PROTOCOL_ERROR);
                        return Err(ConnectionError::Protocol(reason::PROTOCOL_ERROR));
                    }
                }
            } else {
                self.aliases_in.insert(alias, p.topic.clone());
            }
        } else if p.topic.is_empty() {
            self.disconnect(reason::PROTOCOL_ERROR);
            return Err(ConnectionError::Protocol(reason::PROTOCOL_ERROR));
        }

        // Exactly once: a PUBLISH whose id awaits PUBREL is a retransmission.
        if p.qos == QoS::ExactlyOnce {
            let mut st = self.session.state.lock();
            if st.incoming_qos2.contains(&p.pkid) {
                drop(st);
                // Still waiting for the disk: the first copy's PUBREC will answer.
                if !self.acks.iter().any(|a| a.pkid == p.pkid) {
                    self.ack(p.qos, p.pkid, reason::SUCCESS);
                }
                return Ok(());
            }
            if st.incoming_qos2.len() >= self.broker.config.receive_maximum as usize {
                drop(st);
                self.disconnect(reason::RECEIVE_MAXIMUM_EXCEEDED);
                return Err(ConnectionError::Protocol(reason::RECEIVE_MAXIMUM_EXCEEDED));
            }
            st.incoming_qos2.insert(p.pkid);
        }

        let allowed = !p.topic.starts_with("$SYS")
            && self.broker.acl.check(
                self.username.as_deref(),
                &self.client_id,
                crate::acl::Action::Publish,
                &p.topic,
            );
        if !allowed {
            // Only the broker publishes $SYS. v5 hears 0x87; 3.1.1 has no way to be
            // told, so the message is dropped (and acked, or the client would resend forever).
            self.broker
                .stats
                .publishes_denied
                .fetch_add(1, Ordering::Relaxed);
            metrics::counter!("ferrymq_mqtt_publishes_denied_total").increment(1);
            if p.qos == QoS::ExactlyOnce {
                self.session.state.lock().incoming_qos2.remove(&p.pkid);
            }
            let code = if self.protocol == Protocol::V5 {
                reason::NOT_AUTHORIZED
            } else {
                reason::SUCCESS
            };
            self.ack(p.qos, p.pkid, code);
            return Ok(());
        }
        if p.properties.payload_format_indicator == Some(1)
            && std::str::from_utf8(&p.payload).is_err()
        {
            self.ack(p.qos, p.pkid, reason::PAYLOAD_FORMAT_INVALID);
            return Ok(());
        }

        let msg = Arc::new(RoutedMessage::new(
            p.topic,
            p.payload,
            p.qos,
            p.retain,
            p.properties,
            Some(self.client_id.clone()),
        ));
        self.published = true;
        match self.broker.publish(&msg) {
            Ok((n, durable)) => {
                let code = if n == 0 && self.protocol == Protocol::V5 {
                    reason::NO_MATCHING_SUBSCRIBERS
                } else {
                    reason::SUCCESS
                };
                match (msg.qos, durable) {
                    (QoS::AtMostOnce, _) => {}
                    (qos, Some(durable)) => self.acks.push_back(PendingAck {
                        pkid: p.pkid,
                        qos,
                        code,
                        durable,
                    }),
                    (qos, None) => self.ack(qos, p.pkid, code),
                }
                Ok(())
            }
            Err(e) => self.refuse_publish(msg.qos, p.pkid, &e),
        }
    }

    fn on_pubrel(&mut self, a: Ack) {
        let found = self.session.state.lock().incoming_qos2.remove(&a.pkid);
        self.send(Packet::PubComp(Ack {
            pkid: a.pkid,
            reason: if found || self.protocol == Protocol::V4 {
                reason::SUCCESS
            } else {
                reason::PACKET_IDENTIFIER_NOT_FOUND
            },
            ..Ack::default()
        }));
    }

    fn on_ack(&mut self, pkid: u16, expected: OutState) {
        let mut st = self.session.state.lock();
        if st.inflight.get(&pkid).is_some_and(|i| i.state == expected) {
            if let Some(i) = st.inflight.remove(&pkid) {
                if let (Some(o), Some(q)) = (i.delivery.lmq_offset, st.stored.as_mut()) {
                    q.unacked.remove(&o);
                }
            }
        }
    }

    fn on_pubrec(&mut self, a: Ack) {
        let mut st = self.session.state.lock();
        let Some(i) = st.inflight.get_mut(&a.pkid) else {
            drop(st);
            self.send(Packet::PubRel(Ack {
                pkid: a.pkid,
                reason: reason::PACKET_IDENTIFIER_NOT_FOUND,
                ..Ack::default()
            }));
            return;
        };
        // From PUBREC on the receiver owns the message: it counts as consumed.
        let off = i.delivery.lmq_offset;
        if a.reason >= 0x80 {
            // The receiver refused it: the flow ends here.
            st.inflight.remove(&a.pkid);
        } else {
            i.state = OutState::AwaitPubComp;
        }
        if let (Some(o), Some(q)) = (off, st.stored.as_mut()) {
            q.unacked.remove(&o);
        }
        if a.reason >= 0x80 {
            return;
        }
        drop(st);
        self.send(Packet::PubRel(Ack {
            pkid: a.pkid,
            ..Ack::default()
        }));
    }

    fn on_subscribe(&mut self, s: Subscribe) -> Result<(), ConnectionError> {
        let mut reasons = Vec::with_capacity(s.filters.len());
        let mut retained = Vec::new();
        for f in &s.filters {
            if !ferrymq_shared::valid_topic_filter(&f.filter) {
                reasons.push(if self.protocol == Protocol::V5 {
                    reason::TOPIC_FILTER_INVALID
                } else {
                    reason::UNSPECIFIED_ERROR
                });
                continue;
            }
            if !self.broker.acl.check(
                self.username.as_deref(),
                &self.client_id,
                crate::acl::Action::Subscribe,
                &f.filter,
            ) {
                metrics::counter!("ferrymq_mqtt_subscribes_denied_total").increment(1);
                reasons.push(if self.protocol == Protocol::V5 {
                    reason::NOT_AUTHORIZED
                } else {
                    reason::UNSPECIFIED_ERROR
                });
                continue;
            }
            let shared = ferrymq_shared::parse_shared(&f.filter).is_some();
            if shared && f.no_local {
                self.disconnect(reason::PROTOCOL_ERROR);
                return Err(ConnectionError::Protocol(reason::PROTOCOL_ERROR));
            }
            let opts = SubOptions {
                qos: f.qos,
                no_local: f.no_local,
                retain_as_published: f.retain_as_published,
                retain_handling: f.retain_handling,
                subscription_id: s.subscription_identifier,
            };
            let existed = self.broker.subscribe(&self.client_id, &f.filter, opts);
            self.session
                .state
                .lock()
                .subscriptions
                .insert(f.filter.clone(), opts);
            reasons.push(f.qos as u8);
            // Retained messages are not sent for shared subscriptions (spec 3.3.1.3).
            let send_retained =
                !shared && (f.retain_handling == 0 || (f.retain_handling == 1 && !existed));
            if send_retained {
                for m in self.broker.retained_matching(&f.filter) {
                    retained.push(Delivery {
                        qos: m.qos.min(f.qos),
                        retain: true,
                        subscription_ids: s.subscription_identifier.into_iter().collect(),
                        msg: m,
                        shared: None,
                        lmq_offset: None,
                    });
                }
            }
        }
        // Saved before SUBACK: a subscription the client was told about is on record.
        self.broker.save_session(&self.session, true);
        self.send(Packet::SubAck(SubAck {
            pkid: s.pkid,
            reasons,
            reason_string: None,
        }));
        for d in retained {
            self.session
                .enqueue(d, self.broker.config.max_queued_messages, true);
        }
        Ok(())
    }

    fn on_unsubscribe(&mut self, u: Unsubscribe) {
        let mut reasons = Vec::with_capacity(u.filters.len());
        for f in &u.filters {
            let existed = self.broker.unsubscribe(&self.client_id, f);
            self.session.state.lock().subscriptions.remove(f);
            reasons.push(if existed {
                reason::SUCCESS
            } else {
                reason::NO_SUBSCRIPTION_EXISTED
            });
        }
        self.broker.save_session(&self.session, true);
        self.send(Packet::UnsubAck(UnsubAck {
            pkid: u.pkid,
            reasons,
        }));
    }

    /// Move queued deliveries to the wire, within the client's receive maximum.
    fn drain(&mut self) {
        let window = self.client_receive_max.min(self.broker.config.max_inflight) as usize;
        let now = Instant::now();
        let mut out: Vec<(Publish, bool)> = Vec::new();
        let mut fetch = None;
        {
            let mut st = self.session.state.lock();
            let st = &mut *st;
            while let Some(front) = st.queue.front() {
                // Persistent sessions send their stored queue in offset order;
                // a gap (in-memory copy dropped, or a restart) is read back.
                if let (Some(o), Some(q)) = (front.lmq_offset, st.stored.as_mut()) {
                    if o < q.next {
                        st.queue.pop_front();
                        continue;
                    }
                    if o > q.next {
                        if q.examined >= o {
                            // Read already: what is not queued was not for us.
                            tracing::trace!(client = %self.client_id, from = q.next, to = o, "skipping examined offsets");
                            q.next = o;
                        } else {
                            fetch = Some((q.next.max(q.examined), o));
                            break;
                        }
                    }
                }
                if front.qos != QoS::AtMostOnce && st.inflight.len() >= window {
                    break;
                }
                let Some(d) = st.queue.pop_front() else { break };
                let expired = d.msg.is_expired(now);
                // A packet id first: without one the delivery goes back untouched.
                let pkid = if d.qos == QoS::AtMostOnce || expired {
                    None
                } else {
                    let Some(id) = st.alloc_pkid() else {
                        st.queue.push_front(d);
                        break;
                    };
                    Some(id)
                };
                if let (Some(o), Some(q)) = (d.lmq_offset, st.stored.as_mut()) {
                    q.next = o + 1;
                    if pkid.is_some() {
                        q.unacked.insert(o);
                    }
                }
                if expired {
                    self.broker
                        .stats
                        .messages_dropped
                        .fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let pkid = match pkid {
                    None => 0,
                    Some(id) => {
                        let state = if d.qos == QoS::AtLeastOnce {
                            OutState::AwaitPubAck
                        } else {
                            OutState::AwaitPubRec
                        };
                        st.inflight.insert(
                            id,
                            crate::session::Inflight {
                                delivery: d.clone(),
                                state,
                            },
                        );
                        id
                    }
                };
                out.push((to_publish(&d, pkid, false, now), d.qos != QoS::AtMostOnce));
            }
            if let Some(q) = st.stored.as_mut() {
                if fetch.is_none() && st.queue.is_empty() {
                    if q.examined.min(q.end) > q.next {
                        tracing::trace!(client = %self.client_id, from = q.next, to = q.examined.min(q.end), "skipping examined tail");
                    }
                    q.next = q.next.max(q.examined.min(q.end));
                    if q.end > q.next {
                        fetch = Some((q.next, q.end));
                    }
                }
            }
        }
        if let (Some((from, until)), None, None, Some(log)) = (
            fetch,
            self.fetching.as_ref(),
            self.fetch_retry_at,
            self.broker.log.as_ref(),
        ) {
            let room = window.saturating_sub(self.session.state.lock().inflight.len());
            let max = room.clamp(1, 256).min((until - from).max(1) as usize);
            tracing::debug!(client = %self.client_id, from, until, max, "reading the session queue");
            self.fetching = Some(log.pull_session(&self.client_id, from, until, max));
        }
        if self.session.persistent.load(Ordering::Acquire) {
            self.broker.commit_session(&self.session);
        }
        for (mut p, tracked) in out {
            self.apply_alias_out(&mut p);
            let pkid = p.pkid;
            let len = p.payload.len();
            let qos = p.qos as usize;
            match codec::encode(
                &Packet::Publish(p),
                self.protocol,
                &mut self.wbuf,
                self.client_max_packet,
            ) {
                Ok(()) => {
                    self.broker
                        .stats
                        .messages_sent
                        .fetch_add(1, Ordering::Relaxed);
                    self.broker
                        .stats
                        .bytes_sent
                        .fetch_add(len as u64, Ordering::Relaxed);
                    let m = &self.broker.metrics;
                    m.sent[qos].increment(1);
                    m.bytes_sent.increment(len as u64);
                }
                Err(e) => {
                    // Too large for this client (its Maximum Packet Size): discarded, as the spec says.
                    tracing::debug!(client = %self.client_id, %e, "publish dropped");
                    self.broker
                        .stats
                        .messages_dropped
                        .fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("ferrymq_mqtt_messages_dropped_total", "reason" => "too_large").increment(1);
                    if tracked {
                        let mut st = self.session.state.lock();
                        if let Some(i) = st.inflight.remove(&pkid) {
                            // Dropped for good: it must not hold the consumed offset back.
                            if let (Some(o), Some(q)) = (i.delivery.lmq_offset, st.stored.as_mut())
                            {
                                q.unacked.remove(&o);
                            }
                        }
                    }
                }
            }
        }
    }

    fn apply_alias_out(&mut self, p: &mut Publish) {
        if self.protocol != Protocol::V5 || self.client_alias_max == 0 {
            return;
        }
        if let Some(a) = self.aliases_out.get(&p.topic) {
            p.properties.topic_alias = Some(*a);
            p.topic.clear();
        } else if self.aliases_out.len() < self.client_alias_max as usize {
            let a = self.aliases_out.len() as u16 + 1;
            self.aliases_out.insert(p.topic.clone(), a);
            p.properties.topic_alias = Some(a);
        }
    }

    /// After a session resumes: unacknowledged PUBLISH again with DUP, PUBREL again.
    fn resend_inflight(&mut self) {
        let now = Instant::now();
        let items: Vec<(u16, Delivery, OutState)> = self
            .session
            .state
            .lock()
            .inflight
            .iter()
            .map(|(k, v)| (*k, v.delivery.clone(), v.state))
            .collect();
        for (pkid, d, state) in items {
            match state {
                OutState::AwaitPubComp => self.send(Packet::PubRel(Ack {
                    pkid,
                    ..Ack::default()
                })),
                _ => {
                    let p = to_publish(&d, pkid, true, now);
                    self.send(Packet::Publish(p));
                }
            }
        }
    }

    /// The connection is gone: publish the will, let the session expire.
    fn detach(&mut self, send_will: bool) {
        let broker = self.broker.clone();
        let (expiry, generation) = {
            let _g = broker.session_lock.lock();
            let mut st = self.session.state.lock();
            if st.connection != Some(self.conn_id) {
                // Taken over: the new connection owns the session now.
                (None, 0)
            } else {
                st.connection = None;
                st.kick = None;
                (Some(st.expiry_secs), st.generation)
            }
        };
        let mut will = if send_will { self.will.take() } else { None };
        // Taken over: a new connection reached the session within the will
        // delay, so a delayed will is never sent (MQTT 5 3.1.3.2.2).
        if expiry.is_none() && will.as_ref().is_some_and(|w| w.delay_interval > 0) {
            will = None;
        }
        if let Some(w) = will {
            let delay = w.delay_interval.min(expiry.unwrap_or(0));
            if delay == 0 {
                publish_will(&broker, &self.client_id, w);
            } else {
                let session = self.session.clone();
                let client = self.client_id.clone();
                let b = broker.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(delay as u64)).await;
                    // A reconnect to the same session within the delay cancels the will.
                    let st = session.state.lock();
                    let resumed = st.generation != generation || st.connection.is_some();
                    drop(st);
                    if !resumed {
                        publish_will(&b, &client, w);
                    }
                });
            }
        }
        // Shared-subscription messages this client cannot take now go to other members.
        let pending = self.session.state.lock().take_shared();
        if !pending.is_empty() {
            broker.redistribute(&self.client_id, pending);
        }
        match expiry {
            Some(0) => broker.remove_session(&self.session),
            None => {}
            Some(secs) => {
                broker.save_session(&self.session, false);
                if secs != u32::MAX {
                    broker.expire_later(
                        self.session.clone(),
                        generation,
                        Duration::from_secs(secs as u64),
                    );
                }
            }
        }
    }
}

fn publish_will(broker: &Arc<Broker>, client: &ClientId, w: Will) {
    let msg = RoutedMessage::new(
        w.topic,
        w.payload,
        w.qos,
        w.retain,
        w.properties,
        Some(client.clone()),
    );
    if let Err(e) = broker.publish(&Arc::new(msg)) {
        tracing::warn!(client = %client, %e, "will message not stored, not sent");
    }
}

fn to_publish(d: &Delivery, pkid: u16, dup: bool, now: Instant) -> Publish {
    let mut props = d.msg.properties.clone();
    props.subscription_identifiers = d.subscription_ids.clone();
    props.topic_alias = None;
    if d.msg.expires_at.is_some() {
        props.message_expiry_interval = d.msg.remaining_expiry(now);
    }
    Publish {
        dup,
        qos: d.qos,
        retain: d.retain,
        topic: d.msg.topic.clone(),
        pkid,
        payload: d.msg.payload.clone(),
        properties: props,
    }
}

/// Per-client token buckets for message and byte rates (0 = unlimited).
struct RateLimiter {
    msg_rate: u32,
    byte_rate: u64,
    window_start: Instant,
    msgs: u32,
    bytes: u64,
}

impl RateLimiter {
    fn new(msg_rate: u32, byte_rate: u64) -> Self {
        Self {
            msg_rate,
            byte_rate,
            window_start: Instant::now(),
            msgs: 0,
            bytes: 0,
        }
    }

    fn record(&mut self, bytes: usize) {
        self.roll();
        self.msgs += 1;
        self.bytes += bytes as u64;
    }

    fn roll(&mut self) {
        if self.window_start.elapsed() >= Duration::from_secs(1) {
            self.window_start = Instant::now();
            self.msgs = 0;
            self.bytes = 0;
        }
    }

    /// How long to stop reading before the next window, if over a limit.
    fn wait(&mut self) -> Option<Duration> {
        self.roll();
        let over = (self.msg_rate > 0 && self.msgs >= self.msg_rate)
            || (self.byte_rate > 0 && self.bytes >= self.byte_rate);
        over.then(|| Duration::from_secs(1).saturating_sub(self.window_start.elapsed()))
    }
}

/// Wait for the oldest pending acknowledgement.
async fn front_ack(acks: &mut VecDeque<PendingAck>) -> Result<(), LogError> {
    match acks.front_mut() {
        Some(p) => p.durable.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Wait for the store read in progress.
async fn poll_fetch(
    fetching: &mut Option<BoxFuture<Result<Pulled, LogError>>>,
) -> Result<Pulled, LogError> {
    match fetching.as_mut() {
        Some(f) => f.as_mut().await,
        None => std::future::pending().await,
    }
}

/// How a message read back from the session's stored queue is delivered to
/// this session now: its current subscriptions decide (the message was
/// stored for them, but they may have changed since). None = not for us.
fn own_delivery(
    subs: &HashMap<String, SubOptions>,
    client: &ClientId,
    msg: Arc<RoutedMessage>,
    offset: i64,
) -> Option<Delivery> {
    let mut qos = None;
    let mut rap = false;
    let mut ids = Vec::new();
    for (filter, o) in subs {
        if ferrymq_shared::parse_shared(filter).is_some()
            || !ferrymq_shared::matches(&msg.topic, filter)
            || (o.no_local && msg.publisher.as_ref() == Some(client))
        {
            continue;
        }
        let q = o.qos.min(msg.qos);
        qos = Some(qos.map_or(q, |cur: QoS| cur.max(q)));
        rap |= o.retain_as_published;
        if let Some(id) = o.subscription_id {
            ids.push(id);
        }
    }
    let qos = qos?;
    Some(Delivery {
        retain: rap && msg.retain,
        msg,
        qos,
        subscription_ids: ids,
        shared: None,
        lmq_offset: Some(offset),
    })
}
