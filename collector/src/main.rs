//! `vigil-collector`: command-line entry point. All logic lives in the library.
use std::{
    ffi::OsString,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use vigil_collector::{
    groups::{GroupState, Reason},
    pki, query, server,
    sql::SqlStore,
    tls::{Listener, Purpose, ServerTls, ServerTlsFiles},
    views,
};
use vigil_proto::{
    tls::{ClientTls, Role},
    v1::{
        AlertQuery, GroupAction, GroupQuery, GroupUpdate, PivotQuery, Severity, SilenceSpec,
        TimelineQuery, TreeQuery,
    },
};

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
    /// Serves mutual TLS 1.3: every client presents a certificate from the
    /// client CA, whose role (agent, responder, admin) says what it may do.
    /// Certificate, key, CA and revocations are reread when their files
    /// change.
    ///
    /// Examples:
    ///   vigil-collector pki init /etc/vigil/pki --san collector.example.com
    ///   vigil-collector serve --listen 0.0.0.0:50051 --pki /etc/vigil/pki
    ///   vigil-collector serve --tls-cert c.crt --tls-key c.key --client-ca ca.crt
    ///   vigil-collector serve --insecure-plaintext        # loopback only, for trials
    #[command(verbatim_doc_comment)]
    Serve(ServeArgs),
    /// Ask a running collector.
    Query(QueryArgs),
    /// Work an alert group: acknowledge, resolve, close, assign, note, and
    /// read its history. Every change is recorded with who made it (the
    /// certificate's name over TLS, the local user over plaintext
    /// loopback). ID is a group's id (`query groups`) or any of its
    /// alerts' ids.
    ///
    /// Examples:
    ///   vigil-collector alert ack 3f2a9c0d11e4b5a6c7d8 --note "looking"
    ///   vigil-collector alert assign 3f2a9c0d11e4b5a6c7d8 --to alice
    ///   vigil-collector alert resolve 3f2a9c0d11e4b5a6c7d8 --reason false_positive --note "backup job"
    ///   vigil-collector alert history 3f2a9c0d11e4b5a6c7d8
    #[command(verbatim_doc_comment)]
    Alert(AlertArgs),
    /// Silences: alerts a live silence matches are stored and counted but
    /// notify no one. A matcher is FIELD=VALUE (exact) or severity>=NAME;
    /// FIELD is rule, host, severity, tag, container (an id, or `host`),
    /// namespace, or any field the rule's output names (proc.exepath,
    /// fd.name, ...). Every matcher of a silence must match.
    ///
    /// Examples:
    ///   vigil-collector silence add --match rule="Shell in a container" --match host=web-1 --for 2h --reason "deploy"
    ///   vigil-collector silence add --match proc.exepath=/usr/sbin/logrotate --for 7d --reason "known job"
    ///   vigil-collector silence list --all
    ///   vigil-collector silence expire 3fa2c1d09b8e
    #[command(verbatim_doc_comment)]
    Silence(SilenceArgs),
    /// Everything about one alert, as NDJSON for a ticket or another tool:
    /// a header line, the alert, its group, its process tree (ancestors,
    /// the process, descendants, each with its events and alerts) and the
    /// host's timeline from --window before the alert to --window after.
    /// Each line is one JSON object with a `type` (export, alert, group,
    /// process, activity; timeline entries also carry "timeline": true).
    ///
    /// Examples:
    ///   vigil-collector export 0b7c4e1a-... > incident.ndjson
    ///   vigil-collector export 0b7c4e1a-... --window 2h --pki /etc/vigil/pki --as alice > incident.ndjson
    #[command(verbatim_doc_comment)]
    Export(ExportArgs),
    /// Check a notification file without a running collector.
    #[command(subcommand)]
    Notify(NotifyCommand),
    /// Create and manage the certificates of a fleet (no openssl needed).
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Console accounts: who may sign in to the web console (serve
    /// --ui-listen), with which role. viewer reads; responder also
    /// acknowledges, resolves, closes, assigns, notes and silences; admin
    /// may do what a responder may. Passwords are hashed with argon2id;
    /// API tokens for scripts are shown once and stored as digests.
    /// Responders with a client certificate of the fleet's CA need no
    /// account.
    ///
    /// Examples:
    ///   vigil-collector user add alice --role responder --password-file ./alice.pw
    ///   vigil-collector user add bob --role viewer --password-file - < bob.pw --db /var/lib/vigil/alerts.db
    ///   vigil-collector user token alice --label ticket-sync --days 90
    ///   vigil-collector user list
    ///   vigil-collector user remove bob
    #[command(verbatim_doc_comment, subcommand)]
    User(UserCommand),
    /// Create or upgrade the database's schema and exit: what `serve`
    /// does at start, for an upgrade run before the collectors are
    /// restarted. Exits 1 when the database is newer than this collector
    /// or cannot be reached.
    ///
    /// Examples:
    ///   vigil-collector migrate --db /var/lib/vigil/alerts.db
    ///   vigil-collector migrate --db 'postgres://vigil@db.example.com/vigil'
    ///   vigil-collector migrate --db 'postgres://vigil@/vigil?host=/run/postgresql'
    #[command(verbatim_doc_comment)]
    Migrate {
        /// The database, as `serve --db` takes it.
        #[arg(long, value_name = "PATH|URL", default_value = DEFAULT_DB)]
        db: String,
    },
}

/// The collector's database when none is given.
const DEFAULT_DB: &str = "/var/lib/vigil/alerts.db";

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Create an account (or, with --replace, change its role and
    /// password, which ends its sessions).
    Add {
        #[arg(value_name = "NAME")]
        name: String,
        /// viewer, responder or admin.
        #[arg(long, value_name = "ROLE", value_parser = parse_role)]
        role: vigil_collector::accounts::Role,
        /// A file holding the password on its first line (at least 12
        /// characters); `-` reads standard input. Never on the command
        /// line, where other users could read it.
        #[arg(long, value_name = "FILE")]
        password_file: PathBuf,
        /// Replace an existing account's role and password.
        #[arg(long)]
        replace: bool,
        /// The database, as `serve --db` takes it.
        #[arg(long, value_name = "PATH|URL", default_value = DEFAULT_DB)]
        db: String,
    },
    /// List the accounts: name, role, created.
    List {
        #[arg(long, value_name = "PATH|URL", default_value = DEFAULT_DB)]
        db: String,
    },
    /// Delete an account and end its sessions and API tokens.
    Remove {
        #[arg(value_name = "NAME")]
        name: String,
        #[arg(long, value_name = "PATH|URL", default_value = DEFAULT_DB)]
        db: String,
    },
    /// Make an API token for NAME and print it (it is not shown again).
    /// Scripts send it as `Authorization: Bearer TOKEN`; it acts with
    /// NAME's role and is named `token:NAME` in the audit trail.
    Token {
        #[arg(value_name = "NAME")]
        name: String,
        /// What it is for, kept with it.
        #[arg(long, value_name = "TEXT", default_value = "")]
        label: String,
        /// How long it lasts.
        #[arg(long, value_name = "N", default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: u32,
        #[arg(long, value_name = "PATH|URL", default_value = DEFAULT_DB)]
        db: String,
    },
}

fn parse_role(s: &str) -> Result<vigil_collector::accounts::Role, String> {
    vigil_collector::accounts::Role::parse(s)
        .ok_or_else(|| format!("`{s}`: expected viewer, responder or admin"))
}

#[derive(Subcommand, Debug)]
enum PkiCommand {
    /// Create a certificate authority and the collector's certificate:
    /// DIR/ca.crt, DIR/ca.key, DIR/collector.crt, DIR/collector.key (keys
    /// mode 0600) and DIR/revoked/. Refuses to overwrite an existing CA.
    ///
    /// Example: vigil-collector pki init /etc/vigil/pki --san collector.example.com --san 10.0.0.5
    #[command(verbatim_doc_comment)]
    Init {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// A DNS name or IP address agents use to reach the collector;
        /// repeatable. Default: localhost and 127.0.0.1.
        #[arg(long, value_name = "NAME")]
        san: Vec<String>,
        /// Lifetime of the collector's certificate (the CA's is 10 years).
        #[arg(long, value_name = "N", default_value_t = pki::DEFAULT_DAYS, value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
    },
    /// Issue a certificate signed by DIR's CA: one of --agent, --responder,
    /// --admin or --collector. Keys are written mode 0600.
    ///
    /// Examples:
    ///   vigil-collector pki issue /etc/vigil/pki --agent web-1       # DIR/agents/web-1.crt and .key
    ///   vigil-collector pki issue /etc/vigil/pki --responder alice   # DIR/responders/alice.crt and .key
    ///   vigil-collector pki issue /etc/vigil/pki --collector --san collector.example.com --force
    #[command(verbatim_doc_comment)]
    Issue {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// An agent's certificate for host HOST (its name in every alert).
        #[arg(long, value_name = "HOST", group = "who")]
        agent: Option<String>,
        /// A responder's certificate: may query, may not send alerts.
        #[arg(long, value_name = "NAME", group = "who")]
        responder: Option<String>,
        /// An admin's certificate: what a responder may do, and
        /// administration.
        #[arg(long, value_name = "NAME", group = "who")]
        admin: Option<String>,
        /// A new server certificate for the collector (rotation: a running
        /// collector picks it up); names from --san.
        #[arg(long, group = "who")]
        collector: bool,
        /// With --collector: its DNS names and IP addresses; repeatable.
        #[arg(long, value_name = "NAME", requires = "collector")]
        san: Vec<String>,
        /// Lifetime in days.
        #[arg(long, value_name = "N", default_value_t = pki::DEFAULT_DAYS, value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
        /// Replace an existing certificate and key of that name.
        #[arg(long)]
        force: bool,
    },
    /// Revoke every certificate named NAME (agent, responder or admin): it
    /// is copied to DIR/revoked/, which a running collector rereads within
    /// seconds; connections made with it are refused from their next
    /// request.
    Revoke {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        #[arg(value_name = "NAME")]
        name: String,
    },
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// The settings file: every flag of this command is a key, written
    /// without the dashes (`listen: 0.0.0.0:50051`, `retention: 30d`;
    /// docs/configuration.md). Flags on the command line win. Default:
    /// /etc/vigil/collector.yaml, when it exists. SIGHUP rereads it and
    /// logs each changed key as needing a restart (certificates,
    /// revocations and the notification file are reread when they change).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (IP:PORT). The default accepts local agents only.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Where alerts and activity are stored: a SQLite file (created if
    /// missing; its directory must exist), or a PostgreSQL database,
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` (a Unix socket
    /// directory with `?host=/run/postgresql`), which several collectors
    /// may share (docs/scaling.md). The schema is created or migrated at
    /// start; a database newer than this collector is refused.
    #[arg(long, value_name = "PATH|URL", default_value = DEFAULT_DB)]
    db: String,
    /// A PKI directory made by `vigil-collector pki init`: serves with
    /// DIR/collector.crt and .key, accepts clients of DIR/ca.crt, refuses
    /// DIR/revoked/.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["tls_cert", "tls_key", "client_ca"])]
    pki: Option<PathBuf>,
    /// The collector's certificate (PEM, chain leaf first).
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "client_ca"])]
    tls_cert: Option<PathBuf>,
    /// The collector's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA certificate(s) whose client certificates are accepted (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// With --tls-cert: a directory of revoked certificates (as `pki
    /// revoke` writes), reread while running.
    #[arg(long, value_name = "DIR", requires = "tls_cert")]
    revoked: Option<PathBuf>,
    /// Serve plain gRPC without TLS: anyone who reaches the port may send
    /// and read alerts. Refused unless --listen is a loopback address.
    #[arg(long, conflicts_with_all = ["pki", "tls_cert"])]
    insecure_plaintext: bool,
    /// An agent with no heartbeat for this long (e.g. 6s, 1m) is marked
    /// silent and an "Agent silent" alert is raised for its host. Default:
    /// three of the agent's own heartbeat intervals.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    silent_after: Option<Duration>,
    /// The notification file: receivers (webhook) and the routes that send
    /// alert groups to them when they open or reopen (docs/oncall.md).
    /// Checked at start: an error names FILE:LINE:COL and the collector
    /// does not start. Reread when it changes (checked every 2 s); a
    /// changed file with an error is logged and the previous one stays in
    /// force. Without it, nobody is notified.
    #[arg(long, value_name = "FILE")]
    notify: Option<PathBuf>,
    /// Alerts older than this (by event time) are deleted, at start and
    /// every 10 minutes, so the database does not grow without bound.
    /// `0s` keeps everything.
    #[arg(long, value_name = "DURATION", default_value = "90d", value_parser = parse_duration)]
    retention: Duration,
    /// Activity (process starts and exits, connections, DNS queries, alert
    /// context) and the process view older than this are deleted, at
    /// start and every 10 minutes. Activity is far more than alerts: it
    /// gets a retention of its own. `0s` keeps everything.
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_duration)]
    activity_retention: Duration,
    /// Serve Prometheus metrics on /metrics, and /healthz and /readyz, on
    /// this address (IP:PORT; plain HTTP: keep it on loopback or a
    /// management network). `off` serves none.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464", value_parser = parse_listen_or_off)]
    metrics_listen: ListenOrOff,
    /// Serve the web console on this address (IP:PORT), e.g.
    /// 127.0.0.1:8443, over HTTPS with the collector's certificate (the
    /// same TLS files as gRPC; browsers may also present a responder's
    /// client certificate). With --insecure-plaintext it is plain HTTP,
    /// refused unless the address is loopback. People sign in with
    /// accounts made by `vigil-collector user add` (docs/console.md).
    /// `off` serves none.
    #[arg(long, value_name = "ADDR", default_value = "off", value_parser = parse_listen_or_off)]
    ui_listen: ListenOrOff,
}

