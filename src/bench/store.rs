//! `ferrymq bench store`: how close the storage engine gets to the disk.
//!
//! Every store figure is printed next to a reference measured in the same run
//! on the same directory, because absolute numbers mean little across machines:
//! - ASYNC_FLUSH appends against plain sequential `write` + one `fsync`;
//! - SYNC_FLUSH group commit against one `fdatasync` per message;
//! - crash recovery as seconds per GiB of log, with the fixed cost of an
//!   almost empty log measured separately.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use clap::Args;
use rand::RngCore;
use shared_store::{
    FlushDiskType, GetStatus, Message, MessageStore, PutStatus, RecoveryKind, StoreConfig,
};
use tokio::task::JoinSet;

const TOPIC: &str = "BenchTopic";
const QUEUES: i32 = 4;
const MB: f64 = 1e6;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Linux's SIGABRT (the same number on every architecture).
const SIGABRT: i32 = 6;
/// Target: ASYNC_FLUSH 1 KiB appends reach this share of raw write bandwidth.
const ASYNC_TARGET: f64 = 0.60;
/// Target: 256 SYNC_FLUSH writers beat one fsync per message by this factor.
const SYNC_TARGET: f64 = 100.0;

/// Arguments of `ferrymq bench store`.
#[derive(Debug, Args)]
pub struct StoreBenchArgs {
    /// Directory on the disk to measure; a scratch subdirectory is made in it
    /// and removed afterwards.
    #[arg(long, value_name = "DIR", default_value = "./data")]
    pub dir: PathBuf,
    /// Messages per ASYNC_FLUSH run [default: 1,000,000 for 128 B and 1 KiB
    /// bodies, 250,000 for 4 KiB; 20,000 each with --quick].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub messages: Option<u64>,
    /// Concurrent writer tasks in the ASYNC_FLUSH runs. An ASYNC put never
    /// suspends and appends serialise on one lock, so on 2 cores 2 or 4 tasks
    /// measured no faster than 1.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub async_writers: u64,
    /// Small sizes and short runs (a smoke test of well under 20 s).
    #[arg(long)]
    pub quick: bool,
}

/// Arguments of the hidden `ferrymq bench store-crash-writer`.
#[derive(Debug, Args)]
pub struct CrashWriterArgs {
    /// Store directory.
    #[arg(long)]
    pub dir: PathBuf,
    /// Append 1 KiB messages until this many CommitLog bytes are written.
    #[arg(long)]
    pub bytes: u64,
    /// CommitLog segment size.
    #[arg(long)]
    pub segment_size: u64,
}

struct Plan {
    quick: bool,
    /// (body size, messages) of each ASYNC_FLUSH run.
    async_runs: Vec<(usize, u64)>,
    sync_writers: Vec<usize>,
    sync_time: Duration,
    baseline_time: Duration,
    recovery_bytes: u64,
    recovery_segment: u64,
    /// Segment sizes for the almost-empty-log recovery runs.
    empty_segments: Vec<u64>,
}

impl Plan {
    fn new(args: &StoreBenchArgs) -> Self {
        if args.quick {
            let n = args.messages.unwrap_or(20_000);
            Self {
                quick: true,
                async_runs: vec![(128, n), (1024, n), (4096, n)],
                sync_writers: vec![1, 16, 256],
                sync_time: Duration::from_millis(500),
                baseline_time: Duration::from_millis(500),
                recovery_bytes: 32 * MIB,
                recovery_segment: 64 * MIB,
                empty_segments: vec![64 * MIB],
            }
        } else {
            let (small, big) = match args.messages {
                Some(n) => (n, n),
                None => (1_000_000, 250_000),
            };
            Self {
                quick: false,
                async_runs: vec![(128, small), (1024, small), (4096, big)],
                sync_writers: vec![1, 16, 256],
                sync_time: Duration::from_secs(3),
                baseline_time: Duration::from_secs(2),
                recovery_bytes: 512 * MIB,
                recovery_segment: 256 * MIB,
                empty_segments: vec![256 * MIB, GIB],
            }
        }
    }
}

