//! Gateway behaviour the PyPI C++ client cannot reach (it has no transactional
//! producer, no query/view calls, no admin calls), driven with the gateway's
//! own frame codec. The C++ client's suite (tests/rocketmq) covers the rest.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use gateway::codes::{request, response};
use gateway::remoting::{self, Command, SERIALIZE_ROCKETMQ};
use gateway::GatewayConfig;
use shared_store::message::{self, property};
use shared_store::{MessageStore, StoreConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Client {
    sock: TcpStream,
    buf: BytesMut,
    opaque: i32,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> Self {
        Self {
            sock: TcpStream::connect(addr).await.expect("connect"),
            buf: BytesMut::new(),
            opaque: 0,
        }
    }

    async fn send(&mut self, mut c: Command) {
        self.opaque += 1;
        c.opaque = self.opaque;
        let mut out = BytesMut::new();
        c.encode(&mut out);
        self.sock.write_all(&out).await.expect("write");
    }

    /// Next frame from the gateway (a response or a server request).
    async fn next(&mut self) -> Command {
        loop {
            if let Some(c) = remoting::decode(&mut self.buf, 1 << 24).expect("frame") {
                return c;
            }
            let n =
                tokio::time::timeout(Duration::from_secs(20), self.sock.read_buf(&mut self.buf))
                    .await
                    .expect("bounded")
                    .expect("read");
            assert!(n > 0, "gateway closed the connection");
        }
    }

    async fn call(&mut self, c: Command) -> Command {
        self.send(c).await;
        let want = self.opaque;
        loop {
            let r = self.next().await;
            if r.is_response() && r.opaque == want {
                return r;
            }
        }
    }
}

fn send_req(topic: &str, queue: i32, body: &str, props: &[(&str, &str)], sys_flag: i32) -> Command {
    let mut c = Command::request(request::SEND_MESSAGE);
    let mut p = shared_store::Properties::new();
    for (k, v) in props {
        p.insert(*k, *v);
    }
    c.set("producerGroup", "PG")
        .set("topic", topic)
        .set("defaultTopic", "TBW102")
        .set("defaultTopicQueueNums", 4)
        .set("queueId", queue)
        .set("sysFlag", sys_flag)
        .set("bornTimestamp", message::now_millis())
        .set("flag", 0)
        .set("properties", p.encode())
        .set("reconsumeTimes", 0)
        .set("unitMode", false);
    c.body = Bytes::from(body.to_owned());
    c
}

fn pull_req(group: &str, topic: &str, queue: i32, offset: i64, suspend_ms: i64) -> Command {
    let mut c = Command::request(request::PULL_MESSAGE);
    c.set("consumerGroup", group)
        .set("topic", topic)
        .set("queueId", queue)
        .set("queueOffset", offset)
        .set("maxMsgNums", 32)
        .set("sysFlag", if suspend_ms > 0 { 2 } else { 0 })
        .set("commitOffset", 0)
        .set("suspendTimeoutMillis", suspend_ms)
        .set("subVersion", 0);
    c
}

fn bodies(body: &Bytes) -> Vec<(String, message::StoredMessage)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 4 <= body.len() {
        let size =
            i32::from_be_bytes([body[pos], body[pos + 1], body[pos + 2], body[pos + 3]]) as usize;
        let m = message::decode(&body[pos..pos + size]).expect("stored message");
        out.push((String::from_utf8_lossy(&m.message.body).into_owned(), m));
        pos += size;
    }
    out
}

struct Env {
    _dir: tempfile::TempDir,
    gw: gateway::Gateway,
}

async fn start(cfg: GatewayConfig) -> Env {
    let dir = tempfile::tempdir().expect("tmp");
    let store = MessageStore::open(StoreConfig {
        mapped_file_size_commit_log: 1 << 20,
        max_message_size: 64 << 10,
        ..StoreConfig::with_path(dir.path())
    })
    .expect("store");
    let l = node_l::LNode::open(node_l::LConfig::default(), store).expect("l");
    let gw = gateway::run(
        GatewayConfig {
            namesrv_listen: "127.0.0.1:0".parse().expect("addr"),
            broker_listen: "127.0.0.1:0".parse().expect("addr"),
            ..cfg
        },
        l,
        None,
    )
    .await
    .expect("gateway");
    Env { _dir: dir, gw }
}

