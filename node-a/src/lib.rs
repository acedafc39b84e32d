//! node-a: the MQTT 3.1.1 / 5 broker that devices connect to.
//!
//! A QoS 1 publish: `listener` accepts the socket → `connection::serve` reads
//! CONNECT and runs the loop → `protocol::codec` decodes the PUBLISH →
//! `Conn::on_publish` → `Broker::publish` matches the subscription trie,
//! appends the message through the L role (`ferrymq_shared::boundary::MessageLog`,
//! when one is attached) and queues a `Delivery` on each receiving `Session`
//! → the PUBACK waits in the connection's ack queue until the append is
//! durable → each receiving connection drains its queue to the wire within
//! the receive maximum; persistent sessions read gaps back from their stored queue.

pub mod acl;
pub mod auth;
pub mod broker;
pub mod config;
pub mod connection;
pub mod listener;
pub mod protocol;
pub mod session;
pub mod sys;
pub mod tls;

pub use broker::Broker;
pub use config::NodeAConfig;
pub use listener::{run, run_with_log, NodeA};
