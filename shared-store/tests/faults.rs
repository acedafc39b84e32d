//! Damage done to the files while the store is down: truncated segments,
//! flipped bytes, a deleted checkpoint, a full disk. Each gives a clear error
//! or a correct recovery; none panics or silently drops acknowledged data.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::{msg, read_all, small_config};
use shared_store::{GetStatus, MessageStore, RecoveryKind, StoreConfig, StoreError};

/// No background checkpoints: the only checkpoint is the one written at open,
/// so a test controls exactly what the store knew was durable.
fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        flush_interval_consume_queue: 3_600_000,
        ..small_config(dir)
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("commitlog"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

async fn fill(store: &MessageStore, n: u64) -> Vec<shared_store::PutResult> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(store.put_message(msg("t", 0, i)).await.unwrap());
    }
    store.dispatch_now().unwrap();
    out
}

fn flip(path: &Path, offset: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0xff;
    f.write_all_at(&b, offset).unwrap();
}

#[tokio::test]
async fn torn_tail_after_crash_is_cut_and_writing_continues() {
    let dir = tempfile::tempdir().unwrap();
    let store = MessageStore::open(config(dir.path())).unwrap();
    let puts = fill(&store, 100).await;
    drop(store); // crash: no clean shutdown, abort marker stays
                 // Tear the last entry: cut the file in its middle (as a crash while growing does).
    let last = puts.last().unwrap();
    let seg = segments(dir.path()).pop().unwrap();
    let seg_start: u64 = seg.file_name().unwrap().to_str().unwrap().parse().unwrap();
    let cut = last.append.physical_offset as u64 - seg_start + 10;
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(cut)
        .unwrap();

    let store = MessageStore::open(config(dir.path())).unwrap();
    assert_eq!(store.recovery_kind(), RecoveryKind::Crash);
    assert_eq!(
        store.max_physical_offset(),
        last.append.physical_offset as u64
    );
    assert_eq!(store.max_offset_in_queue("t", 0), 99);
    let r = store.put_message(msg("t", 0, 1000)).await.unwrap();
    assert_eq!(r.append.queue_offset, 99);
    store.dispatch_now().unwrap();
    let all = read_all(&store, "t", 0);
    assert_eq!(all.len(), 100);
    assert_eq!(all[99].message.body, msg("t", 0, 1000).body);
    store.shutdown().unwrap();
}

#[tokio::test]
async fn garbage_tail_after_crash_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let store = MessageStore::open(config(dir.path())).unwrap();
    fill(&store, 50).await;
    let end = store.max_physical_offset();
    drop(store);
    // Half-written junk after the last entry (no valid entry follows it).
    let seg = segments(dir.path()).pop().unwrap();
    let seg_start: u64 = seg.file_name().unwrap().to_str().unwrap().parse().unwrap();
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(
        &[0x00, 0x00, 0x01, 0x00, 0xda, 0xa3, 0x20, 0xa7, 1, 2, 3],
        end - seg_start,
    )
    .unwrap();
    let store = MessageStore::open(config(dir.path())).unwrap();
    assert_eq!(store.max_physical_offset(), end);
    assert_eq!(read_all(&store, "t", 0).len(), 50);
    store.shutdown().unwrap();
}

#[tokio::test]
async fn flipped_byte_in_the_middle_is_reported_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let store = MessageStore::open(config(dir.path())).unwrap();
    let puts = fill(&store, 200).await;
    drop(store); // crash: recovery scans everything after the checkpoint
    let victim = &puts[20].append;
    let seg = &segments(dir.path())[0];
    assert!((victim.physical_offset as u64) < 64 * 1024);
    // A byte inside the body of message 20 (the body starts at byte 88).
    flip(seg, victim.physical_offset as u64 + 90);
    match MessageStore::open(config(dir.path())) {
        Err(StoreError::Corruption { file, offset, .. }) => {
            assert_eq!(&file, seg);
            assert_eq!(offset, victim.physical_offset as u64);
        }
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(_) => panic!("corruption in the middle was accepted"),
    }
}

