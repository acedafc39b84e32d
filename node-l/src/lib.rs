//! node-l: the L role. It keeps everything that must survive a crash in a
//! shared-store [`shared_store::MessageStore`]: MQTT messages in RocketMQ's
//! layout, persistent sessions and their light queues, retained messages,
//! topic config and consumer offsets. Front ends reach it through
//! [`ferrymq_shared::boundary::MessageLog`], which [`LNode`] implements
//! in-process; a wire transport can carry the same calls later.
//!
//! - [`config`]: the role's settings (RocketMQ key names).
//! - [`topic_model`]: MQTT message ↔ stored RocketMQ message.
//! - [`topic_config`]: persisted topic table (queue count, permissions).
//! - [`offsets`]: persisted consumer and session-queue offsets.
//! - [`sessions`]: the persistent-session table (events + snapshot).
//! - [`retained`]: the retained table (light queue + snapshot).
//! - [`node`]: [`LNode`], tying them to one store.

pub mod config;
pub mod node;
pub mod offsets;
pub mod retained;
pub mod sessions;
pub mod snapshot;
pub mod topic_config;
pub mod topic_model;

pub use config::LConfig;
pub use node::{LNode, OpenError};
