//! Harness for end-to-end tests: runs the built `vigil-agent` and
//! `vigil-collector` binaries, waits for their log lines, and stops them.
//!
//! Tests that need the kernel call [`kernel_tests_enabled`]: as root they
//! run; elsewhere they fail, unless `VIGIL_SKIP_KERNEL_TESTS=1` asks for
//! them to be skipped (never under `CI`). Each skip is recorded, and
//! `cargo xtask test` says how many there were, so a green run as a normal
//! user cannot pass for a run of the whole suite.
//!
//! A check that something did *not* happen waits for positive evidence
//! first: [`Proc::settle`] returns only when the agent has matched every
//! event of what ran before it.
use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

/// Path of a workspace binary next to this test's target directory.
/// The store a test's collectors use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// `DIR/alerts.db`, the default.
    Sqlite,
    /// A fresh database on the process's throwaway PostgreSQL cluster,
    /// shared by every collector the test starts on the same `DIR`.
    Postgres,
}

thread_local! {
    static STORE: std::cell::Cell<Store> = const { std::cell::Cell::new(Store::Sqlite) };
}

/// Runs `test` with its collectors on `store` (see [`on_both_stores`]).
pub fn with_store(store: Store, test: impl FnOnce()) {
    STORE.with(|s| s.set(store));
    test();
}

/// Runs each named test (a `fn()` in scope) twice: in `on_sqlite::NAME`
/// with its collectors on SQLite, and in `on_postgres::NAME` on a real
/// PostgreSQL server.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[test]
            fn $name() {
                $crate::with_store($crate::Store::Sqlite, super::$name);
            })*
        }
        mod on_postgres {
            $(#[test]
            fn $name() {
                $crate::with_store($crate::Store::Postgres, super::$name);
            })*
        }
    };
}

/// The `--db` of collectors on `dir`: its SQLite file, or, when the test
/// runs on PostgreSQL, the database made for `dir` the first time.
pub fn collector_db(dir: &Path) -> std::ffi::OsString {
    let marker = dir.join("postgres-url");
    if let Ok(url) = std::fs::read_to_string(&marker) {
        return url.into();
    }
    if STORE.with(|s| s.get()) == Store::Postgres {
        let url = vigil_collector::sql::throwaway::database()
            .unwrap_or_else(|e| panic!("PostgreSQL for this test: {e}"));
        std::fs::write(&marker, &url).unwrap();
        return url.into();
    }
    dir.join("alerts.db").into()
}

pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} is not built; run `cargo build --bins` first (`cargo xtask test` does)",
        p.display()
    );
    p
}

pub fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The agent's default `--enrich-wait-ms`: the longest an event waits for
/// a lookup, which [`Proc::settle`] must outwait.
pub const ENRICH_WAIT: Duration = Duration::from_millis(200);

/// Set to `1` to skip the tests that load the eBPF probe when not root.
pub const SKIP_KERNEL_TESTS: &str = "VIGIL_SKIP_KERNEL_TESTS";

/// Where skipped tests are recorded, one file each, for `cargo xtask test`
/// to count: `target/vigil-skipped/`.
pub fn skipped_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/vigil-skipped
    exe.parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .expect("target dir")
        .join("vigil-skipped")
}

/// True when the kernel tests can run (as root). Otherwise the test fails,
/// saying what to do, unless `VIGIL_SKIP_KERNEL_TESTS=1` is set outside
/// `CI`: then the skip is recorded and the test returns early.
pub fn kernel_tests_enabled(test: &str) -> bool {
    if is_root() {
        return true;
    }
    let opted_out = std::env::var(SKIP_KERNEL_TESTS).is_ok_and(|v| v == "1");
    let ci = std::env::var_os("CI").is_some();
    if !opted_out || ci {
        panic!(
            "{test}: this test loads the eBPF probe and needs root. Run the suite as root \
             (`cargo xtask test` runs them through sudo){}",
            if ci {
                "; under CI the kernel tests cannot be skipped"
            } else {
                ", or set VIGIL_SKIP_KERNEL_TESTS=1 to skip the kernel tests explicitly"
            }
        );
    }
    let dir = skipped_dir();
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(test), "");
    eprintln!("SKIP {test}: needs root to load the eBPF probe ({SKIP_KERNEL_TESTS}=1)");
    false
}

/// A unique token for markers and paths.
pub fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{tag}-{}-{nanos}", std::process::id())
}

/// A child process whose stderr (and optionally stdout) lines are collected.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    stderr: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<Vec<String>>>,
    wake: mpsc::Receiver<()>,
    /// Directories that live as long as the process (an agent's spool).
    keep: Vec<tempfile::TempDir>,
}

