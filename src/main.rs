//! `ferrymq`: MQTT-native IoT broker with RocketMQ-style storage.

mod bench;
mod settings;
mod standalone;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Command line of the `ferrymq` binary.
#[derive(Debug, Parser)]
#[command(
    name = "ferrymq",
    version,
    about = "MQTT-native IoT broker with RocketMQ-style storage"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a single broker node (store + metrics for now).
    Standalone(StandaloneArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Add or replace a user in an MQTT password file (salted argon2id).
    Passwd(PasswdArgs),
}

/// Arguments of `ferrymq standalone`.
#[derive(Debug, Args)]
pub struct StandaloneArgs {
    /// TOML configuration file; `FERRYMQ_*` variables override it
    /// (`__` separates sections, e.g. FERRYMQ_STORE__FLUSHDISKTYPE=SYNC_FLUSH).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory; the store lives in <DIR>/store unless store.storePath is set.
    #[arg(long, value_name = "DIR", default_value_os_t = settings::default_data_dir())]
    pub data_dir: PathBuf,
    /// Prometheus metrics listener; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9100")]
    pub metrics: SocketAddr,
    /// MQTT listener (overrides mqtt.listen); port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    pub mqtt: Option<SocketAddr>,
    /// MQTT/TLS listener (overrides mqtt.tls.listen; needs [mqtt.tls] certificates).
    #[arg(long, value_name = "ADDR")]
    pub mqtts: Option<SocketAddr>,
    /// RocketMQ NameServer listener (overrides gateway.namesrvListen, default 0.0.0.0:9876).
    #[arg(long, value_name = "ADDR")]
    pub namesrv: Option<SocketAddr>,
    /// RocketMQ Broker listener (overrides gateway.brokerListen, default 0.0.0.0:10911).
    #[arg(long, value_name = "ADDR")]
    pub broker: Option<SocketAddr>,
}

/// Arguments of `ferrymq passwd`.
#[derive(Debug, Args)]
pub struct PasswdArgs {
    /// Password file to create or update.
    pub file: PathBuf,
    /// User name.
    pub user: String,
    /// Password (read from stdin when absent, so it stays out of shell history).
    #[arg(long)]
    pub password: Option<String>,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Storage engine benchmark (write, group commit, read, crash recovery).
    Store(bench::store::StoreBenchArgs),
    /// Internal: write into a store, then abort without shutdown.
    #[command(hide = true)]
    StoreCrashWriter(bench::store::CrashWriterArgs),
    /// MQTT load generator (emqtt-bench-like): pub/sub throughput, latency, idle connections.
    Mqtt(bench::mqtt::MqttBenchArgs),
}

fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Logs go to stderr so stdout carries only the banner, the ready line and
    // benchmark results, which scripts parse.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Command::Standalone(args) => standalone::run(args).await,
        Command::Bench(BenchCommand::Store(args)) => bench::store::run(args).await,
        Command::Bench(BenchCommand::StoreCrashWriter(args)) => {
            bench::store::crash_writer(args).await
        }
        Command::Bench(BenchCommand::Mqtt(args)) => bench::mqtt::run(args).await,
        Command::Passwd(args) => passwd(args),
    }
}

fn passwd(args: PasswdArgs) -> Result<()> {
    let password = match args.password {
        Some(p) => p,
        None => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    anyhow::ensure!(!password.is_empty(), "empty password");
    node_a::auth::PasswordFile::set_user(&args.file, &args.user, &password)?;
    println!("user {} written to {}", args.user, args.file.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn standalone_defaults() {
        let cli = Cli::try_parse_from(["ferrymq", "standalone"]).expect("parse");
        let Command::Standalone(a) = cli.command else {
            panic!("wrong subcommand")
        };
        assert_eq!(a.data_dir, PathBuf::from("./data"));
        assert_eq!(
            a.metrics,
            "0.0.0.0:9100".parse::<SocketAddr>().expect("addr")
        );
    }
}
