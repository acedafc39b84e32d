//! Limits that keep one client from costing more than its own share.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use node_a::protocol::{
    codec, Connect, Packet, Protocol, Publish, QoS, Subscribe, SubscribeFilter,
};
use node_a::{NodeA, NodeAConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start(cfg: NodeAConfig) -> NodeA {
    node_a::run(NodeAConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        sys_interval_secs: 0,
        ..cfg
    })
    .await
    .unwrap()
}

/// A raw MQTT 5 client over our codec, so tests control exactly what is read.
struct Raw {
    s: TcpStream,
    rbuf: BytesMut,
}

impl Raw {
    async fn connect(node: &NodeA, id: &str, clean: bool, expiry: Option<u32>) -> Raw {
        let s = TcpStream::connect(node.local_addr).await.unwrap();
        let mut r = Raw {
            s,
            rbuf: BytesMut::new(),
        };
        r.send(Packet::Connect(Box::new(Connect {
            protocol: Some(Protocol::V5),
            client_id: id.into(),
            clean_start: clean,
            keep_alive: 60,
            session_expiry_interval: expiry,
            ..Connect::default()
        })))
        .await;
        match r.recv().await {
            Some(Packet::ConnAck(a)) => assert_eq!(a.reason, 0),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        r
    }

    async fn send(&mut self, p: Packet) {
        let mut b = BytesMut::new();
        codec::encode(&p, Protocol::V5, &mut b, None).unwrap();
        self.s.write_all(&b).await.unwrap();
    }

    /// Next packet, or None when the server closed the connection.
    async fn recv(&mut self) -> Option<Packet> {
        loop {
            if let Some(p) = codec::decode(&mut self.rbuf, Some(Protocol::V5), 1 << 24).unwrap() {
                return Some(p);
            }
            let n = tokio::time::timeout(Duration::from_secs(10), self.s.read_buf(&mut self.rbuf))
                .await
                .expect("bounded wait")
                .ok()?;
            if n == 0 {
                return None;
            }
        }
    }

    async fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.send(Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: vec![SubscribeFilter {
                filter: filter.into(),
                qos,
                ..SubscribeFilter::default()
            }],
            ..Subscribe::default()
        }))
        .await;
        assert!(matches!(self.recv().await, Some(Packet::SubAck(_))));
    }

    async fn publish(&mut self, topic: &str, qos: QoS, pkid: u16, payload: &[u8]) {
        self.send(Packet::Publish(Publish {
            qos,
            topic: topic.into(),
            pkid,
            payload: bytes::Bytes::copy_from_slice(payload),
            ..Publish::default()
        }))
        .await;
    }
}

#[tokio::test]
async fn socket_without_connect_is_closed_after_the_connect_timeout() {
    let node = start(NodeAConfig {
        connect_timeout_secs: 1,
        ..NodeAConfig::default()
    })
    .await;
    let mut s = TcpStream::connect(node.local_addr).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("closed by the broker");
    assert!(matches!(n, Ok(0) | Err(_)));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed too early: {waited:?}"
    );
    node.shutdown().await;
}

#[tokio::test]
async fn slow_subscriber_queue_is_bounded_and_drops_are_counted() {
    let node = start(NodeAConfig {
        max_queued_messages: 50,
        max_inflight: 10,
        ..NodeAConfig::default()
    })
    .await;
    // A subscriber that never acknowledges and stops reading.
    let mut slow = Raw::connect(&node, "slow", true, None).await;
    slow.subscribe("load/#", QoS::AtLeastOnce).await;
    let mut fast = Raw::connect(&node, "fast", true, None).await;
    fast.subscribe("load/#", QoS::AtMostOnce).await;
    let mut publ = Raw::connect(&node, "pub", true, None).await;
    for i in 0..500u16 {
        publ.publish("load/x", QoS::AtLeastOnce, i + 1, &[0u8; 100])
            .await;
        assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
    }
    // The fast subscriber got everything despite the slow one.
    let mut got = 0;
    while got < 500 {
        match fast.recv().await {
            Some(Packet::Publish(_)) => got += 1,
            Some(_) => {}
            None => panic!("fast subscriber disconnected"),
        }
    }
    // The slow one holds at most max_inflight + max_queued; the rest were dropped and counted.
    let s = node.broker.session("slow").unwrap();
    let (queued, inflight) = {
        let st = s.state.lock();
        (st.queue.len(), st.inflight.len())
    };
    assert!(
        queued <= 50 && inflight <= 10,
        "queued {queued} inflight {inflight}"
    );
    let dropped = s.dropped.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(dropped as usize + queued + inflight, 500);
    drop(slow);
    node.shutdown().await;
}

#[tokio::test]
async fn shared_subscription_member_loss_redistributes_unacked_messages() {
    let node = start(NodeAConfig::default()).await;
    // Member A receives but never acknowledges; member B acknowledges.
    let mut a = Raw::connect(&node, "member-a", true, None).await;
    a.subscribe("$share/g/jobs", QoS::AtLeastOnce).await;
    let mut b = Raw::connect(&node, "member-b", true, None).await;
    b.subscribe("$share/g/jobs", QoS::AtLeastOnce).await;
    let mut publ = Raw::connect(&node, "producer", true, None).await;
    for i in 0..20u16 {
        publ.publish("jobs", QoS::AtLeastOnce, i + 1, format!("{i}").as_bytes())
            .await;
        assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
    }
    // A takes its share, then its connection is lost without acknowledging.
    let mut a_got = Vec::new();
    while a_got.len() < 10 {
        if let Some(Packet::Publish(p)) = a.recv().await {
            a_got.push(p.payload);
        }
    }
    drop(a);
    // B ends up with every job: its own share, then A's unacknowledged ones.
    let mut b_got = Vec::new();
    while b_got.len() < 20 {
        match b.recv().await {
            Some(Packet::Publish(p)) => {
                b.send(Packet::PubAck(node_a::protocol::Ack {
                    pkid: p.pkid,
                    ..Default::default()
                }))
                .await;
                b_got.push(p.payload);
            }
            Some(_) => {}
            None => panic!("member b disconnected"),
        }
    }
    b_got.sort();
    b_got.dedup();
    assert_eq!(b_got.len(), 20);
    node.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_limit_are_refused() {
    let node = start(NodeAConfig {
        max_connections: 2,
        ..NodeAConfig::default()
    })
    .await;
    let _c1 = Raw::connect(&node, "c1", true, None).await;
    let _c2 = Raw::connect(&node, "c2", true, None).await;
    let mut s = TcpStream::connect(node.local_addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("refused promptly");
    assert!(matches!(n, Ok(0) | Err(_)), "third connection was served");
    node.shutdown().await;
}

#[tokio::test]
async fn publish_rate_limit_slows_only_that_client() {
    let node = start(NodeAConfig {
        max_publish_rate: 50,
        ..NodeAConfig::default()
    })
    .await;
    let mut publ = Raw::connect(&node, "chatty", true, None).await;
    let started = Instant::now();
    for i in 0..120u16 {
        publ.publish("rate/x", QoS::AtLeastOnce, i + 1, b"x").await;
        assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
    }
    // 120 messages at 50/s need at least two window rolls.
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
    node.shutdown().await;
}
