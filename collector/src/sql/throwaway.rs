//! A throwaway PostgreSQL cluster for tests and benchmarks: `initdb` into
//! a temporary directory, the server on a Unix socket there and on a
//! loopback port with TLS (a certificate from a CA made for it), no
//! system service, a fresh database per caller, and everything stopped
//! and removed when the process exits.
//!
//! The server binaries are found in `$VIGIL_PG_BIN`, the newest
//! `/usr/lib/postgresql/*/bin`, or `pg_config --bindir`. PostgreSQL refuses
//! to run as root: as root the cluster belongs to the `postgres` user (or
//! `nobody`).
use std::{
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        OnceLock,
    },
    time::{Duration, Instant},
};

struct Cluster {
    dir: PathBuf,
    port: u16,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
/// The server's pid, for the exit handler.
static SERVER_PID: AtomicU32 = AtomicU32::new(0);
static SERVER_DIR: OnceLock<PathBuf> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// How the cluster writes: tests want speed; benchmarks want what a
/// production server does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// No fsync, asynchronous commits: for tests.
    Off,
    /// fsync and synchronous commits, PostgreSQL's defaults: for
    /// benchmarks beside SQLite's `synchronous=FULL`.
    Full,
}

/// The address of a new, empty database on the process's throwaway
/// cluster (started on first use, for tests). An error says what is
/// missing.
pub fn database() -> Result<String, String> {
    database_with(Durability::Off)
}

/// [`database`], with the cluster started as `durability` says if this is
/// the process's first.
pub fn database_with(durability: Durability) -> Result<String, String> {
    let (cluster, name) = create(durability)?;
    Ok(url(cluster, &name))
}

/// A new database on the cluster (started first if need be): its name.
fn create(durability: Durability) -> Result<(&'static Cluster, String), String> {
    let cluster = CLUSTER
        .get_or_init(|| start(durability))
        .as_ref()
        .map_err(Clone::clone)?;
    let name = format!("t{}", NEXT_DB.fetch_add(1, Ordering::Relaxed));
    let admin = url(cluster, "postgres");
    let mut c = postgres::Client::connect(&admin, postgres::NoTls)
        .map_err(|e| format!("cannot reach the throwaway PostgreSQL: {e}"))?;
    c.batch_execute(&format!("CREATE DATABASE {name}"))
        .map_err(|e| format!("cannot create database {name}: {e}"))?;
    Ok((cluster, name))
}

/// [`database`] over TCP and TLS: the address (with `sslmode=require` and
/// the cluster's CA as `sslrootcert`), and the CA's file.
pub fn tls_database() -> Result<(String, PathBuf), String> {
    let (cluster, name) = create(Durability::Off)?;
    let ca = cluster.dir.join("tls").join("ca.crt");
    Ok((
        format!(
            "postgres://vigil@localhost:{}/{name}?sslmode=require&sslrootcert={}",
            cluster.port,
            ca.display()
        ),
        ca,
    ))
}

fn url(c: &Cluster, db: &str) -> String {
    format!(
        "postgres://vigil@localhost:{}/{db}?host={}",
        c.port,
        c.dir.display()
    )
}

fn bin_dir() -> Result<PathBuf, String> {
    if let Some(d) = std::env::var_os("VIGIL_PG_BIN") {
        return Ok(PathBuf::from(d));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Ok(bin);
    }
    Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|d| d.join("initdb").exists())
        .ok_or_else(|| {
            "PostgreSQL's server is not installed (Debian: apt-get install postgresql; or set VIGIL_PG_BIN to the directory holding initdb and postgres)".to_string()
        })
}

/// The user the cluster runs as when we are root.
fn server_user() -> Option<(u32, u32)> {
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    for name in [c"postgres", c"nobody"] {
        // SAFETY: a NUL-terminated name; the result is read at once.
        let pw = unsafe { libc::getpwnam(name.as_ptr()) };
        if !pw.is_null() {
            return Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) });
        }
    }
    None
}

