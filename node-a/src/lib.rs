//! node-a: the MQTT 3.1.1 / 5 broker that devices connect to.
//!
//! A QoS 1 publish: `listener` accepts the socket → `connection::serve` reads
//! CONNECT and runs the loop → `protocol::codec` decodes the PUBLISH →
//! `Conn::on_publish` → `Broker::route` matches the subscription trie and
//! queues a `Delivery` on each receiving `Session` → that session's connection
//! drains it to the wire within the receive maximum.

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
pub use listener::{run, NodeA};
