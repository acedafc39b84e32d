//! Delayed messages (the DELAY property, RocketMQ's 18 levels): parked in
//! `SCHEDULE_TOPIC_XXXX`, queue = level − 1, and put on their real topic once
//! their store time plus the level's delay has passed. One task per level
//! reads its queue in order (same delay ⇒ due in store order); progress is a
//! consumer offset of the group `%SCHEDULE%`, so a restart resumes.

use std::sync::Arc;
use std::time::Duration;

use shared_store::message;
use shared_store::GetStatus;

use crate::send::{self, SCHEDULE_TOPIC};
use crate::state::Shared;

/// Offsets of the delay queues are kept under this group.
pub const SCHEDULE_GROUP: &str = "%SCHEDULE%";

/// Release the messages of delay `level` (1-based) as they come due.
pub async fn level_loop(
    shared: Arc<Shared>,
    level: usize,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let queue = level as i32 - 1;
    let delay = shared.delay_levels[level - 1] as i64;
    let mut arrivals = shared.store.subscribe_arrivals();
    let mut offset = shared
        .l
        .offsets()
        .query(SCHEDULE_GROUP, SCHEDULE_TOPIC, queue)
        .unwrap_or(0);
    loop {
        let r = shared
            .store
            .get_message(SCHEDULE_TOPIC, queue, offset, 64, None);
        let mut wait = Duration::from_secs(1);
        let mut due_pending = false;
        match r.status {
            GetStatus::Found => {
                for m in &r.messages {
                    let Ok(s) = message::decode(&m.data) else {
                        tracing::error!(
                            level,
                            offset = m.queue_offset,
                            "delayed message unreadable; skipped"
                        );
                        offset = m.queue_offset + 1;
                        continue;
                    };
                    let due = s.store_timestamp + delay;
                    let now = message::now_millis();
                    if now < due {
                        wait = Duration::from_millis((due - now) as u64);
                        due_pending = true;
                        break;
                    }
                    let real = send::restore_real(s.message);
                    match send::put(&shared, real) {
                        Ok(sub) => {
                            let _ = sub.durable().await;
                            offset = m.queue_offset + 1;
                            shared.l.offsets().commit(
                                SCHEDULE_GROUP,
                                SCHEDULE_TOPIC,
                                queue,
                                offset,
                            );
                            metrics::counter!("ferrymq_gateway_delayed_released_total")
                                .increment(1);
                        }
                        Err(e) => {
                            // Disk full and the like: try again shortly, in order.
                            tracing::warn!(level, remark = %e.remark, "releasing a delayed message failed");
                            wait = Duration::from_secs(1);
                            break;
                        }
                    }
                }
                if r.messages.last().is_some_and(|m| m.queue_offset < offset) {
                    continue;
                }
            }
            GetStatus::OffsetTooSmall
            | GetStatus::MessageWasRemoving
            | GetStatus::OffsetOverflowBadly => {
                offset = r.next_begin_offset;
                continue;
            }
            _ => {}
        }
        if due_pending {
            // Nothing else in this queue can be due earlier.
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
        } else {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = arrivals.changed() => {
                    // Arrivals tick for every topic: look again at most every 20 ms.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ = stop.changed() => return,
            }
        }
    }
}
