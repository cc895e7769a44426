//! The default rule set against real behaviour: each case performs an
//! attack technique safely on this machine (loopback only, files in
//! temporary places, removed after), with the real probe and agent, and
//! expects the rule's alert; and performs a near miss first, which must
//! stay silent.
//!
//! One agent serves every case (starting one per case would dominate the
//! run time); the cases run in order and every failure is reported.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use vigil_tests::*;

struct Env {
    agent: Proc,
    dir: tempfile::TempDir,
}

impl Env {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A copy of `src` named `name` in the scratch directory.
    fn copy(&self, src: &str, name: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::copy(src, &p).unwrap();
        p
    }

    /// The alert of `rule` whose process satisfies `pred`, within 15 s.
    fn alert(&self, rule: &str, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        self.agent
            .wait_json(
                Duration::from_secs(15),
                |v| v["type"] == "alert" && v["rule"] == rule && pred(v),
                |f| !f.is_empty(),
            )
            .pop()
    }

    /// Alerts of `rule` satisfying `pred` seen so far.
    fn alerts_now(&self, rule: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.agent
            .json_lines()
            .into_iter()
            .filter(|v| v["type"] == "alert" && v["rule"] == rule && pred(v))
            .collect()
    }
}

/// Runs `cmd` to completion; returns its pid.
fn run(cmd: &mut Command) -> u32 {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let pid = child.id();
    let _ = child.wait_with_output();
    pid
}

fn sh(script: &str) -> u32 {
    run(Command::new("sh").args(["-c", script]))
}

fn helper(args: &[&str]) -> u32 {
    run(Command::new(bin("vigil-test-helper")).args(args))
}

fn pid_is(pid: u32) -> impl Fn(&Value) -> bool {
    move |v: &Value| v["process"]["pid"] == pid
}

fn field_is(name: &'static str, value: String) -> impl Fn(&Value) -> bool {
    move |v: &Value| v["fields"][name] == value.as_str()
}

fn argv_has(tag: String) -> impl Fn(&Value) -> bool {
    move |v: &Value| {
        v["process"]["argv"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x.as_str().is_some_and(|s| s.contains(&tag)))
        })
    }
}

/// One behaviour: `near_miss` runs first and returns a predicate for the
/// alerts it must not cause; `act` returns the predicate of the alert it
/// must cause.
type Pred = Box<dyn Fn(&Value) -> bool>;
type Step = Box<dyn Fn(&Env) -> Pred>;

struct Case {
    rule: &'static str,
    near_miss: Step,
    act: Step,
}

fn case(
    rule: &'static str,
    near_miss: impl Fn(&Env) -> Box<dyn Fn(&Value) -> bool> + 'static,
    act: impl Fn(&Env) -> Box<dyn Fn(&Value) -> bool> + 'static,
) -> Case {
    Case {
        rule,
        near_miss: Box::new(near_miss),
        act: Box::new(act),
    }
}

fn b<F: Fn(&Value) -> bool + 'static>(f: F) -> Box<dyn Fn(&Value) -> bool> {
    Box::new(f)
}

fn write_file(p: &Path) {
    std::fs::write(p, b"vigil test\n").unwrap();
}