#[tokio::test]
async fn transactions_commit_rollback_and_check() {
    let env = start(GatewayConfig {
        transaction_timeout: 300,
        transaction_check_interval: 100,
        ..GatewayConfig::default()
    })
    .await;
    let mut producer = Client::connect(env.gw.broker_addr).await;
    let hb = r#"{"clientID":"127.0.0.1@tx","producerDataSet":[{"groupName":"TXG"}],"consumerDataSet":[]}"#;
    let mut c = Command::request(request::HEART_BEAT);
    c.body = Bytes::from_static(hb.as_bytes());
    assert_eq!(producer.call(c).await.code, response::SUCCESS);

    let props = [
        ("TRAN_MSG", "true"),
        ("PGROUP", "TXG"),
        (property::UNIQ_KEY, "U1"),
    ];
    let mut halves = Vec::new();
    for body in ["commit-me", "roll-me-back", "ask-me"] {
        let r = producer
            .call(send_req("payments", 0, body, &props, 4))
            .await;
        assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
        assert_eq!(r.field("transactionId"), Some("U1"));
        halves.push(r);
    }
    // Half messages are invisible to consumers.
    let mut consumer = Client::connect(env.gw.broker_addr).await;
    let r = consumer.call(pull_req("CG", "payments", 0, 0, 0)).await;
    assert_ne!(r.code, response::SUCCESS, "a half message was visible");

    // The half topic's entries: offsets 0, 1, 2 (physical offsets from the store).
    env.gw.shared.store.dispatch_now().expect("dispatch");
    let half = env
        .gw
        .shared
        .store
        .get_message("RMQ_SYS_TRANS_HALF_TOPIC", 0, 0, 8, None);
    assert_eq!(half.messages.len(), 3);
    let end = |i: usize, how: i32| {
        let mut c = Command::request(request::END_TRANSACTION);
        c.set("producerGroup", "TXG")
            .set("tranStateTableOffset", half.messages[i].queue_offset)
            .set("commitLogOffset", half.messages[i].physical_offset)
            .set("commitOrRollback", how)
            .set("fromTransactionCheck", false)
            .set("msgId", "U1");
        c
    };
    assert_eq!(producer.call(end(0, 8)).await.code, response::SUCCESS);
    assert_eq!(producer.call(end(1, 12)).await.code, response::SUCCESS);

    // The third stays open: the gateway asks the producer about it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let check = loop {
        assert!(Instant::now() < deadline, "no CHECK_TRANSACTION_STATE");
        let f = producer.next().await;
        if !f.is_response() && f.code == request::CHECK_TRANSACTION_STATE {
            break f;
        }
    };
    assert_eq!(
        check
            .field("commitLogOffset")
            .and_then(|v| v.parse::<i64>().ok()),
        Some(half.messages[2].physical_offset)
    );
    let checked = bodies(&check.body);
    assert_eq!(checked[0].0, "ask-me");
    assert_eq!(
        checked[0].1.message.topic, "payments",
        "checks show the real topic"
    );
    let mut answer = end(2, 8);
    answer.set("fromTransactionCheck", true);
    producer.send(answer).await;

    // Committed ones are visible, in commit order; the rolled back one never.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = consumer.call(pull_req("CG", "payments", 0, 0, 0)).await;
        let got: Vec<String> = if r.code == response::SUCCESS {
            bodies(&r.body).into_iter().map(|b| b.0).collect()
        } else {
            Vec::new()
        };
        if got.len() >= 2 {
            assert_eq!(got, vec!["commit-me", "ask-me"]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "committed messages not visible: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.gw.shutdown().await;
}

#[tokio::test]
async fn query_by_key_view_by_id_and_binary_headers() {
    let env = start(GatewayConfig::default()).await;
    let mut c = Client::connect(env.gw.broker_addr).await;
    let mut sent = Vec::new();
    for i in 0..3 {
        let mut req = send_req(
            "orders",
            1,
            &format!("o{i}"),
            &[(property::KEYS, &format!("order-{i} shared"))],
            0,
        );
        // RocketMQ's binary header serialization, which the C++ client may use.
        req.serialize = SERIALIZE_ROCKETMQ;
        let r = c.call(req).await;
        assert_eq!(r.code, response::SUCCESS);
        assert_eq!(
            r.serialize, SERIALIZE_ROCKETMQ,
            "a response uses its request's serialization"
        );
        sent.push(r);
    }
    env.gw.shared.store.dispatch_now().expect("dispatch");
    let mut q = Command::request(request::QUERY_MESSAGE);
    q.set("topic", "orders")
        .set("key", "order-1")
        .set("maxNum", 32)
        .set("beginTimestamp", 0)
        .set("endTimestamp", i64::MAX);
    let r = c.call(q).await;
    assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
    assert_eq!(
        bodies(&r.body).into_iter().map(|b| b.0).collect::<Vec<_>>(),
        vec!["o1"]
    );

    let id = sent[2].field("msgId").expect("msgId").to_owned();
    let (_, offset) = shared_store::decode_offset_msg_id(&id).expect("an offsetMsgId");
    let mut v = Command::request(request::VIEW_MESSAGE_BY_ID);
    v.set("offset", offset);
    let r = c.call(v).await;
    assert_eq!(r.code, response::SUCCESS);
    assert_eq!(bodies(&r.body)[0].0, "o2");

    // Time lookups: the first message's store time, and the offset at or after a time.
    let mut e = Command::request(request::GET_EARLIEST_MSG_STORETIME);
    e.set("topic", "orders").set("queueId", 1);
    let r = c.call(e).await;
    assert_eq!(r.code, response::SUCCESS);
    let first_ts: i64 = r
        .field("timestamp")
        .and_then(|t| t.parse().ok())
        .expect("timestamp");
    let mut t = Command::request(request::SEARCH_OFFSET_BY_TIMESTAMP);
    t.set("topic", "orders")
        .set("queueId", 1)
        .set("timestamp", first_ts);
    assert_eq!(c.call(t.clone()).await.field("offset"), Some("0"));
    t.set("timestamp", i64::MAX / 2);
    assert_eq!(c.call(t).await.field("offset"), Some("3"));

    // Bad topic names are refused, the connection stays usable.
    let r = c.call(send_req("bad/topic", 0, "x", &[], 0)).await;
    assert_eq!(r.code, response::SYSTEM_ERROR);
    let r = c
        .call(send_req("SCHEDULE_TOPIC_XXXX", 0, "x", &[], 0))
        .await;
    assert_eq!(r.code, response::SYSTEM_ERROR);

    let mut unknown = Command::request(9999);
    unknown.set("x", 1);
    let r = c.call(unknown).await;
    assert_eq!(r.code, response::REQUEST_CODE_NOT_SUPPORTED);
    env.gw.shutdown().await;
}

#[tokio::test]
async fn long_poll_wakes_on_arrival_and_offsets_move() {
    let env = start(GatewayConfig::default()).await;
    let mut p = Client::connect(env.gw.broker_addr).await;
    let mut c = Client::connect(env.gw.broker_addr).await;
    assert_eq!(
        p.call(send_req("lp", 0, "first", &[], 0)).await.code,
        response::SUCCESS
    );
    env.gw.shared.store.dispatch_now().expect("dispatch");
    let r = c.call(pull_req("G", "lp", 0, 0, 0)).await;
    assert_eq!(r.code, response::SUCCESS);
    assert_eq!(r.field("nextBeginOffset"), Some("1"));

    // Suspended pull at the end of the queue, woken by a send.
    c.send(pull_req("G", "lp", 0, 1, 15_000)).await;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        p.call(send_req("lp", 0, "second", &[], 0)).await.code,
        response::SUCCESS
    );
    let r = c.next().await;
    assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not woken by the arrival"
    );
    assert_eq!(bodies(&r.body)[0].0, "second");

    // Far past the end: PULL_OFFSET_MOVED with the right next offset.
    let r = c.call(pull_req("G", "lp", 0, 99, 0)).await;
    assert_eq!(r.code, response::PULL_OFFSET_MOVED);
    assert_eq!(r.field("nextBeginOffset"), Some("2"));
    // At the end, not suspended: PULL_NOT_FOUND.
    let r = c.call(pull_req("G", "lp", 0, 2, 0)).await;
    assert_eq!(r.code, response::PULL_NOT_FOUND);

    // Offsets: unknown group on a queue starting at 0 reads from 0; commits stick.
    let mut q = Command::request(request::QUERY_CONSUMER_OFFSET);
    q.set("consumerGroup", "new-group")
        .set("topic", "lp")
        .set("queueId", 0);
    let r = c.call(q.clone()).await;
    assert_eq!((r.code, r.field("offset")), (response::SUCCESS, Some("0")));
    let mut u = Command::request(request::UPDATE_CONSUMER_OFFSET);
    u.set("consumerGroup", "new-group")
        .set("topic", "lp")
        .set("queueId", 0)
        .set("commitOffset", 2);
    assert_eq!(c.call(u).await.code, response::SUCCESS);
    let r = c.call(q).await;
    assert_eq!(r.field("offset"), Some("2"));

    // Admin: create, list, delete.
    let mut t = Command::request(request::UPDATE_AND_CREATE_TOPIC);
    t.set("topic", "admin_made")
        .set("readQueueNums", 3)
        .set("writeQueueNums", 3)
        .set("perm", 6);
    assert_eq!(c.call(t).await.code, response::SUCCESS);
    let mut ns = Client::connect(env.gw.namesrv_addr).await;
    let mut route = Command::request(request::GET_ROUTEINFO_BY_TOPIC);
    route.set("topic", "admin_made");
    let r = ns.call(route.clone()).await;
    assert_eq!(r.code, response::SUCCESS);
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(v["queueDatas"][0]["writeQueueNums"], 3);
    assert_eq!(
        v["brokerDatas"][0]["brokerAddrs"]["0"],
        env.gw.broker_addr.to_string()
    );
    let mut d = Command::request(request::DELETE_TOPIC_IN_BROKER);
    d.set("topic", "admin_made");
    assert_eq!(c.call(d).await.code, response::SUCCESS);
    assert_eq!(ns.call(route).await.code, response::TOPIC_NOT_EXIST);
    env.gw.shutdown().await;
}

