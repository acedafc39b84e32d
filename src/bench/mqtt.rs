//! `ferrymq bench mqtt`: an emqtt-bench-like MQTT load generator that works with any
//! broker (ferrymq, Mosquitto, rumqttd, ...).
//!
//! Pub/sub mode: subscribers connect and subscribe first, then publishers connect,
//! then every publisher starts at the same instant. Each client is a rumqttc
//! (MQTT 3.1.1) client on its own tokio tasks. Every payload starts with a header
//! (magic, publisher index, sequence number, send time), so receivers compute
//! the end-to-end latency and count lost and duplicate deliveries per publisher.
//!
//! Connection mode (`--conn-mode`): N idle MQTT 3.1.1 clients are opened with a
//! minimal raw CONNECT/CONNACK exchange on sockets bound to 127.0.0.1..127.0.0.K
//! (round robin, so 50,000 connections fit in the ephemeral port range), kept
//! open, and the connect rate and the broker's RSS per connection are reported.
//!
//! At QoS 1/2 every publisher also measures the publish → acknowledgement latency:
//! the time from rumqttc handing the PUBLISH to the socket (`Outgoing::Publish`)
//! to its PUBACK (QoS 1) or PUBREC (QoS 2), keyed by packet id.
//!
//! With `--broker-pid` the broker's CPU seconds (utime + stime) over the measured
//! window come from /proc/PID/stat. The last stdout line is `SUMMARY {json}`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS, SubscribeReasonCode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::task::JoinSet;

/// Payload header: magic, publisher index (u32), sequence (u64), send time in ns
/// since the run's epoch (u64), little endian.
const MAGIC: &[u8; 4] = b"FMQB";
const HEADER_LEN: usize = 24;
/// Latencies are recorded in microseconds, up to 10 minutes.
const MAX_LATENCY_US: u64 = 600_000_000;
/// Sequence numbers beyond this are treated as foreign payloads (bounds the bitsets).
const MAX_SEQ: u64 = 1 << 32;
/// Linux reports /proc/PID/stat times in USER_HZ, which is 100 on every architecture.
const USER_HZ: f64 = 100.0;

/// How publishers and subscribers are mapped onto topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TopicMode {
    /// Publisher i → `bench/i`; subscriber i subscribes `bench/i`.
    Distinct,
    /// Every publisher → `bench/0`; every subscriber subscribes `bench/0`.
    Fanout,
    /// Same topology as fanout (many publishers → one topic); named for intent.
    Fanin,
    /// Every publisher → `bench/0`; subscribers share `$share/g/bench/0`.
    Shared,
}

impl TopicMode {
    fn name(self) -> &'static str {
        match self {
            TopicMode::Distinct => "distinct",
            TopicMode::Fanout => "fanout",
            TopicMode::Fanin => "fanin",
            TopicMode::Shared => "shared",
        }
    }

    fn pub_topic(self, i: u32) -> String {
        match self {
            TopicMode::Distinct => format!("bench/{i}"),
            _ => "bench/0".to_string(),
        }
    }

    fn sub_filter(self, i: u32) -> String {
        match self {
            TopicMode::Distinct => format!("bench/{i}"),
            TopicMode::Fanout | TopicMode::Fanin => "bench/0".to_string(),
            TopicMode::Shared => "$share/g/bench/0".to_string(),
        }
    }

    /// How many deliveries one message of publisher `i` should cause.
    fn deliveries_per_message(self, i: u32, subscribers: u32) -> u64 {
        match self {
            TopicMode::Distinct => u64::from(i < subscribers),
            TopicMode::Fanout | TopicMode::Fanin => u64::from(subscribers),
            TopicMode::Shared => u64::from(subscribers > 0),
        }
    }
}

/// Arguments of `ferrymq bench mqtt`.
#[derive(Debug, Clone, Args)]
pub struct MqttBenchArgs {
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker MQTT port.
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// Publishing clients.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub publishers: u32,
    /// Subscribing clients.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub subscribers: u32,
    /// Topic layout.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = TopicMode::Distinct)]
    pub topics: TopicMode,
    /// QoS of publishes and subscriptions.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Payload bytes per message (at least 24: the header).
    #[arg(long, value_name = "BYTES", default_value_t = 1024)]
    pub payload: usize,
    /// Total publish rate over all publishers, messages/s (0 = as fast as possible).
    #[arg(long, value_name = "MSGS_PER_SEC", default_value_t = 0)]
    pub rate: u64,
    /// Total messages over all publishers [default: 100000 unless --duration].
    #[arg(long, value_name = "N", conflicts_with = "duration")]
    pub messages: Option<u64>,
    /// Publish for this many seconds instead of a message count.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Outgoing QoS 1/2 publishes a client may have unacknowledged.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub inflight: u16,
    /// Keep alive of every client, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub keep_alive: u16,
    /// Clients connecting at the same time (Mosquitto listens with a backlog of
    /// 100: more than that overflows its accept queue, and every dropped SYN costs
    /// a 1 s retransmission).
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Give up waiting for deliveries after this long without progress.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub drain_timeout: f64,
    /// Hard bound on the publish + drain phase, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300.0)]
    pub max_time: f64,
    /// Client id prefix (the process id is appended, so runs never collide).
    #[arg(long, default_value = "fmqbench")]
    pub client_prefix: String,
    /// Broker process id: its CPU seconds (and RSS in conn mode) are reported.
    #[arg(long, value_name = "PID")]
    pub broker_pid: Option<u32>,
    /// Free-form label copied into the summary (e.g. the broker's name).
    #[arg(long)]
    pub label: Option<String>,
    /// Connection mode: open --connections idle clients and keep them open.
    #[arg(long)]
    pub conn_mode: bool,
    /// Idle clients to open in connection mode.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub connections: u32,
    /// Source addresses 127.0.0.1..127.0.0.K in connection mode (0 = one per 20,000 connections).
    #[arg(long, value_name = "K", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=254))]
    pub sources: u32,
    /// First source address in connection mode: 127.0.0.B (B + K - 1 must stay below 255).
    #[arg(long, value_name = "B", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=254))]
    pub source_base: u32,
    /// Seconds to hold the idle connections before measuring RSS.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    pub hold: f64,
}