fn cases() -> Vec<Case> {
    vec![
        case(
            "Shell spawned by a server process",
            |e| {
                let worker = e.copy("/bin/bash", "worker");
                let tag = unique("near-server");
                run(Command::new(&worker).args(["-c", &format!("sh -c 'true {tag}'; true")]));
                b(argv_has(tag))
            },
            |e| {
                let nginx = e.copy("/bin/bash", "nginx");
                let tag = unique("server-shell");
                run(Command::new(&nginx).args(["-c", &format!("sh -c 'true {tag}'; true")]));
                b(argv_has(tag))
            },
        ),
        case(
            "Read sensitive file by unexpected program",
            |_| b(pid_is(run(Command::new("cat").arg("/etc/hostname")))),
            |_| b(pid_is(run(Command::new("cat").arg("/etc/shadow")))),
        ),
        case(
            "Write below etc",
            |_| b(pid_is(run(Command::new("cat").arg("/etc/hostname")))),
            |_| {
                let f = format!("/etc/{}", unique("vigil-test"));
                let pid = sh(&format!("echo x > {f}; rm -f {f}"));
                b(move |v| v["process"]["pid"] == pid && v["fields"]["fd.name"] == f.as_str())
            },
        ),
        case(
            "Write below binary dir",
            |_| {
                let f = format!("/usr/local/{}", unique("vigil-test"));
                b(pid_is(sh(&format!("echo x > {f}; rm -f {f}"))))
            },
            |_| {
                let f = format!("/usr/local/bin/{}", unique("vigil-test"));
                b(pid_is(sh(&format!("echo x > {f}; rm -f {f}"))))
            },
        ),
        case(
            "Write to ld.so.preload",
            |_| {
                let f = format!("/etc/{}", unique("ld.so.preload"));
                b(pid_is(sh(&format!("echo > {f}; rm -f {f}"))))
            },
            |_| {
                // Append nothing: an existing file stays as it was; one this
                // case created is removed.
                let existed = Path::new("/etc/ld.so.preload").exists();
                let pid = sh(": >> /etc/ld.so.preload");
                if !existed {
                    let _ = std::fs::remove_file("/etc/ld.so.preload");
                }
                b(pid_is(pid))
            },
        ),
        case(
            "Schedule or service file written",
            |_| {
                let f = format!("/etc/{}", unique("vigil-notcron"));
                b(pid_is(sh(&format!("echo x > {f}; rm -f {f}"))))
            },
            |_| {
                let f = format!("/etc/cron.d/{}", unique("vigil-test"));
                b(pid_is(sh(&format!(
                    "mkdir -p /etc/cron.d; echo x > {f}; rm -f {f}"
                ))))
            },
        ),
        case(
            "SSH authorized_keys modified",
            |e| {
                std::fs::create_dir_all(e.path("home/.ssh")).unwrap();
                let f = e.path("home/.ssh/known_hosts");
                b(pid_is(sh(&format!("echo x >> {}", f.display()))))
            },
            |e| {
                std::fs::create_dir_all(e.path("home/.ssh")).unwrap();
                let f = e.path("home/.ssh/authorized_keys");
                b(pid_is(sh(&format!(
                    "echo ssh-ed25519 AAAA >> {}",
                    f.display()
                ))))
            },
        ),
        case(
            "Symlink to sensitive file",
            |e| {
                b(pid_is(run(Command::new("ln")
                    .args(["-s", "/etc/hostname"])
                    .arg(e.path(&unique("link"))))))
            },
            |e| {
                b(pid_is(run(Command::new("ln")
                    .args(["-s", "/etc/shadow"])
                    .arg(e.path(&unique("link"))))))
            },
        ),
        case(
            "Log or shell history cleared",
            |_| {
                let f = format!("/var/log/{}.log", unique("vigil-test"));
                let pid = sh(&format!("echo x >> {f}"));
                let _ = std::fs::remove_file(&f);
                b(pid_is(pid))
            },
            |_| {
                let f = format!("/var/log/{}.log", unique("vigil-test"));
                write_file(Path::new(&f));
                let pid = sh(&format!(": > {f}"));
                let _ = std::fs::remove_file(&f);
                b(pid_is(pid))
            },
        ),
        case(
            "Log or shell history cleared",
            |e| {
                let f = e.path("notes_history.txt");
                write_file(&f);
                b(pid_is(run(Command::new("rm").arg(&f))))
            },
            |e| {
                std::fs::create_dir_all(e.path("home")).unwrap();
                let f = e.path("home/.bash_history");
                write_file(&f);
                b(pid_is(run(Command::new("rm").arg(&f))))
            },
        ),
        case(
            "Execution from a temporary directory",
            |_| {
                let tag = unique("near-tmp");
                run(Command::new("/usr/bin/true").arg(&tag));
                b(argv_has(tag))
            },
            |_| {
                let d = tempfile::Builder::new()
                    .prefix("vigil-shm-")
                    .tempdir_in("/dev/shm")
                    .unwrap();
                let p = d.path().join("payload");
                std::fs::copy("/bin/true", &p).unwrap();
                let tag = unique("tmp-exec");
                run(Command::new(&p).arg(&tag));
                b(argv_has(tag))
            },
        ),
        case(
            "Fileless execution from memfd",
            |_| b(pid_is(helper(&["memfd", "not-executed"]))),
            |_| b(pid_is(helper(&["memfd-exec"]))),
        ),
        case(
            "Dropped binary executed",
            |e| {
                // Written by cp (a build/install tool): not followed.
                let f = e.path(&unique("copied"));
                b(pid_is(sh(&format!("cp /bin/true {0}; {0}", f.display()))))
            },
            |e| {
                let f = e.path(&unique("dropped"));
                let f2 = f.display().to_string();
                sh(&format!(
                    "cat /bin/true > {0}; chmod +x {0}; {0}; true",
                    f.display()
                ));
                b(move |v| v["process"]["exe"] == f2.as_str())
            },
        ),
        case(
            "Kernel module load",
            |_| b(pid_is(helper(&["delete_module", "vigil_nonexistent"]))),
            |e| {
                let ko = e.path("evil.ko");
                write_file(&ko);
                b(pid_is(helper(&["finit_module", ko.to_str().unwrap(), ""])))
            },
        ),
        case(
            "Ptrace attach to another process",
            |_| b(pid_is(helper(&["ptrace-traceme"]))),
            |_| b(pid_is(helper(&["ptrace-attach"]))),
        ),
        case(
            "BPF program loaded",
            |_| b(pid_is(helper(&["bpf-map"]))),
            |_| b(pid_is(helper(&["bpf-prog-load"]))),
        ),
        case(
            "Packet or raw socket opened",
            |_| b(pid_is(helper(&["connect4", "9"]))),
            |_| b(pid_is(helper(&["socket-packet"]))),
        ),
        case(
            "Netcat remote code execution",
            |e| {
                let nc = e.copy("/bin/true", "nc");
                let tag = unique("near-nc");
                run(Command::new(&nc).args(["-z", "127.0.0.1", "9", &tag]));
                b(argv_has(tag))
            },
            |e| {
                let nc = e.copy("/bin/true", "nc");
                let tag = unique("nc-exec");
                run(Command::new(&nc).args(["-e", "/bin/sh", "127.0.0.1", "9", &tag]));
                b(argv_has(tag))
            },
        ),
        case(
            "Shell redirected to a network device",
            |_| {
                let tag = unique("near-devtcp");
                run(Command::new("bash").args(["-c", &format!("echo {tag} > /dev/null")]));
                b(argv_has(tag))
            },
            |_| {
                let port = free_port();
                let tag = unique("devtcp");
                run(Command::new("bash").args([
                    "-c",
                    &format!("bash -i >& /dev/tcp/127.0.0.1/{port} 0>&1; true {tag}"),
                ]));
                b(argv_has(tag))
            },
        ),
        case(
            "Socket duplicated onto standard input or output",
            |_| b(pid_is(helper(&["dup2-file", "1"]))),
            |_| b(pid_is(helper(&["dup2-socket", "0"]))),
        ),
        case(
            "Outbound connection from a shell",
            |_| b(pid_is(helper(&["connect4", &free_port().to_string()]))),
            |_| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let port = l.local_addr().unwrap().port();
                b(pid_is(run(Command::new("bash").args([
                    "-c",
                    &format!("exec 3<>/dev/tcp/127.0.0.1/{port}; true"),
                ]))))
            },
        ),
        case(
            "Privilege change to root",
            |_| b(pid_is(helper(&["stay-root"]))),
            |_| b(pid_is(helper(&["become-root"]))),
        ),
        case(
            "Namespace change by non-runtime program",
            |e| {
                let runc = e.copy("/usr/bin/unshare", "runc");
                b(pid_is(run(Command::new(&runc).args(["-u", "true"]))))
            },
            |_| b(pid_is(helper(&["unshare-uts"]))),
        ),
        case(
            "Cgroup release_agent written",
            |e| {
                let f = e.path("release_agent_notes");
                b(pid_is(sh(&format!("echo x > {}", f.display()))))
            },
            |e| {
                std::fs::create_dir_all(e.path("cgroup")).unwrap();
                let f = e.path("cgroup/release_agent");
                b(pid_is(sh(&format!("echo /tmp/x > {}", f.display()))))
            },
        ),
        case(
            "Search for private keys or passwords",
            |e| {
                b(pid_is(run(Command::new("find")
                    .arg(e.dir.path())
                    .args(["-name", "notes.txt"]))))
            },
            |e| {
                b(pid_is(run(Command::new("find")
                    .arg(e.dir.path())
                    .args(["-name", "id_rsa"]))))
            },
        ),
        case(
            "User or group management",
            |e| {
                let p = e.copy("/bin/true", "userinfo");
                b(pid_is(run(&mut Command::new(&p))))
            },
            |e| {
                let p = e.copy("/bin/true", "useradd");
                b(pid_is(run(Command::new(&p).arg("mallory"))))
            },
        ),
        case(
            "Connection to a mining pool port",
            |_| b(pid_is(helper(&["connect4", "3332"]))),
            |_| b(pid_is(helper(&["connect4", "3333"]))),
        ),
        case(
            "DNS query for a mining pool",
            |_| {
                b(field_is("dns.query", "example.com".into()))
                    .and_pid(helper(&["dns-sendto", "example.com"]))
            },
            |_| b(pid_is(helper(&["dns-sendto", "pool.minexmr.com"]))),
        ),
    ]
}

