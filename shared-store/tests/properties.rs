//! Property tests: the v1 codec round-trips any message, and after any
//! sequence of puts (with rollover and restarts) every ConsumeQueue entry
//! points at a CommitLog entry of its own topic, queue and offset.

mod common;

use std::net::SocketAddr;

use bytes::Bytes;
use proptest::prelude::*;
use shared_store::message::{self, check_entry_at, EntryCheck, Message, Properties};
use shared_store::{MessageStore, StoreConfig};

fn addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
    ]
}

fn prop_text() -> impl Strategy<Value = String> {
    // Property names and values may be any text without the two separators.
    "[^\u{1}\u{2}]{1,20}"
}

fn message() -> impl Strategy<Value = Message> {
    (
        "[a-zA-Z0-9_%|-]{1,60}",
        any::<i32>(),
        any::<i32>(),
        any::<i32>(),
        any::<i64>(),
        addr(),
        any::<i32>(),
        any::<i64>(),
        proptest::collection::vec(any::<u8>(), 0..2000),
        proptest::collection::vec((prop_text(), prop_text()), 0..6),
    )
        .prop_map(
            |(topic, queue_id, flag, sys_flag, born, host, rt, ptx, body, props)| {
                let mut properties = Properties::new();
                for (k, v) in props {
                    properties.insert(k, v);
                }
                Message {
                    topic,
                    queue_id,
                    flag,
                    sys_flag: sys_flag
                        & !(message::SYSFLAG_BORNHOST_V6 | message::SYSFLAG_STOREHOST_V6),
                    born_timestamp: born,
                    born_host: host,
                    reconsume_times: rt,
                    prepared_transaction_offset: ptx,
                    body: Bytes::from(body),
                    properties,
                }
            },
        )
}

proptest! {
    #[test]
    fn encode_decode_round_trip(m in message(), qo in any::<i64>(), po in 0i64..i64::MAX, ts in any::<i64>(), store in addr()) {
        let bytes = message::encode(&m, qo, po, ts, &store).unwrap();
        prop_assert_eq!(message::encoded_len(&m, &store).unwrap(), bytes.len());
        prop_assert_eq!(check_entry_at(&bytes, po as u64).unwrap(), EntryCheck::Message(bytes.len()));
        let d = message::decode(&bytes).unwrap();
        let mut want = m.clone();
        if m.born_host.is_ipv6() { want.sys_flag |= message::SYSFLAG_BORNHOST_V6; }
        if store.is_ipv6() { want.sys_flag |= message::SYSFLAG_STOREHOST_V6; }
        prop_assert_eq!(&d.message, &want);
        prop_assert_eq!(d.queue_offset, qo);
        prop_assert_eq!(d.physical_offset, po);
        prop_assert_eq!(d.store_timestamp, ts);
        prop_assert_eq!(d.store_host, store);
        prop_assert_eq!(d.store_size as usize, bytes.len());
        prop_assert_eq!(d.body_crc, message::body_crc(&m.body));
        // Re-encoding what was decoded gives the same bytes.
        let again = message::encode(&d.message, qo, po, ts, &store).unwrap();
        prop_assert_eq!(&again[..], &bytes[..]);
    }

    #[test]
    fn decoder_never_panics_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = message::decode(&data);
        let _ = message::check_entry(&data);
    }

    #[test]
    fn properties_round_trip(props in proptest::collection::vec((prop_text(), prop_text()), 0..10)) {
        let p: Properties = props.iter().cloned().collect();
        prop_assert_eq!(Properties::decode(&p.encode()), p);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn consume_queues_match_the_commit_log(
        ops in proptest::collection::vec((0usize..3, 0i32..3, 0usize..3000, any::<bool>()), 1..300),
        restart_at in 0usize..300,
    ) {
        let topics = ["a", "b", "%LMQ%x"];
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig {
            mapped_file_size_commit_log: 32 * 1024,
            consume_queue_entries_per_file: 16,
            max_message_size: 4000,
            ..common::small_config(dir.path())
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut store = MessageStore::open(cfg.clone()).unwrap();
            let mut expect: std::collections::HashMap<(String, i32), Vec<(i64, i64)>> = Default::default();
            for (i, (t, q, len, tagged)) in ops.iter().enumerate() {
                if i == restart_at {
                    store.shutdown().unwrap();
                    store = MessageStore::open(cfg.clone()).unwrap();
                }
                let topic = topics[*t];
                let q = if topic.starts_with("%LMQ%") { 0 } else { *q };
                let mut m = Message::new(topic, q, vec![i as u8; *len]);
                if *tagged { m.properties.insert("TAGS", format!("tag{}", i % 5)); }
                let r = store.put_message(m).await.unwrap();
                let v = expect.entry((topic.to_string(), q)).or_default();
                prop_assert_eq!(r.append.queue_offset, v.len() as i64);
                v.push((r.append.physical_offset, message::tag_hash(if *tagged { Some(format!("tag{}", i % 5)) } else { None }.as_deref())));
            }
            store.dispatch_now().unwrap();
            for ((topic, q), entries) in &expect {
                prop_assert_eq!(store.max_offset_in_queue(topic, *q), entries.len() as i64);
                for (off, (phy, tag)) in entries.iter().enumerate() {
                    let e = store.cq_entry(topic, *q, off as i64).unwrap();
                    prop_assert_eq!(e.physical_offset, *phy);
                    prop_assert_eq!(e.tag_hash, *tag);
                    let m = store.look_message_by_offset(e.physical_offset).unwrap();
                    prop_assert_eq!(m.store_size, e.size);
                    prop_assert_eq!(&m.message.topic, topic);
                    prop_assert_eq!(m.message.queue_id, *q);
                    prop_assert_eq!(m.queue_offset, off as i64);
                }
            }
            store.shutdown().unwrap();
            Ok(())
        })?;
    }
}