#[tokio::test]
async fn flipped_byte_after_clean_shutdown_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store = MessageStore::open(config(dir.path())).unwrap();
    let puts = fill(&store, 200).await;
    store.shutdown().unwrap();
    drop(store);
    let victim = &puts[150].append;
    let segs = segments(dir.path());
    let idx = (victim.physical_offset as u64 / (64 * 1024)) as usize;
    flip(&segs[idx], victim.physical_offset as u64 % (64 * 1024) + 30);
    // The last segments are verified even on a clean start.
    match MessageStore::open(config(dir.path())) {
        Err(StoreError::Corruption { file, offset, .. }) => {
            assert_eq!(file, segs[idx]);
            assert_eq!(offset, victim.physical_offset as u64 % (64 * 1024));
        }
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(_) => panic!("corruption accepted"),
    }
}

#[tokio::test]
async fn corrupted_old_segment_is_reported_on_read_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let store = MessageStore::open(config(dir.path())).unwrap();
    let puts = fill(&store, 2000).await;
    store.shutdown().unwrap();
    drop(store);
    // Segment 0 is older than the 3 verified at a clean start.
    assert!(segments(dir.path()).len() > 4);
    let victim = &puts[5].append;
    flip(&segments(dir.path())[0], victim.physical_offset as u64 + 90);
    let store = MessageStore::open(config(dir.path())).unwrap();
    let r = store.get_message("t", 0, 0, 32, None);
    assert_eq!(r.status, GetStatus::Found);
    assert_eq!(r.messages.len(), 5, "stops before the damaged entry");
    let r = store.get_message("t", 0, 5, 32, None);
    assert_eq!(r.status, GetStatus::Corrupted);
    assert_eq!(r.next_begin_offset, 5);
    store.shutdown().unwrap();
}

#[tokio::test]
async fn truncated_segment_after_clean_shutdown_is_an_error_until_loss_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let store = MessageStore::open(config(dir.path())).unwrap();
    let puts = fill(&store, 120).await;
    store.shutdown().unwrap();
    drop(store);
    let seg = segments(dir.path()).pop().unwrap();
    let seg_start: u64 = seg.file_name().unwrap().to_str().unwrap().parse().unwrap();
    let cut_at = puts[110].append.physical_offset as u64 + 5;
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(cut_at - seg_start)
        .unwrap();
    // Flushed, acknowledged bytes are gone: say so.
    let err = MessageStore::open(config(dir.path()))
        .err()
        .expect("must not open");
    assert!(matches!(err, StoreError::Corruption { .. }), "{err}");
    assert!(err.to_string().contains("flushed"), "{err}");
    // An operator who accepts the loss removes the checkpoint: the valid prefix is recovered.
    std::fs::remove_file(dir.path().join("checkpoint")).unwrap();
    let store = MessageStore::open(config(dir.path())).unwrap();
    assert_eq!(store.max_offset_in_queue("t", 0), 110);
    assert_eq!(read_all(&store, "t", 0).len(), 110);
    store.shutdown().unwrap();
}

#[tokio::test]
async fn truncated_inner_segment_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = MessageStore::open(config(dir.path())).unwrap();
    fill(&store, 1000).await;
    store.shutdown().unwrap();
    drop(store);
    let segs = segments(dir.path());
    assert!(segs.len() > 2);
    OpenOptions::new()
        .write(true)
        .open(&segs[0])
        .unwrap()
        .set_len(100)
        .unwrap();
    match MessageStore::open(config(dir.path())) {
        Err(StoreError::Corruption { file, .. }) => assert_eq!(file, segs[0]),
        other => panic!("expected corruption, got {:?}", other.err()),
    }
}

#[tokio::test]
async fn deleted_checkpoint_rebuilds_queues_and_index_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = MessageStore::open(config(dir.path())).unwrap();
    fill(&store, 300).await;
    store.shutdown().unwrap();
    drop(store);
    std::fs::remove_file(dir.path().join("checkpoint")).unwrap();
    std::fs::remove_dir_all(dir.path().join("consumequeue")).unwrap();
    let store = MessageStore::open(config(dir.path())).unwrap();
    assert_eq!(store.recovery_kind(), RecoveryKind::Crash);
    let all = read_all(&store, "t", 0);
    assert_eq!(all.len(), 300);
    for (i, m) in all.iter().enumerate() {
        assert_eq!(m.message.body, msg("t", 0, i as u64).body);
    }
    // Index entries were added again; lookups still return each message once.
    assert_eq!(store.query_message("t", "k7", 10, 0, i64::MAX).len(), 1);
    let r = store.put_message(msg("t", 0, 300)).await.unwrap();
    assert_eq!(r.append.queue_offset, 300);
    store.shutdown().unwrap();
}