/// Run the generator; the last stdout line is `SUMMARY {json}`.
pub async fn run(args: MqttBenchArgs) -> Result<()> {
    let nofile = raise_nofile_limit();
    if args.conn_mode {
        run_conn(&args, nofile).await
    } else {
        run_pubsub(&args, nofile).await
    }
}

/// Raise RLIMIT_NOFILE's soft limit to the hard limit; returns the new soft limit.
fn raise_nofile_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        lim.current = lim.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, lim) {
            eprintln!("warning: cannot raise RLIMIT_NOFILE: {e}");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------
// /proc readers

/// utime + stime of a process, seconds.
fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: split after it.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// VmRSS of a process, bytes.
fn proc_rss_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn self_cpu_secs() -> Option<f64> {
    proc_cpu_secs(std::process::id())
}

fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}

/// 1234567 → "1,234,567".
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    // Digits left before the next comma.
    let mut left = s.len() % 3;
    if left == 0 {
        left = 3;
    }
    for c in s.chars() {
        if left == 0 {
            out.push(',');
            left = 3;
        }
        out.push(c);
        left -= 1;
    }
    out
}

// ---------------------------------------------------------------------------
// Pub/sub mode

/// Counters shared by every client task.
#[derive(Default)]
struct Shared {
    /// Messages handed to the client library by publishers.
    sent: AtomicU64,
    /// Publishes acknowledged to publishers (PUBACK at QoS 1, PUBCOMP at QoS 2).
    acked: AtomicU64,
    /// Nanoseconds (since epoch) of the last acknowledgement counted in `acked`.
    last_ack_ns: AtomicU64,
    /// Benchmark payloads received by subscribers.
    received: AtomicU64,
    /// Connection errors after the client had connected.
    errors: AtomicU64,
    /// Nanoseconds (since epoch) of the last publish handed over.
    last_send_ns: AtomicU64,
    /// First error message seen, for the report.
    first_error: Mutex<Option<String>>,
}

impl Shared {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut g) = self.first_error.lock() {
            if g.is_none() {
                *g = Some(what);
            }
        }
    }
}

/// What one subscriber saw.
struct SubResult {
    hist: Histogram<u64>,
    received: u64,
    unique: u64,
    foreign: u64,
    first_ns: Option<u64>,
    last_ns: Option<u64>,
}

fn qos_of(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn mqtt_options(args: &MqttBenchArgs, id: String) -> MqttOptions {
    let mut o = MqttOptions::new(id, args.host.clone(), args.port);
    o.set_keep_alive(Duration::from_secs(u64::from(args.keep_alive.max(5))));
    o.set_clean_session(true);
    let max = (args.payload + 1024).max(64 * 1024);
    o.set_max_packet_size(max, max);
    o.set_inflight(args.inflight.max(1));
    o.set_request_channel_capacity(1024);
    o
}

/// Poll `el` until CONNACK (and SUBACK when subscribing); errors out on failure.
async fn establish(el: &mut EventLoop, want_suback: bool) -> Result<(), String> {
    let mut connected = false;
    loop {
        match el.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected = true;
                if !want_suback {
                    return Ok(());
                }
            }
            Ok(Event::Incoming(Packet::SubAck(s))) if connected => {
                return match s.return_codes.first() {
                    Some(SubscribeReasonCode::Success(_)) => Ok(()),
                    other => Err(format!("subscription refused: {other:?}")),
                };
            }
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Tracks which (publisher, seq) a subscriber has seen, to count duplicates.
#[derive(Default)]
struct Seen {
    bits: Vec<Vec<u64>>,
}

impl Seen {
    /// Marks a delivery; returns true the first time.
    fn insert(&mut self, publisher: usize, seq: u64) -> bool {
        if self.bits.len() <= publisher {
            self.bits.resize_with(publisher + 1, Vec::new);
        }
        let v = &mut self.bits[publisher];
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if v.len() <= word {
            v.resize(word + 1, 0);
        }
        let fresh = v[word] & (1 << bit) == 0;
        v[word] |= 1 << bit;
        fresh
    }
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)?.try_into().ok().map(u32::from_le_bytes)
}

fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8)?.try_into().ok().map(u64::from_le_bytes)
}

/// (publisher, seq, send ns) of a benchmark payload; None for anything else.
fn parse_header(b: &[u8], publishers: u32) -> Option<(u32, u64, u64)> {
    if b.get(..4)? != MAGIC {
        return None;
    }
    let p = read_u32(b, 4)?;
    let seq = read_u64(b, 8)?;
    let ts = read_u64(b, 16)?;
    (p < publishers && seq < MAX_SEQ).then_some((p, seq, ts))
}

fn new_hist() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).context("histogram")
}

