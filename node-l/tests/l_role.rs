//! The L role through its boundary: appends land in the store with the topic
//! model, session queues and the retained and session tables survive a reopen.

use bytes::Bytes;
use ferrymq_shared::boundary::{
    AppendRequest, LogError, MessageLog, MqttMessage, MqttProps, SessionRecord, SubscriptionRecord,
};
use node_l::{LConfig, LNode};
use shared_store::{MessageStore, StoreConfig};

fn msg(topic: &str, payload: &str, retain: bool) -> MqttMessage {
    MqttMessage {
        topic: topic.into(),
        payload: Bytes::from(payload.to_owned()),
        qos: 1,
        retain,
        props: MqttProps::default(),
        publisher: Some("pub-1".into()),
    }
}

fn open(dir: &std::path::Path, cfg: LConfig) -> (MessageStore, LNode) {
    let mut sc = StoreConfig::with_path(dir);
    sc.mapped_file_size_commit_log = 1 << 20;
    sc.max_message_size = 64 << 10;
    let store = MessageStore::open(sc).expect("store");
    let l = LNode::open(cfg, store.clone()).expect("l role");
    (store, l)
}

fn session(id: &str) -> SessionRecord {
    SessionRecord {
        client_id: id.into(),
        expiry_secs: 3600,
        subscriptions: vec![SubscriptionRecord {
            filter: "t/#".into(),
            qos: 1,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
            subscription_id: None,
        }],
        disconnected_at_ms: None,
    }
}

#[tokio::test]
async fn session_queue_holds_appends_in_order_across_reopen() {
    let dir = tempfile::tempdir().expect("tmp");
    {
        let (store, l) = open(dir.path(), LConfig::default());
        l.save_session(session("dev/1"));
        assert_eq!(l.session_offsets("dev/1"), (0, 0));
        for i in 0..50 {
            let (a, durable) = l
                .append(AppendRequest {
                    message: msg("t/x", &format!("{i}"), false),
                    sessions: vec!["dev/1".into()],
                })
                .expect("append");
            assert_eq!(a.session_offsets, vec![i]);
            durable.await.expect("durable");
        }
        let p = l.pull_session("dev/1", 10, 50, 5).await.expect("pull");
        let got: Vec<_> = p.messages.iter().map(|m| m.offset).collect();
        assert_eq!(got, vec![10, 11, 12, 13, 14]);
        assert_eq!(p.next_offset, 15);
        assert_eq!(&p.messages[0].message.payload[..], b"10");
        assert_eq!(p.messages[0].message.topic, "t/x");
        l.commit_session_offset("dev/1", 15);
        l.shutdown().expect("l shutdown");
        store.shutdown().expect("store shutdown");
    }
    let (_store, l) = open(dir.path(), LConfig::default());
    assert_eq!(l.sessions(), vec![session("dev/1")]);
    assert_eq!(l.session_offsets("dev/1"), (15, 50));
    let p = l.pull_session("dev/1", 15, 50, 100).await.expect("pull");
    assert_eq!(p.messages.len(), 35);
    assert_eq!(p.next_offset, 50);
}

#[tokio::test]
async fn retained_table_tracks_set_replace_clear() {
    let dir = tempfile::tempdir().expect("tmp");
    {
        let (_store, l) = open(dir.path(), LConfig::default());
        for (t, p) in [
            ("r/1", "a"),
            ("r/2", "b"),
            ("r/2", "c"),
            ("r/3", "d"),
            ("r/3", ""),
        ] {
            let (_, d) = l
                .append(AppendRequest {
                    message: msg(t, p, true),
                    sessions: vec![],
                })
                .expect("append");
            d.await.expect("durable");
        }
        // No shutdown: the reopen must rebuild the table from the queue alone.
    }
    let (_store, l) = open(dir.path(), LConfig::default());
    let mut r: Vec<(String, String)> = l
        .retained()
        .into_iter()
        .map(|m| {
            (
                m.message.topic,
                String::from_utf8_lossy(&m.message.payload).into_owned(),
            )
        })
        .collect();
    r.sort();
    assert_eq!(
        r,
        vec![("r/1".into(), "a".into()), ("r/2".into(), "c".into())]
    );
}

#[tokio::test]
async fn unknown_topics_and_system_topics_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = LConfig {
        auto_create_topic_enable: false,
        ..LConfig::default()
    };
    let (_store, l) = open(dir.path(), cfg);
    let req = |t: &str| AppendRequest {
        message: msg(t, "x", false),
        sessions: vec![],
    };
    let e = l.append(req("nope/x")).err().expect("refused");
    assert!(matches!(e, LogError::TopicNotFound(_)), "{e:?}");
    assert_eq!(e.mqtt_reason(), 0x90);
    let e = l.append(req("/leading-slash")).err().expect("refused");
    assert_eq!(e.mqtt_reason(), 0x90);
    l.topics()
        .put(node_l::topic_config::TopicConfig::new("orders", 4))
        .expect("create");
    let (_, durable) = l.append(req("orders/paid")).expect("known topic accepted");
    durable.await.expect("durable");
}
