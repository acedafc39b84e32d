//! The store's API as a user relies on it: put, get, rollover, filters,
//! light queues, lookups, restart.

mod common;

use common::{msg, read_all, small_config};
use shared_store::message::{self, property, tag_hash};
use shared_store::{FlushDiskType, GetStatus, Message, MessageStore, PutStatus, RecoveryKind};

#[tokio::test]
async fn put_then_get_in_order_across_segment_rollover() {
    let dir = tempfile::tempdir().unwrap();
    let store = MessageStore::open(small_config(dir.path())).unwrap();
    let mut results = Vec::new();
    for i in 0..2000u64 {
        let r = store
            .put_message(msg("orders", (i % 3) as i32, i))
            .await
            .unwrap();
        assert_eq!(r.status, PutStatus::PutOk);
        results.push(r);
    }
    // 2000 messages of ~150 bytes in 64 KiB segments: several rollovers.
    assert!(store.max_physical_offset() > 4 * 64 * 1024);
    store.dispatch_now().unwrap();
    for q in 0..3 {
        let got = read_all(&store, "orders", q);
        let want: Vec<u64> = (0..2000u64).filter(|i| i % 3 == q as u64).collect();
        assert_eq!(got.len(), want.len());
        for (k, (m, i)) in got.iter().zip(&want).enumerate() {
            assert_eq!(m.queue_offset, k as i64);
            assert_eq!(m.message.body, msg("orders", q, *i).body);
            assert_eq!(m.message.topic, "orders");
            assert_eq!(m.message.queue_id, q);
        }
    }
    // Physical offsets returned by put are where the bytes are.
    for (i, r) in results.iter().enumerate().step_by(97) {
        let m = store
            .look_message_by_offset(r.append.physical_offset)
            .unwrap();
        assert_eq!(m.message.body, msg("orders", 0, i as u64).body);
        let by_id = store
            .view_message_by_id(&r.append.offset_msg_id)
            .unwrap()
            .unwrap();
        assert_eq!(by_id, m);
    }
    store.shutdown().unwrap();
}

#[tokio::test]
async fn get_statuses_follow_rocketmq() {
    let dir = tempfile::tempdir().unwrap();
    let store = MessageStore::open(small_config(dir.path())).unwrap();
    let r = store.get_message("nope", 0, 0, 10, None);
    assert_eq!(r.status, GetStatus::NoMatchedLogicQueue);
    for i in 0..5 {
        store.put_message(msg("t", 0, i)).await.unwrap();
    }
    store.dispatch_now().unwrap();
    assert_eq!(
        store.get_message("t", 0, 5, 10, None).status,
        GetStatus::OffsetOverflowOne
    );
    let r = store.get_message("t", 0, 9, 10, None);
    assert_eq!(r.status, GetStatus::OffsetOverflowBadly);
    assert_eq!(r.next_begin_offset, 5);
    let r = store.get_message("t", 0, 1, 2, None);
    assert_eq!(r.status, GetStatus::Found);
    assert_eq!(r.messages.len(), 2);
    assert_eq!(r.next_begin_offset, 3);
    assert_eq!((r.min_offset, r.max_offset), (0, 5));
    store.shutdown().unwrap();
}

#[tokio::test]
async fn tag_filter_uses_java_hash_of_tags() {
    let dir = tempfile::tempdir().unwrap();
    let store = MessageStore::open(small_config(dir.path())).unwrap();
    for i in 0..10 {
        store.put_message(msg("t", 0, i)).await.unwrap();
    }
    store.dispatch_now().unwrap();
    let even = tag_hash(Some("even"));
    let f = move |h: i64| h == even;
    let r = store.get_message("t", 0, 0, 32, Some(&f));
    assert_eq!(r.status, GetStatus::Found);
    let got: Vec<_> = r.messages.iter().map(|m| m.queue_offset).collect();
    assert_eq!(got, vec![0, 2, 4, 6, 8]);
    assert!(r.messages.iter().all(|m| m.tag_hash == even));
    let none = |_h: i64| false;
    let r = store.get_message("t", 0, 0, 32, Some(&none));
    assert_eq!(r.status, GetStatus::NoMatchedMessage);
    assert_eq!(r.next_begin_offset, 10);
    store.shutdown().unwrap();
}

