//! Transactional messages: half messages wait in `RMQ_SYS_TRANS_HALF_TOPIC`,
//! invisible to consumers, until END_TRANSACTION commits (the message is put on
//! its real topic) or rolls back. Every resolution is recorded in
//! `RMQ_SYS_TRANS_OP_HALF_TOPIC` (the half message's queue offset as body), so
//! a restart knows what is still open. Half messages left open longer than
//! `transactionTimeout` are checked with their producer group
//! (CHECK_TRANSACTION_STATE), up to `transactionCheckMax` times, then dropped.

use std::sync::Arc;
use std::time::Duration;

use hashbrown::{HashMap, HashSet};
use parking_lot::Mutex;
use shared_store::message::{self, property, SYSFLAG_TRANSACTION_COMMIT};
use shared_store::{GetStatus, Message, StoredMessage};

use crate::codes::{request, response};
use crate::remoting::Command;
use crate::send::{self, HALF_TOPIC, OP_HALF_TOPIC, PGROUP, TRAN_MSG};
use crate::state::Shared;

/// Resolution codes of END_TRANSACTION (`commitOrRollback`).
const COMMIT: i64 = 8;
const ROLLBACK: i64 = 12;

/// Open half messages: queue offset → checks sent so far.
#[derive(Default)]
pub struct Transactions {
    resolved: Mutex<HashSet<i64>>,
    /// Being resolved right now (an END_TRANSACTION and a check answer can race).
    resolving: Mutex<HashSet<i64>>,
    /// half queue offset → (checks sent, when the last was sent, ms).
    checks: Mutex<HashMap<i64, (u32, i64)>>,
}

impl Transactions {
    /// Load the resolutions recorded in the op topic.
    pub fn load(shared: &Shared) -> Self {
        let t = Self::default();
        let mut off = 0;
        loop {
            let r = shared.store.get_message(OP_HALF_TOPIC, 0, off, 256, None);
            if r.status != GetStatus::Found {
                break;
            }
            for m in &r.messages {
                if let Ok(s) = message::decode(&m.data) {
                    if let Some(o) = std::str::from_utf8(&s.message.body)
                        .ok()
                        .and_then(|b| b.parse().ok())
                    {
                        t.resolved.lock().insert(o);
                    }
                }
            }
            off = r.next_begin_offset;
        }
        t
    }

    /// Claim `half_offset` for resolution; false if it is resolved or being resolved.
    fn begin(&self, half_offset: i64) -> bool {
        !self.resolved.lock().contains(&half_offset) && self.resolving.lock().insert(half_offset)
    }

    /// Give a claim back (the commit could not be stored: the check will ask again).
    fn abandon(&self, half_offset: i64) {
        self.resolving.lock().remove(&half_offset);
    }

    fn resolve(&self, shared: &Shared, half_offset: i64) -> bool {
        self.resolving.lock().remove(&half_offset);
        if !self.resolved.lock().insert(half_offset) {
            return false;
        }
        self.checks.lock().remove(&half_offset);
        let op = Message::new(OP_HALF_TOPIC, 0, half_offset.to_string().into_bytes());
        if let Err(e) = shared.store.submit_message(op) {
            tracing::error!(%e, half_offset, "recording a transaction resolution");
        }
        true
    }
}

/// Handle END_TRANSACTION.
pub async fn end(shared: &Arc<Shared>, req: &Command) -> Command {
    let int = |k: &str| -> Option<i64> { req.field(k)?.trim().parse().ok() };
    let half_offset = int("tranStateTableOffset").unwrap_or(-1);
    let phy = int("commitLogOffset").unwrap_or(-1);
    let how = int("commitOrRollback").unwrap_or(0);
    if how != COMMIT && how != ROLLBACK {
        // "Unknown": leave it open for the next check.
        return Command::response_to(req, response::SUCCESS, None);
    }
    // The offsets come from the client: the half queue must point at that
    // entry, or a crafted offset could commit or drop someone else's message.
    // (The producer often ends its transaction before the dispatcher indexed
    // the half message; `cq_entry` indexes on demand.)
    let pointed = shared
        .store
        .cq_entry(HALF_TOPIC, 0, half_offset)
        .is_some_and(|e| e.physical_offset == phy);
    let half = pointed
        .then(|| shared.store.look_message_by_offset(phy))
        .flatten()
        .filter(|h| h.message.topic == HALF_TOPIC && h.queue_offset == half_offset);
    let Some(half) = half else {
        return Command::response_to(
            req,
            response::SYSTEM_ERROR,
            Some(format!(
                "Find prepared transaction message failed: no half message at queue offset {half_offset}, commit log offset {phy}"
            )),
        );
    };
    if !shared.tx.begin(half_offset) {
        // Already resolved (a check answer racing the producer's own end).
        return Command::response_to(req, response::SUCCESS, None);
    }
    if how == COMMIT {
        // Stored first, resolved after: a commit that cannot be stored stays
        // open and is checked again (END_TRANSACTION is one-way for clients).
        let stored = match send::put(shared, committed(half)) {
            Ok(s) => s.durable().await.status == shared_store::PutStatus::PutOk,
            Err(e) => {
                shared.tx.abandon(half_offset);
                return e.response(req);
            }
        };
        // Stored but not yet flushed in time: it is in the log, so the
        // transaction is resolved (another commit would duplicate it).
        shared.tx.resolve(shared, half_offset);
        if !stored {
            return Command::response_to(req, response::FLUSH_DISK_TIMEOUT, None);
        }
        metrics::counter!("ferrymq_gateway_transactions_total", "outcome" => "commit").increment(1);
    } else {
        shared.tx.resolve(shared, half_offset);
        metrics::counter!("ferrymq_gateway_transactions_total", "outcome" => "rollback")
            .increment(1);
    }
    Command::response_to(req, response::SUCCESS, None)
}

