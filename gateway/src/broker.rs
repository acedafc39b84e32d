//! The Broker role: dispatches each request code to its handler.

use std::sync::Arc;

use ferrymq_shared::boundary::BoxFuture;
use node_l::topic_config::TopicConfig;
use serde_json::{json, Value};
use shared_store::message::property;
use shared_store::Message;

use crate::codes::{request, response};
use crate::remoting::Command;
use crate::server::{not_supported, Conn, Handler};
use crate::state::Shared;
use crate::{pull, send, transaction};

/// Serves the broker port.
pub struct BrokerRole {
    /// Gateway state.
    pub shared: Arc<Shared>,
}

impl Handler for BrokerRole {
    fn handle(self: Arc<Self>, conn: Arc<Conn>, req: Command) -> BoxFuture<Option<Command>> {
        Box::pin(async move {
            tracing::trace!(code = req.code, language = %req.language, ext = ?req.ext, body = req.body.len(), "request");
            let s = self.shared.clone();
            let r = match req.code {
                request::SEND_MESSAGE => send::handle(s, conn, req, false, false).await,
                request::SEND_MESSAGE_V2 | request::SEND_REPLY_MESSAGE_V2 => {
                    send::handle(s, conn, req, true, false).await
                }
                request::SEND_BATCH_MESSAGE => send::handle(s, conn, req, true, true).await,
                request::PULL_MESSAGE => pull::handle(s, req).await,
                request::END_TRANSACTION => transaction::end(&s, &req).await,
                _ => self.answer(&conn, &req),
            };
            Some(r)
        })
    }

    fn closed(&self, conn: &Arc<Conn>) {
        for id in self.shared.clients.connection_closed(conn.id) {
            self.shared.locks.release_client(&id);
        }
    }
}

fn int(req: &Command, k: &str) -> Option<i64> {
    req.field(k)?.trim().parse().ok()
}

fn ok(req: &Command) -> Command {
    Command::response_to(req, response::SUCCESS, None)
}

fn json_body(req: &Command, v: Value) -> Command {
    let mut r = ok(req);
    r.body = v.to_string().into();
    r
}

/// (topic, queueId) pairs of a LOCK/UNLOCK body's `mqSet`.
fn mq_set(v: &Value) -> Vec<(String, i32)> {
    v.get("mqSet")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|mq| {
                    let t = mq.get("topic")?.as_str()?.to_owned();
                    let q = match mq.get("queueId")? {
                        Value::Number(n) => n.as_i64()? as i32,
                        Value::String(s) => s.parse().ok()?,
                        _ => return None,
                    };
                    Some((t, q))
                })
                .collect()
        })
        .unwrap_or_default()
}