/// Removes the scratch directory however the benchmark ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn store_config(dir: &Path, flush: FlushDiskType, segment: u64) -> StoreConfig {
    StoreConfig {
        flush_disk_type: flush,
        mapped_file_size_commit_log: segment,
        // Retention is not under test; it must not delete what (d) reads back
        // on a disk that is already fairly full.
        clean_resource_interval: 86_400_000,
        ..StoreConfig::with_path(dir)
    }
}

/// Config of the crashing writer and of the recovery that follows. No
/// checkpoint is taken after open, so recovery scans the whole log: the worst
/// case, which is what a per-GiB figure should describe.
fn crash_config(dir: &Path, segment: u64) -> StoreConfig {
    StoreConfig {
        flush_interval_consume_queue: 3_600_000,
        ..store_config(dir, FlushDiskType::AsyncFlush, segment)
    }
}

async fn open_store(cfg: StoreConfig) -> Result<MessageStore> {
    let path = cfg.store_path.clone();
    tokio::task::spawn_blocking(move || MessageStore::open(cfg))
        .await
        .context("store open task")?
        .with_context(|| format!("opening store at {}", path.display()))
}

async fn shutdown(store: MessageStore) -> Result<()> {
    tokio::task::spawn_blocking(move || store.shutdown())
        .await
        .context("store shutdown task")?
        .context("store shutdown")
}

fn random_bytes(len: usize) -> Bytes {
    let mut b = vec![0u8; len];
    // Random rather than zero bodies: the CRC does real work and nothing
    // between us and the disk can compress the data.
    rand::rng().fill_bytes(&mut b);
    Bytes::from(b)
}

/// One message per queue, cloned for each put (the clone shares the body).
fn templates(body_len: usize) -> Vec<Message> {
    let body = random_bytes(body_len);
    (0..QUEUES)
        .map(|q| Message::new(TOPIC, q, body.clone()))
        .collect()
}

fn encoded_len(body_len: usize) -> Result<u64> {
    let m = Message::new(TOPIC, 0, random_bytes(body_len));
    let n = shared_store::message::encoded_len(&m, &StoreConfig::default().store_host)?;
    Ok(n as u64)
}

fn mb_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / MB / secs.max(1e-9)
}

fn per_s(n: u64, secs: f64) -> f64 {
    n as f64 / secs.max(1e-9)
}

fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