#[allow(clippy::too_many_arguments)]
async fn subscriber(
    args: Arc<MqttBenchArgs>,
    idx: u32,
    epoch: Instant,
    shared: Arc<Shared>,
    connect_gate: Arc<Semaphore>,
    ready: oneshot::Sender<Result<(), String>>,
    mut stop: watch::Receiver<bool>,
) -> Result<SubResult> {
    let id = format!("{}-{}-s{idx}", args.client_prefix, std::process::id());
    let (client, mut el) = AsyncClient::new(mqtt_options(&args, id), 1024);
    let filter = args.topics.sub_filter(idx);
    let setup = async {
        let _permit = connect_gate.acquire().await.map_err(|e| e.to_string())?;
        client
            .subscribe(filter.clone(), qos_of(args.qos))
            .await
            .map_err(|e| e.to_string())?;
        establish(&mut el, true).await
    };
    let r = setup.await;
    let ok = r.is_ok();
    let _ = ready.send(r);
    let mut res = SubResult {
        hist: new_hist()?,
        received: 0,
        unique: 0,
        foreign: 0,
        first_ns: None,
        last_ns: None,
    };
    if !ok {
        return Ok(res);
    }
    let mut seen = Seen::default();
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            ev = el.poll() => match ev {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let now = epoch.elapsed().as_nanos() as u64;
                    let Some((publisher, seq, ts)) = parse_header(&p.payload, args.publishers) else {
                        res.foreign += 1;
                        continue;
                    };
                    res.received += 1;
                    shared.received.fetch_add(1, Ordering::Relaxed);
                    if seen.insert(publisher as usize, seq) {
                        res.unique += 1;
                    }
                    res.hist.saturating_record((now.saturating_sub(ts) / 1000).max(1));
                    res.first_ns.get_or_insert(now);
                    res.last_ns = Some(now);
                }
                Ok(_) => {}
                Err(e) => {
                    shared.error(format!("subscriber {idx}: {e}"));
                    if *stop.borrow() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    // rumqttc reconnects on the next poll with a clean session:
                    // subscribe again so the rest of the run still counts.
                    let _ = client.try_subscribe(filter.clone(), qos_of(args.qos));
                }
            },
        }
    }
    let _ = client.try_disconnect();
    Ok(res)
}

/// Publish → acknowledgement latency of one publisher: when each packet id went
/// out (`Outgoing::Publish`), recorded into a histogram at its PUBACK (QoS 1) or
/// PUBREC (QoS 2). rumqttc hands out packet ids 1..=inflight, so a flat array
/// indexed by packet id is enough; a packet id reused before its ack (a
/// reconnection resending it) just restarts its clock.
struct AckClock {
    /// Send time (ns since epoch) + 1 per packet id; 0 = nothing outstanding.
    sent_at: Vec<u64>,
    hist: Histogram<u64>,
}

impl AckClock {
    fn new(inflight: u16) -> Result<Self> {
        Ok(Self {
            sent_at: vec![0; usize::from(inflight) + 2],
            hist: new_hist()?,
        })
    }

    fn sent(&mut self, pkid: u16, now_ns: u64) {
        if pkid == 0 {
            return;
        }
        let i = usize::from(pkid);
        if i >= self.sent_at.len() {
            self.sent_at.resize(i + 1, 0);
        }
        self.sent_at[i] = now_ns + 1;
    }

    fn acked(&mut self, pkid: u16, now_ns: u64) {
        if let Some(t) = self.sent_at.get_mut(usize::from(pkid)) {
            if *t != 0 {
                let us = now_ns.saturating_sub(*t - 1) / 1000;
                self.hist.saturating_record(us.max(1));
                *t = 0;
            }
        }
    }
}

/// Per-publisher outcome.
struct PubResult {
    sent: u64,
    /// The publisher's event loop task: ends at stop with its ack latencies.
    acks: Option<tokio::task::JoinHandle<Option<Histogram<u64>>>>,
}

