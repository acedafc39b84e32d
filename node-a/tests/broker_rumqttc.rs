//! The A node driven by a real MQTT client library (crates.io `rumqttc`), both
//! protocol versions: what a device relies on.

use std::time::Duration;

use bytes::Bytes;
use node_a::{NodeA, NodeAConfig};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

async fn start() -> NodeA {
    let cfg = NodeAConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        sys_interval_secs: 0,
        ..NodeAConfig::default()
    };
    node_a::run(cfg).await.unwrap()
}

struct V4 {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, String>>,
    task: tokio::task::JoinHandle<()>,
}

impl V4 {
    async fn connect(node: &NodeA, id: &str, clean: bool) -> (V4, bool) {
        let mut o = MqttOptions::new(id, "127.0.0.1", node.local_addr.port());
        o.set_clean_session(clean);
        o.set_keep_alive(Duration::from_secs(30));
        Self::with_options(o).await
    }

    async fn with_options(o: MqttOptions) -> (V4, bool) {
        let (client, mut el) = AsyncClient::new(o, 1000);
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(ev) => {
                        if tx.send(Ok(ev)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        break;
                    }
                }
            }
        });
        let mut c = V4 {
            client,
            events: rx,
            task,
        };
        let present = loop {
            match c.next().await {
                Ok(Event::Incoming(Packet::ConnAck(a))) => break a.session_present,
                Ok(_) => {}
                Err(e) => panic!("connect failed: {e}"),
            }
        };
        (c, present)
    }

    async fn next(&mut self) -> Result<Event, String> {
        tokio::time::timeout(Duration::from_secs(10), self.events.recv())
            .await
            .expect("event within 10 s")
            .unwrap_or_else(|| Err("event loop ended".into()))
    }

    /// Next incoming PUBLISH (other events skipped).
    async fn publish(&mut self) -> rumqttc::Publish {
        loop {
            match self.next().await {
                Ok(Event::Incoming(Packet::Publish(p))) => return p,
                Ok(_) => {}
                Err(e) => panic!("no publish: {e}"),
            }
        }
    }

    async fn suback(&mut self) -> rumqttc::SubAck {
        loop {
            if let Ok(Event::Incoming(Packet::SubAck(s))) = self.next().await {
                return s;
            }
        }
    }

    async fn puback(&mut self) {
        loop {
            match self.next().await {
                Ok(Event::Incoming(Packet::PubAck(_)))
                | Ok(Event::Incoming(Packet::PubComp(_))) => return,
                Ok(_) => {}
                Err(e) => panic!("no ack: {e}"),
            }
        }
    }

    /// Drop the connection without DISCONNECT, as a device losing power does.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// No PUBLISH arrives before a ping round-trip completes (the broker
    /// answers in order, so anything routed earlier would come first).
    async fn assert_no_publish(&mut self) {
        self.client
            .subscribe("ferrymq/test/barrier", QoS::AtMostOnce)
            .await
            .unwrap();
        loop {
            match self.next().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    panic!("unexpected publish on {}", p.topic)
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => return,
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
    }
}

#[tokio::test]
async fn qos_0_1_2_round_trip_in_order() {
    let node = start().await;
    let (mut sub, _) = V4::connect(&node, "sub", true).await;
    sub.client
        .subscribe("sensors/+/temp", QoS::ExactlyOnce)
        .await
        .unwrap();
    sub.suback().await;
    let (publ, _) = V4::connect(&node, "pub", true).await;
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        for k in 0..20 {
            let body = format!("{i}-{k}");
            publ.client
                .publish(format!("sensors/d{i}/temp"), qos, false, body)
                .await
                .unwrap();
        }
    }
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        for k in 0..20 {
            let p = sub.publish().await;
            assert_eq!(p.topic, format!("sensors/d{i}/temp"));
            assert_eq!(p.payload, Bytes::from(format!("{i}-{k}")));
            assert_eq!(p.qos, qos);
        }
    }
    node.shutdown().await;
}

#[tokio::test]
async fn retained_set_replace_clear() {
    let node = start().await;
    let (publ, _) = V4::connect(&node, "pub", true).await;
    publ.client
        .publish("home/door", QoS::AtLeastOnce, true, "open")
        .await
        .unwrap();
    publ.client
        .publish("home/door", QoS::AtLeastOnce, true, "closed")
        .await
        .unwrap();
    publ.client
        .publish("home/light", QoS::AtLeastOnce, true, "on")
        .await
        .unwrap();
    publ.client
        .publish("home/light", QoS::AtLeastOnce, true, "")
        .await
        .unwrap();
    // Wait until the broker acked all four (acks come in order).
    let mut publ = publ;
    for _ in 0..4 {
        publ.puback().await;
    }
    let (mut sub, _) = V4::connect(&node, "sub", true).await;
    sub.client
        .subscribe("home/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let p = sub.publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.retain),
        ("home/door", &b"closed"[..], true)
    );
    sub.assert_no_publish().await;
    node.shutdown().await;
}

