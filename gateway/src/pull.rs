//! PULL_MESSAGE: the stored bytes as the body (RocketMQ clients decode them),
//! server-side tag filtering by hash with the exact tags re-checked, long
//! polling (suspended until a message arrives or the client's timeout), and
//! RocketMQ's mapping of store outcomes onto PULL_* codes.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use shared_store::message::{self, property};
use shared_store::{GetResult, GetStatus};

use crate::clients::Subscription;
use crate::codes::response;
use crate::remoting::Command;
use crate::state::Shared;

/// `PullSysFlag` bits.
const FLAG_COMMIT_OFFSET: i32 = 0x1;
const FLAG_SUSPEND: i32 = 0x2;
const FLAG_SUBSCRIPTION: i32 = 0x4;

/// Most messages one pull returns.
const MAX_PULL: usize = 512;

/// Handle PULL_MESSAGE.
pub async fn handle(shared: Arc<Shared>, req: Command) -> Command {
    let int = |k: &str| -> Option<i64> { req.field(k)?.trim().parse().ok() };
    let group = req.field("consumerGroup").unwrap_or_default().to_owned();
    let topic = req.field("topic").unwrap_or_default().to_owned();
    let queue_id = int("queueId").unwrap_or(0) as i32;
    let offset = int("queueOffset").unwrap_or(0);
    let max = int("maxMsgNums").unwrap_or(32).clamp(1, MAX_PULL as i64) as usize;
    let sys_flag = int("sysFlag").unwrap_or(0) as i32;
    let suspend_ms = int("suspendTimeoutMillis").unwrap_or(0).max(0) as u64;

    let Some(cfg) = shared.l.topics().get(&topic) else {
        // The C++ push consumer re-pulls at once after any answer: an error
        // here would make it spin. Nothing to read yet is what it gets, after
        // the usual suspension (the topic may be created meanwhile).
        let wait = suspend_ms.min(shared.config.long_polling_max_millis);
        if sys_flag & FLAG_SUSPEND != 0 && wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        let mut r = Command::response_to(
            &req,
            response::PULL_NOT_FOUND,
            Some(format!("topic[{topic}] not exist, apply first please!")),
        );
        r.set("nextBeginOffset", offset)
            .set("minOffset", 0)
            .set("maxOffset", 0)
            .set("suggestWhichBrokerId", 0);
        return r;
    };
    if cfg.perm & node_l::topic_config::PERM_READ == 0 {
        return Command::response_to(
            &req,
            response::NO_PERMISSION,
            Some(format!("the topic[{topic}] pulling message is forbidden")),
        );
    }
    if queue_id < 0 || queue_id as u32 >= cfg.read_queue_nums.max(1) {
        return Command::response_to(
            &req,
            response::SYSTEM_ERROR,
            Some(format!(
                "queueId[{queue_id}] is illegal, topic:[{topic}] topicConfig.readQueueNums:[{}]",
                cfg.read_queue_nums
            )),
        );
    }
    if sys_flag & FLAG_COMMIT_OFFSET != 0 {
        if let Some(c) = int("commitOffset").filter(|c| *c >= 0) {
            shared.l.offsets().commit(&group, &topic, queue_id, c);
        }
    }
    let sub = if sys_flag & FLAG_SUBSCRIPTION != 0 {
        Subscription::parse(&topic, req.field("subscription").unwrap_or("*"))
    } else {
        shared
            .clients
            .subscription(&group, &topic)
            .unwrap_or_else(|| Subscription::parse(&topic, "*"))
    };

    let suspend = sys_flag & FLAG_SUSPEND != 0 && suspend_ms > 0;
    let wait = Duration::from_millis(suspend_ms.min(shared.config.long_polling_max_millis));
    let deadline = tokio::time::Instant::now() + wait;
    let mut arrivals = shared.store.subscribe_arrivals();
    loop {
        let r = get(&shared, &topic, queue_id, offset, max, &sub);
        let (code, _) = outcome(&r, offset);
        if code == response::PULL_NOT_FOUND && suspend && tokio::time::Instant::now() < deadline {
            // Long polling: wait for the dispatcher to index something new.
            if tokio::time::timeout_at(deadline, arrivals.changed())
                .await
                .is_ok()
            {
                continue;
            }
            let r = get(&shared, &topic, queue_id, offset, max, &sub);
            return respond(&req, r, offset);
        }
        return respond(&req, r, offset);
    }
}

fn get(
    shared: &Shared,
    topic: &str,
    queue_id: i32,
    offset: i64,
    max: usize,
    sub: &Subscription,
) -> GetResult {
    if sub.all() {
        return shared.store.get_message(topic, queue_id, offset, max, None);
    }
    let codes = &sub.codes;
    let filter = |h: i64| codes.contains(&h);
    let mut r = shared
        .store
        .get_message(topic, queue_id, offset, max, Some(&filter));
    // Hashes can collide: keep only messages whose tag really is subscribed.
    r.messages.retain(|m| {
        message::decode(&m.data)
            .ok()
            .and_then(|s| s.message.properties.get(property::TAGS).map(str::to_owned))
            .is_some_and(|t| sub.tags.contains(&t))
    });
    if r.messages.is_empty() && r.status == GetStatus::Found {
        r.status = GetStatus::NoMatchedMessage;
    }
    r
}

/// (response code, next offset) as RocketMQ's PullMessageProcessor maps them.
fn outcome(r: &GetResult, offset: i64) -> (i32, i64) {
    match r.status {
        GetStatus::Found => (response::SUCCESS, r.next_begin_offset),
        GetStatus::MessageWasRemoving | GetStatus::NoMatchedMessage => {
            (response::PULL_RETRY_IMMEDIATELY, r.next_begin_offset)
        }
        GetStatus::NoMatchedLogicQueue | GetStatus::NoMessageInQueue => {
            if offset != 0 {
                (response::PULL_OFFSET_MOVED, r.next_begin_offset)
            } else {
                (response::PULL_NOT_FOUND, r.next_begin_offset)
            }
        }
        GetStatus::OffsetFoundNull | GetStatus::OffsetOverflowOne => {
            (response::PULL_NOT_FOUND, r.next_begin_offset)
        }
        GetStatus::OffsetOverflowBadly | GetStatus::OffsetTooSmall => {
            (response::PULL_OFFSET_MOVED, r.next_begin_offset)
        }
        GetStatus::Corrupted => (response::SYSTEM_ERROR, r.next_begin_offset),
    }
}

fn respond(req: &Command, r: GetResult, offset: i64) -> Command {
    let (code, next) = outcome(&r, offset);
    let remark = match r.status {
        GetStatus::Found => None,
        GetStatus::Corrupted => Some(format!(
            "stored message at queue offset {next} is corrupted"
        )),
        s => Some(format!("{s:?}")),
    };
    let mut resp = Command::response_to(req, code, remark);
    resp.set("nextBeginOffset", next)
        .set("minOffset", r.min_offset)
        .set("maxOffset", r.max_offset)
        .set("suggestWhichBrokerId", 0);
    if code == response::SUCCESS {
        let mut body = BytesMut::with_capacity(r.messages.iter().map(|m| m.data.len()).sum());
        for m in &r.messages {
            body.extend_from_slice(&m.data);
        }
        metrics::counter!("ferrymq_gateway_messages_pulled_total")
            .increment(r.messages.len() as u64);
        resp.body = body.freeze();
    }
    resp
}
