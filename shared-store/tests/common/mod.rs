//! Helpers shared by the store's integration tests.
#![allow(dead_code)]

use shared_store::{FlushDiskType, Message, MessageStore, StoreConfig};

/// A config with small files so tests exercise rollover and multiple files.
pub fn small_config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig {
        mapped_file_size_commit_log: 64 * 1024,
        consume_queue_entries_per_file: 100,
        max_hash_slot_num: 64,
        max_index_num: 200,
        max_message_size: 16 * 1024,
        flush_disk_type: FlushDiskType::AsyncFlush,
        ..StoreConfig::with_path(dir)
    }
}

/// A message with a tag, keys and a body derived from `i`.
pub fn msg(topic: &str, queue: i32, i: u64) -> Message {
    let mut m = Message::new(
        topic,
        queue,
        format!("body-{i}-{}", "x".repeat((i % 50) as usize)).into_bytes(),
    );
    m.properties
        .insert("TAGS", if i.is_multiple_of(2) { "even" } else { "odd" });
    m.properties.insert("KEYS", format!("k{i} group{}", i % 3));
    m.properties
        .insert("UNIQ_CLIENT_MESSAGE_ID_KEYIDX", format!("U{i:08}"));
    m
}

/// Read every message of a queue from its min offset.
pub fn read_all(store: &MessageStore, topic: &str, queue: i32) -> Vec<shared_store::StoredMessage> {
    let mut out = Vec::new();
    let mut off = store.min_offset_in_queue(topic, queue);
    loop {
        let r = store.get_message(topic, queue, off, 32, None);
        if r.messages.is_empty() {
            break;
        }
        for m in &r.messages {
            out.push(shared_store::message::decode(&m.data).expect("stored bytes decode"));
        }
        off = r.next_begin_offset;
    }
    out
}
