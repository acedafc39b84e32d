//! SEND_MESSAGE / SEND_MESSAGE_V2 / SEND_BATCH_MESSAGE and the one put path
//! every RocketMQ-side write takes: delayed messages go to
//! `SCHEDULE_TOPIC_XXXX`, half messages to `RMQ_SYS_TRANS_HALF_TOPIC`, and
//! everything else is appended with the same durability as an MQTT publish and
//! delivered to matching MQTT subscribers (persistent sessions through their
//! stored queues).

use std::sync::Arc;

use bytes::{Buf, Bytes};
use ferrymq_shared::valid_topic_name;
use node_l::topic_model::{from_message, is_system_topic, session_queue};
use shared_store::message::{self, property, SYSFLAG_TRANSACTION_PREPARED};
use shared_store::{Message, Properties, PutStatus, StoreError, Submitted};

use crate::codes::response;
use crate::remoting::Command;
use crate::server::Conn;
use crate::state::Shared;

/// Topic holding delayed messages, one queue per delay level.
pub const SCHEDULE_TOPIC: &str = "SCHEDULE_TOPIC_XXXX";
/// Topic holding half (prepared) transactional messages.
pub const HALF_TOPIC: &str = "RMQ_SYS_TRANS_HALF_TOPIC";
/// Topic recording which half messages were resolved.
pub const OP_HALF_TOPIC: &str = "RMQ_SYS_TRANS_OP_HALF_TOPIC";
/// Property: topic a delayed/half message really belongs to.
pub const REAL_TOPIC: &str = "REAL_TOPIC";
/// Property: its queue.
pub const REAL_QID: &str = "REAL_QID";
/// Property: a transactional message's producer group.
pub const PGROUP: &str = "PGROUP";
/// Property: marks a transactional message.
pub const TRAN_MSG: &str = "TRAN_MSG";

const TX_TYPE_MASK: i32 = 0xc;

/// Why a put was refused, as a response code.
#[derive(Debug)]
pub struct PutError {
    /// Response code.
    pub code: i32,
    /// Remark.
    pub remark: String,
}

impl PutError {
    fn new(code: i32, remark: impl Into<String>) -> Self {
        Self {
            code,
            remark: remark.into(),
        }
    }

    /// The response to `req`.
    pub fn response(&self, req: &Command) -> Command {
        Command::response_to(req, self.code, Some(self.remark.clone()))
    }
}

fn store_error(e: StoreError) -> PutError {
    match e {
        StoreError::DiskFull { .. } => PutError::new(
            response::SERVICE_NOT_AVAILABLE,
            format!("service not available now: {e}"),
        ),
        StoreError::MessageIllegal(m) => PutError::new(response::MESSAGE_ILLEGAL, m),
        StoreError::ShutDown => PutError::new(response::SERVICE_NOT_AVAILABLE, e.to_string()),
        e => PutError::new(response::SYSTEM_ERROR, e.to_string()),
    }
}

/// Header fields of a send, from the v1 (full names) or v2 (letters) header.
struct SendHeader {
    group: String,
    topic: String,
    default_queues: Option<u32>,
    queue_id: i32,
    sys_flag: i32,
    born_timestamp: i64,
    flag: i32,
    properties: String,
    reconsume_times: i32,
    max_reconsume_times: Option<i32>,
}

fn parse_header(req: &Command, v2: bool) -> Result<SendHeader, PutError> {
    let f = |long: &str, short: &str| -> Option<&str> {
        if v2 {
            req.field(short).or_else(|| req.field(long))
        } else {
            req.field(long)
        }
    };
    let int = |long: &str, short: &str| -> Option<i64> { f(long, short)?.trim().parse().ok() };
    let topic = f("topic", "b")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| PutError::new(response::MESSAGE_ILLEGAL, "the topic is missing"))?
        .to_owned();
    Ok(SendHeader {
        group: f("producerGroup", "a").unwrap_or_default().to_owned(),
        topic,
        default_queues: int("defaultTopicQueueNums", "d").map(|n| n.max(1) as u32),
        queue_id: int("queueId", "e").unwrap_or(-1) as i32,
        sys_flag: int("sysFlag", "f").unwrap_or(0) as i32,
        born_timestamp: int("bornTimestamp", "g").unwrap_or_else(message::now_millis),
        flag: int("flag", "h").unwrap_or(0) as i32,
        properties: f("properties", "i").unwrap_or_default().to_owned(),
        reconsume_times: int("reconsumeTimes", "j")
            .unwrap_or(0)
            .clamp(0, i32::MAX as i64 / 2) as i32,
        max_reconsume_times: int("maxReconsumeTimes", "l").map(|n| n as i32),
    })
}