/// An address to listen on, or `off`.
#[derive(Debug, Clone, Copy)]
struct ListenOrOff(Option<SocketAddr>);

fn parse_listen_or_off(s: &str) -> Result<ListenOrOff, String> {
    if s == "off" {
        return Ok(ListenOrOff(None));
    }
    s.parse()
        .map(|a| ListenOrOff(Some(a)))
        .map_err(|_| format!("`{s}`: expected IP:PORT (e.g. 127.0.0.1:9464) or off"))
}

#[derive(Args, Debug)]
struct QueryArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    what: QueryWhat,
}

#[derive(Args, Debug)]
struct AlertArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    what: AlertCommand,
}

#[derive(Subcommand, Debug)]
enum AlertCommand {
    /// Acknowledge: someone is on it (open groups only).
    Ack {
        /// A group's id (`query groups`), or the id of one of its alerts.
        #[arg(value_name = "ID")]
        id: String,
        /// Kept in the group's history with the change.
        #[arg(long, value_name = "TEXT")]
        note: Option<String>,
    },
    /// Resolve with a reason; a new alert of the group reopens it.
    Resolve(EndArgs),
    /// Close with a reason (dismissed rather than fixed); a new alert of
    /// the group reopens it.
    Close(EndArgs),
    /// Assign to someone (`--to ""` unassigns), in any state.
    Assign {
        /// A group's id (`query groups`), or the id of one of its alerts.
        #[arg(value_name = "ID")]
        id: String,
        /// Who handles it: a name, as your team says it.
        #[arg(long = "to", value_name = "NAME")]
        to: String,
        /// Kept in the group's history with the change.
        #[arg(long, value_name = "TEXT")]
        note: Option<String>,
    },
    /// Add a note to the group's history.
    Note {
        /// A group's id (`query groups`), or the id of one of its alerts.
        #[arg(value_name = "ID")]
        id: String,
        /// The note (at most 4 KiB).
        #[arg(value_name = "TEXT")]
        text: String,
    },
    /// Every change to the group, oldest first: opened, reopened,
    /// acknowledged, resolved, closed, assigned, notes; with who and from
    /// where.
    History {
        /// A group's id (`query groups`), or the id of one of its alerts.
        #[arg(value_name = "ID")]
        id: String,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum NotifyCommand {
    /// Send a test message to RECEIVER of the notification file, in its
    /// format, and print its answer (to PagerDuty: a trigger, then its
    /// resolve). Exits 1 when the file is bad, the receiver unknown or
    /// unreachable, or it answers other than 2xx.
    ///
    /// Examples:
    ///   vigil-collector notify test pager                 # /etc/vigil/notify.yaml
    ///   vigil-collector notify test chat --notify ./notify.yaml
    #[command(verbatim_doc_comment)]
    Test {
        #[arg(value_name = "RECEIVER")]
        receiver: String,
        /// The notification file, as given to `serve --notify`.
        #[arg(long, value_name = "FILE", default_value = "/etc/vigil/notify.yaml")]
        notify: PathBuf,
    },
}

#[derive(Args, Debug)]
struct SilenceArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    what: SilenceCommand,
}

#[derive(Subcommand, Debug)]
enum SilenceCommand {
    /// Add a silence; prints it with its id.
    Add {
        /// FIELD=VALUE or severity>=NAME; repeatable, all must match.
        #[arg(long = "match", value_name = "MATCHER", required = true)]
        matchers: Vec<String>,
        /// How long it lasts (e.g. 30m, 2h, 7d; at most 365d).
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
        duration: Duration,
        /// Why; shown in `silence list`.
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
    /// The live silences, newest first: id, expiry, alerts silenced, who
    /// added it, matchers, reason.
    List {
        /// Also silences that ended.
        #[arg(long)]
        all: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// End a silence now.
    Expire {
        #[arg(value_name = "ID")]
        id: String,
    },
}

/// `alert resolve` and `alert close`.
#[derive(Args, Debug)]
struct EndArgs {
    /// A group's id (`query groups`), or the id of one of its alerts.
    #[arg(value_name = "ID")]
    id: String,
    /// true_positive, false_positive, benign or duplicate.
    #[arg(long, value_name = "REASON", value_parser = Reason::parse)]
    reason: Reason,
    /// Kept in the group's history with the change.
    #[arg(long, value_name = "TEXT")]
    note: Option<String>,
}

/// Which collector to ask, and as whom.
#[derive(Args, Debug)]
struct Conn {
    /// Collector to ask: https://HOST:PORT (its certificate must name HOST),
    /// or http:// for a collector serving plaintext on loopback.
    #[arg(
        long,
        value_name = "URL",
        default_value = "https://127.0.0.1:50051",
        global = true
    )]
    server: String,
    /// This client's certificate (PEM); its role must allow queries
    /// (responder or admin).
    #[arg(long, value_name = "FILE", global = true, requires_all = ["tls_key", "ca"], conflicts_with = "pki")]
    tls_cert: Option<PathBuf>,
    /// This client's private key (PEM).
    #[arg(long, value_name = "FILE", global = true, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The CA that signed the collector's certificate (PEM).
    #[arg(long, value_name = "FILE", global = true, requires = "tls_cert")]
    ca: Option<PathBuf>,
    /// A PKI directory (`vigil-collector pki init`): with --as NAME, uses
    /// DIR/ca.crt and NAME's certificate and key (responders/, then
    /// admins/).
    #[arg(long, value_name = "DIR", global = true, requires = "as_name")]
    pki: Option<PathBuf>,
    /// With --pki: whose certificate to use.
    #[arg(long = "as", value_name = "NAME", global = true, requires = "pki")]
    as_name: Option<String>,
}

impl Conn {
    /// The client TLS files the flags name, if any.
    fn tls(&self) -> anyhow::Result<Option<ClientTls>> {
        if let (Some(cert), Some(key), Some(ca)) = (&self.tls_cert, &self.tls_key, &self.ca) {
            return Ok(Some(ClientTls {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            }));
        }
        let (Some(dir), Some(name)) = (&self.pki, &self.as_name) else {
            return Ok(None);
        };
        pki::check_name(name)?;
        for role in [Role::Responder, Role::Admin, Role::Agent] {
            let t = ClientTls::from_pki(dir, role, name);
            if t.cert.exists() {
                return Ok(Some(t));
            }
        }
        anyhow::bail!(
            "no certificate named `{name}` in {}/responders or admins: issue one with `vigil-collector pki issue {} --responder {name}`",
            dir.display(),
            dir.display()
        )
    }
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
    /// The agents the collector has heard from: host, state (ok, degraded,
    /// silent) and why, version, last heartbeat, losses, spool depth.
    ///
    /// Examples:
    ///   vigil-collector query agents
    ///   vigil-collector query agents --json
    #[command(verbatim_doc_comment)]
    Agents {
        /// One JSON object per line (with the last heartbeat's figures).
        #[arg(long)]
        json: bool,
    },
    /// Alert groups, most recently seen first: alerts of one rule on one
    /// host (and container) with the same key fields, with their state
    /// (open, acknowledged, resolved, closed), assignee and count.
    ///
    /// Examples:
    ///   vigil-collector query groups --state open
    ///   vigil-collector query groups --since 1d --json
    #[command(verbatim_doc_comment)]
    Groups(GroupsArgs),
    /// A host's alerts and activity (process starts and exits,
    /// connections, DNS queries) in time order: over the last --since, or
    /// --window either side of an alert. Cut to --limit entries (around
    /// the alert: half before, half after; else the newest), and says so
    /// on stderr.
    ///
    /// Examples:
    ///   vigil-collector query timeline --host web-1 --since 15m
    ///   vigil-collector query timeline --around 0b7c4e1a-... --window 2m --pid 4242
    ///   vigil-collector query timeline --host web-1 --since 1h --json | jq .summary
    #[command(verbatim_doc_comment)]
    Timeline(TimelineArgs),
    /// An alert's process tree: the alerting process, its ancestors up to
    /// init and its descendants, each with its command line, user, start
    /// and exit, its own events and its alerts, drawn as a tree.
    ///
    /// Examples:
    ///   vigil-collector query tree 0b7c4e1a-...
    ///   vigil-collector query tree 0b7c4e1a-... --json
    #[command(verbatim_doc_comment)]
    Tree(TreeArgs),
    /// Where something shows up across the fleet: the hosts with first and
    /// last seen and counts, then the newest matching processes (for --ip
    /// and --domain, the connections and queries themselves). Give exactly
    /// one of --sha256, --exe, --user, --ip, --domain, --image.
    ///
    /// Examples:
    ///   vigil-collector query pivot --sha256 9f86d081884c7d65...
    ///   vigil-collector query pivot --ip 203.0.113.9 --since 30d
    ///   vigil-collector query pivot --domain pool.miner.example --json
    #[command(verbatim_doc_comment)]
    Pivot(PivotArgs),
}

#[derive(Args, Debug)]
struct TimelineArgs {
    /// The host (its agent's hostname). With --around it may be left out:
    /// the alert names its host.
    #[arg(long, value_name = "HOST", required_unless_present = "around")]
    host: Option<String>,
    /// The last DURATION up to now (e.g. 15m, 2h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, required_unless_present = "around", conflicts_with = "around")]
    since: Option<Duration>,
    /// Around this alert (its id, from `query alerts`).
    #[arg(long, value_name = "ALERT_ID")]
    around: Option<String>,
    /// With --around: this long before and after the alert.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5m", requires = "around")]
    window: Duration,
    /// Only this process id on the host.
    #[arg(long, value_name = "PID")]
    pid: Option<u32>,
    /// At most N entries (server caps at 5000).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    limit: u32,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct TreeArgs {
    /// The alert.
    #[arg(value_name = "ALERT_ID")]
    alert_id: String,
    /// Most events listed under each process (server caps at 1000).
    #[arg(long, value_name = "N", default_value_t = 50)]
    events_per_process: u32,
    /// Most descendants drawn (server caps at 5000).
    #[arg(long, value_name = "N", default_value_t = 500)]
    max_descendants: u32,
    /// One JSON object per process per line instead of a drawing.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
#[command(group(
    clap::ArgGroup::new("key")
        .required(true)
        .multiple(false)
        .args(["sha256", "exe", "user", "ip", "domain", "image"])
))]
struct PivotArgs {
    /// An executable's SHA-256 (64 hex digits).
    #[arg(long, value_name = "HEX")]
    sha256: Option<String>,
    /// An executable's path, exactly.
    #[arg(long, value_name = "PATH")]
    exe: Option<String>,
    /// A user name (the process's own, as its container names it).
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// A remote address connected to, accepted from, or asked for DNS.
    #[arg(long, value_name = "ADDR")]
    ip: Option<String>,
    /// A name queried over DNS.
    #[arg(long, value_name = "NAME")]
    domain: Option<String>,
    /// A container image, as the runtime recorded it.
    #[arg(long, value_name = "REF")]
    image: Option<String>,
    /// Only the last DURATION.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "7d")]
    since: Duration,
    /// Most processes listed (server caps at 1000).
    #[arg(long, value_name = "N", default_value_t = 100)]
    limit: u32,
    /// One JSON object per line (hosts, then processes).
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ExportArgs {
    #[command(flatten)]
    conn: Conn,
    /// The alert.
    #[arg(value_name = "ALERT_ID")]
    alert_id: String,
    /// The timeline runs this long before and after the alert.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30m")]
    window: Duration,
}

#[derive(Args, Debug)]
struct GroupsArgs {
    /// Only groups in this state: open, acknowledged, resolved or closed.
    #[arg(long, value_name = "STATE", value_parser = parse_state)]
    state: Option<GroupState>,
    /// Only groups seen in the last DURATION (e.g. 15m, 2h, 7d).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    since: Option<Duration>,
    /// Only groups from this hostname.
    #[arg(long, value_name = "H")]
    host: Option<String>,
    /// Only groups of this rule (exact name).
    #[arg(long, value_name = "R")]
    rule: Option<String>,
    /// At most N groups (server caps at 100000).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    limit: u32,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

fn parse_state(s: &str) -> Result<GroupState, String> {
    GroupState::parse(s)
        .ok_or_else(|| format!("`{s}`: expected open, acknowledged, resolved or closed"))
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

/// The settings file of `serve` when no --config is given.
const DEFAULT_CONFIG: &str = "/etc/vigil/collector.yaml";

fn configurable() -> [(&'static str, &'static Path); 1] {
    [("serve", Path::new(DEFAULT_CONFIG))]
}

/// On SIGHUP: reads the settings file again with the same command line
/// and logs what changed; every `serve` setting needs a restart.
async fn watch_settings(argv: Vec<OsString>, mut last: vigil_config::Applied) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        let parsed = match vigil_config::parse::<Cli>(&argv, &configurable()) {
            Ok(p) => p,
            Err(e) => {
                let e = match e {
                    vigil_config::ParseError::Clap(e) => vigil_config::clap_message(&e),
                    e => e.to_string(),
                };
                tracing::error!(error = %e, "SIGHUP: the settings file has an error; the running settings stay");
                continue;
            }
        };
        let new = parsed.file.map(|f| f.1).unwrap_or_default();
        let changed = vigil_config::changed_keys(&last, &new);
        if changed.is_empty() {
            tracing::info!("SIGHUP: settings unchanged (certificates and the notification file are reread when they change)");
        }
        for key in changed {
            if new.overridden.contains(&key) {
                tracing::info!(
                    key,
                    "changed in the settings file, but the command line sets it"
                );
            } else {
                tracing::warn!(key, "setting changed: restart vigil-collector to apply it");
            }
        }
        last = new;
    }
}

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let parsed = vigil_config::parse_or_exit::<Cli>("vigil-collector", &argv, &configurable());
    let cli = parsed.cli;
    let settings = parsed
        .file
        .map(|(file, applied)| (file.path.display().to_string(), file.entries.len(), applied));
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cli.log_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // Under systemd, journald stamps each line itself.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().init();
    } else {
        builder.init();
    }
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
            Command::Serve(args) => {
                let last = match settings {
                    Some((file, keys, applied)) => {
                        tracing::info!(file, keys, overridden_by_flags = ?applied.overridden, "settings file read");
                        applied
                    }
                    None => Default::default(),
                };
                tokio::spawn(watch_settings(argv, last));
                serve(args).await
            }
            Command::Query(q) => {
                let tls = q.conn.tls()?;
                let server = &q.conn.server;
                match q.what {
                    QueryWhat::Alerts(a) => query_alerts(server, tls.as_ref(), a).await,
                    QueryWhat::Agents { json } => {
                        let agents = query::fetch_agents(server, tls.as_ref()).await?;
                        print(|out| query::print_agents(out, &agents, json))
                    }
                    QueryWhat::Groups(g) => {
                        let q = GroupQuery {
                            state: g.state.map(|s| s.name().to_string()).unwrap_or_default(),
                            since_unix_ns: since_ns(g.since)?,
                            limit: g.limit,
                            host: g.host.unwrap_or_default(),
                            rule: g.rule.unwrap_or_default(),
                            id: String::new(),
                        };
                        let groups = query::fetch_groups(server, tls.as_ref(), q).await?;
                        print(|out| query::print_groups(out, &groups, g.json))
                    }
                    QueryWhat::Timeline(t) => query_timeline(server, tls.as_ref(), t).await,
                    QueryWhat::Tree(t) => {
                        let q = TreeQuery {
                            alert_id: t.alert_id,
                            events_per_process: t.events_per_process,
                            max_descendants: t.max_descendants,
                        };
                        let tree = query::fetch_tree(server, tls.as_ref(), q).await?;
                        if tree.cut {
                            eprintln!("vigil-collector: more descendants than --max-descendants {}: the tree is cut", t.max_descendants);
                        }
                        print(|out| views::print_tree(out, &tree, t.json))
                    }
                    QueryWhat::Pivot(p) => {
                        let q = PivotQuery {
                            sha256: p.sha256.unwrap_or_default(),
                            exe: p.exe.unwrap_or_default(),
                            user: p.user.unwrap_or_default(),
                            ip: p.ip.unwrap_or_default(),
                            domain: p.domain.unwrap_or_default(),
                            image: p.image.unwrap_or_default(),
                            since_unix_ns: since_ns(Some(p.since))?,
                            limit: p.limit,
                        };
                        let pivot = query::fetch_pivot(server, tls.as_ref(), q).await?;
                        if pivot.hosts_cut {
                            eprintln!("vigil-collector: host counts cover the newest {} matches only", vigil_collector::investigate::PIVOT_SCAN);
                        }
                        if pivot.processes_cut {
                            eprintln!("vigil-collector: more processes matched than --limit {}: the newest are listed", p.limit);
                        }
                        print(|out| views::print_pivot(out, &pivot, p.json))
                    }
                }
            }
            Command::Export(e) => export(e).await,
            Command::Alert(a) => alert_command(a).await,
            Command::Silence(s) => silence_command(s).await,
            Command::Notify(NotifyCommand::Test { receiver, notify }) => {
                let config = vigil_collector::notify::config::Config::load(&notify)?;
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_else(|_| "localhost".into());
                let answers = vigil_collector::notify::test(&config, &receiver, &host)
                    .await
                    .map_err(|e| anyhow::anyhow!("{receiver}: {e}"))?;
                for a in answers {
                    println!("{receiver}: {a}");
                }
                Ok(())
            }
            Command::Pki(cmd) => pki_command(cmd),
            Command::User(cmd) => user_command(cmd).await,
            Command::Migrate { db } => {
                let shown = vigil_collector::sql::redact(&db);
                let m = tokio::task::spawn_blocking(move || SqlStore::open_db(&db))
                    .await??
                    .migrated();
                if m.from == m.to {
                    println!("{shown}: schema version {} (current, nothing to do)", m.to);
                } else if m.from == 0 {
                    println!("{shown}: schema created at version {}", m.to);
                } else {
                    println!("{shown}: schema migrated from version {} to {}", m.from, m.to);
                }
                Ok(())
            }
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

