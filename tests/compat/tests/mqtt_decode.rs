//! What MQTT devices publish lands in the CommitLog as RocketMQ messages an
//! independent decoder (crates.io `rocketmq-protocol`, the rocketmq-rust
//! project's MessageDecoder) reads: RocketMQ topic = first MQTT level, tag =
//! second level, the full topic in MQTT_TOPIC, MQTT 5 properties as properties.
//! The publishes go through the real path: rumqttc → A node → L role → store.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferrymq_shared::boundary::MessageLog;
use rocketmq_protocol::common::message::message_decoder;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use shared_store::{MessageStore, StoreConfig};

async fn next_packet(el: &mut EventLoop) -> Packet {
    loop {
        if let Event::Incoming(p) = tokio::time::timeout(Duration::from_secs(10), el.poll())
            .await
            .expect("bounded")
            .expect("connected")
        {
            return p;
        }
    }
}

fn prop(props: &[(String, String)], k: &str) -> Option<String> {
    props.iter().find(|(pk, _)| pk == k).map(|(_, v)| v.clone())
}

#[tokio::test]
async fn mqtt_publishes_decode_as_rocketmq_messages() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = MessageStore::open(StoreConfig {
        mapped_file_size_commit_log: 1 << 20,
        max_message_size: 64 << 10,
        ..StoreConfig::with_path(dir.path())
    })
    .expect("store");
    let l = node_l::LNode::open(node_l::LConfig::default(), store.clone()).expect("l role");
    let log: Arc<dyn MessageLog> = Arc::new(l.clone());
    let cfg = node_a::NodeAConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..node_a::NodeAConfig::default()
    };
    let node = node_a::run_with_log(cfg, Some(log)).await.expect("node a");

    let (c, mut el) = AsyncClient::new(
        MqttOptions::new("device-7", "127.0.0.1", node.local_addr.port()),
        100,
    );
    let cases = [
        ("orders/paid/eu", "first"),
        ("orders/refunded", "second"),
        ("sensors", "third"),
    ];
    for (topic, body) in cases {
        let props = PublishProperties {
            content_type: Some("text/plain".into()),
            user_properties: vec![("region".into(), "eu".into())],
            ..PublishProperties::default()
        };
        c.publish_with_properties(topic, QoS::AtLeastOnce, false, body, props)
            .await
            .expect("queued");
        loop {
            match next_packet(&mut el).await {
                Packet::PubAck(a) => {
                    // No subscriber: v5 says so, and the message is stored anyway.
                    assert!(
                        matches!(
                            a.reason,
                            PubAckReason::Success | PubAckReason::NoMatchingSubscribers
                        ),
                        "{a:?}"
                    );
                    break;
                }
                _ => continue,
            }
        }
    }
    store.dispatch_now().expect("dispatch");

    for (topic, body) in cases {
        let rtopic = topic.split('/').next().expect("first level");
        let queues = l
            .topics()
            .get(rtopic)
            .expect("auto-created")
            .write_queue_nums;
        let q = ferrymq_shared::queue_for(topic, queues) as i32;
        let got = store.get_message(rtopic, q, 0, 32, None);
        let raw = got
            .messages
            .iter()
            .find(|m| m.data.windows(body.len()).any(|w| w == body.as_bytes()))
            .expect("stored in the topic's queue")
            .data
            .clone();
        let mut buf: Bytes = raw.clone();
        let d = message_decoder::decode(&mut buf, true, false, false, false, true)
            .expect("rocketmq-rust decodes the stored MQTT publish, CRC checked");
        let props: Vec<(String, String)> = d
            .properties()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned()))
            .collect();
        assert_eq!(d.topic().as_str(), rtopic);
        assert_eq!(d.queue_id(), q);
        assert_eq!(d.body().as_deref(), Some(body.as_bytes()));
        assert_eq!(prop(&props, "MQTT_TOPIC").as_deref(), Some(topic));
        assert_eq!(
            prop(&props, "TAGS"),
            topic.split('/').nth(1).map(str::to_owned)
        );
        assert_eq!(prop(&props, "MQTT_QOS").as_deref(), Some("1"));
        assert_eq!(prop(&props, "MQTT_CLIENT_ID").as_deref(), Some("device-7"));
        assert_eq!(
            prop(&props, "MQTT_CONTENT_TYPE").as_deref(),
            Some("text/plain")
        );
        assert_eq!(prop(&props, "region").as_deref(), Some("eu"));
    }
    node.shutdown().await;
    l.shutdown().expect("l shutdown");
    store.shutdown().expect("store shutdown");
}