fn collect(
    stream: impl std::io::Read + Send + 'static,
    sink: Arc<Mutex<Vec<String>>>,
    wake: mpsc::Sender<()>,
) {
    thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
            let _ = wake.send(());
        }
    });
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let (tx, rx) = mpsc::channel();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        collect(child.stderr.take().unwrap(), stderr.clone(), tx.clone());
        collect(child.stdout.take().unwrap(), stdout.clone(), tx);
        Proc {
            name: name.into(),
            child: Some(child),
            stderr,
            stdout,
            wake: rx,
            keep: Vec::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Every stdout line that is a JSON object (events, alerts, lost records).
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout_lines()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Polls the JSON lines that satisfy `pred` until `done` holds for them
    /// or `timeout` passes; returns them either way, for the caller to assert.
    pub fn wait_json(
        &self,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let found: Vec<_> = self.json_lines().into_iter().filter(|v| pred(v)).collect();
            if done(&found) || Instant::now() > deadline {
                return found;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last JSON line satisfying `pred`; panics naming `what` if none
    /// shows within 15 s.
    pub fn expect_json(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        self.wait_json(Duration::from_secs(15), pred, |f| !f.is_empty())
            .pop()
            .unwrap_or_else(|| panic!("no {what} within 15 s"))
    }

    /// Returns once the agent (run with `--events`) has matched every
    /// event of everything that ran before this call, and every line that
    /// produced has been collected: so an alert that is absent now was
    /// never raised. `enrich_wait` is the agent's `--enrich-wait-ms`.
    ///
    /// How: the ring buffer is read in order, so once a first marker's exec
    /// is seen, every earlier record has reached the enricher; after
    /// `enrich_wait`, none of them may still wait for a lookup, and the next
    /// emit releases them; a second marker run after that emit is printed
    /// after all of them, and a third after everything the second's emit
    /// wrote.
    pub fn settle(&self, enrich_wait: Duration) {
        self.marker_seen();
        thread::sleep(enrich_wait + Duration::from_millis(50));
        self.marker_seen();
        self.marker_seen();
    }

    /// Runs a marker program and waits for its exec event.
    fn marker_seen(&self) {
        let tag = unique("vigil-settle");
        let st = Command::new("/bin/true")
            .arg(&tag)
            .status()
            .expect("run /bin/true");
        assert!(st.success());
        let seen = self.wait_json(
            Duration::from_secs(30),
            |v| v["type"] == "exec" && v["argv"][1] == tag.as_str(),
            |f| !f.is_empty(),
        );
        assert!(
            !seen.is_empty(),
            "{}: the settle marker's exec was not reported within 30 s (is --events on?)",
            self.name
        );
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().unwrap().try_wait(), Ok(None))
    }

    /// Waits until `pred` holds for some stderr line; panics with the log on
    /// timeout or if the process exits first.
    pub fn wait_stderr(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        self.wait_line(what, timeout, true, pred)
    }

    /// Same for stdout.
    pub fn wait_stdout(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        self.wait_line(what, timeout, false, pred)
    }

    fn wait_line(
        &mut self,
        what: &str,
        timeout: Duration,
        err: bool,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = if err {
                self.stderr_lines()
            } else {
                self.stdout_lines()
            };
            if let Some(l) = lines.iter().find(|l| pred(l)) {
                return l.clone();
            }
            if !self.alive() {
                thread::sleep(Duration::from_millis(200));
                panic!(
                    "{} exited while waiting for {what}:\n{}",
                    self.name,
                    self.stderr_lines().join("\n")
                );
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "{} timed out waiting for {what}:\n{}",
                    self.name,
                    self.stderr_lines().join("\n")
                );
            }
            let _ = self.wake.recv_timeout(left.min(Duration::from_millis(200)));
        }
    }

    /// The address a log line containing `what` gives as `key=ADDR`
    /// (waits up to 20 s for the line).
    pub fn logged_addr(&mut self, what: &str, key: &str) -> String {
        let line = self.wait_stderr(what, Duration::from_secs(20), |l| l.contains(what));
        line.split(&format!("{key}="))
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {key}= in: {line}"))
            .to_string()
    }

    /// SIGKILL: no chance to clean up, as a crash or the OOM killer.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits up to 15 s; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "{} did not stop on SIGTERM:\n{}",
                    self.name,
                    self.stderr_lines().join("\n")
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A collector serving plaintext on an ephemeral loopback port, with its
/// database in `dir`.
pub fn start_collector(dir: &Path, listen: &str) -> (Proc, String) {
    start_collector_with(dir, listen, &[])
}

/// [`start_collector`] with more `serve` arguments.
pub fn start_collector_with(dir: &Path, listen: &str, extra: &[&str]) -> (Proc, String) {
    let mut cmd = Command::new(bin("vigil-collector"));
    cmd.args([
        "serve",
        "--insecure-plaintext",
        "--metrics-listen",
        "127.0.0.1:0",
        "--listen",
        listen,
    ])
    .args(extra)
    .arg("--db")
    .arg(collector_db(dir));
    let (p, addr) = wait_collector(cmd);
    (p, format!("http://{addr}"))
}