/// The TLS files `serve` was given, or why it cannot serve.
fn serve_tls(args: &ServeArgs) -> anyhow::Result<Option<ServerTlsFiles>> {
    if let (true, Some(ui)) = (args.insecure_plaintext, args.ui_listen.0) {
        if !ui.ip().is_loopback() {
            anyhow::bail!(
                "--insecure-plaintext is refused for the console on {ui}: passwords and sessions would cross the network in the clear; give --ui-listen a loopback address (127.0.0.1:8443) or serve TLS with --pki DIR"
            );
        }
    }
    if args.insecure_plaintext {
        if !args.listen.ip().is_loopback() {
            anyhow::bail!(
                "--insecure-plaintext is refused on {}: plaintext would let anyone on the network send and read alerts; listen on a loopback address (127.0.0.1) or serve TLS with --pki DIR",
                args.listen
            );
        }
        return Ok(None);
    }
    if let Some(dir) = &args.pki {
        return Ok(Some(ServerTlsFiles::from_pki(dir)));
    }
    if let (Some(cert), Some(key), Some(ca)) = (&args.tls_cert, &args.tls_key, &args.client_ca) {
        return Ok(Some(ServerTlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: ca.clone(),
            revoked: args.revoked.clone(),
        }));
    }
    anyhow::bail!(
        "no TLS certificate: give --pki DIR (create one with `vigil-collector pki init DIR`), or --tls-cert, --tls-key and --client-ca; --insecure-plaintext serves plain gRPC on a loopback address only"
    )
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let tls = match serve_tls(&args)? {
        Some(files) => Some(ServerTls::load(files).context("cannot serve TLS")?),
        None => None,
    };
    if args.db == DEFAULT_DB {
        std::fs::create_dir_all("/var/lib/vigil").context("cannot create /var/lib/vigil")?;
    }
    let notify = args
        .notify
        .as_deref()
        .map(vigil_collector::notify::config::Config::load)
        .transpose()?;
    let store = {
        let db = args.db.clone();
        Arc::new(tokio::task::spawn_blocking(move || SqlStore::open_db(&db)).await??)
    };
    let migrated = store.migrated();
    if migrated.from != migrated.to {
        tracing::info!(
            from = migrated.from,
            to = migrated.to,
            "database schema migrated"
        );
    }
    let tcp = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let metrics = match args.metrics_listen.0 {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for metrics on {addr}"))?;
            tracing::info!(metrics = %l.local_addr()?, "metrics on /metrics, /healthz, /readyz");
            Some(l)
        }
        None => None,
    };
    let transport = if tls.is_some() {
        "mutual TLS 1.3"
    } else {
        "plaintext (loopback only)"
    };
    tracing::info!(listen = %tcp.local_addr()?, db = %vigil_collector::sql::redact(&args.db), %transport, "collector serving");
    let counters = Arc::new(vigil_collector::metrics::NotifyCounters::default());
    let opts = server::ServerOptions {
        silent_after: match args.silent_after {
            Some(d) => vigil_collector::agents::SilentAfter::Fixed(d),
            None => vigil_collector::agents::SilentAfter::Intervals(3),
        },
        retention: (!args.retention.is_zero()).then_some(args.retention),
        activity_retention: (!args.activity_retention.is_zero()).then_some(args.activity_retention),
        metrics,
        db_path: (!vigil_collector::sql::is_postgres_address(&args.db))
            .then(|| PathBuf::from(&args.db)),
        notify: notify.is_some().then(|| counters.clone()),
    };
    let (notify_stop, notify_stopped) = tokio::sync::oneshot::channel::<()>();
    if notify.is_some() {
        store.start_notify_cursor()?;
    }
    let notifier = notify.map(|config| {
        tokio::spawn(vigil_collector::notify::run(
            store.clone(),
            Arc::new(config),
            args.notify.clone(),
            counters.clone(),
            async {
                let _ = notify_stopped.await;
            },
        ))
    });
    let (ui_stop, ui_stopped) = tokio::sync::oneshot::channel::<()>();
    let console = match args.ui_listen.0 {
        Some(addr) => {
            let ui_tls = match &tls {
                Some(t) => Some(
                    ServerTls::load_for(t.files().clone(), Purpose::Console)
                        .context("cannot serve the console over TLS")?,
                ),
                None => None,
            };
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for the console on {addr}"))?;
            let scheme = if ui_tls.is_some() { "https" } else { "http" };
            tracing::info!(console = %format!("{scheme}://{}/", l.local_addr()?), "web console serving");
            let revoked = ui_tls.as_ref().map(|t| t.revoked().clone());
            Some(tokio::spawn(vigil_collector::console::run(
                Listener {
                    tcp: l,
                    tls: ui_tls,
                },
                store.clone(),
                vigil_collector::console::ConsoleOptions { revoked },
                async {
                    let _ = ui_stopped.await;
                },
            )))
        }
        None => None,
    };
    server::run_with(Listener { tcp, tls }, store, opts, shutdown_signal()).await?;
    drop(ui_stop);
    if let Some(c) = console {
        let _ = c.await;
    }
    drop(notify_stop);
    if let Some(n) = notifier {
        let _ = n.await;
    }
    tracing::info!("collector stopped");
    Ok(())
}

