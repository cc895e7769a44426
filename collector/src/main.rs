//! `vigil-collector`: command-line entry point. All logic lives in the library.
use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use vigil_collector::{query, server, sqlite::SqliteStore};
use vigil_proto::v1::{AlertQuery, Severity};

/// Vigil collector: receives alert streams from Vigil agents, stores them,
/// and answers investigation queries.
#[derive(Parser, Debug)]
#[command(name = "vigil-collector", version, propagate_version = true)]
struct Cli {
    /// Log filter, e.g. `info`, `debug` (RUST_LOG overrides). Logs go to stderr.
    #[arg(long, default_value = "info", global = true)]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Receive alerts from agents and store them until SIGINT/SIGTERM.
    ///
    /// Example: vigil-collector serve --listen 0.0.0.0:50051 --db /var/lib/vigil/alerts.db
    Serve(ServeArgs),
    /// Ask a running collector.
    Query(QueryArgs),
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on (IP:PORT). The default accepts local agents only.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// SQLite database file; created if missing, its directory must exist.
    #[arg(long, value_name = "PATH", default_value = "/var/lib/vigil/alerts.db")]
    db: PathBuf,
}

#[derive(Args, Debug)]
struct QueryArgs {
    /// Collector to ask.
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    server: String,
    #[command(subcommand)]
    what: QueryWhat,
}

#[derive(Subcommand, Debug)]
enum QueryWhat {
    /// Stored alerts, newest first.
    ///
    /// Examples:
    ///   vigil-collector query alerts --since 1h --severity warning
    ///   vigil-collector query alerts --host web-1 --rule "Execution from a temporary directory" --json
    ///   vigil-collector query alerts --container shop/web-5f7d --since 2h
    #[command(verbatim_doc_comment)]
    Alerts(AlertsArgs),
}

#[derive(Args, Debug)]
struct AlertsArgs {
    /// Only alerts from the last DURATION (e.g. 90s, 15m, 2h, 7d).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    since: Option<Duration>,
    /// Only alerts from this hostname.
    #[arg(long, value_name = "H")]
    host: Option<String>,
    /// Only alerts of this rule (exact name).
    #[arg(long, value_name = "R")]
    rule: Option<String>,
    /// Only alerts of at least this severity: debug, informational, notice,
    /// warning, error, critical, alert, emergency.
    #[arg(long, value_name = "S", value_parser = parse_severity)]
    severity: Option<Severity>,
    /// Only alerts from this container: its id (full, or the first 12 or
    /// more digits), `host` for processes outside containers, or a
    /// Kubernetes `namespace/pod`.
    #[arg(long, value_name = "C")]
    container: Option<String>,
    /// At most N alerts (server caps at 100000).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    limit: u32,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e} (e.g. 90s, 15m, 2h, 7d)"))
}

fn parse_severity(s: &str) -> Result<Severity, String> {
    Severity::parse_name(s).ok_or_else(|| {
        format!("`{s}`: expected debug, informational, notice, warning, error, critical, alert or emergency")
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cli.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vigil-collector: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Query(q) => match q.what {
                QueryWhat::Alerts(a) => query_alerts(&q.server, a).await,
            },
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil-collector: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if args.db.as_os_str() == "/var/lib/vigil/alerts.db" {
        std::fs::create_dir_all("/var/lib/vigil").context("cannot create /var/lib/vigil")?;
    }
    let store = SqliteStore::open(&args.db)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr()?, db = %args.db.display(), "collector serving");
    server::run(listener, Arc::new(store), shutdown_signal()).await?;
    tracing::info!("collector stopped");
    Ok(())
}

async fn query_alerts(server: &str, a: AlertsArgs) -> anyhow::Result<()> {
    let since_unix_ns = match a.since {
        Some(d) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
            now.saturating_sub(d).as_nanos() as i64
        }
        None => 0,
    };
    let q = AlertQuery {
        since_unix_ns,
        host: a.host.unwrap_or_default(),
        rule: a.rule.unwrap_or_default(),
        min_severity: a.severity.map_or(0, |s| s as i32),
        limit: a.limit,
        container: a.container.unwrap_or_default(),
    };
    let alerts = query::fetch(server, q).await?;
    let mut out = std::io::stdout().lock();
    let res = if a.json {
        query::print_json(&mut out, &alerts)
    } else {
        query::print_table(&mut out, &alerts)
    };
    match res {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("cannot write to stdout"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_and_severities() {
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("soon").unwrap_err().contains("`soon`"));
        assert_eq!(parse_severity("Warning").unwrap(), Severity::Warning);
        assert!(parse_severity("loud").is_err());
    }
}