/// Handle SEND_MESSAGE (v1 header), SEND_MESSAGE_V2, SEND_BATCH_MESSAGE.
pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    req: Command,
    v2: bool,
    batch: bool,
) -> Command {
    match send(&shared, &conn, &req, v2, batch).await {
        Ok(r) => r,
        Err(e) => {
            metrics::counter!("ferrymq_gateway_sends_refused_total", "code" => e.code.to_string())
                .increment(1);
            e.response(&req)
        }
    }
}

async fn send(
    shared: &Shared,
    conn: &Conn,
    req: &Command,
    v2: bool,
    batch: bool,
) -> Result<Command, PutError> {
    let h = parse_header(req, v2)?;
    // The C++ client sends batches as SEND_MESSAGE with `batch` = "1".
    let batch_field = if v2 {
        req.field("m").or(req.field("batch"))
    } else {
        req.field("batch")
    };
    let batch = batch || matches!(batch_field, Some("1") | Some("true"));
    if is_system_topic(&h.topic) && !h.topic.starts_with("%RETRY%") {
        return Err(PutError::new(
            response::SYSTEM_ERROR,
            format!("the topic[{}] is conflict with system topic", h.topic),
        ));
    }
    if !ferrymq_shared::valid_rocketmq_topic(&h.topic) {
        return Err(PutError::new(
            response::SYSTEM_ERROR,
            format!(
                "the specified topic[{}] contains illegal characters or is too long",
                h.topic
            ),
        ));
    }
    let topic = shared
        .topic_or_create(&h.topic, h.default_queues)
        .ok_or_else(|| {
            PutError::new(
                response::TOPIC_NOT_EXIST,
                format!("topic[{}] not exist, apply first please!", h.topic),
            )
        })?;
    if !topic.writable() {
        return Err(PutError::new(
            response::NO_PERMISSION,
            format!("the topic[{}] sending message is forbidden", h.topic),
        ));
    }
    let queues = topic.write_queue_nums.max(1) as i32;
    let queue_id = if h.queue_id < 0 {
        (message::now_millis() % queues as i64) as i32
    } else if h.queue_id >= queues {
        return Err(PutError::new(
            response::SYSTEM_ERROR,
            format!(
                "request queueId[{}] is illegal, topic {} writeQueueNums {queues}",
                h.queue_id, h.topic
            ),
        ));
    } else {
        h.queue_id
    };
    let mut base = Message::new(h.topic.clone(), queue_id, Bytes::new());
    base.flag = h.flag;
    base.sys_flag = h.sys_flag;
    base.born_timestamp = h.born_timestamp;
    base.born_host = conn.peer;
    base.reconsume_times = h.reconsume_times;
    base.properties = client_properties(&h.properties);
    if let Some(m) = h.max_reconsume_times {
        base.properties.insert("MAX_RECONSUME_TIMES", m.to_string());
    }
    base.properties
        .insert("CLUSTER", shared.config.broker_cluster_name.clone());
    if let Some(group) = h.topic.strip_prefix("%RETRY%") {
        // A client that re-sends a failed message itself: past the group's
        // limit it goes to the dead-letter queue, as RocketMQ does.
        let max = h
            .max_reconsume_times
            .filter(|m| *m >= 0 && req.version >= 121)
            .or_else(|| shared.groups.retry_max_times(group))
            .unwrap_or(shared.config.max_reconsume_times);
        if h.reconsume_times >= max {
            let dlq = format!("%DLQ%{group}");
            if shared.l.topics().get(&dlq).is_none() {
                let _ = shared
                    .l
                    .topics()
                    .put(node_l::topic_config::TopicConfig::new(&dlq, 1));
            }
            base.topic = dlq;
            base.queue_id = 0;
            base.properties.remove(property::DELAY);
        }
    }
    let messages = if batch {
        decode_batch(&req.body, &base)?
    } else {
        let mut m = base;
        m.body = req.body.clone();
        vec![m]
    };
    if messages.is_empty() {
        return Err(PutError::new(response::MESSAGE_ILLEGAL, "empty batch"));
    }
    tracing::trace!(batch, n = messages.len(), first_body = messages[0].body.len(), raw = ?&req.body[..req.body.len().min(64)], "send decoded");
    let mut results = Vec::with_capacity(messages.len());
    let mut ids = Vec::with_capacity(messages.len());
    let mut uniqs = Vec::with_capacity(messages.len());
    for m in messages {
        let uniq = m.properties.get(property::UNIQ_KEY).map(str::to_owned);
        let s = put(shared, m)?;
        // The response's msgId is the offsetMsgId (clients keep their own
        // unique key as msgId; the transaction producer decodes this one).
        ids.push(s.append.offset_msg_id.clone());
        uniqs.push(uniq.unwrap_or_else(|| s.append.offset_msg_id.clone()));
        results.push(s);
    }
    let first = &results[0].append;
    let (queue_offset, offset_msg_id) = (first.queue_offset, first.offset_msg_id.clone());
    let mut code = response::SUCCESS;
    for s in results {
        if s.durable().await.status == PutStatus::FlushDiskTimeout {
            code = response::FLUSH_DISK_TIMEOUT;
        }
    }
    let _ = h.group;
    let mut r = Command::response_to(req, code, None);
    let msg_id = ids.join(",");
    r.set("msgId", &msg_id)
        .set("queueId", queue_id)
        .set("queueOffset", queue_offset)
        .set("MSG_REGION", "DefaultRegion")
        .set("TRACE_ON", "true");
    if h.sys_flag & TX_TYPE_MASK == SYSFLAG_TRANSACTION_PREPARED {
        r.set("transactionId", uniqs.join(","));
    }
    let _ = offset_msg_id;
    metrics::counter!("ferrymq_gateway_messages_sent_total").increment(ids.len() as u64);
    Ok(r)
}