/// Reads a password from FILE's first line (`-`: standard input).
fn read_password(file: &Path) -> anyhow::Result<String> {
    let text = if file == Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(std::io::stdin(), 64 * 1024),
            &mut s,
        )
        .context("cannot read the password from standard input")?;
        s
    } else {
        std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the password file {}", file.display()))?
    };
    Ok(text.lines().next().unwrap_or("").to_string())
}

async fn open_store(db: String) -> anyhow::Result<Arc<SqlStore>> {
    let shown = vigil_collector::sql::redact(&db);
    Ok(Arc::new(
        tokio::task::spawn_blocking(move || SqlStore::open_db(&db))
            .await?
            .with_context(|| format!("cannot open the database {shown}"))?,
    ))
}

async fn user_command(cmd: UserCommand) -> anyhow::Result<()> {
    use vigil_collector::accounts::{self, Credential, CredentialKind, User};
    match cmd {
        UserCommand::Add {
            name,
            role,
            password_file,
            replace,
            db,
        } => {
            accounts::check_name(&name)?;
            let password = read_password(&password_file)?;
            let hash = tokio::task::spawn_blocking(move || accounts::hash_password(&password))
                .await?
                .with_context(|| format!("password file {}", password_file.display()))?;
            let store = open_store(db).await?;
            let user = User {
                name: name.clone(),
                role,
                created_ns: vigil_collector::store::now_ns(),
            };
            let existed =
                tokio::task::spawn_blocking(move || store.put_user(&user, &hash, replace))
                    .await??;
            match (existed, replace) {
                (true, false) => anyhow::bail!(
                    "user `{name}` exists; give --replace to change its role and password"
                ),
                (true, true) => println!("user {name} updated: role {}", role.name()),
                (false, _) => println!("user {name} added: role {}", role.name()),
            }
        }
        UserCommand::List { db } => {
            let store = open_store(db).await?;
            let users = tokio::task::spawn_blocking(move || store.users()).await??;
            if users.is_empty() {
                println!("no accounts; add one with `vigil-collector user add NAME --role responder --password-file FILE`");
            }
            for u in users {
                println!(
                    "{:<24} {:<10} created {}",
                    u.name,
                    u.role.name(),
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + Duration::from_nanos(u.created_ns.max(0) as u64)
                    )
                );
            }
        }
        UserCommand::Remove { name, db } => {
            let store = open_store(db).await?;
            let n = name.clone();
            if !tokio::task::spawn_blocking(move || store.remove_user(&n)).await?? {
                anyhow::bail!("no user `{name}`");
            }
            println!("user {name} removed, with its sessions and tokens");
        }
        UserCommand::Token {
            name,
            label,
            days,
            db,
        } => {
            let store = open_store(db).await?;
            let n = name.clone();
            let s = store.clone();
            let Some((user, _)) =
                tokio::task::spawn_blocking(move || s.user_with_password(&n)).await??
            else {
                anyhow::bail!("no user `{name}`: add it first with `vigil-collector user add`");
            };
            let token = accounts::new_token("vgt_")?;
            let cred = Credential {
                kind: CredentialKind::Api,
                user: user.name,
                role: user.role,
                csrf: String::new(),
                label,
                expires_ns: vigil_collector::store::now_ns()
                    + i64::from(days) * 86_400 * 1_000_000_000,
            };
            let digest = accounts::token_digest(&token);
            tokio::task::spawn_blocking(move || store.add_credential(&digest, &cred)).await??;
            println!("{token}");
            eprintln!("API token for {name}, valid {days} days; it is not shown again");
        }
    }
    Ok(())
}

