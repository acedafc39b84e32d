//! Bytes written by shared-store decode with the rocketmq-rust project's
//! MessageDecoder (crates.io `rocketmq-protocol`), an implementation
//! independent of ours: proof that a PULL_MESSAGE body made of our stored
//! bytes is what RocketMQ clients expect.

use std::net::SocketAddr;

use bytes::Bytes;
use rocketmq_protocol::common::message::message_decoder;
use shared_store::message::{property, Message};
use shared_store::{MessageStore, StoreConfig};

fn sample(i: usize) -> Message {
    let mut m = Message::new(
        if i.is_multiple_of(2) {
            "orders"
        } else {
            "%RETRY%group-1"
        },
        (i % 4) as i32,
        format!("payload {i} {}", "é".repeat(i % 7)).into_bytes(),
    );
    m.flag = i as i32;
    m.reconsume_times = (i % 3) as i32;
    m.born_timestamp = 1_700_000_000_000 + i as i64;
    m.born_host = if i.is_multiple_of(3) {
        "[2001:db8::7]:40001".parse().unwrap()
    } else {
        SocketAddr::from(([10, 0, 0, (i % 250) as u8], 40000 + i as u16))
    };
    m.properties.insert(property::TAGS, format!("tag{}", i % 5));
    m.properties
        .insert(property::KEYS, format!("key-{i} other-{i}"));
    m.properties
        .insert(property::UNIQ_KEY, format!("7F0000010001{i:020X}"));
    m.properties
        .insert(property::MQTT_TOPIC, format!("orders/paid/eu{i}"));
    m
}

#[tokio::test]
async fn stored_messages_decode_with_rocketmq_rust_decoder() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        mapped_file_size_commit_log: 64 * 1024,
        max_message_size: 16 * 1024,
        store_host: "192.168.7.9:10911".parse().unwrap(),
        ..StoreConfig::with_path(dir.path())
    };
    let store = MessageStore::open(cfg).unwrap();
    let mut puts = Vec::new();
    for i in 0..400 {
        let m = sample(i);
        let r = store.put_message(m.clone()).await.unwrap();
        puts.push((m, r));
    }
    store.dispatch_now().unwrap();

    for (m, r) in &puts {
        let raw = store.read_raw(r.append.physical_offset).expect("stored");
        let mut buf = raw.clone();
        let before = buf.len();
        let d = message_decoder::decode(&mut buf, true, false, false, false, true)
            .expect("rocketmq-rust decodes our bytes with CRC check");
        assert_eq!(
            before - buf.len(),
            raw.len(),
            "decoder consumed the whole entry"
        );
        assert_eq!(d.store_size() as usize, raw.len());
        assert_eq!(d.topic().as_str(), m.topic);
        assert_eq!(d.queue_id(), m.queue_id);
        assert_eq!(d.flag(), m.flag);
        assert_eq!(d.queue_offset(), r.append.queue_offset);
        assert_eq!(d.commit_log_offset(), r.append.physical_offset);
        assert_eq!(d.born_timestamp(), m.born_timestamp);
        assert_eq!(d.born_host(), m.born_host);
        assert_eq!(d.store_timestamp(), r.append.store_timestamp);
        assert_eq!(
            d.store_host(),
            "192.168.7.9:10911".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(d.reconsume_times(), m.reconsume_times);
        assert_eq!(d.body().as_deref(), Some(&m.body[..]));
        assert_eq!(
            d.body_crc() as i32,
            shared_store::message::body_crc(&m.body)
        );
        for (k, v) in m.properties.iter() {
            let got = d
                .properties()
                .iter()
                .find(|(pk, _)| pk.as_str() == k)
                .map(|(_, pv)| pv.as_str().to_string());
            assert_eq!(got.as_deref(), Some(v), "property {k}");
        }
        assert_eq!(d.properties().len(), m.properties.len());
        // The offsetMsgId we hand out is the one the Java/Rust clients compute.
        assert_eq!(d.msg_id().as_str(), r.append.offset_msg_id);
    }

    // A PULL_MESSAGE body is several stored entries back to back.
    let got = store.get_message("orders", 0, 0, 32, None);
    let mut body: Vec<u8> = Vec::new();
    for m in &got.messages {
        body.extend_from_slice(&m.data);
    }
    let decoded = message_decoder::decodes_batch(&mut Bytes::from(body), true, false);
    assert_eq!(decoded.len(), got.messages.len());
    for (d, m) in decoded.iter().zip(&got.messages) {
        assert_eq!(d.queue_offset(), m.queue_offset);
        assert_eq!(d.commit_log_offset(), m.physical_offset);
    }
    store.shutdown().unwrap();
}