fn as_server_user(cmd: &mut Command) -> &mut Command {
    if let Some((uid, gid)) = server_user() {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

fn start(durability: Durability) -> Result<Cluster, String> {
    let bin = bin_dir()?;
    let dir = std::env::temp_dir().join(format!(
        "vigil-pg-{}-{}",
        std::process::id(),
        crate::store::now_ns() % 1_000_000
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if let Some((uid, gid)) = server_user() {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
            .map_err(|e| format!("chown {}: {e}", dir.display()))?;
    }
    let data = dir.join("data");
    // TLS on the loopback port: a CA and a certificate for localhost.
    let tls = dir.join("tls");
    crate::pki::init(&tls, &["localhost".into(), "127.0.0.1".into()], 30)
        .map_err(|e| format!("cannot make the cluster's certificate: {e}"))?;
    if let Some((uid, gid)) = server_user() {
        for f in ["collector.crt", "collector.key"] {
            std::os::unix::fs::chown(tls.join(f), Some(uid), Some(gid))
                .map_err(|e| format!("chown {f}: {e}"))?;
        }
        std::os::unix::fs::chown(&tls, Some(uid), Some(gid))
            .map_err(|e| format!("chown {}: {e}", tls.display()))?;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let out = as_server_user(Command::new(bin.join("initdb")).args([
        "-D",
        &data.to_string_lossy(),
        "-U",
        "vigil",
        "-A",
        "trust",
        "-E",
        "UTF8",
        "--no-sync",
    ]))
    .output()
    .map_err(|e| format!("cannot run initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // Started from a thread that lives as long as the process, so the
    // parent-death signal comes when the process ends, not when a test's
    // thread does.
    let (tx, rx) = std::sync::mpsc::channel();
    let (d, dd) = (dir.clone(), data.clone());
    std::thread::spawn(move || {
        let log = std::fs::File::create(d.join("server.log")).ok();
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.args(["-D", &dd.to_string_lossy(), "-k", &d.to_string_lossy()])
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "ssl=on"])
            .arg("-c")
            .arg(format!(
                "ssl_cert_file={}",
                d.join("tls/collector.crt").display()
            ))
            .arg("-c")
            .arg(format!(
                "ssl_key_file={}",
                d.join("tls/collector.key").display()
            ))
            .args(["-c", "max_connections=400", "-c", "shared_buffers=256MB"]);
        if durability == Durability::Off {
            cmd.args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off"]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.map_or(Stdio::null(), Stdio::from));
        as_server_user(&mut cmd);
        // SAFETY: prctl only, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT);
                Ok(())
            });
        }
        let child = cmd.spawn();
        let _ = tx.send(child.as_ref().map(|c| c.id()).map_err(|e| e.to_string()));
        if let Ok(mut c) = child {
            let _ = c.wait();
        }
    });
    let pid = rx
        .recv()
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot start postgres: {e}"))?;
    SERVER_PID.store(pid, Ordering::Relaxed);
    let _ = SERVER_DIR.set(dir.clone());
    // SAFETY: registers a plain function.
    unsafe { libc::atexit(stop_at_exit) };
    let cluster = Cluster { dir, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match postgres::Client::connect(&url(&cluster, "postgres"), postgres::NoTls) {
            Ok(_) => break,
            Err(e) if Instant::now() > deadline => {
                let log =
                    std::fs::read_to_string(cluster.dir.join("server.log")).unwrap_or_default();
                return Err(format!("PostgreSQL did not start: {e}\n{log}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    Ok(cluster)
}

/// Stops the server (fast shutdown) and removes its directory.
extern "C" fn stop_at_exit() {
    let pid = SERVER_PID.load(Ordering::Relaxed) as libc::pid_t;
    if pid > 0 {
        // SAFETY: signals our own child.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        // The server is gone when signal 0 finds no process.
        while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    if let Some(d) = SERVER_DIR.get() {
        let _ = std::fs::remove_dir_all(d);
    }
}
