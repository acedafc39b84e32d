//! Gateway settings (the `[gateway]` section).

use std::net::SocketAddr;

use serde::Deserialize;

/// Configuration of a [`crate::Gateway`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayConfig {
    /// NameServer listener (`--namesrv`).
    pub namesrv_listen: SocketAddr,
    /// Broker listener (`--broker`).
    pub broker_listen: SocketAddr,
    /// Address put in routes; default: the broker listener's (127.0.0.1 when
    /// it listens on every interface).
    pub broker_advertised_addr: Option<SocketAddr>,
    /// Broker name clients see.
    pub broker_name: String,
    /// Cluster name clients see.
    pub broker_cluster_name: String,
    /// Largest frame accepted (bytes).
    pub max_frame_bytes: usize,
    /// Requests a connection may have in progress (suspended pulls included).
    pub max_requests_per_connection: usize,
    /// Longest a pull is suspended, whatever the client asks (ms).
    pub long_polling_max_millis: u64,
    /// Delay levels (RocketMQ's `messageDelayLevel`).
    pub message_delay_level: String,
    /// Retries before a message goes to `%DLQ%<group>`.
    pub max_reconsume_times: i32,
    /// A half message is checked with its producer after this long (ms).
    pub transaction_timeout: u64,
    /// Checks of one half message before it is discarded.
    pub transaction_check_max: u32,
    /// How often unresolved half messages are looked at (ms).
    pub transaction_check_interval: u64,
    /// A client whose heartbeat stops is dropped after this long (ms).
    pub channel_expired_timeout: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            namesrv_listen: SocketAddr::from(([0, 0, 0, 0], 9876)),
            broker_listen: SocketAddr::from(([0, 0, 0, 0], 10911)),
            broker_advertised_addr: None,
            broker_name: "ferrymq-broker".into(),
            broker_cluster_name: "DefaultCluster".into(),
            max_frame_bytes: 16 << 20,
            max_requests_per_connection: 256,
            long_polling_max_millis: 30_000,
            message_delay_level: "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h"
                .into(),
            max_reconsume_times: 16,
            transaction_timeout: 6_000,
            transaction_check_max: 15,
            transaction_check_interval: 1_000,
            channel_expired_timeout: 120_000,
        }
    }
}

impl GatewayConfig {
    /// Delay of each level (index 0 = level 1), in ms.
    pub fn delay_levels(&self) -> Vec<u64> {
        self.message_delay_level
            .split_whitespace()
            .filter_map(|l| {
                let (n, unit) = l.split_at(l.find(|c: char| !c.is_ascii_digit())?);
                let n: u64 = n.parse().ok()?;
                Some(match unit {
                    "s" => n * 1000,
                    "m" => n * 60_000,
                    "h" => n * 3_600_000,
                    "d" => n * 86_400_000,
                    _ => return None,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_delay_levels_parse() {
        let l = super::GatewayConfig::default().delay_levels();
        assert_eq!(l.len(), 18);
        assert_eq!((l[0], l[3], l[17]), (1000, 30_000, 7_200_000));
    }
}
