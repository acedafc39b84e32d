//! Remoting connections: one task reads frames, requests run concurrently (a
//! suspended pull must not hold up the next heartbeat), one task writes. A
//! connection may have `max_requests_per_connection` requests in progress and
//! a bounded write queue, so a slow or hostile client costs only its own share.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use ferrymq_shared::boundary::BoxFuture;
use hashbrown::HashMap;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::codes::response;
use crate::remoting::{self, Command};

/// Responses and server-initiated requests waiting to be written, per connection.
const WRITE_QUEUE: usize = 1024;
/// A connection that sends nothing for this long is closed (RocketMQ's
/// channel idle time is 120 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Connections per listener.
const MAX_CONNECTIONS: usize = 10_000;

/// What serves the requests of one listener.
pub trait Handler: Send + Sync + 'static {
    /// Answer one request; None for one-way requests (or no answer).
    fn handle(self: Arc<Self>, conn: Arc<Conn>, req: Command) -> BoxFuture<Option<Command>>;

    /// The connection closed (clients registered on it go away).
    fn closed(&self, _conn: &Arc<Conn>) {}
}

/// One client connection, as handlers see it.
pub struct Conn {
    /// Connection id (unique per process).
    pub id: u64,
    /// Client address.
    pub peer: SocketAddr,
    tx: mpsc::Sender<Command>,
    next_opaque: AtomicI32,
    pending: Mutex<HashMap<i32, oneshot::Sender<Command>>>,
}

impl Conn {
    /// Send a one-way request to the client (NOTIFY_CONSUMER_IDS_CHANGED,
    /// CHECK_TRANSACTION_STATE). Dropped if the client's write queue is full.
    pub fn send_oneway(&self, mut cmd: Command) -> bool {
        cmd.opaque = self.next_opaque.fetch_add(1, Ordering::Relaxed);
        cmd.flag |= remoting::FLAG_ONEWAY;
        self.tx.try_send(cmd).is_ok()
    }

    /// Send a request and wait for its response.
    pub async fn request(&self, mut cmd: Command, timeout: Duration) -> Option<Command> {
        let opaque = self.next_opaque.fetch_add(1, Ordering::Relaxed);
        cmd.opaque = opaque;
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(opaque, tx);
        if self.tx.try_send(cmd).is_err() {
            self.pending.lock().remove(&opaque);
            return None;
        }
        let r = tokio::time::timeout(timeout, rx)
            .await
            .ok()
            .and_then(Result::ok);
        self.pending.lock().remove(&opaque);
        r
    }
}

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Accept connections on `listener` until `shutdown` turns true.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    max_frame: usize,
    max_requests: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let open = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((sock, peer)) => {
                    let Ok(slot) = open.clone().try_acquire_owned() else {
                        tracing::warn!(%peer, "connection limit reached; refused");
                        continue;
                    };
                    let _ = sock.set_nodelay(true);
                    let h = handler.clone();
                    let sd = shutdown.clone();
                    tokio::spawn(async move {
                        connection(sock, peer, h, max_frame, max_requests, sd).await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    tracing::warn!(%e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

async fn connection<H: Handler>(
    sock: TcpStream,
    peer: SocketAddr,
    handler: Arc<H>,
    max_frame: usize,
    max_requests: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut rd, mut wr) = sock.into_split();
    let (tx, mut rx) = mpsc::channel::<Command>(WRITE_QUEUE);
    let conn = Arc::new(Conn {
        id: NEXT_CONN.fetch_add(1, Ordering::Relaxed),
        peer,
        tx,
        next_opaque: AtomicI32::new(1),
        pending: Mutex::new(HashMap::new()),
    });
    metrics::gauge!("ferrymq_gateway_connections").increment(1.0);
    let writer = tokio::spawn(async move {
        let mut out = BytesMut::new();
        while let Some(c) = rx.recv().await {
            c.encode(&mut out);
            // Whatever else is ready goes in the same write.
            while out.len() < 1 << 20 {
                match rx.try_recv() {
                    Ok(c) => c.encode(&mut out),
                    Err(_) => break,
                }
            }
            if wr.write_all(&out).await.is_err() {
                break;
            }
            out.clear();
        }
        let _ = wr.shutdown().await;
    });
    let permits = Arc::new(Semaphore::new(max_requests.max(1)));
    let mut buf = BytesMut::with_capacity(4096);
    'read: loop {
        tokio::select! {
            n = tokio::time::timeout(IDLE_TIMEOUT, rd.read_buf(&mut buf)) => {
                // RocketMQ clients heartbeat every 30 s: a silent connection is dead.
                match n {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break 'read,
                    Ok(Ok(_)) => {}
                }
                loop {
                    match remoting::decode(&mut buf, max_frame) {
                        Ok(Some(cmd)) => {
                            if cmd.is_response() {
                                if let Some(tx) = conn.pending.lock().remove(&cmd.opaque) {
                                    let _ = tx.send(cmd);
                                }
                                continue;
                            }
                            // Out of request slots: stop reading until one frees.
                            let Ok(permit) = permits.clone().acquire_owned().await else {
                                break 'read;
                            };
                            let h = handler.clone();
                            let c = conn.clone();
                            tokio::spawn(async move {
                                let oneway = cmd.is_oneway();
                                let opaque = cmd.opaque;
                                let serialize = cmd.serialize;
                                if let Some(mut resp) = h.handle(c.clone(), cmd).await {
                                    if !oneway {
                                        resp.opaque = opaque;
                                        resp.flag |= remoting::FLAG_RESPONSE;
                                        resp.serialize = serialize;
                                        let _ = c.tx.send(resp).await;
                                    }
                                }
                                drop(permit);
                            });
                        }
                        Ok(None) => break,
                        Err(e) => {
                            // The stream is out of step: nothing after this can be framed.
                            tracing::info!(%peer, %e, "malformed remoting frame; closing");
                            metrics::counter!("ferrymq_gateway_bad_frames_total").increment(1);
                            break 'read;
                        }
                    }
                }
            }
            _ = shutdown.changed() => break 'read,
        }
    }
    handler.closed(&conn);
    metrics::gauge!("ferrymq_gateway_connections").decrement(1.0);
    drop(conn);
    // The writer ends once every sender (in-flight requests included) is gone.
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}

/// The answer to a request code nobody handles.
pub fn not_supported(req: &Command) -> Command {
    Command::response_to(
        req,
        response::REQUEST_CODE_NOT_SUPPORTED,
        Some(format!("request type {} not supported", req.code)),
    )
}