trait AndPid {
    fn and_pid(self, pid: u32) -> Box<dyn Fn(&Value) -> bool>;
}

impl AndPid for Box<dyn Fn(&Value) -> bool> {
    fn and_pid(self, pid: u32) -> Box<dyn Fn(&Value) -> bool> {
        Box::new(move |v| self(v) && v["process"]["pid"] == pid)
    }
}

#[test]
fn default_rules_detect_behaviours_and_ignore_near_misses() {
    if !kernel_tests_enabled("default_rules_detect_behaviours_and_ignore_near_misses") {
        return;
    }
    let agent = start_agent(&["--drain-interval-ms", "10"]);
    let dir = tempfile::Builder::new()
        .prefix("vigil-detect-")
        .tempdir_in("/tmp")
        .unwrap();
    let env = Env { agent, dir };
    let mut failures = Vec::new();
    let mut covered = std::collections::BTreeSet::new();
    for c in cases() {
        let quiet = (c.near_miss)(&env);
        let hit = (c.act)(&env);
        match env.alert(c.rule, hit) {
            None => failures.push(format!("`{}`: no alert for the behaviour", c.rule)),
            Some(a) => {
                covered.insert(c.rule);
                assert!(a["tags"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|t| t.as_str().unwrap().starts_with('T')));
                // The behaviour's alert came after the near miss's events,
                // so a near-miss alert would be there by now.
                std::thread::sleep(Duration::from_millis(300));
                let wrong = env.alerts_now(c.rule, quiet);
                if !wrong.is_empty() {
                    failures.push(format!("`{}`: the near miss alerted: {wrong:#?}", c.rule));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}\nagent log:\n{}",
        failures.len(),
        failures.join("\n"),
        env.agent.stderr_lines().join("\n")
    );
    eprintln!("covered {} rules: {covered:?}", covered.len());
}
