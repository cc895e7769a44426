//! Control events from real syscalls: credential changes, ptrace, memfd,
//! module load/unload attempts, bpf(), mounts, namespaces, chroot, prctl.
use std::process::Command;

use serde_json::Value;
use vigil_tests::*;

struct Fixture {
    agent: Proc,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(name: &str) -> Option<Fixture> {
        Self::with(name, &[])
    }

    fn with(name: &str, extra: &[&str]) -> Option<Fixture> {
        if !kernel_tests_enabled(name) {
            return None;
        }
        let mut args = vec!["--events", "--drain-interval-ms", "10"];
        args.extend_from_slice(extra);
        let agent = start_agent(&args);
        let dir = tempfile::Builder::new()
            .prefix("vigil-ctl-")
            .tempdir_in("/tmp")
            .unwrap();
        Some(Fixture { agent, dir })
    }

    /// Runs the helper and returns the control event `op` it caused.
    fn op(&self, args: &[&str], op: &str) -> (i64, Value) {
        let child = Command::new(bin("vigil-test-helper"))
            .args(args)
            .current_dir(self.dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let out = child.wait_with_output().unwrap();
        let r: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let what = format!("{op} event from pid {pid} ({args:?} returned {r})");
        let v = self.agent.expect_json(&what, |v| {
            v["type"] == "control" && v["process"]["pid"] == pid && v["op"] == op
        });
        (r, v)
    }
}

#[test]
fn credentials_ptrace_memfd_and_prctl() {
    let Some(f) = Fixture::new("credentials_ptrace_memfd_and_prctl") else {
        return;
    };

    let (r, e) = f.op(&["setresuid", "65534"], "setuid");
    assert_eq!(r, 0);
    assert_eq!(e["syscall"], "setresuid");
    assert_eq!(e["ids"]["effective"], 65534);
    assert_eq!(e["ids"]["real"], -1, "unchanged");
    assert_eq!(e["old"]["euid"], 0, "root before the call");
    assert_eq!(e["process"]["euid"], 65534, "the context shows the result");

    let (r, e) = f.op(&["setgid", "65534"], "setgid");
    assert_eq!(r, 0);
    assert_eq!(e["ids"]["effective"], 65534);

    let (child, e) = f.op(&["ptrace-attach"], "ptrace");
    assert!(child > 0, "attach succeeded: {child}");
    assert_eq!(e["request"], "PTRACE_ATTACH");
    assert_eq!(e["target_pid"], child);
    assert_eq!(e["result"], 0);

    let (fd, e) = f.op(&["memfd", "vigil-payload"], "memfd_create");
    assert!(fd >= 0);
    assert_eq!(e["name"], "vigil-payload");
    assert_eq!(e["flag_names"], serde_json::json!(["MFD_CLOEXEC"]));

    let (_, e) = f.op(&["prctl-name", "kworker/9:9"], "prctl");
    assert_eq!(e["request"], "PR_SET_NAME");
    assert_eq!(e["name"], "kworker/9:9");
}

#[test]
fn module_bpf_mount_namespace_and_chroot() {
    // A kernel built without loadable modules has no syscalls tracepoint
    // for module loading: the agent says it does not watch it, unless the
    // raw hooks (which run on every syscall) are asked for.
    let no_tracepoint =
        !std::path::Path::new("/sys/kernel/tracing/events/syscalls/sys_enter_init_module").exists();
    let raw: &[&str] = if no_tracepoint {
        if let Some(plain) = Fixture::new("module_bpf_mount_namespace_and_chroot") {
            let warning = plain
                .agent
                .stderr_lines()
                .into_iter()
                .find(|l| l.contains("not watched"))
                .expect("a warning naming what is not watched");
            assert!(
                warning.contains("init_module") && warning.contains("--raw-syscall-hooks"),
                "{warning}"
            );
        }
        &["--raw-syscall-hooks"]
    } else {
        &[]
    };
    let Some(f) = Fixture::with("module_bpf_mount_namespace_and_chroot", raw) else {
        return;
    };
    let root = f.dir.path().to_str().unwrap().to_string();

    // Module loading fails here (modules are compiled out), but the
    // attempt is what a detection needs.
    let (_, e) = f.op(&["init_module", "param=1"], "module_load");
    assert_eq!(e["syscall"], "init_module");
    assert_eq!(e["module_args"], "param=1");
    std::fs::write(f.dir.path().join("evil.ko"), b"not a module").unwrap();
    let (_, e) = f.op(&["finit_module", "evil.ko", "x=2"], "module_load");
    assert_eq!(e["syscall"], "finit_module");
    assert_eq!(
        e["path"],
        format!("{root}/evil.ko"),
        "the module file, from the fd"
    );
    assert_eq!(e["module_args"], "x=2");
    let (_, e) = f.op(&["delete_module", "vigil_nonexistent"], "module_unload");
    assert_eq!(e["name"], "vigil_nonexistent");

    let (fd, e) = f.op(&["bpf-map"], "bpf");
    assert_eq!(e["bpf_cmd"], "BPF_MAP_CREATE");
    assert_eq!(e["result"], fd);

    std::fs::create_dir(f.dir.path().join("m")).unwrap();
    let (r, e) = f.op(&["mount-tmpfs", "m"], "mount");
    assert_eq!(r, 0);
    assert_eq!(e["path"], format!("{root}/m"));
    assert_eq!(e["fstype"], "tmpfs");
    let (r, e) = f.op(&["umount", "m"], "umount");
    assert_eq!(r, 0, "umount2");
    assert_eq!(e["syscall"], "umount2");
    assert_eq!(e["path"], format!("{root}/m"));

    let (r, e) = f.op(&["unshare-uts"], "unshare");
    assert_eq!(r, 0);
    assert_eq!(e["flag_names"], serde_json::json!(["CLONE_NEWUTS"]));
    let (r, e) = f.op(&["setns-uts"], "setns");
    assert_eq!(r, 0);
    assert_eq!(e["flag_names"], serde_json::json!(["CLONE_NEWUTS"]));
    assert_eq!(e["syscall"], "setns");

    let (r, e) = f.op(&["chroot", "."], "chroot");
    assert_eq!(r, 0);
    assert_eq!(e["path"], root);
}

#[test]
fn capset_and_clone_flags() {
    let Some(f) = Fixture::new("capset_and_clone_flags") else {
        return;
    };
    let (r, e) = f.op(&["capset-drop"], "capset");
    assert_eq!(r, 0);
    assert_eq!(e["caps"]["effective"], "0x400", "CAP_NET_BIND_SERVICE only");
    assert_eq!(e["caps"]["permitted"], "0x400");
    assert_eq!(e["caps"]["inheritable"], "0x0");
    let old_eff = u64::from_str_radix(
        e["old"]["caps"]["effective"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
        16,
    )
    .unwrap();
    assert!(
        old_eff.count_ones() > 30,
        "root had the full set before: {old_eff:#x}"
    );

    // The fork event carries the clone flags of the clone(2) that made it.
    let child = Command::new(bin("vigil-test-helper"))
        .arg("clone-newuts")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let parent = child.id();
    let out = child.wait_with_output().unwrap();
    let kid: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(kid > 0);
    let fork = f
        .agent
        .expect_json(&format!("fork event for child {kid}"), |v| {
            v["type"] == "fork" && v["process"]["pid"] == parent && v["child_pid"] == kid
        });
    assert_eq!(fork["clone_flags"], serde_json::json!(["CLONE_NEWUTS"]));
}
