//! The gateway against crates.io `rocketmq-client-rust` (the rocketmq-rust
//! project's client): sync sends + a push consumer, and transactional
//! producers whose local transactions commit, roll back, or stay unknown until
//! the gateway's CHECK_TRANSACTION_STATE asks them.
//!
//! All scenarios share one test function: the client installs a process-wide
//! telemetry runtime that may be installed only once.

#![recursion_limit = "512"]

use std::any::Any;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rocketmq_client_rust::{
    ClientResult, ClientRuntime, ClientRuntimeConfig, ConsumeConcurrentlyContext,
    ConsumeConcurrentlyStatus, DefaultMQProducer, DefaultMQPushConsumer, LocalTransactionState,
    MQPushConsumer, MessageListenerConcurrently, TransactionListener, TransactionMQProducer,
};
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_single::Message;
use rocketmq_model::common::message::MessageTrait;
use rocketmq_runtime::{RuntimeConfig, RuntimeOwner};
use shared_store::{MessageStore, StoreConfig};

#[derive(Clone, Default)]
struct Collected(Arc<Mutex<Vec<(String, String)>>>);

impl MessageListenerConcurrently for Collected {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        _context: &ConsumeConcurrentlyContext,
    ) -> ClientResult<ConsumeConcurrentlyStatus> {
        let mut g = self.0.lock();
        for m in msgs {
            let body = m
                .body()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let tags = m.get_tags().map(|t| t.to_string()).unwrap_or_default();
            g.push((body, tags));
        }
        Ok(ConsumeConcurrentlyStatus::ConsumeSuccess)
    }
}

impl Collected {
    fn bodies(&self) -> BTreeSet<String> {
        self.0.lock().iter().map(|(b, _)| b.clone()).collect()
    }
}

/// Commits "commit-*", rolls back "rollback-*", answers Unknown for
/// "unknown-*" until the gateway checks, then commits.
#[derive(Default)]
struct Tx {
    checked: Mutex<Vec<String>>,
}