#[allow(clippy::too_many_arguments)]
async fn publisher(
    args: Arc<MqttBenchArgs>,
    idx: u32,
    quota: Option<u64>,
    epoch: Instant,
    shared: Arc<Shared>,
    connect_gate: Arc<Semaphore>,
    ready: oneshot::Sender<Result<(), String>>,
    mut start: watch::Receiver<Option<Instant>>,
    stop: watch::Receiver<bool>,
) -> Result<PubResult> {
    let id = format!("{}-{}-p{idx}", args.client_prefix, std::process::id());
    let (client, mut el) = AsyncClient::new(mqtt_options(&args, id), 1024);
    let r = {
        let permit = connect_gate.acquire().await;
        match permit {
            Ok(_p) => establish(&mut el, false).await,
            Err(e) => Err(e.to_string()),
        }
    };
    let ok = r.is_ok();
    let _ = ready.send(r);
    if !ok {
        return Ok(PubResult {
            sent: 0,
            acks: None,
        });
    }
    // The event loop runs on its own task: it writes the publishes, counts the
    // acknowledgements and times them.
    let el_shared = shared.clone();
    let mut el_stop = stop.clone();
    let mut clock = AckClock::new(args.inflight.max(1))?;
    let qos2 = args.qos == 2;
    let el_task = tokio::spawn(async move {
        let now_ns = || epoch.elapsed().as_nanos() as u64;
        let count_ack = |shared: &Shared, now: u64| {
            shared.acked.fetch_add(1, Ordering::Relaxed);
            shared.last_ack_ns.fetch_max(now, Ordering::Relaxed);
        };
        loop {
            tokio::select! {
                biased;
                _ = el_stop.changed() => break,
                ev = el.poll() => match ev {
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => clock.sent(pkid, now_ns()),
                    Ok(Event::Incoming(Packet::PubAck(a))) => {
                        let now = now_ns();
                        clock.acked(a.pkid, now);
                        count_ack(&el_shared, now);
                    }
                    Ok(Event::Incoming(Packet::PubRec(r))) => clock.acked(r.pkid, now_ns()),
                    Ok(Event::Incoming(Packet::PubComp(_))) if qos2 => {
                        count_ack(&el_shared, now_ns());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        el_shared.error(format!("publisher {idx}: {e}"));
                        if *el_stop.borrow() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
            }
        }
        clock.hist
    });

    let Ok(t0) = start
        .wait_for(Option::is_some)
        .await
        .map(|v| v.unwrap_or_else(Instant::now))
    else {
        el_task.abort();
        return Ok(PubResult {
            sent: 0,
            acks: None,
        });
    };
    let per_pub_rate = if args.rate > 0 {
        args.rate as f64 / f64::from(args.publishers.max(1))
    } else {
        0.0
    };
    let end_by = t0 + Duration::from_secs_f64(args.duration.unwrap_or(args.max_time));
    let topic = args.topics.pub_topic(idx);
    let qos = qos_of(args.qos);
    let mut template = BytesMut::with_capacity(args.payload);
    template.put_slice(MAGIC);
    template.put_u32_le(idx);
    template.resize(args.payload, b'x');
    let mut seq: u64 = 0;
    loop {
        if quota.is_some_and(|q| seq >= q) || *stop.borrow() {
            break;
        }
        if per_pub_rate > 0.0 {
            let due = t0 + Duration::from_secs_f64(seq as f64 / per_pub_rate);
            if due >= end_by {
                break;
            }
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
        } else if seq & 63 == 0 && Instant::now() >= end_by {
            break;
        }
        let mut b = template.clone();
        let now = epoch.elapsed().as_nanos() as u64;
        b[8..16].copy_from_slice(&seq.to_le_bytes());
        b[16..24].copy_from_slice(&now.to_le_bytes());
        let payload: Bytes = b.freeze();
        if let Err(e) = client
            .publish_bytes(topic.clone(), qos, false, payload)
            .await
        {
            shared.error(format!("publisher {idx}: {e}"));
            break;
        }
        seq += 1;
        shared.sent.fetch_add(1, Ordering::Relaxed);
        shared.last_send_ns.fetch_max(now, Ordering::Relaxed);
    }
    // Keep the event loop running (it flushes the queue and counts acks) until stop.
    let acks = tokio::spawn(async move {
        let hist = el_task.await.ok();
        let _ = client.try_disconnect();
        hist
    });
    Ok(PubResult {
        sent: seq,
        acks: Some(acks),
    })
}

/// Start `n` clients through `spawn`, wait until each has connected (or failed).
async fn await_ready(
    what: &str,
    rx: Vec<oneshot::Receiver<Result<(), String>>>,
    limit: Duration,
) -> Result<f64> {
    let t = Instant::now();
    let n = rx.len();
    let mut failed = 0usize;
    let mut first: Option<String> = None;
    let wait_all = async {
        for r in rx {
            match r.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    failed += 1;
                    first.get_or_insert(e);
                }
                Err(_) => {
                    failed += 1;
                    first.get_or_insert_with(|| "task ended".to_string());
                }
            }
        }
    };
    if tokio::time::timeout(limit, wait_all).await.is_err() {
        bail!("{what}: not all {n} clients connected within {limit:?}");
    }
    if failed > 0 {
        bail!(
            "{what}: {failed} of {n} clients failed to connect: {}",
            first.unwrap_or_default()
        );
    }
    Ok(t.elapsed().as_secs_f64())
}

