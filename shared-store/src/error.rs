//! The one error type of the store.

use std::path::PathBuf;

/// Everything that can go wrong in the store. Callers map these to MQTT reason
/// codes or RocketMQ response codes at their edge.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O call failed; `path` names the file involved.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// File or directory the call was about.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Stored bytes that must be valid are not. Never skipped silently.
    #[error("corrupted data in {file} at file offset {offset}: {reason}")]
    Corruption {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset inside that file.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// Bytes handed to a decoder are not a well-formed message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The message (body, topic or properties) exceeds a configured or format limit.
    #[error("message rejected: {0}")]
    MessageIllegal(String),
    /// Disk usage passed the hard ratio: writes are refused until space frees.
    #[error("disk full: usage {ratio:.3} is over the hard limit {limit:.3}")]
    DiskFull {
        /// Current usage ratio.
        ratio: f64,
        /// The configured hard limit.
        limit: f64,
    },
    /// The configuration is invalid.
    #[error("invalid store configuration: {0}")]
    Config(String),
    /// The store is shutting down or has shut down.
    #[error("store is shut down")]
    ShutDown,
}

/// Result alias of the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Attach a path to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| StoreError::Io {
            path: path.into(),
            source,
        })
    }
}