fn body_of(msg: &dyn MessageTrait) -> String {
    msg.get_body()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

impl TransactionListener for Tx {
    fn execute_local_transaction(
        &self,
        msg: &dyn MessageTrait,
        _arg: Option<&(dyn Any + Send + Sync)>,
    ) -> LocalTransactionState {
        let b = body_of(msg);
        if b.starts_with("commit") {
            LocalTransactionState::CommitMessage
        } else if b.starts_with("rollback") {
            LocalTransactionState::RollbackMessage
        } else {
            LocalTransactionState::Unknown
        }
    }

    fn check_local_transaction(&self, msg: &MessageExt) -> LocalTransactionState {
        let b = msg
            .body()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        self.checked.lock().push(b);
        LocalTransactionState::CommitMessage
    }
}

async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocketmq_client_rust_sends_consumes_and_transacts() {
    let dir = tempfile::tempdir().expect("tmp");
    let gw_bound = gateway::bind(gateway::GatewayConfig {
        namesrv_listen: "127.0.0.1:0".parse().expect("addr"),
        broker_listen: "127.0.0.1:0".parse().expect("addr"),
        transaction_timeout: 500,
        transaction_check_interval: 200,
        ..gateway::GatewayConfig::default()
    })
    .await
    .expect("bind");
    let store = MessageStore::open(StoreConfig {
        mapped_file_size_commit_log: 4 << 20,
        max_message_size: 64 << 10,
        store_host: gw_bound.advertised,
        ..StoreConfig::with_path(dir.path())
    })
    .expect("store");
    let l = node_l::LNode::open(node_l::LConfig::default(), store).expect("l");
    let gw = gateway::start(gw_bound, l, None).await.expect("gateway");
    let namesrv = gw.namesrv_addr.to_string();

    let owner = RuntimeOwner::plan(RuntimeConfig {
        thread_name: "ferrymq-compat-rocketmq-client".into(),
        ..Default::default()
    })
    .expect("runtime plan")
    .build()
    .expect("runtime");
    let telemetry = rocketmq_observability::install_global(
        &rocketmq_observability::TelemetryBootstrapConfig::default(),
    )
    .expect("telemetry");
    let rt = ClientRuntime::try_new(
        owner.root_context().component("client"),
        ClientRuntimeConfig::default(),
        telemetry.handle(),
    )
    .expect("client runtime");

    // Sync sends, then a push consumer of a new group reads the backlog.
    let mut producer = DefaultMQProducer::builder(rt.clone())
        .producer_group("compat_pg".to_string())
        .name_server_addr(namesrv.clone())
        .build();
    producer.start().await.expect("producer start");
    let mut offset_ids = Vec::new();
    for i in 0..20 {
        let m = Message::builder()
            .topic("rust_orders")
            .tags(if i % 2 == 0 { "TagA" } else { "TagB" })
            .key(format!("order-{i}"))
            .body_slice(format!("r{i}").as_bytes())
            .build_unchecked();
        let r = producer
            .send_with_timeout(m, 5000)
            .await
            .expect("send")
            .expect("a send result");
        assert_eq!(format!("{:?}", r.send_status), "SendOk", "{r:?}");
        offset_ids.push(r.offset_msg_id.clone().expect("offsetMsgId"));
    }

    // Lookups as the client does them: by key (QUERY_MESSAGE) and by
    // offsetMsgId (VIEW_MESSAGE_BY_ID, sent to the address inside the id).
    // The key index is built by the store's dispatcher, just after the send
    // returns (as in RocketMQ): query until it is there.
    let deadline = Instant::now() + Duration::from_secs(10);
    let found: Vec<String> = loop {
        let q = producer
            .query_message("rust_orders", "order-7", 32, 0, u64::MAX / 2)
            .await;
        if let Ok(q) = q {
            let found: Vec<String> = q
                .message_list()
                .iter()
                .map(|m| {
                    m.body()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default()
                })
                .collect();
            if !found.is_empty() {
                break found;
            }
        }
        assert!(Instant::now() < deadline, "query by key found nothing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(found, vec!["r7".to_string()]);
    let v = producer
        .view_message("rust_orders", &offset_ids[3])
        .await
        .expect("view by id");
    assert_eq!(v.body().as_deref(), Some(&b"r3"[..]));
    let got = Collected::default();
    let mut consumer = DefaultMQPushConsumer::builder(rt.clone())
        .consumer_group("compat_cg".to_string())
        .name_server_addr(namesrv.clone())
        .build();
    consumer
        .subscribe("rust_orders", "TagA")
        .await
        .expect("subscribe");
    consumer.register_message_listener_concurrently(got.clone());
    consumer.start().await.expect("consumer start");
    let want: BTreeSet<String> = (0..20).step_by(2).map(|i| format!("r{i}")).collect();
    wait_for("the TagA messages", Duration::from_secs(30), || {
        want.is_subset(&got.bodies())
    })
    .await;
    assert!(
        got.0.lock().iter().all(|(_, t)| t == "TagA"),
        "tag filter let others through"
    );

    // Transactions: commit, rollback, and unknown resolved by a check.
    let tx_got = Collected::default();
    let mut tx_consumer = DefaultMQPushConsumer::builder(rt.clone())
        .consumer_group("compat_tx_cg".to_string())
        .name_server_addr(namesrv.clone())
        .build();
    tx_consumer
        .subscribe("rust_payments", "*")
        .await
        .expect("subscribe");
    tx_consumer.register_message_listener_concurrently(tx_got.clone());
    let listener = Arc::new(Tx::default());
    let mut tx = TransactionMQProducer::builder(rt.clone())
        .producer_group("compat_tx_pg".to_string())
        .name_server_addr(namesrv.clone())
        .topics(vec!["rust_payments"])
        .transaction_listener(ArcListener(listener.clone()))
        .build();
    tx.start().await.expect("tx producer start");
    for b in ["commit-1", "rollback-1", "unknown-1"] {
        let m = Message::builder()
            .topic("rust_payments")
            .body_slice(b.as_bytes())
            .build_unchecked();
        tx.send_message_in_transaction::<(), _>(m, None)
            .await
            .expect("half message sent");
    }
    tx_consumer.start().await.expect("tx consumer start");
    wait_for(
        "the committed and the checked messages",
        Duration::from_secs(30),
        || {
            let b = tx_got.bodies();
            b.contains("commit-1") && b.contains("unknown-1")
        },
    )
    .await;
    assert!(
        listener.checked.lock().iter().any(|b| b == "unknown-1"),
        "the gateway never asked about the unknown transaction"
    );
    // The rolled-back message is in no queue of the topic (the store is the
    // truth; the consumer has read everything there is).
    let store = gw.shared.store.clone();
    store.dispatch_now().expect("dispatch");
    for q in 0..8 {
        let r = store.get_message("rust_payments", q, 0, 64, None);
        for m in &r.messages {
            let d = shared_store::message::decode(&m.data).expect("decode");
            assert_ne!(
                &d.message.body[..],
                b"rollback-1",
                "a rolled-back message is visible"
            );
        }
    }
    assert!(
        !tx_got.bodies().contains("rollback-1"),
        "a rolled-back message was delivered"
    );

    consumer.shutdown().await;
    tx_consumer.shutdown().await;
    producer.shutdown().await;
    tx.shutdown().await;
    let _ = rt.shutdown().await;
    gw.shutdown().await;
}

/// The builder wants a listener by value; the test keeps a handle to it.
struct ArcListener(Arc<Tx>);

impl TransactionListener for ArcListener {
    fn execute_local_transaction(
        &self,
        msg: &dyn MessageTrait,
        arg: Option<&(dyn Any + Send + Sync)>,
    ) -> LocalTransactionState {
        self.0.execute_local_transaction(msg, arg)
    }

    fn check_local_transaction(&self, msg: &MessageExt) -> LocalTransactionState {
        self.0.check_local_transaction(msg)
    }
}
