//! A bare MQTT broker for development and the Python conformance suite
//! (`tests/mqtt/`): `cargo run -p node-a --example serve -- 127.0.0.1:1883`.
//! Prints `mqtt : ADDR` and `ferrymq ready`, then serves until SIGINT/SIGTERM.

use std::io::Write;
use std::net::SocketAddr;

use node_a::NodeAConfig;
use tokio::signal::unix::{signal, SignalKind};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listen: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:1883".to_string())
        .parse()
        .map_err(std::io::Error::other)?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let node = node_a::run(NodeAConfig {
        listen,
        sys_interval_secs: 1,
        ..Default::default()
    })
    .await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "  mqtt : {}", node.local_addr)?;
        writeln!(out, "ferrymq ready")?;
        out.flush()?;
    }
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    node.shutdown().await;
    Ok(())
}