#[tokio::test]
async fn will_on_network_loss_not_on_disconnect() {
    let node = start().await;
    let (mut watcher, _) = V4::connect(&node, "watcher", true).await;
    watcher
        .client
        .subscribe("wills/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    watcher.suback().await;

    let mut o = MqttOptions::new("polite", "127.0.0.1", node.local_addr.port());
    o.set_last_will(rumqttc::LastWill::new(
        "wills/polite",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    let (polite, _) = V4::with_options(o).await;
    polite.client.disconnect().await.unwrap();

    let mut o = MqttOptions::new("crasher", "127.0.0.1", node.local_addr.port());
    o.set_last_will(rumqttc::LastWill::new(
        "wills/crasher",
        "lost",
        QoS::AtLeastOnce,
        false,
    ));
    let (crasher, _) = V4::with_options(o).await;
    crasher.kill().await;

    let p = watcher.publish().await;
    assert_eq!(p.topic, "wills/crasher");
    assert_eq!(&p.payload[..], b"lost");
    watcher.assert_no_publish().await;
    node.shutdown().await;
}

#[tokio::test]
async fn persistent_session_queues_while_offline() {
    let node = start().await;
    let (mut s, present) = V4::connect(&node, "device-1", false).await;
    assert!(!present);
    s.client
        .subscribe("cmd/device-1", QoS::AtLeastOnce)
        .await
        .unwrap();
    s.suback().await;
    s.client.disconnect().await.unwrap();
    drop(s);
    let (mut publ, _) = V4::connect(&node, "backend", true).await;
    for i in 0..100 {
        publ.client
            .publish("cmd/device-1", QoS::AtLeastOnce, false, format!("{i}"))
            .await
            .unwrap();
    }
    for _ in 0..100 {
        publ.puback().await;
    }
    let (mut s, present) = V4::connect(&node, "device-1", false).await;
    assert!(present);
    for i in 0..100 {
        let p = s.publish().await;
        assert_eq!(p.payload, Bytes::from(format!("{i}")));
    }
    // Clean session discards it.
    s.client.disconnect().await.unwrap();
    drop(s);
    let (_s, present) = V4::connect(&node, "device-1", true).await;
    assert!(!present);
    node.shutdown().await;
}

#[tokio::test]
async fn shared_subscription_round_robins() {
    let node = start().await;
    let mut members = Vec::new();
    for i in 0..3 {
        let (mut m, _) = V4::connect(&node, &format!("m{i}"), true).await;
        m.client
            .subscribe("$share/workers/jobs/#", QoS::AtLeastOnce)
            .await
            .unwrap();
        m.suback().await;
        members.push(m);
    }
    let (publ, _) = V4::connect(&node, "producer", true).await;
    for i in 0..30 {
        publ.client
            .publish("jobs/x", QoS::AtLeastOnce, false, format!("{i}"))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    for m in members.iter_mut() {
        for _ in 0..10 {
            let p = m.publish().await;
            seen.push(p.payload);
        }
        m.assert_no_publish().await;
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 30, "each job exactly once");
    node.shutdown().await;
}

#[tokio::test]
async fn sys_topics_not_matched_by_leading_wildcard() {
    let node = start().await;
    node_a::sys::publish_now(&node.broker);
    let (mut all, _) = V4::connect(&node, "all", true).await;
    all.client.subscribe("#", QoS::AtMostOnce).await.unwrap();
    all.suback().await;
    all.assert_no_publish().await;
    let (mut sys, _) = V4::connect(&node, "sys", true).await;
    sys.client
        .subscribe("$SYS/broker/version", QoS::AtMostOnce)
        .await
        .unwrap();
    let p = sys.publish().await;
    assert!(p.payload.starts_with(b"ferrymq"));
    node.shutdown().await;
}

#[tokio::test]
async fn garbage_and_publish_before_connect_are_closed_others_unaffected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let node = start().await;
    let (mut sub, _) = V4::connect(&node, "bystander", true).await;
    sub.client.subscribe("t", QoS::AtMostOnce).await.unwrap();
    sub.suback().await;
    let cases: [&[u8]; 4] = [
        &[0x30, 0x03, 0x00, 0x01, b't'],       // PUBLISH before CONNECT
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // malformed header / remaining length
        &[0x10, 0xff, 0xff, 0xff, 0xff, 0x7f], // 5-byte remaining length
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  // not MQTT
    ];
    for bytes in cases {
        let mut s = tokio::net::TcpStream::connect(node.local_addr)
            .await
            .unwrap();
        s.write_all(bytes).await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("closed promptly");
        assert!(matches!(n, Ok(0) | Err(_)), "{bytes:?} got {n:?}");
    }
    let (publ, _) = V4::connect(&node, "after", true).await;
    publ.client
        .publish("t", QoS::AtMostOnce, false, "still here")
        .await
        .unwrap();
    assert_eq!(&sub.publish().await.payload[..], b"still here");
    node.shutdown().await;
}

#[tokio::test]
async fn client_id_takeover_closes_the_old_connection() {
    let node = start().await;
    let (mut first, _) = V4::connect(&node, "same", false).await;
    let (_second, present) = V4::connect(&node, "same", false).await;
    assert!(present);
    // The old connection ends (rumqttc reports the server's close as an error).
    while first.next().await.is_ok() {}
    node.shutdown().await;
}
