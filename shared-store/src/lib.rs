//! shared-store: ferrymq's storage engine, laid out as Apache RocketMQ lays
//! out its store so that RocketMQ clients can read what it holds byte for byte.
//!
//! - [`commit_log`]: every message appended to mmap'd segments.
//! - [`consume_queue`]: per (topic, queue) 20-byte index entries over the log.
//! - [`index_file`]: lookup by key / unique key within a time range.
//! - [`checkpoint`]: how far everything is durable; crash recovery starts there.
//! - [`store`]: [`MessageStore`], the API that ties them together.

pub mod checkpoint;
pub mod commit_log;
pub mod config;
pub mod consume_queue;
pub mod error;
mod flush;
pub mod index_file;
mod mapped_file;
pub mod message;
pub mod msg_id;
mod staging;
pub mod store;

pub use commit_log::AppendResult;
pub use config::{FlushDiskType, StoreConfig};
pub use consume_queue::CqEntry;
pub use error::{Result, StoreError};
pub use message::{Message, Properties, StoredMessage};
pub use msg_id::{decode_offset_msg_id, encode_offset_msg_id};
pub use store::{
    GetResult, GetStatus, GotMessage, MessageStore, PutResult, PutStatus, RecoveryKind,
    RetentionReport, StoreStats, Submitted,
};