fn pki_command(cmd: PkiCommand) -> anyhow::Result<()> {
    let wrote = |files: Vec<PathBuf>| {
        for f in files {
            println!("wrote {}", f.display());
        }
    };
    match cmd {
        PkiCommand::Init { dir, san, days } => wrote(pki::init(&dir, &san, days)?.files),
        PkiCommand::Issue {
            dir,
            agent,
            responder,
            admin,
            collector,
            san,
            days,
            force,
        } => {
            let files = if collector {
                pki::issue_collector(&dir, &san, days, force)?
            } else if let Some(h) = agent {
                pki::issue_client(&dir, Role::Agent, &h, days, force)?
            } else if let Some(n) = responder {
                pki::issue_client(&dir, Role::Responder, &n, days, force)?
            } else if let Some(n) = admin {
                pki::issue_client(&dir, Role::Admin, &n, days, force)?
            } else {
                anyhow::bail!("say whom to issue for: --agent HOST, --responder NAME, --admin NAME or --collector");
            };
            wrote(files);
        }
        PkiCommand::Revoke { dir, name } => {
            for f in pki::revoke(&dir, &name)? {
                println!("revoked {name}: {}", f.display());
            }
        }
    }
    Ok(())
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn print(
    f: impl FnOnce(&mut std::io::StdoutLock<'static>) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    match f(&mut std::io::stdout().lock()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("cannot write to stdout"),
    }
}

/// `--since DURATION` as ns since the epoch; 0 without it.
fn since_ns(since: Option<Duration>) -> anyhow::Result<i64> {
    Ok(match since {
        Some(d) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
            now.saturating_sub(d).as_nanos() as i64
        }
        None => 0,
    })
}

