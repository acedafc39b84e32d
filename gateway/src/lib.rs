//! gateway: the Apache RocketMQ 4.x remoting protocol over ferrymq's store, so
//! unmodified RocketMQ clients produce to and consume from the topics devices
//! publish on.
//!
//! - [`remoting`]: frames, JSON and binary headers.
//! - [`codes`]: request and response codes.
//! - [`server`]: connections (bounded requests and write queues per client).
//! - [`namesrv`]: the NameServer role (routes point at this gateway).
//! - [`broker`]: the Broker role's dispatch and small requests.
//! - [`send`]: sends and the one put path (delay, half messages, MQTT delivery).
//! - [`pull`]: pulls with long polling and tag filtering.
//! - [`clients`]: producer/consumer groups from heartbeats, rebalance notices.
//! - [`groups`]: subscription group configs (retry limits).
//! - [`locks`]: queue locks of orderly consumers.
//! - [`schedule`]: delay levels.
//! - [`transaction`]: half messages, END_TRANSACTION, checks.
//!
//! The gateway reaches the store through the L role's in-process API
//! ([`node_l::LNode`]) and MQTT subscribers through the A node's
//! [`node_a::Broker::publish_external`]; both are the calls a cluster
//! transport would carry.

pub mod broker;
pub mod clients;
pub mod codes;
pub mod config;
pub mod groups;
pub mod locks;
pub mod namesrv;
pub mod pull;
pub mod remoting;
pub mod schedule;
pub mod send;
pub mod server;
pub mod state;
pub mod transaction;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

pub use config::GatewayConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running gateway.
pub struct Gateway {
    /// NameServer listener address.
    pub namesrv_addr: SocketAddr,
    /// Broker listener address.
    pub broker_addr: SocketAddr,
    /// Shared state (for tests and admin).
    pub shared: Arc<state::Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Gateway {
    /// Stop listening and stop the background tasks.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

/// Both listeners, bound: the broker's address is known before the store
/// opens, so it can be the store host written into every message (clients
/// send retries to the address in a message's id).
pub struct Bound {
    config: GatewayConfig,
    namesrv: TcpListener,
    broker: TcpListener,
    /// Address routes and message ids point clients to.
    pub advertised: SocketAddr,
}

/// Bind the NameServer and Broker listeners.
pub async fn bind(config: GatewayConfig) -> std::io::Result<Bound> {
    let namesrv = TcpListener::bind(config.namesrv_listen).await?;
    let broker = TcpListener::bind(config.broker_listen).await?;
    let listen = broker.local_addr()?;
    let advertised = config.broker_advertised_addr.unwrap_or_else(|| {
        if listen.ip().is_unspecified() {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port())
        } else {
            listen
        }
    });
    Ok(Bound {
        config,
        namesrv,
        broker,
        advertised,
    })
}

/// Bind both listeners and start serving on the L role's store; with `mqtt`,
/// messages sent by RocketMQ clients reach MQTT subscribers too.
pub async fn run(
    config: GatewayConfig,
    l: node_l::LNode,
    mqtt: Option<Arc<node_a::Broker>>,
) -> std::io::Result<Gateway> {
    start(bind(config).await?, l, mqtt).await
}

/// Start serving on listeners bound by [`bind`].
pub async fn start(
    bound: Bound,
    l: node_l::LNode,
    mqtt: Option<Arc<node_a::Broker>>,
) -> std::io::Result<Gateway> {
    let Bound {
        config,
        namesrv: ns,
        broker: br,
        advertised,
    } = bound;
    let namesrv_addr = ns.local_addr()?;
    let delay_levels = config.delay_levels();
    let store = l.store().clone();
    let groups = groups::SubscriptionGroups::open(
        store
            .config()
            .store_path
            .join("config")
            .join("subscriptionGroup.json"),
    )
    .map_err(std::io::Error::other)?;
    let mut shared = state::Shared {
        config: config.clone(),
        l,
        store,
        mqtt,
        broker_addr: advertised,
        clients: clients::Registry::default(),
        locks: locks::QueueLocks::default(),
        delay_levels,
        tx: transaction::Transactions::default(),
        groups,
    };
    shared.tx = transaction::Transactions::load(&shared);
    let shared = Arc::new(shared);
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(server::serve(
        ns,
        Arc::new(namesrv::NameServer {
            shared: shared.clone(),
        }),
        config.max_frame_bytes,
        config.max_requests_per_connection,
        stop_rx.clone(),
    )));
    tasks.push(tokio::spawn(server::serve(
        br,
        Arc::new(broker::BrokerRole {
            shared: shared.clone(),
        }),
        config.max_frame_bytes,
        config.max_requests_per_connection,
        stop_rx.clone(),
    )));
    for level in 1..=shared.delay_levels.len() {
        tasks.push(tokio::spawn(schedule::level_loop(
            shared.clone(),
            level,
            stop_rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(transaction::check_loop(
        shared.clone(),
        stop_rx.clone(),
    )));
    let s = shared.clone();
    let mut st = stop_rx.clone();
    tasks.push(tokio::spawn(async move {
        let timeout = Duration::from_millis(s.config.channel_expired_timeout);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                _ = st.changed() => return,
            }
            for id in s.clients.expire(timeout) {
                s.locks.release_client(&id);
            }
        }
    }));
    Ok(Gateway {
        namesrv_addr,
        broker_addr: advertised,
        shared,
        stop,
        tasks,
    })
}