fn pass(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

/// Run the whole benchmark; the last stdout line is `SUMMARY {json}`.
pub async fn run(args: StoreBenchArgs) -> Result<()> {
    let plan = Plan::new(&args);
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let root = args.dir.join(format!("bench-store-{}", std::process::id()));
    std::fs::create_dir(&root).with_context(|| format!("creating {}", root.display()))?;
    let _scratch = Scratch(root.clone());

    let one_k = plan
        .async_runs
        .iter()
        .find(|(b, _)| *b == 1024)
        .map(|(_, n)| *n)
        .unwrap_or(0);
    let raw_bytes = encoded_len(1024)? * one_k;
    let mut need = raw_bytes + plan.recovery_bytes + 512 * MIB;
    for (body, n) in &plan.async_runs {
        need += encoded_len(*body)? * n;
    }
    let vfs = rustix::fs::statvfs(&root).with_context(|| format!("statvfs {}", root.display()))?;
    let avail = vfs.f_bavail * vfs.f_frsize;
    ensure!(
        avail > need,
        "{} has {} MB free, the benchmark needs about {} MB",
        root.display(),
        avail / 1_000_000,
        need / 1_000_000
    );

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "ferrymq bench store{}",
        if plan.quick { " --quick" } else { "" }
    )?;
    writeln!(
        out,
        "  dir {} ({} GB free), {} cores, {} GiB RAM",
        root.display(),
        avail / 1_000_000_000,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        mem_total_gib()
            .map(|g| format!("{g:.1}"))
            .unwrap_or_else(|| "?".into()),
    )?;
    drop(out);

    // (a) Raw sequential write bandwidth: the reference for (b). It is
    // measured before and after (b) and the faster run is the reference (the
    // stricter ratio). Every timed write run, raw or store, is preceded by an
    // untimed write of the same size: on a VM whose balloon hands freed memory
    // back to the host, the first pass over fresh page-cache memory is several
    // times slower, and whichever run happened to come first would lose.
    let raw_path = root.join("raw");
    prewarm(&root, raw_bytes).await?;
    let raw_before = raw_write(raw_path.clone(), raw_bytes).await?;
    println!(
        "\n(a) raw sequential write: {} MB in 1 MiB writes + one fsync",
        raw_bytes / 1_000_000
    );
    println!(
        "    before (b): {raw_before:.2} s = {:.0} MB/s",
        mb_s(raw_bytes, raw_before)
    );

    // (b) ASYNC_FLUSH appends; the 1 KiB store stays open for (d).
    println!(
        "\n(b) ASYNC_FLUSH appends: {} writer task(s) awaiting put_message in a loop, {QUEUES} queues",
        args.async_writers
    );
    println!(
        "    {:>6} {:>9} {:>11} {:>9} {:>14}",
        "body", "msgs", "msgs/s", "MB/s", "durable MB/s"
    );
    let mut async_results = Vec::new();
    let mut kept = None;
    for (body, n) in &plan.async_runs {
        let dir = root.join(format!("async-{body}"));
        prewarm(&root, encoded_len(*body)? * n).await?;
        let (r, store) = async_run(&dir, *body, *n, args.async_writers).await?;
        println!(
            "    {:>6} {:>9} {:>11.0} {:>9.0} {:>14.0}",
            body_label(*body),
            r.msgs,
            per_s(r.msgs, r.append_secs),
            mb_s(r.bytes, r.append_secs),
            mb_s(r.bytes, r.durable_secs),
        );
        if *body == 1024 && kept.is_none() {
            kept = Some((store, r.msgs, r.bytes));
        } else {
            shutdown(store).await?;
            remove_dir(&dir)?;
        }
        async_results.push(r);
    }
    println!("    MB/s counts stored bytes (headers included); \"durable\" runs until the flusher has synced the last byte.");
    prewarm(&root, raw_bytes).await?;
    let raw_after = raw_write(raw_path, raw_bytes).await?;
    let raw_mb_s = mb_s(raw_bytes, raw_before.min(raw_after));
    println!(
        "    raw write again after (b): {raw_after:.2} s = {:.0} MB/s; reference = the faster run, {raw_mb_s:.0} MB/s",
        mb_s(raw_bytes, raw_after)
    );
    for r in &async_results {
        println!(
            "    {}: {:.0}% of raw, {:.0}% through the final flush",
            body_label(r.body),
            100.0 * mb_s(r.bytes, r.append_secs) / raw_mb_s,
            100.0 * mb_s(r.bytes, r.durable_secs) / raw_mb_s,
        );
    }
    let a1k = async_results.iter().find(|r| r.body == 1024);
    let async_ratio = a1k
        .map(|r| mb_s(r.bytes, r.append_secs) / raw_mb_s)
        .unwrap_or(0.0);
    let async_durable_ratio = a1k
        .map(|r| mb_s(r.bytes, r.durable_secs) / raw_mb_s)
        .unwrap_or(0.0);
    let async_pass = async_ratio >= ASYNC_TARGET;
    println!(
        "    target: ASYNC 1 KiB >= {:.0}% of raw: {:.0}% {} (through the final flush: {:.0}% {}){}",
        ASYNC_TARGET * 100.0,
        async_ratio * 100.0,
        pass(async_pass),
        async_durable_ratio * 100.0,
        pass(async_durable_ratio >= ASYNC_TARGET),
        quick_note(plan.quick),
    );

    // (c) SYNC_FLUSH group commit against one fdatasync per message.
    println!("\n(c) SYNC_FLUSH, 1 KiB bodies, writers = tokio tasks looping put_message");
    // Measured before and after the group-commit runs; the faster one is the
    // reference (the stricter ratio), as fsync latency drifts on virtual disks.
    let baseline_path = root.join("fsync-baseline");
    let baseline_before = fsync_baseline(baseline_path.clone(), plan.baseline_time).await?;
    println!(
        "    baseline: write 1 KiB + fdatasync per message: {baseline_before:.0} msgs/s ({:.3} ms each)",
        1e3 / baseline_before.max(1e-9)
    );
    println!(
        "    {:>7} {:>9} {:>10} {:>10} {:>9} {:>9} {:>9}",
        "writers", "msgs", "msgs/s", "fsyncs/s", "msgs/sync", "p50 ms", "p99 ms"
    );
    let mut sync_results = Vec::new();
    for w in &plan.sync_writers {
        let dir = root.join(format!("sync-{w}"));
        let r = sync_run(&dir, *w, plan.sync_time).await?;
        remove_dir(&dir)?;
        println!(
            "    {:>7} {:>9} {:>10.0} {:>10.0} {:>9.1} {:>9.2} {:>9.2}",
            r.writers,
            r.msgs,
            per_s(r.msgs, r.secs),
            per_s(r.flushes, r.secs),
            r.msgs as f64 / r.flushes.max(1) as f64,
            r.p50_us as f64 / 1e3,
            r.p99_us as f64 / 1e3,
        );
        if r.timeouts > 0 {
            println!(
                "            {} puts returned FLUSH_DISK_TIMEOUT",
                r.timeouts
            );
        }
        sync_results.push(r);
    }
    let baseline_after = fsync_baseline(baseline_path, plan.baseline_time).await?;
    let baseline = baseline_before.max(baseline_after);
    println!(
        "    baseline again: {baseline_after:.0} msgs/s; reference = the faster, {baseline:.0} msgs/s"
    );
    let s256 = sync_results.iter().find(|r| r.writers == 256);
    for r in &sync_results {
        println!(
            "    {} writers: {:.1}x the baseline",
            r.writers,
            per_s(r.msgs, r.secs) / baseline.max(1e-9)
        );
    }
    let sync_ratio = s256
        .map(|r| per_s(r.msgs, r.secs) / baseline.max(1e-9))
        .unwrap_or(0.0);
    let sync_pass = sync_ratio >= SYNC_TARGET;
    println!(
        "    target: SYNC 256 writers >= {SYNC_TARGET:.0}x one fsync per message: {sync_ratio:.1}x {}{}",
        pass(sync_pass),
        quick_note(plan.quick),
    );

    // (d) Read back the 1 KiB run.
    let get = match kept {
        Some((store, msgs, bytes)) => {
            let r = get_run(&store, msgs, bytes / msgs.max(1)).await?;
            shutdown(store).await?;
            remove_dir(&root.join("async-1024"))?;
            Some(r)
        }
        None => None,
    };
    if let Some(g) = &get {
        println!(
            "\n(d) get_message(topic, queue, offset, 32) over the 1 KiB run (page cache warm)"
        );
        println!(
            "    {} msgs in {:.2} s = {:.0} msgs/s, {:.0} MB/s",
            g.msgs,
            g.secs,
            per_s(g.msgs, g.secs),
            mb_s(g.bytes, g.secs)
        );
    }

    // (e) Crash recovery.
    println!(
        "\n(e) crash recovery: a child appends 1 KiB messages with ASYNC_FLUSH and abort()s; we time MessageStore::open"
    );
    // The log of the data runs ends just past a segment boundary, so their
    // last segment is almost empty; the one-message run with the same segment
    // size measures what that empty tail costs by itself.
    let mut empties = Vec::new();
    for seg in &plan.empty_segments {
        let r = recovery_run(&root.join(format!("crash-empty-{seg}")), 1, *seg, false).await?;
        println!(
            "    one-message log, {} MiB segment: open took {:.3} s (cost of the segment's empty tail)",
            seg / MIB,
            r.open_secs
        );
        empties.push((*seg, r));
    }
    // Seconds per byte of empty segment tail, to be taken out of the data runs.
    let tail_cost = empties
        .iter()
        .find(|(seg, _)| *seg == plan.recovery_segment)
        .map(|(seg, r)| r.open_secs / (seg - r.bytes % seg) as f64)
        .unwrap_or(0.0);
    let warm = recovery_run(
        &root.join("crash-warm"),
        plan.recovery_bytes,
        plan.recovery_segment,
        false,
    )
    .await?;
    print_recovery("process crash, page cache warm", &warm, tail_cost);
    let cold = recovery_run(
        &root.join("crash-cold"),
        plan.recovery_bytes,
        plan.recovery_segment,
        true,
    )
    .await?;
    print_recovery("files synced + evicted (cold cache)", &cold, tail_cost);
    println!("    no checkpoint after open, so recovery re-verifies and re-dispatches the whole log (worst case)");

    let async_json = |body: usize| {
        async_results.iter().find(|r| r.body == body).map(|r| {
            (
                round(per_s(r.msgs, r.append_secs), 0),
                round(mb_s(r.bytes, r.append_secs), 1),
                round(mb_s(r.bytes, r.durable_secs), 1),
            )
        })
    };
    let sync_json = |w: usize| {
        sync_results.iter().find(|r| r.writers == w).map(|r| {
            (
                round(per_s(r.msgs, r.secs), 0),
                round(per_s(r.flushes, r.secs), 0),
            )
        })
    };
    let (a128, a1, a4) = (async_json(128), async_json(1024), async_json(4096));
    let (s1, s16, s256) = (sync_json(1), sync_json(16), sync_json(256));
    let summary = serde_json::json!({
        "quick": plan.quick,
        "raw_mb_s": round(raw_mb_s, 1),
        "raw_runs_mb_s": [round(mb_s(raw_bytes, raw_before), 1), round(mb_s(raw_bytes, raw_after), 1)],
        "async_128_msgs_s": a128.map(|a| a.0),
        "async_128_mb_s": a128.map(|a| a.1),
        "async_1k_msgs_s": a1.map(|a| a.0),
        "async_1k_mb_s": a1.map(|a| a.1),
        "async_1k_durable_mb_s": a1.map(|a| a.2),
        "async_1k_ratio": round(async_ratio, 3),
        "async_1k_durable_ratio": round(async_durable_ratio, 3),
        "async_4k_msgs_s": a4.map(|a| a.0),
        "async_4k_mb_s": a4.map(|a| a.1),
        "fsync_baseline_msgs_s": round(baseline, 0),
        "fsync_baseline_runs_msgs_s": [round(baseline_before, 0), round(baseline_after, 0)],
        "sync_1_msgs_s": s1.map(|s| s.0),
        "sync_16_msgs_s": s16.map(|s| s.0),
        "sync_256_msgs_s": s256.map(|s| s.0),
        "sync_256_fsyncs_s": s256.map(|s| s.1),
        "sync_256_ratio": round(sync_ratio, 1),
        "get_1k_msgs_s": get.as_ref().map(|g| round(per_s(g.msgs, g.secs), 0)),
        "get_1k_mb_s": get.as_ref().map(|g| round(mb_s(g.bytes, g.secs), 1)),
        "recovery_s_per_gib": round(warm.secs_per_gib(), 3),
        "recovery_cold_s_per_gib": round(cold.secs_per_gib(), 3),
        "recovery_bytes": warm.bytes,
        "recovery_net_s_per_gib": round(warm.net_secs_per_gib(tail_cost), 3),
        "recovery_cold_net_s_per_gib": round(cold.net_secs_per_gib(tail_cost), 3),
        "recovery_segment_mib": plan.recovery_segment / MIB,
        "recovery_empty_log_s": empties
            .iter()
            .map(|(seg, r)| ((seg / MIB).to_string(), serde_json::Value::from(round(r.open_secs, 3))))
            .collect::<serde_json::Map<_, _>>(),
        "async_target_pass": async_pass,
        "sync_target_pass": sync_pass,
    });
    println!("\nSUMMARY {summary}");
    Ok(())
}