#[tokio::test]
async fn light_queues_index_the_same_entry() {
    let dir = tempfile::tempdir().unwrap();
    let store = MessageStore::open(small_config(dir.path())).unwrap();
    for i in 0..6u64 {
        let mut m = msg("sensors", 1, i);
        let lmqs = if i % 2 == 0 {
            "%LMQ%dev-a,%LMQ%dev-b"
        } else {
            "%LMQ%dev-b"
        };
        m.properties.insert(property::INNER_MULTI_DISPATCH, lmqs);
        let r = store.put_message(m).await.unwrap();
        assert_eq!(r.append.lmq_offsets.last().unwrap().0, "%LMQ%dev-b");
        assert_eq!(r.append.lmq_offsets.last().unwrap().1, i as i64);
    }
    store.dispatch_now().unwrap();
    let a = read_all(&store, "%LMQ%dev-a", 0);
    let b = read_all(&store, "%LMQ%dev-b", 0);
    assert_eq!(a.len(), 3);
    assert_eq!(b.len(), 6);
    let main = read_all(&store, "sensors", 1);
    // Same CommitLog entries, no copies.
    assert_eq!(
        b.iter().map(|m| m.physical_offset).collect::<Vec<_>>(),
        main.iter().map(|m| m.physical_offset).collect::<Vec<_>>()
    );
    assert_eq!(a[1].physical_offset, main[2].physical_offset);
    let bad = {
        let mut m = msg("sensors", 1, 0);
        m.properties
            .insert(property::INNER_MULTI_DISPATCH, "not-lmq");
        m
    };
    assert!(store.put_message(bad).await.is_err());
    store.shutdown().unwrap();
}

#[tokio::test]
async fn lookup_by_key_unique_key_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = MessageStore::open(small_config(dir.path())).unwrap();
    // More than max_index_num (200) keys: spans several index files.
    for i in 0..300u64 {
        store.put_message(msg("t", 0, i)).await.unwrap();
    }
    store.dispatch_now().unwrap();
    let now = message::now_millis();
    let hits = store.query_message("t", "k7", 10, 0, now + 1000);
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].message.body, msg("t", 0, 7).body);
    let hits = store.query_message("t", "U00000250", 10, 0, now + 1000);
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].queue_offset, 250);
    let group = store.query_message("t", "group1", 1000, 0, now + 1000);
    assert_eq!(group.len(), 100);
    assert!(store
        .query_message("other", "k7", 10, 0, now + 1000)
        .is_empty());
    assert!(store
        .query_message("t", "k7", 10, now + 60_000, now + 120_000)
        .is_empty());
    let first = store.query_message("t", "k0", 1, 0, now + 1000)[0].store_timestamp;
    assert_eq!(store.offset_in_queue_by_time("t", 0, 0), 0);
    assert_eq!(store.offset_in_queue_by_time("t", 0, now + 60_000), 300);
    let at = store.offset_in_queue_by_time("t", 0, first);
    assert_eq!(at, 0);
    assert_eq!(store.earliest_message_time("t", 0), Some(first));
    store.shutdown().unwrap();
}

#[tokio::test]
async fn clean_restart_trusts_checkpoint_and_continues_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let store = MessageStore::open(small_config(dir.path())).unwrap();
    assert_eq!(store.recovery_kind(), RecoveryKind::Fresh);
    for i in 0..500 {
        store.put_message(msg("t", 0, i)).await.unwrap();
    }
    let max = store.max_physical_offset();
    store.shutdown().unwrap();
    drop(store);
    let store = MessageStore::open(small_config(dir.path())).unwrap();
    assert_eq!(store.recovery_kind(), RecoveryKind::Clean);
    assert_eq!(store.max_physical_offset(), max);
    assert_eq!(store.max_offset_in_queue("t", 0), 500);
    let r = store.put_message(msg("t", 0, 500)).await.unwrap();
    assert_eq!(r.append.queue_offset, 500);
    assert_eq!(r.append.physical_offset as u64, max);
    store.dispatch_now().unwrap();
    assert_eq!(read_all(&store, "t", 0).len(), 501);
    assert_eq!(store.query_message("t", "k42", 5, 0, i64::MAX).len(), 1);
    store.shutdown().unwrap();
}

