//! `ferrymq standalone`: one broker node: the store, the L role on it (every
//! acknowledged MQTT message, persistent session and retained message is in
//! the store), the A node (MQTT and MQTT/TLS listeners) reaching the L role
//! in-process, the RocketMQ gateway (NameServer and Broker roles) on the same
//! store, and the metrics endpoint.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use ferrymq_shared::boundary::MessageLog;
use metrics_exporter_prometheus::{BuildError, PrometheusBuilder};
use shared_store::MessageStore;
use tokio::signal::unix::{signal, SignalKind};

use crate::settings::{Settings, Sources};
use crate::StandaloneArgs;

/// Run until SIGTERM or SIGINT, then shut the store down cleanly.
pub async fn run(args: StandaloneArgs) -> Result<()> {
    let settings = Settings::load(Sources {
        file: args.config.as_deref(),
        data_dir: &args.data_dir,
        env: None,
    })?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data directory {}", args.data_dir.display()))?;

    // Install the recorder before opening the store so the metrics it records
    // while recovering are not lost.
    let metrics_addr = install_metrics(args.metrics)?;
    metrics::gauge!("ferrymq_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);

    // The gateway's listeners are bound first: its address is the store host
    // written into every message id, where RocketMQ clients send retries.
    let mut gw_cfg = settings.gateway.clone();
    if let Some(a) = args.namesrv {
        gw_cfg.namesrv_listen = a;
    }
    if let Some(a) = args.broker {
        gw_cfg.broker_listen = a;
    }
    let gw_bound = gateway::bind(gw_cfg)
        .await
        .context("binding the RocketMQ gateway (namesrv and broker listeners)")?;
    let mut settings = settings;
    settings.store.store_host = gw_bound.advertised;

    let store_cfg = settings.store.clone();
    let opened = Instant::now();
    let store = tokio::task::spawn_blocking(move || MessageStore::open(store_cfg))
        .await
        .context("store open task")?
        .with_context(|| format!("opening store at {}", settings.store.store_path.display()))?;
    let open_secs = opened.elapsed().as_secs_f64();
    metrics::gauge!("ferrymq_store_open_seconds").set(open_secs);

    // Subscribe before printing `ready` so a signal sent right after it is seen.
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;

    let mut mqtt_cfg = settings.mqtt.clone();
    if let Some(a) = args.mqtt {
        mqtt_cfg.listen = a;
    }
    if let Some(a) = args.mqtts {
        match mqtt_cfg.tls.as_mut() {
            Some(t) => t.listen = a,
            None => anyhow::bail!("--mqtts needs [mqtt.tls] cert_file and key_file in the config"),
        }
    }
    let l_cfg = settings.broker.clone();
    let l_store = store.clone();
    let lnode = tokio::task::spawn_blocking(move || node_l::LNode::open(l_cfg, l_store))
        .await
        .context("L role open task")?
        .context("starting the L role (topics, offsets, sessions, retained)")?;
    let log: Arc<dyn MessageLog> = Arc::new(lnode.clone());
    let node = node_a::run_with_log(mqtt_cfg, Some(log))
        .await
        .context("starting the MQTT listener")?;

    let gw = gateway::start(gw_bound, lnode.clone(), Some(node.broker.clone()))
        .await
        .context("starting the RocketMQ gateway (namesrv and broker listeners)")?;

    let mut out = std::io::stdout().lock();
    writeln!(out, "ferrymq {} standalone", env!("CARGO_PKG_VERSION"))?;
    writeln!(out, "  data dir:    {}", args.data_dir.display())?;
    writeln!(
        out,
        "  store path:  {}",
        settings.store.store_path.display()
    )?;
    writeln!(
        out,
        "  flush type:  {:?} (recovery: {:?}, {open_secs:.3} s)",
        settings.store.flush_disk_type,
        store.recovery_kind()
    )?;
    writeln!(out, "  mqtt:        {}", node.local_addr)?;
    match node.tls_addr {
        Some(a) => writeln!(out, "  mqtts:       {a}")?,
        None => writeln!(
            out,
            "  mqtts:       off (no [mqtt.tls] certificates configured)"
        )?,
    }
    writeln!(out, "  metrics:     http://{metrics_addr}/metrics")?;
    writeln!(
        out,
        "  sessions:    {} persistent, {} retained messages restored",
        node.broker.session_count(),
        node.broker.retained_count()
    )?;
    writeln!(out, "  namesrv:     {}", gw.namesrv_addr)?;
    writeln!(out, "  broker:      {}", gw.broker_addr)?;
    writeln!(out, "ferrymq ready")?;
    out.flush()?;
    drop(out);

    let which = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = which, "shutting down");
    gw.shutdown().await;
    node.shutdown().await;
    if let Err(e) = lnode.shutdown() {
        tracing::error!(%e, "writing the L role's tables at shutdown");
    }
    tokio::task::spawn_blocking(move || store.shutdown())
        .await
        .context("store shutdown task")?
        .context("store shutdown")?;
    tracing::info!("store shut down cleanly");
    Ok(())
}

/// Start the Prometheus listener; returns the address it actually listens on.
fn install_metrics(addr: SocketAddr) -> Result<SocketAddr> {
    // The exporter binds internally and cannot report the port it got, so for
    // port 0 we find a free port ourselves. Another process could take it
    // between our probe and the exporter's bind; retry a few times if so.
    let attempts = if addr.port() == 0 { 5 } else { 1 };
    let mut last_err = None;
    for _ in 0..attempts {
        let target = if addr.port() == 0 {
            let probe = TcpListener::bind(addr)
                .with_context(|| format!("binding metrics address {addr}"))?;
            probe
                .local_addr()
                .context("reading probed metrics address")?
        } else {
            addr
        };
        match PrometheusBuilder::new()
            .with_http_listener(target)
            .install()
        {
            Ok(()) => return Ok(target),
            Err(e @ BuildError::FailedToCreateHTTPListener(_)) => last_err = Some(e),
            Err(e) => return Err(e).context("installing Prometheus exporter"),
        }
    }
    Err(anyhow::anyhow!(
        "metrics listener on {addr}: {}",
        last_err.map(|e| e.to_string()).unwrap_or_default()
    ))
}