fn committed(half: StoredMessage) -> Message {
    let mut m = send::restore_real(half.message);
    m.sys_flag |= SYSFLAG_TRANSACTION_COMMIT;
    m.properties.remove(property::INNER_MULTI_DISPATCH);
    m.properties.remove(property::INNER_MULTI_QUEUE_OFFSET);
    m.properties.remove(TRAN_MSG);
    m
}

/// Background: ask producers about half messages left open too long.
pub async fn check_loop(shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let every = Duration::from_millis(shared.config.transaction_check_interval.max(100));
    let mut from = 0i64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        from = check_once(&shared, from);
    }
}

/// One pass over the open half messages from `from`; returns where the next
/// pass starts (the first still-open one).
fn check_once(shared: &Shared, mut from: i64) -> i64 {
    let now = message::now_millis();
    let timeout = shared.config.transaction_timeout as i64;
    let mut first_open = None;
    loop {
        let r = shared.store.get_message(HALF_TOPIC, 0, from, 256, None);
        match r.status {
            GetStatus::Found => {}
            GetStatus::OffsetTooSmall | GetStatus::MessageWasRemoving => {
                if r.next_begin_offset <= from {
                    break;
                }
                from = r.next_begin_offset;
                continue;
            }
            _ => break,
        }
        for m in &r.messages {
            let off = m.queue_offset;
            if shared.tx.resolved.lock().contains(&off) {
                continue;
            }
            first_open.get_or_insert(off);
            let Ok(half) = message::decode(&m.data) else {
                continue;
            };
            if now - half.store_timestamp < timeout {
                continue;
            }
            let (n, last) = *shared.tx.checks.lock().get(&off).unwrap_or(&(0, 0));
            if now - last < timeout {
                continue;
            }
            if n >= shared.config.transaction_check_max {
                tracing::warn!(
                    half_offset = off,
                    "transaction unresolved after every check; discarded"
                );
                shared.tx.resolve(shared, off);
                continue;
            }
            let group = half
                .message
                .properties
                .get(PGROUP)
                .unwrap_or_default()
                .to_owned();
            let Some(conn) = shared.clients.producer_conn(&group) else {
                continue;
            };
            let mut cmd = Command::request(request::CHECK_TRANSACTION_STATE);
            let uniq = half
                .message
                .properties
                .get(property::UNIQ_KEY)
                .map(str::to_owned)
                .unwrap_or_default();
            let offset_id =
                shared_store::encode_offset_msg_id(&half.store_host, half.physical_offset);
            cmd.set("tranStateTableOffset", off)
                .set("commitLogOffset", half.physical_offset)
                .set(
                    "msgId",
                    if uniq.is_empty() {
                        offset_id.clone()
                    } else {
                        uniq.clone()
                    },
                )
                .set(
                    "transactionId",
                    if uniq.is_empty() {
                        offset_id.clone()
                    } else {
                        uniq
                    },
                )
                .set("offsetMsgId", offset_id);
            // As RocketMQ: the producer sees the message on its real topic.
            let mut real = half.message.clone();
            if let Some(t) = real.properties.get(send::REAL_TOPIC) {
                real.topic = t.to_owned();
            }
            if let Some(q) = real
                .properties
                .get(send::REAL_QID)
                .and_then(|q| q.parse().ok())
            {
                real.queue_id = q;
            }
            cmd.body = match message::encode(
                &real,
                half.queue_offset,
                half.physical_offset,
                half.store_timestamp,
                &half.store_host,
            ) {
                Ok(b) => b.freeze(),
                Err(_) => m.data.clone(),
            };
            if conn.send_oneway(cmd) {
                // The next check of this one waits another timeout.
                shared.tx.checks.lock().insert(off, (n + 1, now));
                metrics::counter!("ferrymq_gateway_transaction_checks_total").increment(1);
            }
        }
        if r.next_begin_offset <= from {
            break;
        }
        from = r.next_begin_offset;
    }
    first_open.unwrap_or(from)
}