/// A collector serving mutual TLS with the PKI in `pki`, on an ephemeral
/// loopback port; its URL is `https://127.0.0.1:PORT`.
pub fn start_tls_collector(dir: &Path, pki: &Path) -> (Proc, String) {
    let mut cmd = Command::new(bin("vigil-collector"));
    cmd.args([
        "serve",
        "--metrics-listen",
        "127.0.0.1:0",
        "--listen",
        "127.0.0.1:0",
        "--pki",
    ])
    .arg(pki)
    .arg("--db")
    .arg(collector_db(dir));
    let (p, addr) = wait_collector(cmd);
    (p, format!("https://{addr}"))
}

/// Runs `vigil-collector pki ARGS...`, which must succeed.
pub fn pki(args: &[&str]) {
    let out = Command::new(bin("vigil-collector"))
        .arg("pki")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pki {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// This host's name, as the agent reads it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

fn wait_collector(cmd: Command) -> (Proc, String) {
    let mut p = Proc::spawn("vigil-collector", cmd);
    let addr = p.logged_addr("collector serving", "listen");
    (p, addr)
}

/// An agent with the given extra arguments after `run`; waits until it
/// runs. With `--collector` and no `--spool-dir`, its spool is a fresh
/// temporary directory (agents running at once cannot share one).
pub fn start_agent(args: &[&str]) -> Proc {
    let mut cmd = Command::new(bin("vigil-agent"));
    cmd.arg("run").args(args);
    let spool = (args.contains(&"--collector") && !args.contains(&"--spool-dir")).then(|| {
        let d = tempfile::Builder::new()
            .prefix("vigil-spool-")
            .tempdir()
            .unwrap();
        cmd.arg("--spool-dir").arg(d.path());
        d
    });
    let mut p = Proc::spawn("vigil-agent", cmd);
    p.keep.extend(spool);
    p.wait_stderr("agent running", Duration::from_secs(60), |l| {
        l.contains("agent running")
    });
    p
}

/// Copies `/bin/true`-like `src` to a fresh directory under `/tmp` as `name`.
pub fn marker_binary(src: &str, name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("vigil-e2e-")
        .tempdir_in("/tmp")
        .unwrap();
    let path = dir.path().join(name);
    copy_executable(src, &path);
    (dir, path)
}

/// Copies a program to `dst` (over it, same inode, if it exists) with
/// `cp`, not from this process: a child that another test thread forks
/// while this process holds the copy open for writing keeps that
/// descriptor until it execs, and running the copy meanwhile fails with
/// ETXTBSY ("Text file busy").
pub fn copy_executable(src: impl AsRef<Path>, dst: impl AsRef<Path>) {
    let (src, dst) = (src.as_ref(), dst.as_ref());
    let status = Command::new("cp").arg(src).arg(dst).status().unwrap();
    assert!(status.success(), "cp {} {}", src.display(), dst.display());
}

/// Runs `vigil-collector query ... alerts <args> --json` until `pred` holds
/// for the returned alerts (or the timeout passes); returns them.
pub fn query_until(
    server: &str,
    args: &[&str],
    timeout: Duration,
    pred: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let out = Command::new(bin("vigil-collector"))
            .args(["query", "--server", server, "alerts", "--json"])
            .args(args)
            .output()
            .unwrap();
        let alerts: Vec<serde_json::Value> = if out.status.success() {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| serde_json::from_str(l).expect("query --json prints JSON lines"))
                .collect()
        } else {
            Vec::new()
        };
        if pred(&alerts) || Instant::now() > deadline {
            return alerts;
        }
        thread::sleep(Duration::from_millis(300));
    }
}

/// Sets the kernel's last-allocated pid so the next fork gets `pid`
/// (unless another process forks first).
pub fn next_pid_will_be(pid: u32) {
    std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
        .expect("writing /proc/sys/kernel/ns_last_pid needs root");
}

/// An unused loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The cgroup2 mount point.
pub fn cgroup2() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| PathBuf::from(left.split_whitespace().nth(4).unwrap()))
        })
        .expect("a cgroup2 mount")
}

/// A cgroup created for a test below a slice of its own, and removed
/// afterwards.
pub struct TestCgroup {
    parent: PathBuf,
    pub dir: PathBuf,
}

impl TestCgroup {
    pub fn new(leaf: &str) -> TestCgroup {
        let parent = cgroup2().join(format!("{}.slice", unique("vigil-test")));
        let dir = parent.join(leaf);
        std::fs::create_dir_all(&dir).unwrap();
        TestCgroup { parent, dir }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        std::thread::sleep(Duration::from_millis(100));
        let _ = std::fs::remove_dir(&self.dir);
        let _ = std::fs::remove_dir(&self.parent);
    }
}

/// `GET path` over plain HTTP/1.1: (status, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}
