//! kill -9 a process writing under SYNC_FLUSH at random moments, many rounds;
//! after each, reopen and check that every put that returned PUT_OK is there
//! with its bytes, and that the queues hold nothing but valid, contiguous entries.
//! The same under ASYNC_FLUSH: a process crash (not an OS crash) loses no put
//! either, because what a put appended sits in the page cache (the segment or
//! the staging ring, which recovery replays).
//!
//! The child is this test binary re-executed on the ignored `crash_child_writer`.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use shared_store::{FlushDiskType, Message, MessageStore, PutStatus, RecoveryKind, StoreConfig};

const DIR_ENV: &str = "FERRYMQ_CRASH_DIR";
const SEQ_ENV: &str = "FERRYMQ_CRASH_SEQ";
const FLUSH_ENV: &str = "FERRYMQ_CRASH_FLUSH";
const QUEUES: u64 = 4;

fn config(dir: &std::path::Path, flush: FlushDiskType) -> StoreConfig {
    StoreConfig {
        flush_disk_type: flush,
        mapped_file_size_commit_log: 256 * 1024,
        consume_queue_entries_per_file: 500,
        max_hash_slot_num: 512,
        max_index_num: 4096,
        max_message_size: 8 * 1024,
        flush_interval_consume_queue: 200,
        ..StoreConfig::with_path(dir)
    }
}

/// Body of message `seq`: its length and bytes both depend on seq.
fn body(seq: u64) -> Vec<u8> {
    let len = 16 + (seq.wrapping_mul(2_654_435_761) % 3000) as usize;
    (0..len).map(|i| (seq as usize + i * 7) as u8).collect()
}

fn message(seq: u64) -> Message {
    let mut m = Message::new("crash", (seq % QUEUES) as i32, body(seq));
    m.properties.insert("KEYS", format!("s{seq}"));
    m.properties.insert("TAGS", "t");
    m
}

#[test]
#[ignore = "child process of the kill9_* tests"]
fn crash_child_writer() {
    let dir = std::env::var(DIR_ENV).expect("child needs FERRYMQ_CRASH_DIR");
    let start: u64 = std::env::var(SEQ_ENV)
        .expect("child needs FERRYMQ_CRASH_SEQ")
        .parse()
        .unwrap();
    let flush = match std::env::var(FLUSH_ENV).as_deref() {
        Ok("ASYNC") => FlushDiskType::AsyncFlush,
        _ => FlushDiskType::SyncFlush,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = MessageStore::open(config(std::path::Path::new(&dir), flush)).unwrap();
        let next = Arc::new(AtomicU64::new(start));
        let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
        println!("READY");
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (store, next, out) = (store.clone(), next.clone(), out.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    let r = store.put_message(message(seq)).await.unwrap();
                    if r.status == PutStatus::PutOk {
                        let mut o = out.lock().unwrap();
                        writeln!(o, "ACK {seq} {}", r.append.physical_offset).unwrap();
                        o.flush().unwrap();
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

/// Every queue: contiguous offsets from min, each entry a valid message of that queue.
fn verify_store(store: &MessageStore) -> HashMap<u64, (i32, i64)> {
    let mut seen = HashMap::new();
    for q in 0..QUEUES as i32 {
        let mut off = store.min_offset_in_queue("crash", q);
        let max = store.max_offset_in_queue("crash", q);
        while off < max {
            let r = store.get_message("crash", q, off, 64, None);
            assert_eq!(
                r.status,
                shared_store::GetStatus::Found,
                "queue {q} offset {off} of {max}"
            );
            for m in &r.messages {
                assert_eq!(m.queue_offset, off);
                let d = shared_store::message::decode(&m.data).expect("valid entry");
                assert_eq!(d.queue_offset, off);
                assert_eq!(d.message.queue_id, q);
                let seq: u64 = d.message.properties.get("KEYS").unwrap()[1..]
                    .parse()
                    .unwrap();
                assert_eq!(&d.message.body[..], &body(seq)[..], "bytes of seq {seq}");
                assert!(
                    seen.insert(seq, (q, off)).is_none(),
                    "seq {seq} stored twice"
                );
                off += 1;
            }
        }
    }
    seen
}

#[test]
fn kill9_during_sync_flush_loses_no_acked_put() {
    kill9_rounds(FlushDiskType::SyncFlush, 12);
}

#[test]
fn kill9_during_async_flush_loses_no_put() {
    kill9_rounds(FlushDiskType::AsyncFlush, 8);
}

fn kill9_rounds(flush: FlushDiskType, rounds: usize) {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rng();
    let mut acked: HashMap<u64, i64> = HashMap::new();
    let mut next_seq = 0u64;
    let flush_env = match flush {
        FlushDiskType::AsyncFlush => "ASYNC",
        FlushDiskType::SyncFlush => "SYNC",
    };
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "crash_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_ENV, dir.path())
            .env(SEQ_ENV, next_seq.to_string())
            .env(FLUSH_ENV, flush_env)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait for the child to be writing, then let it run a random while.
        loop {
            let l = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("child started");
            if l.ends_with("READY") {
                break;
            }
        }
        let kill_after = Duration::from_millis(rng.random_range(20..400));
        let deadline = std::time::Instant::now() + kill_after;
        let mut lines = Vec::new();
        while std::time::Instant::now() < deadline {
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(5)) {
                lines.push(l);
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        lines.extend(rx.try_iter());
        let mut round_acks = 0;
        for l in lines {
            let mut parts = l.split(' ');
            if parts.next() != Some("ACK") {
                continue;
            }
            let seq: u64 = parts.next().unwrap().parse().unwrap();
            let phy: i64 = parts.next().unwrap().parse().unwrap();
            acked.insert(seq, phy);
            round_acks += 1;
        }
        // Reopen: crash recovery, then every acked put must be there.
        let store = MessageStore::open(config(dir.path(), flush)).unwrap();
        assert_eq!(store.recovery_kind(), RecoveryKind::Crash, "round {round}");
        store.dispatch_now().unwrap();
        let seen = verify_store(&store);
        for (seq, phy) in &acked {
            assert!(
                seen.contains_key(seq),
                "round {round}: acked seq {seq} at {phy} lost"
            );
            let m = store
                .look_message_by_offset(*phy)
                .expect("acked offset readable");
            assert_eq!(&m.message.body[..], &body(*seq)[..]);
        }
        // Continue numbering after everything the child may have written.
        next_seq = seen
            .keys()
            .copied()
            .chain(acked.keys().copied())
            .max()
            .map(|m| m + 1)
            .unwrap_or(next_seq)
            + 1000;
        eprintln!(
            "round {round}: {round_acks} acks this round, {} acked total, {} stored",
            acked.len(),
            seen.len()
        );
        // Leave the store as a crash does, half the time; cleanly otherwise.
        if round % 2 == 0 {
            store.shutdown().unwrap();
        }
    }
    assert!(
        acked.len() > 100,
        "the child acked too little to test anything: {}",
        acked.len()
    );
}
