//! Accepting connections within the connection limits, and the node's handle.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use ferrymq_shared::boundary::MessageLog;

use crate::broker::Broker;
use crate::config::NodeAConfig;

/// A running A node.
pub struct NodeA {
    /// Shared broker state.
    pub broker: Arc<Broker>,
    /// Address the MQTT listener is bound to.
    pub local_addr: SocketAddr,
    /// Address the MQTT/TLS listener is bound to, if enabled.
    pub tls_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    accept: JoinHandle<()>,
    accept_tls: Option<JoinHandle<()>>,
    sys: Option<JoinHandle<()>>,
}

impl NodeA {
    /// Stop accepting, send DISCONNECT 0x8B to v5 clients, close every connection.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        self.accept.abort();
        if let Some(t) = self.accept_tls {
            t.abort();
        }
        if let Some(s) = self.sys {
            s.abort();
        }
        // Give connections their turn to write the DISCONNECT and close; each
        // one signals `connection_closed` as it goes.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let closed = self.broker.connection_closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if self.broker.stats.clients_connected.load(Ordering::Acquire) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, closed).await.is_err() {
                tracing::warn!("connections still open after 5 s of shutdown");
                break;
            }
        }
    }
}

/// Bind the listener and start serving, messages in memory only. Port 0
/// picks a free port (see `local_addr`).
pub async fn run(config: NodeAConfig) -> std::io::Result<NodeA> {
    run_with_log(config, None).await
}

/// Bind the listener and start serving; with `log`, every publish is stored
/// through the L role before it is acknowledged, and persistent sessions and
/// retained messages the L role kept are restored first.
pub async fn run_with_log(
    config: NodeAConfig,
    log: Option<Arc<dyn MessageLog>>,
) -> std::io::Result<NodeA> {
    let listener = TcpListener::bind(config.listen).await?;
    let local_addr = listener.local_addr()?;
    let mut broker = Broker::load(config)?;
    broker.log = log;
    let broker = Arc::new(broker);
    broker.restore();
    let (tx, rx) = watch::channel(false);
    let open = Arc::new(AtomicUsize::new(0));
    let (tls_addr, accept_tls) = match &broker.config.tls {
        Some(t) => {
            let acceptor = crate::tls::acceptor(t).map_err(std::io::Error::other)?;
            let l = TcpListener::bind(t.listen).await?;
            let addr = l.local_addr()?;
            let h = tokio::spawn(accept_loop(
                l,
                broker.clone(),
                rx.clone(),
                open.clone(),
                Some(acceptor),
            ));
            (Some(addr), Some(h))
        }
        None => (None, None),
    };
    let accept = tokio::spawn(accept_loop(listener, broker.clone(), rx, open, None));
    let sys = (broker.config.sys_interval_secs > 0)
        .then(|| tokio::spawn(crate::sys::publish_loop(broker.clone())));
    Ok(NodeA {
        broker,
        local_addr,
        tls_addr,
        shutdown: tx,
        accept,
        accept_tls,
        sys,
    })
}

async fn accept_loop(
    listener: TcpListener,
    broker: Arc<Broker>,
    shutdown: watch::Receiver<bool>,
    open: Arc<AtomicUsize>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let mut window = Instant::now();
    let mut in_window = 0u32;
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if window.elapsed() >= Duration::from_secs(1) {
            window = Instant::now();
            in_window = 0;
        }
        in_window += 1;
        if in_window > broker.config.max_connection_rate
            || open.load(Ordering::Relaxed) >= broker.config.max_connections
        {
            metrics::counter!("ferrymq_mqtt_connections_refused_total").increment(1);
            drop(sock);
            continue;
        }
        let _ = sock.set_nodelay(true);
        open.fetch_add(1, Ordering::Relaxed);
        let (b, o, rx) = (broker.clone(), open.clone(), shutdown.clone());
        // Plain and TLS connections are separate task types, so a plain one does
        // not carry the (larger) TLS state machine in its allocation.
        match tls.clone() {
            None => {
                tokio::spawn(async move {
                    if let Err(e) = crate::connection::serve(b, sock, peer, rx, None).await {
                        tracing::debug!(%peer, %e, "connection closed");
                    }
                    o.fetch_sub(1, Ordering::Relaxed);
                });
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    if let Err(e) = serve_tls(b, acceptor, sock, peer, rx).await {
                        tracing::debug!(%peer, %e, "connection closed");
                    }
                    o.fetch_sub(1, Ordering::Relaxed);
                });
            }
        }
    }
}

async fn serve_tls(
    b: Arc<Broker>,
    acceptor: tokio_rustls::TlsAcceptor,
    sock: tokio::net::TcpStream,
    peer: SocketAddr,
    rx: watch::Receiver<bool>,
) -> Result<(), crate::connection::ConnectionError> {
    // The handshake counts against the connect timeout too.
    let t = Duration::from_secs(b.config.connect_timeout_secs);
    match tokio::time::timeout(t, acceptor.accept(sock)).await {
        Ok(Ok(stream)) => {
            let cn = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(crate::tls::common_name);
            crate::connection::serve(b, stream, peer, rx, cn).await
        }
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(crate::connection::ConnectionError::ConnectTimeout),
    }
}