/// `vigil-collector silence ...`.
async fn silence_command(s: SilenceArgs) -> anyhow::Result<()> {
    let tls = s.conn.tls()?;
    let server = &s.conn.server;
    let one = match s.what {
        SilenceCommand::List { all, json } => {
            let list = query::fetch_silences(server, tls.as_ref(), all).await?;
            return print(|out| query::print_silences(out, &list, json));
        }
        SilenceCommand::Add {
            matchers,
            duration,
            reason,
        } => {
            // Checked here too, for an error before any connection.
            vigil_collector::silences::parse_matchers(&matchers).map_err(anyhow::Error::msg)?;
            let spec = SilenceSpec {
                matchers,
                duration_ms: i64::try_from(duration.as_millis()).unwrap_or(i64::MAX),
                reason,
                local_user: String::new(),
            };
            query::add_silence(server, tls.as_ref(), spec).await?
        }
        SilenceCommand::Expire { id } => query::expire_silence(server, tls.as_ref(), &id).await?,
    };
    print(|out| query::print_silences(out, std::slice::from_ref(&one), false))
}

/// `vigil-collector alert ...`.
async fn alert_command(a: AlertArgs) -> anyhow::Result<()> {
    let tls = a.conn.tls()?;
    let server = &a.conn.server;
    let update = |id: String, action: GroupAction| GroupUpdate {
        id,
        action: action as i32,
        ..Default::default()
    };
    let end = |e: EndArgs, action| GroupUpdate {
        reason: e.reason.name().into(),
        note: e.note.unwrap_or_default(),
        ..update(e.id, action)
    };
    let u = match a.what {
        AlertCommand::History { id, json } => {
            let trail = query::fetch_history(server, tls.as_ref(), &id).await?;
            return print(|out| query::print_history(out, &trail, json));
        }
        AlertCommand::Ack { id, note } => GroupUpdate {
            note: note.unwrap_or_default(),
            ..update(id, GroupAction::Acknowledge)
        },
        AlertCommand::Resolve(e) => end(e, GroupAction::Resolve),
        AlertCommand::Close(e) => end(e, GroupAction::Close),
        AlertCommand::Assign { id, to, note } => GroupUpdate {
            assignee: to,
            note: note.unwrap_or_default(),
            ..update(id, GroupAction::Assign)
        },
        AlertCommand::Note { id, text } => GroupUpdate {
            note: text,
            ..update(id, GroupAction::Note)
        },
    };
    let g = query::update_group(server, tls.as_ref(), u).await?;
    print(|out| query::print_groups(out, std::slice::from_ref(&g), false))
}

