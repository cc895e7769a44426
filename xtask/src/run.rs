//! `cargo xtask run`: a collector and an agent on this host, over mutual
//! TLS, until Ctrl-C or SIGTERM.
//!
//! Everything is built, and the collector runs, as the user who typed the
//! command; only the agent, which loads the eBPF probe, is raised to root
//! (through `sudo` when the user is not root). A signal to xtask alone
//! stops both children: the agent first, so its last alerts reach the
//! collector, then the collector.
use std::{
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus},
    sync::atomic::{AtomicI32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use crate::{as_root, quiet_step, step};

/// The responder certificate `cargo xtask run` makes for local queries.
const RESPONDER: &str = "local";
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
pub(crate) const DEFAULT_UI_LISTEN: &str = "127.0.0.1:8443";
/// The console account `cargo xtask run` makes on first use.
const CONSOLE_USER: &str = "admin";

/// How long each child gets to stop cleanly before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The last stop signal xtask received (0: none).
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_stop_signal(sig: libc::c_int) {
    STOP_SIGNAL.store(sig, Ordering::SeqCst);
}

/// SIGINT, SIGTERM and SIGHUP ask xtask to stop its children and exit.
fn catch_stop_signals() {
    let handler = on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores into an atomic.
        unsafe { libc::signal(sig, handler) };
    }
}

fn stop_requested() -> bool {
    STOP_SIGNAL.load(Ordering::SeqCst) != 0
}

pub(crate) fn run(
    data_dir: &Path,
    listen: SocketAddr,
    ui_listen: &str,
    agent_args: &[String],
) -> anyhow::Result<()> {
    let ui: Option<SocketAddr> = match ui_listen {
        "off" => None,
        a => Some(a.parse().with_context(|| {
            format!("--ui-listen `{a}`: expected IP:PORT (e.g. 127.0.0.1:8443) or off")
        })?),
    };
    crate::setup()?;
    if crate::is_root() && std::env::var_os("SUDO_USER").is_some() {
        eprintln!(
            "==> note: run as root through sudo, the build leaves root-owned files in target/; \
             `cargo xtask run` as yourself raises only the agent"
        );
    }
    step(
        "cargo build --release --bins",
        crate::cargo().args(["build", "--release", "--bins"]),
    )?;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    // The agent keeps no CAP_DAC_OVERRIDE after start-up: raised by sudo,
    // it could not write under a directory the user owns, so its spool is
    // then a root-owned one of its own.
    let spool = if crate::is_root() {
        data_dir.join("spool")
    } else {
        // SAFETY: no preconditions.
        PathBuf::from(format!("/var/tmp/vigil-run-{}/spool", unsafe {
            libc::getuid()
        }))
    };
    let bin = Path::new("target/release");
    let db = data_dir.join("alerts.db");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("cannot read this host's name")?
        .trim()
        .to_string();
    let pki = data_dir.join("pki");
    ensure_pki(bin, &pki, &host, &listen)?;
    let pki_s = pki.display().to_string();
    let console_password = data_dir.join("console-password");
    if ui.is_some() {
        ensure_console_account(bin, &db, &console_password)?;
    }
    let agent_exe = std::fs::canonicalize(bin.join("vigil-agent"))?;
    catch_stop_signals();
    let mut collector = Command::new(bin.join("vigil-collector"))
        .args(["serve", "--listen", &listen.to_string(), "--pki", &pki_s])
        .args(["--ui-listen", ui_listen])
        .arg("--db")
        .arg(&db)
        .spawn()
        .context("cannot start vigil-collector")?;
    if let Err(e) = wait_for_port(listen, &mut collector) {
        stop(&mut [("vigil-collector", &mut collector)]);
        return Err(e);
    }
    // The collector's certificate names loopback, not "any address".
    let reach = if listen.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], listen.port()))
    } else {
        listen
    };
    let url = format!("https://{reach}");
    let agent_files = |ext: &str| {
        pki.join(format!("agents/{host}.{ext}"))
            .display()
            .to_string()
    };
    if !crate::is_root() {
        eprintln!(
            "==> the agent loads an eBPF probe, so it alone runs as root: starting it with sudo \
             (you may be asked for your password)"
        );
    }
    let mut agent = match as_root(&agent_exe, false)
        .args(["run", "--collector", &url])
        .args([
            "--tls-cert",
            &agent_files("crt"),
            "--tls-key",
            &agent_files("key"),
        ])
        .args(["--ca", &format!("{pki_s}/ca.crt")])
        .arg("--spool-dir")
        .arg(&spool)
        .args(agent_args)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            stop(&mut [("vigil-collector", &mut collector)]);
            return Err(e).context("cannot start vigil-agent");
        }
    };
    let server = if listen.to_string() == DEFAULT_LISTEN {
        String::new()
    } else {
        format!("--server {url} ")
    };
    let console = match ui {
        Some(a) => format!(
            "\n    Console: https://{a}/  (sign in as {CONSOLE_USER}, password in {}; the browser \
             does not know the run's CA {pki_s}/ca.crt: import it, or accept the warning)",
            console_password.display()
        ),
        None => String::new(),
    };
    eprintln!(
        "==> Vigil is running over mutual TLS: collector on {url} (database {}, certificates in {pki_s}),\n    \
         agent for host {host} with the default rules (spool {}).\n    \
         Try:  cp /bin/true /tmp/x && /tmp/x\n    \
         Then: {} query {server}--pki {pki_s} --as {RESPONDER} alerts --since 1h\n    \
         Ctrl-C (or SIGTERM to this process) stops both.{console}",
        db.display(),
        spool.display(),
        bin.join("vigil-collector").display()
    );
    // Until a signal, or until either child ends on its own.
    let ended = loop {
        if stop_requested() {
            break None;
        }
        if let Some(st) = agent.try_wait()? {
            break Some(("vigil-agent", st));
        }
        if let Some(st) = collector.try_wait()? {
            break Some(("vigil-collector", st));
        }
        thread::sleep(Duration::from_millis(100));
    };
    let statuses = stop(&mut [
        ("vigil-agent", &mut agent),
        ("vigil-collector", &mut collector),
    ]);
    if let Some((name, st)) = ended {
        if !clean_exit(st) {
            bail!("{name} exited with {st}");
        }
    }
    for (name, st) in statuses {
        match st {
            Some(st) if clean_exit(st) => {}
            Some(st) => bail!("{name} exited with {st}"),
            None => bail!("{name} did not stop within {STOP_GRACE:?} and was killed"),
        }
    }
    eprintln!("==> stopped");
    Ok(())
}