#[tokio::test]
async fn subscription_group_retry_limit_sends_to_dlq() {
    let env = start(GatewayConfig {
        message_delay_level: "1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s".into(),
        ..GatewayConfig::default()
    })
    .await;
    let mut c = Client::connect(env.gw.broker_addr).await;
    let mut g = Command::request(request::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP);
    g.body = Bytes::from_static(br#"{"groupName":"G2","retryMaxTimes":1,"consumeEnable":true}"#);
    assert_eq!(c.call(g).await.code, response::SUCCESS);
    let r = c.call(send_req("work", 0, "job", &[], 0)).await;
    let id = r.field("msgId").expect("msgId").to_owned();
    let (_, offset) = shared_store::decode_offset_msg_id(&id).expect("offsetMsgId");
    // An old client (the C++ one says version 63): the group's limit counts.
    let back = |off: i64| {
        let mut b = Command::request(request::CONSUMER_SEND_MSG_BACK);
        b.version = 63;
        b.set("offset", off).set("group", "G2").set("delayLevel", 0);
        b
    };
    assert_eq!(c.call(back(offset)).await.code, response::SUCCESS);
    // The retry copy (reconsume 1) is released to %RETRY%G2 after its delay.
    let deadline = Instant::now() + Duration::from_secs(10);
    let retry = loop {
        env.gw.shared.store.dispatch_now().expect("dispatch");
        let got = env.gw.shared.store.get_message("%RETRY%G2", 0, 0, 4, None);
        if let Some(m) = got.messages.first() {
            break m.clone();
        }
        assert!(Instant::now() < deadline, "no retry copy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let m = message::decode(&retry.data).expect("decode");
    assert_eq!(m.message.reconsume_times, 1);
    assert_eq!(m.message.properties.get("RETRY_TOPIC"), Some("work"));
    // Failing again is past retryMaxTimes 1: dead letter.
    assert_eq!(
        c.call(back(retry.physical_offset)).await.code,
        response::SUCCESS
    );
    env.gw.shared.store.dispatch_now().expect("dispatch");
    let dlq = env.gw.shared.store.get_message("%DLQ%G2", 0, 0, 4, None);
    assert_eq!(dlq.messages.len(), 1);
    let d = message::decode(&dlq.messages[0].data).expect("decode");
    assert_eq!(&d.message.body[..], b"job");
    env.gw.shutdown().await;
}