impl BrokerRole {
    fn answer(&self, conn: &Arc<Conn>, req: &Command) -> Command {
        let s = &self.shared;
        let store = &s.store;
        let topic = req.field("topic").unwrap_or_default();
        let queue_id = int(req, "queueId").unwrap_or(0) as i32;
        match req.code {
            request::HEART_BEAT => match s.clients.heartbeat(conn, &req.body) {
                Ok(outcome) => {
                    for g in outcome.clustering_groups {
                        // Push consumers subscribe to their retry topic: it must exist.
                        let retry = format!("%RETRY%{g}");
                        if s.l.topics().get(&retry).is_none() {
                            let _ = s.l.topics().put(TopicConfig::new(&retry, 1));
                        }
                    }
                    ok(req)
                }
                Err(e) => Command::response_to(req, response::SYSTEM_ERROR, Some(e)),
            },
            request::UNREGISTER_CLIENT => {
                let id = req.field("clientID").unwrap_or_default();
                s.clients
                    .unregister(id, req.field("producerGroup"), req.field("consumerGroup"));
                s.locks.release_client(id);
                ok(req)
            }
            request::GET_CONSUMER_LIST_BY_GROUP => {
                let g = req.field("consumerGroup").unwrap_or_default();
                let ids = s.clients.consumer_ids(g);
                if ids.is_empty() {
                    Command::response_to(
                        req,
                        response::SYSTEM_ERROR,
                        Some(format!("no consumer for this group, {g}")),
                    )
                } else {
                    json_body(req, json!({ "consumerIdList": ids }))
                }
            }
            request::QUERY_CONSUMER_OFFSET => {
                let g = req.field("consumerGroup").unwrap_or_default();
                match s.l.offsets().query(g, topic, queue_id) {
                    Some(o) => {
                        let mut r = ok(req);
                        r.set("offset", o);
                        r
                    }
                    // As the Java broker: a queue that still starts at 0 is read
                    // from 0, or a group's first consumer misses the backlog.
                    None if store.min_offset_in_queue(topic, queue_id) <= 0 => {
                        let mut r = ok(req);
                        r.set("offset", 0);
                        r
                    }
                    None => Command::response_to(
                        req,
                        response::QUERY_NOT_FOUND,
                        Some(
                            "Not found, V3_0_6_SNAPSHOT maybe this group consumer boot first"
                                .into(),
                        ),
                    ),
                }
            }
            request::UPDATE_CONSUMER_OFFSET => {
                let g = req.field("consumerGroup").unwrap_or_default();
                // Only real queues: the offset table is written out whole.
                let known = s.l.topics().get(topic).is_some_and(|t| {
                    queue_id >= 0 && (queue_id as u32) < t.read_queue_nums.max(t.write_queue_nums)
                });
                if !known || g.is_empty() {
                    return Command::response_to(
                        req,
                        response::SYSTEM_ERROR,
                        Some(format!(
                            "no queue {topic}:{queue_id} to commit an offset for"
                        )),
                    );
                }
                if let Some(o) = int(req, "commitOffset").filter(|o| *o >= 0) {
                    s.l.offsets().commit(g, topic, queue_id, o);
                }
                ok(req)
            }
            request::GET_MAX_OFFSET => {
                let mut r = ok(req);
                r.set("offset", store.max_offset_in_queue(topic, queue_id));
                r
            }
            request::GET_MIN_OFFSET => {
                let mut r = ok(req);
                r.set("offset", store.min_offset_in_queue(topic, queue_id));
                r
            }
            request::SEARCH_OFFSET_BY_TIMESTAMP => {
                let ts = int(req, "timestamp").unwrap_or(0);
                let mut r = ok(req);
                r.set("offset", store.offset_in_queue_by_time(topic, queue_id, ts));
                r
            }
            request::GET_EARLIEST_MSG_STORETIME => {
                match store.earliest_message_time(topic, queue_id) {
                    Some(t) => {
                        let mut r = ok(req);
                        r.set("timestamp", t);
                        r
                    }
                    None => Command::response_to(
                        req,
                        response::SYSTEM_ERROR,
                        Some(format!("no message in queue {topic}:{queue_id}")),
                    ),
                }
            }
            request::QUERY_MESSAGE => {
                let key = req.field("key").unwrap_or_default();
                let max = int(req, "maxNum").unwrap_or(32).clamp(1, 64) as usize;
                let begin = int(req, "beginTimestamp").unwrap_or(0);
                let end = int(req, "endTimestamp").unwrap_or(i64::MAX);
                let found = store.query_message(topic, key, max, begin, end);
                if found.is_empty() {
                    return Command::response_to(
                        req,
                        response::QUERY_NOT_FOUND,
                        Some(format!(
                            "can not find message, maybe time range not correct: {key}"
                        )),
                    );
                }
                let mut body = Vec::new();
                for m in &found {
                    if let Some(raw) = store.read_raw(m.physical_offset) {
                        body.extend_from_slice(&raw);
                    }
                }
                let mut r = ok(req);
                r.set(
                    "indexLastUpdateTimestamp",
                    shared_store::message::now_millis(),
                )
                .set("indexLastUpdatePhyoffset", store.max_physical_offset());
                r.body = body.into();
                r
            }
            request::VIEW_MESSAGE_BY_ID => {
                let off = int(req, "offset").unwrap_or(-1);
                match store.read_raw(off) {
                    Some(raw) => {
                        let mut r = ok(req);
                        r.body = raw;
                        r
                    }
                    None => Command::response_to(
                        req,
                        response::SYSTEM_ERROR,
                        Some(format!("can not find message by the offset, {off}")),
                    ),
                }
            }
            request::LOCK_BATCH_MQ | request::UNLOCK_BATCH_MQ => {
                let v: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
                let g = v
                    .get("consumerGroup")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let c = v
                    .get("clientId")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let mqs = mq_set(&v);
                if req.code == request::UNLOCK_BATCH_MQ {
                    s.locks.unlock(g, c, &mqs);
                    return ok(req);
                }
                let held = s.locks.lock(g, c, &mqs);
                let set: Vec<Value> = held
                    .into_iter()
                    .map(|(t, q)| json!({"topic": t, "brokerName": s.config.broker_name, "queueId": q}))
                    .collect();
                json_body(req, json!({ "lockOKMQSet": set }))
            }
            request::CONSUMER_SEND_MSG_BACK => self.send_back(req),
            request::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP => {
                let v: Value = match serde_json::from_slice(&req.body) {
                    Ok(v) => v,
                    Err(e) => {
                        return Command::response_to(
                            req,
                            response::SYSTEM_ERROR,
                            Some(format!("subscription group body: {e}")),
                        )
                    }
                };
                match s.groups.put(v) {
                    Ok(()) => ok(req),
                    Err(e) => Command::response_to(req, response::SYSTEM_ERROR, Some(e)),
                }
            }
            request::GET_ALL_SUBSCRIPTIONGROUP_CONFIG => json_body(req, s.groups.all_json()),
            request::DELETE_SUBSCRIPTIONGROUP => {
                match s.groups.remove(req.field("groupName").unwrap_or_default()) {
                    Ok(()) => ok(req),
                    Err(e) => Command::response_to(req, response::SYSTEM_ERROR, Some(e)),
                }
            }
            request::UPDATE_AND_CREATE_TOPIC => {
                if topic.is_empty()
                    || !ferrymq_shared::valid_rocketmq_topic(topic)
                    || node_l::topic_model::is_system_topic(topic)
                {
                    return Command::response_to(
                        req,
                        response::SYSTEM_ERROR,
                        Some(format!("the topic[{topic}] is invalid")),
                    );
                }
                let read = int(req, "readQueueNums").unwrap_or(8).clamp(1, 1024) as u32;
                let write = int(req, "writeQueueNums").unwrap_or(8).clamp(1, 1024) as u32;
                let cfg = TopicConfig {
                    topic_name: topic.to_owned(),
                    read_queue_nums: read,
                    write_queue_nums: write,
                    perm: int(req, "perm").unwrap_or(6) as u32,
                    order: req.field("order") == Some("true"),
                };
                match s.l.topics().put(cfg) {
                    Ok(()) => ok(req),
                    Err(e) => {
                        Command::response_to(req, response::SYSTEM_ERROR, Some(e.to_string()))
                    }
                }
            }
            request::DELETE_TOPIC_IN_BROKER => {
                let r =
                    s.l.topics()
                        .remove(topic)
                        .map_err(|e| e.to_string())
                        .and_then(|_| store.delete_topic(topic).map_err(|e| e.to_string()));
                match r {
                    Ok(()) => ok(req),
                    Err(e) => Command::response_to(req, response::SYSTEM_ERROR, Some(e)),
                }
            }
            request::GET_ALL_TOPIC_CONFIG => {
                let table: serde_json::Map<String, Value> =
                    s.l.topics()
                        .all()
                        .into_iter()
                        .map(|t| {
                            let name = t.topic_name.clone();
                            (name, serde_json::to_value(t).unwrap_or(Value::Null))
                        })
                        .collect();
                json_body(
                    req,
                    json!({"topicConfigTable": table, "dataVersion": {"timestamp": 0, "counter": 0}}),
                )
            }
            request::GET_CONSUMER_CONNECTION_LIST => {
                let g = req.field("consumerGroup").unwrap_or_default();
                let Some((model, from, subs)) = s.clients.consumer_group_info(g) else {
                    return Command::response_to(
                        req,
                        response::CONSUMER_NOT_ONLINE,
                        Some(format!("the consumer group[{g}] not online")),
                    );
                };
                let conns: Vec<Value> = s
                    .clients
                    .consumer_connections(g)
                    .into_iter()
                    .map(|(id, addr)| json!({"clientId": id, "clientAddr": addr, "language": "JAVA", "version": 0}))
                    .collect();
                let table: serde_json::Map<String, Value> = subs
                    .into_iter()
                    .map(|sd| {
                        (
                            sd.topic.clone(),
                            json!({"topic": sd.topic, "subString": sd.expression, "tagsSet": sd.tags, "codeSet": sd.codes.iter().collect::<Vec<_>>(), "subVersion": 0}),
                        )
                    })
                    .collect();
                json_body(
                    req,
                    json!({"connectionSet": conns, "subscriptionTable": table, "consumeType": "CONSUME_PASSIVELY", "messageModel": model, "consumeFromWhere": from}),
                )
            }
            request::GET_CONSUME_STATS => {
                let g = req.field("consumerGroup").unwrap_or_default();
                let topics: Vec<String> = if topic.is_empty() {
                    s.clients
                        .consumer_group_info(g)
                        .map(|(_, _, subs)| subs.into_iter().map(|x| x.topic).collect())
                        .unwrap_or_default()
                } else {
                    vec![topic.to_owned()]
                };
                // fastjson writes this map with object keys, which is not JSON;
                // we give a list of [queue, progress] pairs instead.
                let mut table = Vec::new();
                for t in topics {
                    let n = s.l.topics().get(&t).map(|c| c.read_queue_nums).unwrap_or(0);
                    for q in 0..n as i32 {
                        let broker_offset = store.max_offset_in_queue(&t, q);
                        let consumer_offset = s.l.offsets().query(g, &t, q).unwrap_or(-1);
                        table.push(json!([
                            {"topic": t, "brokerName": s.config.broker_name, "queueId": q},
                            {"brokerOffset": broker_offset, "consumerOffset": consumer_offset, "lastTimestamp": 0}
                        ]));
                    }
                }
                json_body(req, json!({"offsetTable": table, "consumeTps": 0.0}))
            }
            _ => not_supported(req),
        }
    }