/// Properties a client may set: the ones the broker uses to route internally
/// (light-queue dispatch, the real topic of parked messages, the publishing
/// MQTT client) are dropped, or a producer could write into session queues,
/// the retained table or system topics.
fn client_properties(s: &str) -> Properties {
    let mut out = Properties::new();
    for (k, v) in Properties::decode(s).iter() {
        let internal = k.starts_with("INNER_")
            || k == REAL_TOPIC
            || k == REAL_QID
            || k == node_l::topic_model::prop::CLIENT_ID
            || k == node_l::topic_model::prop::RETAIN;
        if !internal {
            out.insert(k, v);
        }
    }
    out
}

/// Messages of a batch body (`MessageDecoder.encodeMessages`: per message
/// TOTALSIZE, MAGICCODE, BODYCRC, FLAG, BODY (len + bytes), PROPERTIES (i16 len + bytes)).
fn decode_batch(body: &Bytes, base: &Message) -> Result<Vec<Message>, PutError> {
    let bad = |w: &str| PutError::new(response::MESSAGE_ILLEGAL, format!("batch body: {w}"));
    let mut b = body.clone();
    let mut out = Vec::new();
    while b.has_remaining() {
        if b.len() < 20 {
            return Err(bad("truncated message header"));
        }
        let total = b.get_i32();
        if total < 20 || total as usize - 4 > b.len() {
            return Err(bad("bad total size"));
        }
        let mut m = b.split_to(total as usize - 4);
        let _magic = m.get_i32();
        let _crc = m.get_i32();
        let flag = m.get_i32();
        let body_len = m.get_i32();
        if body_len < 0 || body_len as usize > m.len() {
            return Err(bad("bad body length"));
        }
        let body = m.split_to(body_len as usize);
        if m.len() < 2 {
            return Err(bad("properties length missing"));
        }
        let plen = m.get_i16();
        if plen < 0 || plen as usize > m.len() {
            return Err(bad("bad properties length"));
        }
        let props =
            std::str::from_utf8(&m[..plen as usize]).map_err(|_| bad("properties not UTF-8"))?;
        let mut msg = base.clone();
        msg.flag = flag;
        msg.body = body;
        let mut p = base.properties.clone();
        for (k, v) in client_properties(props).iter() {
            p.insert(k, v);
        }
        msg.properties = p;
        out.push(msg);
    }
    Ok(out)
}