async fn query_alerts(server: &str, tls: Option<&ClientTls>, a: AlertsArgs) -> anyhow::Result<()> {
    let q = AlertQuery {
        since_unix_ns: since_ns(a.since)?,
        host: a.host.unwrap_or_default(),
        rule: a.rule.unwrap_or_default(),
        min_severity: a.severity.map_or(0, |s| s as i32),
        limit: a.limit,
        container: a.container.unwrap_or_default(),
        id: String::new(),
    };
    let alerts = query::fetch(server, tls, q).await?;
    print(|out| {
        if a.json {
            query::print_json(out, &alerts)
        } else {
            query::print_table(out, &alerts)
        }
    })
}

async fn query_timeline(
    server: &str,
    tls: Option<&ClientTls>,
    t: TimelineArgs,
) -> anyhow::Result<()> {
    let q = TimelineQuery {
        host: t.host.unwrap_or_default(),
        from_unix_ns: since_ns(t.since)?,
        to_unix_ns: 0,
        around_alert: t.around.unwrap_or_default(),
        window_ns: t.window.as_nanos().min(i64::MAX as u128) as i64,
        pid: t.pid.unwrap_or(0),
        limit: t.limit,
    };
    let timeline = query::fetch_timeline(server, tls, q).await?;
    if timeline.cut {
        eprintln!(
            "vigil-collector: more than {} entries: the timeline is cut (narrow it with --pid or a shorter span, or raise --limit)",
            timeline.entries.len()
        );
    }
    print(|out| views::print_timeline(out, &timeline, t.json))
}