fn quick_note(quick: bool) -> &'static str {
    if quick {
        " [--quick: runs too small to judge]"
    } else {
        ""
    }
}

fn body_label(body: usize) -> String {
    if body >= 1024 && body.is_power_of_two() {
        format!("{} KiB", body / 1024)
    } else {
        format!("{body} B")
    }
}

fn remove_dir(dir: &Path) -> Result<()> {
    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
}

fn mem_total_gib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / (1024.0 * 1024.0))
}

/// An untimed raw write of `bytes`, so the next timed run finds page-cache
/// memory already backed by the host (see (a) in `run`).
async fn prewarm(root: &Path, bytes: u64) -> Result<()> {
    raw_write(root.join("prewarm"), bytes).await.map(|_| ())
}

async fn raw_write(path: PathBuf, bytes: u64) -> Result<f64> {
    tokio::task::spawn_blocking(move || raw_write_blocking(&path, bytes))
        .await
        .context("raw write task")?
}

/// Write `bytes` in 1 MiB chunks to a new file, fsync once; returns seconds.
fn raw_write_blocking(path: &Path, bytes: u64) -> Result<f64> {
    let chunk = random_bytes(MIB as usize);
    let started = Instant::now();
    let mut f =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(MIB) as usize;
        f.write_all(&chunk[..n])
            .with_context(|| format!("writing {}", path.display()))?;
        left -= n as u64;
    }
    f.sync_all()
        .with_context(|| format!("fsync {}", path.display()))?;
    let secs = started.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    Ok(secs)
}