/// The put path of every RocketMQ-side write (sends, retries, released delayed
/// messages, committed transactions).
pub fn put(shared: &Shared, mut msg: Message) -> Result<Submitted, PutError> {
    let store = &shared.store;
    if msg.sys_flag & TX_TYPE_MASK == SYSFLAG_TRANSACTION_PREPARED {
        // Half message: invisible until END_TRANSACTION commits it. Stored as
        // a plain message of the half topic so it gets a queue offset there.
        redirect(&mut msg, HALF_TOPIC, 0);
        msg.sys_flag &= !TX_TYPE_MASK;
        return store.submit_message(msg).map_err(store_error);
    }
    let level: usize = msg
        .properties
        .get(property::DELAY)
        .and_then(|d| d.trim().parse().ok())
        .unwrap_or(0);
    if level > 0 {
        let level = level.min(shared.delay_levels.len().max(1));
        redirect(&mut msg, SCHEDULE_TOPIC, level as i32 - 1);
        msg.properties.insert(property::DELAY, level.to_string());
        return store.submit_message(msg).map_err(store_error);
    }
    let Some(mqtt) = &shared.mqtt else {
        return store.submit_message(msg).map_err(store_error);
    };
    // Deliver to MQTT subscribers on MQTT_TOPIC if set, else topic/tag, else topic.
    let view = from_message(&msg);
    if is_system_topic(&msg.topic) || view.topic.starts_with('$') || !valid_topic_name(&view.topic)
    {
        return store.submit_message(msg).map_err(store_error);
    }
    let mut view = view;
    if msg.sys_flag & message::SYSFLAG_COMPRESSED != 0 {
        // RocketMQ clients zlib-compress large bodies (the C++ client from
        // 4 KiB); RocketMQ consumers inflate them, MQTT devices cannot.
        match inflate(&msg.body) {
            Some(b) => view.payload = b,
            None => {
                tracing::warn!(topic = %msg.topic, "compressed body does not inflate; not delivered over MQTT");
                return store.submit_message(msg).map_err(store_error);
            }
        }
    }
    let routed = Arc::new(node_a::broker::from_mqtt_message(
        view,
        message::now_millis(),
    ));
    let mut submitted = None;
    mqtt.publish_external(&routed, |sessions| {
        if !sessions.is_empty() {
            let lmqs: Vec<String> = sessions.iter().map(|c| session_queue(c)).collect();
            msg.properties
                .insert(property::INNER_MULTI_DISPATCH, lmqs.join(","));
        }
        let s = store.submit_message(msg).map_err(store_error)?;
        let offsets = s.append.lmq_offsets.iter().map(|(_, o)| *o).collect();
        submitted = Some(s);
        Ok::<_, PutError>(offsets)
    })?;
    submitted.ok_or_else(|| PutError::new(response::SYSTEM_ERROR, "append did not run"))
}

/// A zlib-compressed body, inflated (bounded: at most 64 MiB).
fn inflate(b: &[u8]) -> Option<Bytes> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(b)
        .take(64 << 20)
        .read_to_end(&mut out)
        .ok()?;
    Some(Bytes::from(out))
}

/// Park `msg` in `topic`/`queue`, remembering where it really goes.
fn redirect(msg: &mut Message, topic: &str, queue: i32) {
    if msg.properties.get(REAL_TOPIC).is_none() {
        msg.properties.insert(REAL_TOPIC, msg.topic.clone());
        msg.properties.insert(REAL_QID, msg.queue_id.to_string());
    }
    msg.topic = topic.to_owned();
    msg.queue_id = queue;
}

/// A parked message back on its real topic and queue.
pub fn restore_real(mut msg: Message) -> Message {
    if let Some(t) = msg.properties.remove(REAL_TOPIC) {
        msg.topic = t;
    }
    if let Some(q) = msg.properties.remove(REAL_QID).and_then(|q| q.parse().ok()) {
        msg.queue_id = q;
    }
    msg.properties.remove(property::DELAY);
    msg
}