/// `vigil-collector export ALERT_ID`: what the export view needs, asked
/// of the collector in turn.
async fn export(e: ExportArgs) -> anyhow::Result<()> {
    let tls = e.conn.tls()?;
    let server = &e.conn.server;
    let alert = query::fetch(
        server,
        tls.as_ref(),
        AlertQuery {
            id: e.alert_id.clone(),
            limit: 1,
            ..Default::default()
        },
    )
    .await?
    .into_iter()
    .next()
    .ok_or_else(|| anyhow::anyhow!("no alert `{}`", e.alert_id))?;
    let group = if alert.group_id.is_empty() {
        None
    } else {
        query::fetch_groups(
            server,
            tls.as_ref(),
            GroupQuery {
                id: alert.group_id.clone(),
                limit: 1,
                ..Default::default()
            },
        )
        .await?
        .into_iter()
        .next()
    };
    let tree = match query::fetch_tree(
        server,
        tls.as_ref(),
        TreeQuery {
            alert_id: alert.id.clone(),
            ..Default::default()
        },
    )
    .await
    {
        Ok(t) => Some(t),
        Err(query::QueryError::Status(s)) if s.code() == tonic::Code::InvalidArgument => {
            eprintln!("vigil-collector: no process tree: {}", s.message());
            None
        }
        Err(err) => return Err(err.into()),
    };
    let timeline = query::fetch_timeline(
        server,
        tls.as_ref(),
        TimelineQuery {
            around_alert: alert.id.clone(),
            window_ns: e.window.as_nanos().min(i64::MAX as u128) as i64,
            limit: vigil_collector::investigate::MAX_TIMELINE_LIMIT,
            ..Default::default()
        },
    )
    .await?;
    if timeline.cut {
        eprintln!(
            "vigil-collector: the timeline holds more than {} entries: cut around the alert (shorten --window)",
            timeline.entries.len()
        );
    }
    print(|out| views::print_export(out, &alert, group.as_ref(), tree.as_ref(), &timeline))
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

    #[test]
    fn every_settings_key_is_documented() {
        use clap::CommandFactory;
        let doc = include_str!("../../docs/configuration.md");
        let mut cmd = Cli::command();
        cmd.build();
        let sub = cmd.find_subcommand("serve").unwrap();
        let missing = vigil_config::undocumented_keys(sub, doc);
        assert!(
            missing.is_empty(),
            "docs/configuration.md lacks {missing:?}"
        );
    }
}