async fn fsync_baseline(path: PathBuf, time: Duration) -> Result<f64> {
    tokio::task::spawn_blocking(move || fsync_baseline_blocking(&path, time))
        .await
        .context("fsync baseline task")?
}

/// Append 1 KiB + fdatasync per message for `time`; returns messages/s.
fn fsync_baseline_blocking(path: &Path, time: Duration) -> Result<f64> {
    let body = random_bytes(1024);
    let mut f =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < time {
        f.write_all(&body)
            .with_context(|| format!("writing {}", path.display()))?;
        f.sync_data()
            .with_context(|| format!("fdatasync {}", path.display()))?;
        n += 1;
    }
    let rate = per_s(n, started.elapsed().as_secs_f64());
    drop(f);
    std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    Ok(rate)
}

struct AsyncResult {
    body: usize,
    msgs: u64,
    bytes: u64,
    append_secs: f64,
    durable_secs: f64,
}

async fn async_run(
    dir: &Path,
    body: usize,
    count: u64,
    writers: u64,
) -> Result<(AsyncResult, MessageStore)> {
    let store = open_store(store_config(dir, FlushDiskType::AsyncFlush, GIB)).await?;
    let templates = templates(body);
    let before = store.stats();
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for w in 0..writers {
        let store = store.clone();
        let templates = templates.clone();
        // Writer w puts messages w, w + writers, w + 2 * writers, ...
        let n = count / writers + u64::from(w < count % writers);
        tasks.spawn(async move {
            for i in 0..n {
                let m = templates[((w + i) % QUEUES as u64) as usize].clone();
                let r = store.put_message(m).await.context("put_message")?;
                ensure!(r.status == PutStatus::PutOk, "put returned {:?}", r.status);
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.context("writer task")??;
    }
    let append_secs = started.elapsed().as_secs_f64();
    wait_flushed(&store, Duration::from_secs(300)).await?;
    let durable_secs = started.elapsed().as_secs_f64();
    let after = store.stats();
    Ok((
        AsyncResult {
            body,
            msgs: after.puts - before.puts,
            bytes: after.put_bytes - before.put_bytes,
            append_secs,
            durable_secs,
        },
        store,
    ))
}

async fn wait_flushed(store: &MessageStore, limit: Duration) -> Result<()> {
    let started = Instant::now();
    while store.flushed_physical_offset() < store.max_physical_offset() {
        ensure!(
            started.elapsed() < limit,
            "flusher did not catch up within {limit:?}: flushed {} of {}",
            store.flushed_physical_offset(),
            store.max_physical_offset()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

struct SyncResult {
    writers: usize,
    msgs: u64,
    secs: f64,
    flushes: u64,
    timeouts: u64,
    p50_us: u32,
    p99_us: u32,
}

async fn sync_run(dir: &Path, writers: usize, time: Duration) -> Result<SyncResult> {
    let store = open_store(store_config(dir, FlushDiskType::SyncFlush, GIB)).await?;
    let templates = templates(1024);
    let before = store.stats();
    let started = Instant::now();
    let deadline = started + time;
    let mut tasks = JoinSet::new();
    for w in 0..writers {
        let store = store.clone();
        let msg = templates[w % templates.len()].clone();
        tasks.spawn(async move {
            let mut lat = Vec::new();
            let mut timeouts = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let r = store
                    .put_message(msg.clone())
                    .await
                    .context("put_message")?;
                lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                if r.status == PutStatus::FlushDiskTimeout {
                    timeouts += 1;
                }
            }
            anyhow::Ok((lat, timeouts))
        });
    }
    let mut lat = Vec::new();
    let mut timeouts = 0;
    while let Some(r) = tasks.join_next().await {
        let (l, t) = r.context("writer task")??;
        lat.extend(l);
        timeouts += t;
    }
    let secs = started.elapsed().as_secs_f64();
    let after = store.stats();
    shutdown(store).await?;
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    Ok(SyncResult {
        writers,
        msgs: after.puts - before.puts,
        secs,
        flushes: after.flushes - before.flushes,
        timeouts,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    })
}

struct GetRun {
    msgs: u64,
    bytes: u64,
    secs: f64,
}

async fn get_run(store: &MessageStore, expected: u64, entry_len: u64) -> Result<GetRun> {
    let s = store.clone();
    tokio::task::spawn_blocking(move || s.dispatch_now())
        .await
        .context("dispatch task")?
        .context("dispatch_now")?;
    let s = store.clone();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let (mut msgs, mut bytes) = (0u64, 0u64);
        for q in 0..QUEUES {
            let mut offset = s.min_offset_in_queue(TOPIC, q);
            loop {
                let r = s.get_message(TOPIC, q, offset, 32, None);
                match r.status {
                    GetStatus::Found => {
                        for m in &r.messages {
                            ensure!(
                                m.data.len() as u64 == entry_len,
                                "queue {q} offset {}: {} bytes, expected {entry_len}",
                                m.queue_offset,
                                m.data.len()
                            );
                            bytes += m.data.len() as u64;
                        }
                        msgs += r.messages.len() as u64;
                        offset = r.next_begin_offset;
                    }
                    GetStatus::OffsetOverflowOne => break,
                    other => bail!("get_message queue {q} offset {offset}: {other:?}"),
                }
            }
        }
        let secs = started.elapsed().as_secs_f64();
        ensure!(
            msgs == expected,
            "read back {msgs} messages, wrote {expected}"
        );
        Ok(GetRun { msgs, bytes, secs })
    })
    .await
    .context("get task")?
}

struct RecoveryRun {
    bytes: u64,
    segment: u64,
    msgs: u64,
    open_secs: f64,
}

impl RecoveryRun {
    fn gib(&self) -> f64 {
        (self.bytes as f64 / GIB as f64).max(1e-12)
    }

    fn secs_per_gib(&self) -> f64 {
        self.open_secs / self.gib()
    }

    /// Bytes between the end of the log and the end of its last segment.
    fn tail_bytes(&self) -> u64 {
        (self.segment - self.bytes % self.segment) % self.segment
    }

    /// Seconds per GiB once the empty tail's cost (`tail_cost` seconds per
    /// tail byte) is taken out.
    fn net_secs_per_gib(&self, tail_cost: f64) -> f64 {
        (self.open_secs - tail_cost * self.tail_bytes() as f64).max(0.0) / self.gib()
    }
}

fn print_recovery(label: &str, r: &RecoveryRun, tail_cost: f64) {
    println!(
        "    {label}: {} MiB, {} msgs recovered in {:.3} s = {:.2} s/GiB; {:.2} s/GiB without the {} MiB empty tail",
        r.bytes / MIB,
        r.msgs,
        r.open_secs,
        r.secs_per_gib(),
        r.net_secs_per_gib(tail_cost),
        r.tail_bytes() / MIB,
    );
}

/// Crash a child writer on `dir`, then time the recovering open.
async fn recovery_run(dir: &Path, bytes: u64, segment: u64, cold: bool) -> Result<RecoveryRun> {
    let exe = std::env::current_exe().context("locating the ferrymq executable")?;
    let out = tokio::process::Command::new(exe)
        .arg("bench")
        .arg("store-crash-writer")
        .arg("--dir")
        .arg(dir)
        .arg("--bytes")
        .arg(bytes.to_string())
        .arg("--segment-size")
        .arg(segment.to_string())
        .output()
        .await
        .context("running the crash writer")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.signal() != Some(SIGABRT) {
        bail!(
            "crash writer should abort, it ended with {}: {}{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let field = |name: &str| -> Result<u64> {
        stdout
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            .with_context(|| format!("crash writer did not report {name}: {stdout}"))
    };
    let (end, written) = (field("end_offset")?, field("messages")?);
    ensure!(
        dir.join("abort").exists(),
        "crash writer left no abort marker"
    );
    if cold {
        let d = dir.to_path_buf();
        tokio::task::spawn_blocking(move || evict(&d))
            .await
            .context("evict task")??;
    }

    let cfg = crash_config(dir, segment);
    let started = Instant::now();
    let store = open_store(cfg).await?;
    let open_secs = started.elapsed().as_secs_f64();
    ensure!(
        store.recovery_kind() == RecoveryKind::Crash,
        "open saw {:?}, expected a crash",
        store.recovery_kind()
    );
    let msgs: u64 = store
        .queues()
        .iter()
        .map(|(t, q)| (store.max_offset_in_queue(t, *q) - store.min_offset_in_queue(t, *q)) as u64)
        .sum();
    // A process crash loses nothing that was appended: the page cache has it.
    ensure!(
        store.max_physical_offset() == end && msgs == written,
        "recovered {msgs} msgs ending at {}, the writer wrote {written} ending at {end}",
        store.max_physical_offset()
    );
    shutdown(store).await?;
    remove_dir(dir)?;
    Ok(RecoveryRun {
        bytes: end,
        segment,
        msgs,
        open_secs,
    })
}

/// Make every file under `dir` durable, then drop it from the page cache, so
/// the next open reads from the disk as after a machine restart.
fn evict(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        if path.is_dir() {
            evict(&path)?;
            continue;
        }
        let f =
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        f.sync_all()
            .with_context(|| format!("fsync {}", path.display()))?;
        rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed)
            .with_context(|| format!("fadvise {}", path.display()))?;
    }
    Ok(())
}

/// The hidden child of (e): append, report, abort without shutdown.
pub async fn crash_writer(args: CrashWriterArgs) -> Result<()> {
    // A core file of every crash would litter the working directory.
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Core,
        rustix::process::Rlimit {
            current: Some(0),
            maximum: rustix::process::getrlimit(rustix::process::Resource::Core).maximum,
        },
    );
    let store = open_store(crash_config(&args.dir, args.segment_size)).await?;
    let templates = templates(1024);
    let mut n = 0u64;
    while store.stats().put_bytes < args.bytes {
        let m = templates[(n % QUEUES as u64) as usize].clone();
        store.put_message(m).await.context("put_message")?;
        n += 1;
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "end_offset={} messages={n}",
        store.max_physical_offset()
    )?;
    out.flush()?;
    std::process::abort()
}
