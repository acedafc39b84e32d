//! A node configuration: listeners and the limits that keep one client from
//! costing more than its own share.

use std::net::SocketAddr;

use serde::Deserialize;

/// Configuration of an A node (the `[mqtt]` section of the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "snake_case")]
pub struct NodeAConfig {
    /// Plain MQTT listener.
    pub listen: SocketAddr,
    /// Largest packet accepted from a client, bytes (also sent as CONNACK maximum packet size).
    pub max_packet_size: u32,
    /// Most concurrent connections; more are refused.
    pub max_connections: usize,
    /// Most new connections per second; more are refused.
    pub max_connection_rate: u32,
    /// Seconds a socket may stay open without sending CONNECT.
    pub connect_timeout_secs: u64,
    /// Server receive maximum: QoS 1/2 publishes a client may have unacknowledged towards us.
    pub receive_maximum: u16,
    /// Most QoS 1/2 messages in flight towards one client (capped by the client's receive maximum).
    pub max_inflight: u16,
    /// Most messages queued for one session (online or offline); more are dropped and counted.
    pub max_queued_messages: usize,
    /// Whether QoS 0 messages are queued for offline persistent sessions.
    pub queue_qos0_offline: bool,
    /// Per-client publish rate limit (messages/second, 0 = unlimited).
    pub max_publish_rate: u32,
    /// Per-client inbound byte rate limit (bytes/second, 0 = unlimited).
    pub max_byte_rate: u64,
    /// Largest keep alive granted; larger requests get Server Keep Alive (v5).
    pub max_keep_alive: u16,
    /// Largest session expiry granted, seconds.
    pub max_session_expiry: u32,
    /// Topic aliases a client may use towards us.
    pub topic_alias_maximum: u16,
    /// Interval of `$SYS/` updates, seconds (0 = off).
    pub sys_interval_secs: u64,
    /// Whether clients without credentials may connect. Unset: allowed when no
    /// password file is configured (so `ferrymq standalone` works out of the box),
    /// refused once one is.
    pub allow_anonymous: Option<bool>,
    /// Password file (`user:argon2-hash` lines, see `ferrymq passwd`).
    pub password_file: Option<std::path::PathBuf>,
    /// ACL rule file (see `acl.rs` for the format).
    pub acl_file: Option<std::path::PathBuf>,
    /// What happens when no ACL rule matches.
    pub acl_default_allow: bool,
    /// MQTT over TLS listener (off when absent).
    pub tls: Option<crate::tls::TlsConfig>,
}

impl NodeAConfig {
    /// Whether a CONNECT without a user name is accepted.
    pub fn anonymous_allowed(&self) -> bool {
        self.allow_anonymous.unwrap_or(self.password_file.is_none())
    }
}

impl Default for NodeAConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 1883)),
            max_packet_size: 1 << 20,
            max_connections: 100_000,
            max_connection_rate: 10_000,
            connect_timeout_secs: 10,
            receive_maximum: 1024,
            max_inflight: 128,
            max_queued_messages: 10_000,
            queue_qos0_offline: false,
            max_publish_rate: 0,
            max_byte_rate: 0,
            max_keep_alive: 65_535,
            max_session_expiry: u32::MAX,
            topic_alias_maximum: 64,
            sys_interval_secs: 10,
            allow_anonymous: None,
            password_file: None,
            acl_file: None,
            acl_default_allow: true,
            tls: None,
        }
    }
}