async fn run_pubsub(args: &MqttBenchArgs, nofile: u64) -> Result<()> {
    if args.payload < HEADER_LEN {
        bail!("--payload must be at least {HEADER_LEN} bytes");
    }
    if args.publishers == 0 {
        bail!("--publishers must be at least 1");
    }
    let total_messages = match (args.messages, args.duration) {
        (Some(n), _) => Some(n),
        (None, Some(_)) => None,
        (None, None) => Some(100_000),
    };
    let args = Arc::new(args.clone());
    let epoch = Instant::now();
    let shared = Arc::new(Shared::default());
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (start_tx, start_rx) = watch::channel(None::<Instant>);
    let connect_limit = Duration::from_secs(120);

    println!(
        "MQTT bench{}: {} topics, QoS {}, {} B payload, {} publishers -> {} subscribers, {}, rate {}",
        args.label
            .as_deref()
            .map(|l| format!(" [{l}]"))
            .unwrap_or_default(),
        args.topics.name(),
        args.qos,
        args.payload,
        args.publishers,
        args.subscribers,
        match total_messages {
            Some(n) => format!("{} messages", thousands(n)),
            None => format!("{} s", args.duration.unwrap_or_default()),
        },
        if args.rate > 0 {
            format!("{} msgs/s", thousands(args.rate))
        } else {
            "unlimited".to_string()
        }
    );

    // Subscribers first.
    let mut subs = Vec::new();
    let mut ready = Vec::new();
    for i in 0..args.subscribers {
        let (tx, rx) = oneshot::channel();
        ready.push(rx);
        subs.push(tokio::spawn(subscriber(
            args.clone(),
            i,
            epoch,
            shared.clone(),
            gate.clone(),
            tx,
            stop_rx.clone(),
        )));
    }
    let sub_secs = await_ready("subscribers", ready, connect_limit).await;
    let sub_secs = match sub_secs {
        Ok(s) => s,
        Err(e) => {
            let _ = stop_tx.send(true);
            return Err(e);
        }
    };

    let mut pubs = Vec::new();
    let mut ready = Vec::new();
    let p = u64::from(args.publishers);
    for i in 0..args.publishers {
        let quota = total_messages.map(|n| n / p + u64::from(u64::from(i) < n % p));
        let (tx, rx) = oneshot::channel();
        ready.push(rx);
        pubs.push(tokio::spawn(publisher(
            args.clone(),
            i,
            quota,
            epoch,
            shared.clone(),
            gate.clone(),
            tx,
            start_rx.clone(),
            stop_rx.clone(),
        )));
    }
    let pub_secs = match await_ready("publishers", ready, connect_limit).await {
        Ok(s) => s,
        Err(e) => {
            let _ = stop_tx.send(true);
            return Err(e);
        }
    };
    // Let subscriptions settle on brokers that apply them asynchronously.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let cpu0 = args.broker_pid.and_then(proc_cpu_secs);
    let self_cpu0 = self_cpu_secs();
    let t0 = Instant::now();
    let t0_ns = epoch.elapsed().as_nanos() as u64;
    let deadline = t0 + Duration::from_secs_f64(args.max_time);
    let _ = start_tx.send(Some(t0));

    // Publishers finish their quota (or the duration).
    let mut sent_per_pub = vec![0u64; args.publishers as usize];
    let mut ack_tasks = Vec::new();
    let publishing = async {
        for (i, h) in pubs.into_iter().enumerate() {
            match h.await {
                Ok(Ok(r)) => {
                    sent_per_pub[i] = r.sent;
                    ack_tasks.extend(r.acks);
                }
                Ok(Err(e)) => shared.error(format!("publisher {i}: {e}")),
                Err(e) => shared.error(format!("publisher {i}: {e}")),
            }
        }
    };
    let hard_stop = tokio::time::timeout(
        deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(5),
        publishing,
    )
    .await
    .is_err();
    if hard_stop {
        let _ = stop_tx.send(true);
        bail!("publishers did not finish within --max-time");
    }
    let publish_secs = (shared
        .last_send_ns
        .load(Ordering::Relaxed)
        .saturating_sub(t0_ns)) as f64
        / 1e9;
    let sent: u64 = sent_per_pub.iter().sum();
    let expected: u64 = sent_per_pub
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s * args
                .topics
                .deliveries_per_message(i as u32, args.subscribers)
        })
        .sum();

    // Drain: until everything arrived (and, at QoS 1/2, was acked), no progress
    // for --drain-timeout, or the hard deadline.
    let drain_timeout = Duration::from_secs_f64(args.drain_timeout);
    let mut last_progress = Instant::now();
    let mut last_seen = (0u64, 0u64);
    let mut timed_out = false;
    loop {
        let rcv = shared.received.load(Ordering::Relaxed);
        let ack = shared.acked.load(Ordering::Relaxed);
        if rcv >= expected && (args.qos == 0 || ack >= sent) {
            break;
        }
        if (rcv, ack) != last_seen {
            last_seen = (rcv, ack);
            last_progress = Instant::now();
        } else if last_progress.elapsed() >= drain_timeout || Instant::now() >= deadline {
            timed_out = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu1 = args.broker_pid.and_then(proc_cpu_secs);
    let self_cpu1 = self_cpu_secs();
    let _ = stop_tx.send(true);

    let mut hist = new_hist()?;
    let (mut received, mut unique, mut foreign) = (0u64, 0u64, 0u64);
    let mut last_ns: Option<u64> = None;
    let mut first_ns: Option<u64> = None;
    for h in subs {
        match h.await {
            Ok(Ok(r)) => {
                hist.add(&r.hist).context("merging histograms")?;
                received += r.received;
                unique += r.unique;
                foreign += r.foreign;
                last_ns = last_ns.max(r.last_ns);
                first_ns = match (first_ns, r.first_ns) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            Ok(Err(e)) => shared.error(format!("subscriber: {e}")),
            Err(e) => shared.error(format!("subscriber: {e}")),
        }
    }
    let mut ack_hist = new_hist()?;
    for h in ack_tasks {
        if let Ok(Some(h)) = h.await {
            ack_hist.add(&h).context("merging ack histograms")?;
        }
    }
    let acked = shared.acked.load(Ordering::Relaxed);
    // Acknowledged publishes per second: acks over the time to the last ack.
    let ack_secs = (acked > 0).then(|| {
        shared
            .last_ack_ns
            .load(Ordering::Relaxed)
            .saturating_sub(t0_ns) as f64
            / 1e9
    });
    let acked_rate = match ack_secs {
        Some(s) if s > 0.0 => acked as f64 / s,
        _ => 0.0,
    };
    let duplicates = received - unique;
    let lost = expected.saturating_sub(unique);
    let deliver_secs = last_ns.map(|l| l.saturating_sub(t0_ns) as f64 / 1e9);
    let delivered_rate = match deliver_secs {
        Some(s) if s > 0.0 => received as f64 / s,
        _ => 0.0,
    };
    let publish_rate = if publish_secs > 0.0 {
        sent as f64 / publish_secs
    } else {
        0.0
    };
    let ms = |q: f64| -> f64 {
        if hist.is_empty() {
            0.0
        } else {
            round(hist.value_at_quantile(q) as f64 / 1000.0, 3)
        }
    };
    let (p50, p99, p999) = (ms(0.50), ms(0.99), ms(0.999));
    let ack_ms = |q: f64| -> Option<f64> {
        (!ack_hist.is_empty()).then(|| round(ack_hist.value_at_quantile(q) as f64 / 1000.0, 3))
    };
    let (ack_p50, ack_p99, ack_p999) = (ack_ms(0.50), ack_ms(0.99), ack_ms(0.999));
    let ack_max = (!ack_hist.is_empty()).then(|| round(ack_hist.max() as f64 / 1000.0, 3));
    let max_ms = if hist.is_empty() {
        0.0
    } else {
        round(hist.max() as f64 / 1000.0, 3)
    };
    let broker_cpu = match (cpu0, cpu1) {
        (Some(a), Some(b)) => Some(round(b - a, 2)),
        _ => None,
    };
    let cpu_per_100k = broker_cpu
        .filter(|_| sent > 0)
        .map(|c| round(c * 100_000.0 / sent as f64, 3));
    let self_cpu = match (self_cpu0, self_cpu1) {
        (Some(a), Some(b)) => Some(round(b - a, 2)),
        _ => None,
    };
    let errors = shared.errors.load(Ordering::Relaxed);
    let first_error = shared.first_error.lock().ok().and_then(|g| g.clone());

    println!(
        "  connect     {} subscribers in {:.2} s, {} publishers in {:.2} s (RLIMIT_NOFILE {nofile})",
        args.subscribers, sub_secs, args.publishers, pub_secs
    );
    println!(
        "  published   {} msgs in {:.3} s = {} msgs/s{}",
        thousands(sent),
        publish_secs,
        thousands(publish_rate as u64),
        match args.qos {
            0 => String::new(),
            1 => format!(" ({} PUBACKs)", thousands(acked)),
            _ => format!(" ({} PUBCOMPs)", thousands(acked)),
        }
    );
    if args.qos > 0 {
        println!(
            "  acked       {} msgs in {:.3} s = {} msgs/s acknowledged",
            thousands(acked),
            ack_secs.unwrap_or_default(),
            thousands(acked_rate as u64)
        );
        match (ack_p50, ack_p99, ack_p999, ack_max) {
            (Some(a), Some(b), Some(c), Some(d)) => println!(
                "  ack latency p50 {a:.3} ms   p99 {b:.3} ms   p99.9 {c:.3} ms   max {d:.3} ms (publish -> {}, {} samples)",
                if args.qos == 1 { "PUBACK" } else { "PUBREC" },
                thousands(ack_hist.len())
            ),
            _ => println!("  ack latency n/a (no acknowledgement timed)"),
        }
    }
    println!(
        "  delivered   {} of {} expected (unique {}, duplicates {}, lost {}){}",
        thousands(received),
        thousands(expected),
        thousands(unique),
        thousands(duplicates),
        thousands(lost),
        if timed_out {
            " - stopped waiting (drain timeout)"
        } else {
            ""
        }
    );
    println!(
        "  throughput  {} msgs/s delivered ({:.1} MB/s of payload) over {:.3} s",
        thousands(delivered_rate as u64),
        delivered_rate * args.payload as f64 / 1e6,
        deliver_secs.unwrap_or_default()
    );
    println!(
        "  latency     p50 {p50:.3} ms   p99 {p99:.3} ms   p99.9 {p999:.3} ms   max {max_ms:.3} ms"
    );
    match broker_cpu {
        Some(c) => println!(
            "  broker CPU  {c:.2} s (pid {}), {} s per 100k published; generator CPU {:.2} s; wall {wall:.2} s",
            args.broker_pid.unwrap_or_default(),
            cpu_per_100k.map(|x| format!("{x:.3}")).unwrap_or_default(),
            self_cpu.unwrap_or_default()
        ),
        None => println!(
            "  broker CPU  n/a (no --broker-pid); generator CPU {:.2} s; wall {wall:.2} s",
            self_cpu.unwrap_or_default()
        ),
    }
    if errors > 0 || foreign > 0 {
        println!(
            "  errors      {errors} connection errors{}; {foreign} foreign payloads",
            first_error
                .as_deref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        );
    }
    let summary = serde_json::json!({
        "mode": "pubsub",
        "label": args.label,
        "topics": args.topics.name(),
        "qos": args.qos,
        "payload": args.payload,
        "publishers": args.publishers,
        "subscribers": args.subscribers,
        "rate_target": args.rate,
        "sent": sent,
        "acked": acked,
        "ack_secs": ack_secs.map(|s| round(s, 4)),
        "acked_msgs_s": round(acked_rate, 0),
        "ack_p50_ms": ack_p50,
        "ack_p99_ms": ack_p99,
        "ack_p999_ms": ack_p999,
        "ack_max_ms": ack_max,
        "ack_samples": ack_hist.len(),
        "expected": expected,
        "received": received,
        "unique": unique,
        "duplicates": duplicates,
        "lost": lost,
        "drain_timed_out": timed_out,
        "publish_secs": round(publish_secs, 4),
        "publish_msgs_s": round(publish_rate, 0),
        "deliver_secs": deliver_secs.map(|s| round(s, 4)),
        "delivered_msgs_s": round(delivered_rate, 0),
        "first_delivery_ms": first_ns.map(|f| round(f.saturating_sub(t0_ns) as f64 / 1e6, 3)),
        "latency_p50_ms": p50,
        "latency_p99_ms": p99,
        "latency_p999_ms": p999,
        "latency_max_ms": max_ms,
        "broker_pid": args.broker_pid,
        "broker_cpu_s": broker_cpu,
        "broker_cpu_s_per_100k": cpu_per_100k,
        "client_cpu_s": self_cpu,
        "wall_s": round(wall, 3),
        "errors": errors,
        "first_error": first_error,
        "foreign": foreign,
    });
    println!("SUMMARY {summary}");
    Ok(())
}

// ---------------------------------------------------------------------------
// Connection mode

/// A minimal MQTT 3.1.1 CONNECT (clean session, no will, no credentials).
/// A clean-session MQTT 3.1.1 CONNECT, encoded by the broker's own codec.
fn connect_packet(client_id: &str, keep_alive: u16) -> Result<Vec<u8>> {
    use node_a::protocol::{codec, Connect, Packet, Protocol};
    let c = Connect {
        protocol: Some(Protocol::V4),
        client_id: client_id.to_string(),
        clean_start: true,
        keep_alive,
        ..Connect::default()
    };
    let mut b = BytesMut::new();
    codec::encode(&Packet::Connect(Box::new(c)), Protocol::V4, &mut b, None)
        .context("encoding CONNECT")?;
    Ok(b.to_vec())
}

/// Why one raw connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum ConnFail {
    Bind,
    Connect,
    Timeout,
    Closed,
    Refused,
}

/// First source port used in connection mode: below Linux's default ephemeral
/// range (32768-60999), so explicit binds never race the kernel's own choices.
const FIRST_SOURCE_PORT: u32 = 10_000;
const LAST_SOURCE_PORT: u32 = 32_767;

/// A socket bound to `source` (an explicit port when given: a port-0 bind makes
/// the kernel search the whole ephemeral range per call, which gets slow with tens
/// of thousands of ports held or in TIME_WAIT).
fn bound_socket(source: Option<SocketAddr>) -> std::io::Result<TcpSocket> {
    let sock = TcpSocket::new_v4()?;
    if let Some(addr) = source {
        // Ports of earlier runs linger in TIME_WAIT: allow binding them again.
        sock.set_reuseaddr(true)?;
        if sock.bind(addr).is_err() {
            // Taken (a listener, say): let the kernel pick one on this address.
            sock.bind(SocketAddr::new(addr.ip(), 0))?;
        }
    }
    Ok(sock)
}

async fn raw_connect(
    source: Option<SocketAddr>,
    target: SocketAddr,
    packet: Vec<u8>,
    limit: Duration,
) -> Result<TcpStream, (ConnFail, String)> {
    let attempt = async {
        let sock = bound_socket(source).map_err(|e| (ConnFail::Bind, e.to_string()))?;
        let mut s = sock
            .connect(target)
            .await
            .map_err(|e| (ConnFail::Connect, e.to_string()))?;
        let _ = s.set_nodelay(true);
        s.write_all(&packet)
            .await
            .map_err(|e| (ConnFail::Closed, e.to_string()))?;
        let mut ack = [0u8; 4];
        s.read_exact(&mut ack)
            .await
            .map_err(|e| (ConnFail::Closed, e.to_string()))?;
        if ack[0] != 0x20 || ack[1] != 0x02 {
            return Err((ConnFail::Refused, format!("not a CONNACK: {ack:02x?}")));
        }
        if ack[3] != 0 {
            return Err((ConnFail::Refused, format!("CONNACK return code {}", ack[3])));
        }
        Ok(s)
    };
    match tokio::time::timeout(limit, attempt).await {
        Ok(r) => r,
        Err(_) => Err((ConnFail::Timeout, "no CONNACK in time".to_string())),
    }
}

async fn run_conn(args: &MqttBenchArgs, nofile: u64) -> Result<()> {
    let target = tokio::net::lookup_host((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("resolving {}", args.host))?
        .find(SocketAddr::is_ipv4)
        .with_context(|| format!("{} has no IPv4 address", args.host))?;
    let n = args.connections;
    let ports_per_source = LAST_SOURCE_PORT - FIRST_SOURCE_PORT + 1;
    let k = if args.sources == 0 {
        n.div_ceil(20_000).clamp(1, 254)
    } else {
        args.sources
    };
    if args.source_base + k - 1 > 254 {
        bail!(
            "--source-base {} with {k} sources goes past 127.0.0.254",
            args.source_base
        );
    }
    if n.div_ceil(k) > ports_per_source {
        bail!("{n} connections need more than {k} source addresses (at most {ports_per_source} ports each)");
    }
    // Only a loopback target can be reached from 127.0.0.x.
    let bind_sources = target.ip().is_loopback();
    println!(
        "MQTT connection bench{}: {} idle MQTT 3.1.1 clients to {target}, sources 127.0.0.{}..127.0.0.{}{}, {} connecting at once (RLIMIT_NOFILE {nofile})",
        args.label.as_deref().map(|l| format!(" [{l}]")).unwrap_or_default(),
        thousands(u64::from(n)),
        args.source_base,
        args.source_base + k - 1,
        if bind_sources { "" } else { " (not bound: target is not loopback)" },
        args.connect_concurrency
    );
    let rss0 = args.broker_pid.and_then(proc_rss_bytes);
    let cpu0 = args.broker_pid.and_then(proc_cpu_secs);
    let self_cpu0 = self_cpu_secs();
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let limit = Duration::from_secs(15);
    let prefix = format!("{}-{}-c", args.client_prefix, std::process::id());
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(args.max_time);
    let mut set = JoinSet::new();
    for i in 0..n {
        let gate = gate.clone();
        let source = bind_sources.then(|| {
            let ip = Ipv4Addr::new(127, 0, 0, (args.source_base + i % k) as u8);
            SocketAddr::new(IpAddr::V4(ip), (FIRST_SOURCE_PORT + i / k) as u16)
        });
        let packet = connect_packet(&format!("{prefix}{i}"), args.keep_alive)?;
        set.spawn(async move {
            let _permit = gate
                .acquire_owned()
                .await
                .map_err(|e| (ConnFail::Connect, e.to_string()))?;
            raw_connect(source, target, packet, limit).await
        });
    }
    let mut streams: Vec<TcpStream> = Vec::with_capacity(n as usize);
    let mut fails: std::collections::BTreeMap<ConnFail, (u64, String)> = Default::default();
    let mut last_ok = t0;
    loop {
        let next = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            set.join_next(),
        )
        .await;
        match next {
            Ok(Some(Ok(Ok(s)))) => {
                streams.push(s);
                last_ok = Instant::now();
            }
            Ok(Some(Ok(Err((kind, msg))))) => {
                let e = fails.entry(kind).or_insert((0, msg));
                e.0 += 1;
            }
            Ok(Some(Err(e))) => {
                let e2 = fails.entry(ConnFail::Closed).or_insert((0, e.to_string()));
                e2.0 += 1;
            }
            Ok(None) => break,
            Err(_) => {
                set.abort_all();
                let e = fails
                    .entry(ConnFail::Timeout)
                    .or_insert((0, "--max-time reached".to_string()));
                e.0 += u64::from(n) - streams.len() as u64;
                break;
            }
        }
    }
    let all_secs = t0.elapsed().as_secs_f64();
    let ok = streams.len() as u64;
    let ok_secs = last_ok.duration_since(t0).as_secs_f64();
    let rate = if ok_secs > 0.0 {
        ok as f64 / ok_secs
    } else {
        0.0
    };
    let cpu1 = args.broker_pid.and_then(proc_cpu_secs);
    let self_cpu = match (self_cpu0, self_cpu_secs()) {
        (Some(a), Some(b)) => Some(round(b - a, 2)),
        _ => None,
    };
    tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    // Peers that closed during the hold are not counted as held.
    let mut still_open = 0u64;
    for s in &streams {
        let mut b = [0u8; 1];
        match s.try_read(&mut b) {
            Ok(0) => {}
            Ok(_) => still_open += 1,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => still_open += 1,
            Err(_) => {}
        }
    }
    let rss1 = args.broker_pid.and_then(proc_rss_bytes);
    drop(streams);

    let failed: u64 = fails.values().map(|v| v.0).sum();
    let rss_per_conn = match (rss0, rss1) {
        (Some(a), Some(b)) if ok > 0 => Some(b.saturating_sub(a) as f64 / ok as f64),
        _ => None,
    };
    let broker_cpu = match (cpu0, cpu1) {
        (Some(a), Some(b)) => Some(round(b - a, 2)),
        _ => None,
    };
    println!(
        "  connected   {} of {} in {ok_secs:.3} s = {} connects/s (all attempts done in {all_secs:.3} s); {} still open after {:.1} s",
        thousands(ok),
        thousands(u64::from(n)),
        thousands(rate as u64),
        thousands(still_open),
        args.hold
    );
    for (kind, (count, msg)) in &fails {
        println!("  failed      {count} x {kind:?} (e.g. {msg})");
    }
    match (rss0, rss1, rss_per_conn) {
        (Some(a), Some(b), Some(per)) => println!(
            "  broker RSS  {:.1} MiB -> {:.1} MiB = {:.2} KiB per connection; CPU while connecting: broker {:.2} s, generator {:.2} s",
            a as f64 / 1048576.0,
            b as f64 / 1048576.0,
            per / 1024.0,
            broker_cpu.unwrap_or_default(),
            self_cpu.unwrap_or_default()
        ),
        _ => println!("  broker RSS  n/a (no --broker-pid)"),
    }
    let summary = serde_json::json!({
        "mode": "conn",
        "label": args.label,
        "connections": n,
        "sources": k,
        "connected": ok,
        "failed": failed,
        "failures": fails.iter().map(|(k, (c, m))| (format!("{k:?}"), serde_json::json!({"count": c, "example": m}))).collect::<serde_json::Map<_, _>>(),
        "still_open": still_open,
        "connect_secs": round(ok_secs, 4),
        "connects_s": round(rate, 0),
        "broker_pid": args.broker_pid,
        "rss_before": rss0,
        "rss_after": rss1,
        "rss_per_conn_bytes": rss_per_conn.map(|x| round(x, 0)),
        "rss_per_conn_kib": rss_per_conn.map(|x| round(x / 1024.0, 2)),
        "broker_cpu_s": broker_cpu,
        "client_cpu_s": self_cpu,
    });
    println!("SUMMARY {summary}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_packet_layout() {
        let p = connect_packet("abc", 60).expect("packet");
        assert_eq!(
            p,
            vec![0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 3, b'a', b'b', b'c']
        );
        let long = "x".repeat(200);
        let p = connect_packet(&long, 1).expect("packet");
        // 212 remaining bytes need a two-byte length.
        assert_eq!(&p[..3], &[0x10, 212 & 0x7f | 0x80, 1]);
    }

    #[test]
    fn header_round_trip_and_foreign_payloads() {
        let mut b = BytesMut::new();
        b.put_slice(MAGIC);
        b.put_u32_le(3);
        b.put_u64_le(42);
        b.put_u64_le(7);
        b.resize(100, 0);
        assert_eq!(parse_header(&b, 4), Some((3, 42, 7)));
        assert_eq!(parse_header(&b, 3), None, "publisher out of range");
        assert_eq!(parse_header(&b[..20], 4), None, "short");
        assert_eq!(parse_header(b"hello world, this is not it", 4), None);
    }

    #[test]
    fn seen_counts_duplicates() {
        let mut s = Seen::default();
        assert!(s.insert(2, 0));
        assert!(s.insert(2, 1000));
        assert!(!s.insert(2, 1000));
        assert!(s.insert(0, 1000));
    }

    #[test]
    fn ack_clock_times_by_packet_id() {
        let mut c = AckClock::new(4).expect("clock");
        c.sent(1, 1_000_000);
        c.sent(2, 2_000_000);
        c.acked(2, 7_000_000); // 5 ms
        c.acked(2, 9_000_000); // duplicate ack: ignored
        c.acked(3, 9_000_000); // never sent: ignored
        c.acked(1, 1_000_100); // under 1 µs: recorded as 1 µs
        c.sent(9, 0); // past the inflight window: grows
        c.acked(9, 3_000_000);
        c.sent(0, 5); // QoS 0 id: ignored
        assert_eq!(c.hist.len(), 3);
        assert_eq!(c.hist.min(), 1);
        assert!(c.hist.max() >= 4_990 && c.hist.max() <= 5_010);
    }

    #[test]
    fn expected_deliveries() {
        assert_eq!(TopicMode::Distinct.deliveries_per_message(3, 10), 1);
        assert_eq!(TopicMode::Distinct.deliveries_per_message(10, 10), 0);
        assert_eq!(TopicMode::Fanout.deliveries_per_message(0, 1000), 1000);
        assert_eq!(TopicMode::Shared.deliveries_per_message(0, 5), 1);
        assert_eq!(TopicMode::Shared.sub_filter(1), "$share/g/bench/0");
    }

    #[test]
    fn proc_readers_work_on_self() {
        let pid = std::process::id();
        assert!(proc_cpu_secs(pid).is_some());
        assert!(proc_rss_bytes(pid).is_some_and(|r| r > 0));
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(12), "12");
    }
}