    /// CONSUMER_SEND_MSG_BACK: the message goes to `%RETRY%<group>` with a
    /// growing delay (level 3 + reconsume times), or to `%DLQ%<group>` once it
    /// was retried `maxReconsumeTimes` times.
    fn send_back(&self, req: &Command) -> Command {
        let s = &self.shared;
        let group = req.field("group").unwrap_or_default();
        let off = int(req, "offset").unwrap_or(-1);
        // The entry's own PHYSICALOFFSET must be the one asked for: an offset
        // into the middle of some body does not decode as a message here.
        let Some(orig) = s
            .store
            .look_message_by_offset(off)
            .filter(|m| m.physical_offset == off)
        else {
            return Command::response_to(
                req,
                response::SYSTEM_ERROR,
                Some(format!("look message by offset failed, {off}")),
            );
        };
        // As RocketMQ: the request's limit counts from client version 3.4.9
        // (ordinal 121); older clients (the C++ client says 63) get the group's.
        let from_request = int(req, "maxReconsumeTimes")
            .filter(|m| *m >= 0 && req.version >= 121)
            .map(|m| m as i32);
        let max = from_request
            .or_else(|| s.groups.retry_max_times(group))
            .unwrap_or(s.config.max_reconsume_times);
        let delay = int(req, "delayLevel").unwrap_or(0) as i32;
        let times = orig.message.reconsume_times.max(0).saturating_add(1);
        let mut m = Message::new(String::new(), 0, orig.message.body.clone());
        m.flag = orig.message.flag;
        m.born_timestamp = orig.message.born_timestamp;
        m.born_host = orig.message.born_host;
        m.reconsume_times = times;
        m.properties = orig.message.properties.clone();
        m.properties.remove(property::INNER_MULTI_DISPATCH);
        m.properties.remove(property::INNER_MULTI_QUEUE_OFFSET);
        if m.properties.get("RETRY_TOPIC").is_none() {
            m.properties
                .insert("RETRY_TOPIC", orig.message.topic.clone());
        }
        let origin_id = req
            .field("originMsgId")
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| {
                shared_store::encode_offset_msg_id(&orig.store_host, orig.physical_offset)
            });
        m.properties.insert("ORIGIN_MESSAGE_ID", origin_id);
        let to_dlq = times > max || delay < 0;
        if to_dlq {
            m.topic = format!("%DLQ%{group}");
            m.properties.remove(property::DELAY);
        } else {
            m.topic = format!("%RETRY%{group}");
            // As RocketMQ: level 3 + the times it was consumed before (10 s first).
            let level = if delay == 0 {
                3 + orig.message.reconsume_times.clamp(0, i32::MAX - 3)
            } else {
                delay
            };
            m.properties.insert(property::DELAY, level.to_string());
        }
        if s.l.topics().get(&m.topic).is_none() {
            // Unlike RocketMQ's write-only DLQ, readable: dead letters are there
            // to be inspected and replayed.
            let _ = s.l.topics().put(TopicConfig::new(&m.topic, 1));
        }
        match send::put(s, m) {
            Ok(_) => {
                metrics::counter!("ferrymq_gateway_messages_sent_back_total", "dlq" => to_dlq.to_string())
                    .increment(1);
                ok(req)
            }
            Err(e) => e.response(req),
        }
    }
}