/// Makes the console account `admin` with a random password, kept in
/// `password_file` (mode 0600), on first use.
fn ensure_console_account(bin: &Path, db: &Path, password_file: &Path) -> anyhow::Result<()> {
    use std::{io::Read as _, os::unix::fs::OpenOptionsExt as _};
    if password_file.exists() {
        return Ok(());
    }
    let mut raw = [0u8; 15];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut raw)?;
    let password: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = password_file.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    std::io::Write::write_all(
        &mut std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?,
        format!("{password}\n").as_bytes(),
    )?;
    quiet_step(
        &format!("make the console account {CONSOLE_USER}"),
        Command::new(bin.join("vigil-collector"))
            .args(["user", "add", CONSOLE_USER, "--role", "admin", "--replace"])
            .arg("--password-file")
            .arg(&tmp)
            .arg("--db")
            .arg(db),
    )?;
    std::fs::rename(&tmp, password_file)?;
    Ok(())
}

/// Stops each child in turn with SIGTERM (a child under sudo gets it
/// relayed), killing one that outlasts [`STOP_GRACE`]. Returns each exit
/// status, `None` where the child had to be killed.
fn stop<'a>(children: &mut [(&'a str, &mut Child)]) -> Vec<(&'a str, Option<ExitStatus>)> {
    let mut out = Vec::new();
    for (name, child) in children.iter_mut() {
        if let Ok(Some(st)) = child.try_wait() {
            out.push((*name, Some(st)));
            continue;
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_GRACE;
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
                _ => {
                    eprintln!("==> {name} did not stop within {STOP_GRACE:?}: killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        out.push((*name, status));
    }
    out
}

/// A clean end: success, or the SIGINT/SIGTERM that stopped it.
fn clean_exit(st: ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    st.success() || matches!(st.signal(), Some(libc::SIGINT | libc::SIGTERM))
}

fn wait_for_port(addr: SocketAddr, child: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if stop_requested() {
            bail!("stopped before the collector was listening");
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Some(st) = child.try_wait()? {
            bail!("vigil-collector exited before listening ({st})");
        }
        thread::sleep(Duration::from_millis(100));
    }
    bail!("vigil-collector did not listen on {addr} within 15 s")
}

/// Creates the PKI of a local run on first use: the CA and collector
/// certificate (naming localhost, 127.0.0.1 and the listen address), an
/// agent certificate for this host, and the responder `local`.
fn ensure_pki(bin: &Path, pki: &Path, host: &str, listen: &SocketAddr) -> anyhow::Result<()> {
    let collector = || Command::new(bin.join("vigil-collector"));
    if !pki.join("ca.crt").exists() {
        let mut init = collector();
        init.args(["pki", "init"]).arg(pki);
        let mut sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let ip = listen.ip().to_string();
        if !listen.ip().is_unspecified() && !sans.contains(&ip) {
            sans.push(ip);
        }
        for san in &sans {
            init.args(["--san", san]);
        }
        quiet_step("create the local PKI", &mut init)?;
    }
    if !pki.join(format!("agents/{host}.crt")).exists() {
        quiet_step(
            "issue this host's agent certificate",
            collector()
                .args(["pki", "issue"])
                .arg(pki)
                .args(["--agent", host]),
        )?;
    }
    if !pki.join(format!("responders/{RESPONDER}.crt")).exists() {
        quiet_step(
            "issue the local responder certificate",
            collector()
                .args(["pki", "issue"])
                .arg(pki)
                .args(["--responder", RESPONDER]),
        )?;
        give_to_sudo_user(&[
            pki.join("responders"),
            pki.join(format!("responders/{RESPONDER}.crt")),
            pki.join(format!("responders/{RESPONDER}.key")),
        ]);
    }
    Ok(())
}

/// Under `sudo`, hands `paths` to the user who ran it, so the README's
/// query works without root (the key stays mode 0600).
fn give_to_sudo_user(paths: &[PathBuf]) {
    let id = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u32>().ok());
    let (Some(uid), Some(gid)) = (id("SUDO_UID"), id("SUDO_GID")) else {
        return;
    };
    for p in paths {
        let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
            continue;
        };
        // SAFETY: a valid C string; failure only leaves the file root's.
        if unsafe { libc::chown(c.as_ptr(), uid, gid) } != 0 {
            eprintln!("==> note: cannot give {} to uid {uid}", p.display());
        }
    }
}
