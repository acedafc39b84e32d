//! `$SYS/` topics: broker statistics as retained messages, refreshed on an
//! interval. `$`-topics are never matched by a leading `#` or `+`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::broker::Broker;
use crate::protocol::packet::{PublishProperties, QoS};
use crate::session::RoutedMessage;

/// Publish the statistics now.
pub fn publish_now(broker: &Arc<Broker>) {
    let s = &broker.stats;
    let items: [(&str, String); 9] = [
        (
            "$SYS/broker/version",
            format!("ferrymq {}", env!("CARGO_PKG_VERSION")),
        ),
        (
            "$SYS/broker/uptime",
            format!("{} seconds", broker.started.elapsed().as_secs()),
        ),
        (
            "$SYS/broker/clients/connected",
            s.clients_connected.load(Ordering::Relaxed).to_string(),
        ),
        (
            "$SYS/broker/messages/received",
            s.messages_received.load(Ordering::Relaxed).to_string(),
        ),
        (
            "$SYS/broker/messages/sent",
            s.messages_sent.load(Ordering::Relaxed).to_string(),
        ),
        (
            "$SYS/broker/bytes/received",
            s.bytes_received.load(Ordering::Relaxed).to_string(),
        ),
        (
            "$SYS/broker/bytes/sent",
            s.bytes_sent.load(Ordering::Relaxed).to_string(),
        ),
        (
            "$SYS/broker/subscriptions/count",
            broker.subscription_count().to_string(),
        ),
        (
            "$SYS/broker/retained messages/count",
            broker.retained_count().to_string(),
        ),
    ];
    for (topic, value) in items {
        let msg = RoutedMessage::new(
            topic.to_string(),
            Bytes::from(value),
            QoS::AtMostOnce,
            true,
            PublishProperties::default(),
            None,
        );
        broker.publish_local(&Arc::new(msg));
    }
}

/// Refresh `$SYS/` every `sys_interval_secs`.
pub async fn publish_loop(broker: Arc<Broker>) {
    let mut tick =
        tokio::time::interval(Duration::from_secs(broker.config.sys_interval_secs.max(1)));
    loop {
        tick.tick().await;
        publish_now(&broker);
    }
}