#[tokio::test]
async fn sync_flush_acks_only_flushed_bytes_and_shares_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config(dir.path());
    cfg.flush_disk_type = FlushDiskType::SyncFlush;
    cfg.mapped_file_size_commit_log = 1 << 20;
    let store = MessageStore::open(cfg).unwrap();
    let mut tasks = Vec::new();
    for w in 0..64u64 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut ends = Vec::new();
            for i in 0..20 {
                let r = s
                    .put_message(msg("t", (w % 4) as i32, w * 100 + i))
                    .await
                    .unwrap();
                assert_eq!(r.status, PutStatus::PutOk);
                // PUT_OK under SYNC_FLUSH means the flushed offset covers the entry.
                assert!(s.flushed_physical_offset() >= r.append.end_offset());
                ends.push(r.append.end_offset());
            }
            ends
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = store.stats();
    assert_eq!(stats.puts, 64 * 20);
    assert!(stats.flushes >= 1 && stats.flushes <= stats.puts);
    store.shutdown().unwrap();
}

#[tokio::test]
async fn half_transaction_messages_take_no_queue_slot() {
    let dir = tempfile::tempdir().unwrap();
    let store = MessageStore::open(small_config(dir.path())).unwrap();
    let mut half = Message::new("t", 0, &b"half"[..]);
    half.sys_flag = message::SYSFLAG_TRANSACTION_PREPARED;
    let h = store.put_message(half).await.unwrap();
    let n = store
        .put_message(Message::new("t", 0, &b"normal"[..]))
        .await
        .unwrap();
    assert_eq!(n.append.queue_offset, 0);
    store.dispatch_now().unwrap();
    let all = read_all(&store, "t", 0);
    assert_eq!(all.len(), 1);
    assert_eq!(&all[0].message.body[..], b"normal");
    // Still readable by offset (the gateway's transaction check needs it).
    assert_eq!(
        &store
            .look_message_by_offset(h.append.physical_offset)
            .unwrap()
            .message
            .body[..],
        b"half"
    );
    store.shutdown().unwrap();
}

#[tokio::test]
async fn oversized_and_illegal_messages_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = MessageStore::open(small_config(dir.path())).unwrap();
    let big = Message::new("t", 0, vec![0u8; 17 * 1024]);
    assert!(matches!(
        store.put_message(big).await,
        Err(shared_store::StoreError::MessageIllegal(_))
    ));
    for topic in ["", "a/b", "..", &"x".repeat(200)] {
        let m = Message::new(topic, 0, &b"x"[..]);
        assert!(store.put_message(m).await.is_err(), "topic {topic:?}");
    }
    store.shutdown().unwrap();
    assert!(matches!(
        store.put_message(Message::new("t", 0, &b"x"[..])).await,
        Err(shared_store::StoreError::ShutDown)
    ));
}

/// A client that looks up its own message right after the put (END_TRANSACTION
/// does) finds it, indexed or not yet; an offset nobody was given stays absent.
#[tokio::test]
async fn cq_entry_right_after_a_put_finds_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = MessageStore::open(small_config(dir.path())).unwrap();
    for i in 0..50 {
        let r = store.put_message(msg("T", 0, i)).await.unwrap();
        let e = store
            .cq_entry("T", 0, r.append.queue_offset)
            .expect("entry of the put just made");
        assert_eq!(e.physical_offset, r.append.physical_offset);
    }
    assert_eq!(store.cq_entry("T", 0, 50), None);
    assert_eq!(store.cq_entry("T", 1, 0), None);
    store.shutdown().unwrap();
    assert!(store.put_message(msg("T", 0, 99)).await.is_err());
}