#[tokio::test]
async fn disk_hard_limit_refuses_writes_and_retention_frees_space() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        // Quota of 256 KiB: soft limit at 75%, hard at 90%.
        disk_quota_bytes: Some(256 * 1024),
        ..config(dir.path())
    };
    let store = MessageStore::open(cfg.clone()).unwrap();
    let mut written = 0u64;
    let err = loop {
        match store.put_message(msg("t", 0, written)).await {
            Ok(_) => written += 1,
            Err(e) => break e,
        }
        assert!(written < 10_000, "quota never enforced");
    };
    assert!(matches!(err, StoreError::DiskFull { .. }), "{err}");
    assert!(err.to_string().contains("hard limit"));
    let used = store.max_physical_offset() - store.min_physical_offset();
    assert!(used as f64 >= 0.9 * 256.0 * 1024.0);
    store.dispatch_now().unwrap();
    // Everything acknowledged before the refusal is readable.
    assert_eq!(read_all(&store, "t", 0).len() as u64, written);

    // Over the soft ratio the oldest segments go early, and writes resume.
    let report = store.run_retention(false).unwrap();
    assert!(report.commit_log_files_deleted >= 1, "{report:?}");
    assert!(!report.disk_full);
    store.put_message(msg("t", 0, written)).await.unwrap();
    store.dispatch_now().unwrap();
    // Reads below the new min answer "offset too small" with the new min.
    let min = store.min_offset_in_queue("t", 0);
    assert!(min > 0);
    let r = store.get_message("t", 0, 0, 10, None);
    assert_eq!(r.status, GetStatus::OffsetTooSmall);
    assert_eq!(r.next_begin_offset, min);
    let r = store.get_message("t", 0, min, 10, None);
    assert_eq!(r.status, GetStatus::Found);
    assert_eq!(r.messages[0].queue_offset, min);
    store.shutdown().unwrap();
}

#[tokio::test]
async fn expired_files_are_deleted_at_delete_when_and_not_before() {
    let dir = tempfile::tempdir().unwrap();
    // deleteWhen is an hour that is not now, so only the forced pass deletes.
    let now_hour = (shared_store::message::now_millis() / 3_600_000 % 24) as u32;
    let cfg = StoreConfig {
        file_reserved_time: 0,
        delete_when: ((now_hour + 12) % 24).to_string(),
        ..config(dir.path())
    };
    let store = MessageStore::open(cfg).unwrap();
    fill(&store, 1500).await;
    let segs_before = segments(dir.path()).len();
    assert!(segs_before > 3);
    // Not a delete hour and no disk pressure: nothing goes.
    let r = store.run_retention(false).unwrap();
    assert_eq!(r.commit_log_files_deleted, 0);
    // At a delete hour, files older than fileReservedTime (0 h) go, but never the current one.
    let mut deleted = 0;
    loop {
        let r = store.run_retention(true).unwrap();
        if r.commit_log_files_deleted == 0 {
            break;
        }
        deleted += r.commit_log_files_deleted;
    }
    assert_eq!(deleted, segs_before - 1);
    assert_eq!(segments(dir.path()).len(), 1);
    // ConsumeQueue files wholly below the new min are gone too (100 entries per file).
    let cq_files = std::fs::read_dir(dir.path().join("consumequeue/t/0"))
        .unwrap()
        .count();
    assert!(cq_files <= 2, "{cq_files} consume queue files left");
    let min = store.min_offset_in_queue("t", 0);
    let first = store.get_message("t", 0, min, 1, None);
    assert_eq!(first.status, GetStatus::Found);
    assert!(first.messages[0].physical_offset as u64 >= store.min_physical_offset());
    store.shutdown().unwrap();
    // And the trimmed store reopens cleanly.
    let store = MessageStore::open(config(dir.path())).unwrap();
    assert_eq!(store.min_offset_in_queue("t", 0), min);
    store.shutdown().unwrap();
}
