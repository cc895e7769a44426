//! File events from real syscalls: every path absolute, resolved in the
//! kernel against the cwd or the dirfd, with flags, modes and results.
use std::{path::Path, process::Command};

use serde_json::Value;
use vigil_tests::*;

struct Fixture {
    agent: Proc,
    dir: tempfile::TempDir,
}

fn fixture(name: &str) -> Option<Fixture> {
    if !kernel_tests_enabled(name) {
        return None;
    }
    let agent = start_agent(&["--events", "--drain-interval-ms", "10"]);
    let dir = tempfile::Builder::new()
        .prefix("vigil-file-")
        .tempdir_in("/tmp")
        .unwrap();
    Some(Fixture { agent, dir })
}

impl Fixture {
    fn root(&self) -> String {
        self.dir.path().to_str().unwrap().to_string()
    }

    /// Runs the helper in `cwd`; returns its pid and the syscall's result.
    fn run(&self, cwd: &Path, args: &[&str]) -> (u32, i64) {
        let child = Command::new(bin("vigil-test-helper"))
            .args(args)
            .current_dir(cwd)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let out = child.wait_with_output().unwrap();
        let r = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        (pid, r)
    }

    /// The file event with `op` from process `pid` whose path contains
    /// `needle` (the dynamic loader's own opens come from the same pid).
    fn event(&self, pid: u32, op: &str, needle: &str) -> Value {
        self.agent
            .expect_json(&format!("{op} event on *{needle}* from pid {pid}"), |v| {
                v["type"] == "file"
                    && v["process"]["pid"] == pid
                    && v["op"] == op
                    && v["path"].as_str().is_some_and(|p| p.contains(needle))
            })
    }
}

#[test]
fn relative_dirfd_and_dotdot_paths_are_absolute() {
    let Some(f) = fixture("relative_dirfd_and_dotdot_paths_are_absolute") else {
        return;
    };
    let root = f.root();
    std::fs::create_dir(f.dir.path().join("sub")).unwrap();

    // Relative to the cwd, through "..": create + write + truncate.
    let (pid, fd) = f.run(&f.dir.path().join("sub"), &["open", "../new.txt", "wct"]);
    assert!(fd >= 0);
    let e = f.event(pid, "open", "new.txt");
    assert_eq!(e["path"], format!("{root}/new.txt"));
    assert_eq!(e["path_raw"], "../new.txt", "as the program passed it");
    assert_eq!(e["syscall"], "openat");
    assert_eq!(e["result"], fd);
    let o = &e["open"];
    assert_eq!(
        (
            o["write"].as_bool(),
            o["create"].as_bool(),
            o["truncate"].as_bool(),
            o["read"].as_bool()
        ),
        (Some(true), Some(true), Some(true), Some(false))
    );
    assert_eq!(e["mode"], "0640");

    // cd /etc && open("passwd"): the classic.
    let (pid, _) = f.run(Path::new("/etc"), &["open", "passwd", "r"]);
    let e = f.event(pid, "open", "passwd");
    assert_eq!(e["path"], "/etc/passwd");
    assert_eq!(e["open"]["read"], true);

    // openat(dirfd of /etc, "hostname"), run from elsewhere.
    let (pid, _) = f.run(f.dir.path(), &["openat", "/etc", "hostname", "r"]);
    let e = f.event(pid, "open", "hostname");
    assert_eq!(e["path"], "/etc/hostname");
    assert_eq!(e["path_raw"], "hostname");
    // An absolute, clean path is its own raw form: not repeated.
    let (pid, _) = f.run(f.dir.path(), &["open", "/etc/hostname", "r"]);
    assert!(f.event(pid, "open", "hostname").get("path_raw").is_none());

    // openat2 with flags in struct open_how.
    let (pid, fd) = f.run(f.dir.path(), &["openat2", &root, "new.txt", "wa"]);
    assert!(fd >= 0, "openat2 returned {fd}");
    let e = f.event(pid, "open", "new.txt");
    assert_eq!(e["syscall"], "openat2");
    assert_eq!(e["path"], format!("{root}/new.txt"));
    assert_eq!(e["open"]["append"], true);
    assert_eq!(e["open"]["write"], true);

    // A failed open still reports the absolute path and the error.
    let (pid, r) = f.run(f.dir.path(), &["open", "missing", "r"]);
    assert_eq!(r, -2);
    let e = f.event(pid, "open", "missing");
    assert_eq!(e["path"], format!("{root}/missing"));
    assert_eq!(e["result"], -2);
    assert_eq!(e["error"], "ENOENT");
}

#[test]
fn paths_cross_mount_points() {
    let Some(f) = fixture("paths_cross_mount_points") else {
        return;
    };
    let mnt = f.dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "vigil-test", mnt.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs");
    std::fs::create_dir(mnt.join("inner")).unwrap();
    let (pid, fd) = f.run(&mnt.join("inner"), &["open", "x", "wc"]);
    let _ = Command::new("umount").arg(&mnt).status();
    assert!(fd >= 0);
    let e = f.event(pid, "open", "inner/x");
    assert_eq!(e["path"], format!("{}/mnt/inner/x", f.root()));
}

#[test]
fn every_file_operation_is_reported() {
    let Some(f) = fixture("every_file_operation_is_reported") else {
        return;
    };
    let root = f.root();
    let d = f.dir.path();
    std::fs::write(d.join("a"), "x").unwrap();
    std::fs::create_dir(d.join("emptydir")).unwrap();

    let (pid, r) = f.run(d, &["chmod", "a", "4755"]);
    assert_eq!(r, 0);
    let e = f.event(pid, "chmod", "/a");
    assert_eq!(
        (e["path"].as_str().unwrap(), e["mode"].as_str().unwrap()),
        (format!("{root}/a").as_str(), "4755")
    );

    let (pid, r) = f.run(d, &["chown", "a", "65534", "-1"]);
    assert_eq!(r, 0);
    let e = f.event(pid, "chown", "/a");
    assert_eq!(
        (e["uid"].as_i64(), e["gid"].as_i64()),
        (Some(65534), Some(-1))
    );
    assert_eq!(e["path"], format!("{root}/a"));

    let (pid, r) = f.run(d, &["link", "a", "hard"]);
    assert_eq!(r, 0);
    let e = f.event(pid, "link", "/a");
    assert_eq!(
        (e["path"].as_str().unwrap(), e["new_path"].as_str().unwrap()),
        (
            format!("{root}/a").as_str(),
            format!("{root}/hard").as_str()
        )
    );

    let (pid, r) = f.run(d, &["symlink", "../../etc/shadow", "sl"]);
    assert_eq!(r, 0);
    let e = f.event(pid, "symlink", "/sl");
    assert_eq!(e["path"], format!("{root}/sl"));
    assert_eq!(
        e["target"], "../../etc/shadow",
        "the target is kept as written"
    );

    let (pid, r) = f.run(d, &["rename", "hard", "renamed"]);
    assert_eq!(r, 0);
    let e = f.event(pid, "rename", "/hard");
    assert_eq!(
        (e["path"].as_str().unwrap(), e["new_path"].as_str().unwrap()),
        (
            format!("{root}/hard").as_str(),
            format!("{root}/renamed").as_str()
        )
    );

    let (pid, r) = f.run(
        Path::new("/"),
        &[
            "renameat2",
            &root,
            "renamed",
            "/tmp",
            &format!("{}-moved", d.file_name().unwrap().to_str().unwrap()),
        ],
    );
    assert_eq!(r, 0);
    let e = f.event(pid, "rename", "/renamed");
    assert_eq!(e["syscall"], "renameat2");
    assert_eq!(e["path"], format!("{root}/renamed"));
    assert_eq!(e["new_path"], format!("{root}-moved"));
    assert_eq!(e["flags"], 1, "RENAME_NOREPLACE");
    let _ = std::fs::remove_file(format!("{root}-moved"));

    let (pid, r) = f.run(d, &["mkfifo", "fifo"]);
    assert_eq!(r, 0);
    let e = f.event(pid, "mknod", "/fifo");
    assert_eq!(e["path"], format!("{root}/fifo"));
    assert_eq!(e["mode"], "0600");

    let (pid, r) = f.run(d, &["unlinkat", &root, "a"]);
    assert_eq!(r, 0);
    let e = f.event(pid, "unlink", "/a");
    assert_eq!(e["path"], format!("{root}/a"));
    assert_eq!(e["syscall"], "unlinkat");

    let (pid, r) = f.run(d, &["unlink", "sl"]);
    assert_eq!(r, 0);
    assert_eq!(f.event(pid, "unlink", "/sl")["path"], format!("{root}/sl"));

    // Times set through a dirfd, through an fd alone (futimens passes a
    // NULL path: the event names the fd's file), and "now".
    std::fs::write(d.join("stamped"), "x").unwrap();
    let (pid, r) = f.run(Path::new("/"), &["utimensat", &root, "stamped", "given"]);
    assert_eq!(r, 0);
    let e = f.event(pid, "utime", "/stamped");
    assert_eq!(
        (&e["path"], &e["syscall"], &e["times"]),
        (
            &Value::from(format!("{root}/stamped")),
            &Value::from("utimensat"),
            &Value::from("given")
        )
    );
    let (pid, r) = f.run(d, &["futimens", "stamped"]);
    assert_eq!(r, 0);
    let e = f.event(pid, "utime", "/stamped");
    assert_eq!(
        (&e["path"], &e["times"]),
        (
            &Value::from(format!("{root}/stamped")),
            &Value::from("given")
        )
    );
    let (pid, r) = f.run(d, &["utimes", "stamped"]);
    assert_eq!(r, 0);
    let e = f.event(pid, "utime", "/stamped");
    assert_eq!(
        (&e["path"], &e["syscall"], &e["times"]),
        (
            &Value::from(format!("{root}/stamped")),
            &Value::from("utimes"),
            &Value::from("now")
        )
    );

    let (pid, r) = f.run(d, &["rmdir", "emptydir"]);
    assert_eq!(r, 0);
    assert_eq!(
        f.event(pid, "rmdir", "emptydir")["path"],
        format!("{root}/emptydir")
    );
}

#[test]
fn long_path_is_truncated_and_flagged() {
    let Some(f) = fixture("long_path_is_truncated_and_flagged") else {
        return;
    };
    let comp = "d".repeat(200);
    let long = format!("{}/{}", f.root(), [comp.as_str(); 7].join("/"));
    assert!(long.len() > 1024);
    let (pid, r) = f.run(f.dir.path(), &["open", &long, "r"]);
    assert_eq!(r, -2);
    let e = f.event(pid, "open", "dddd");
    assert_eq!(e["path_truncated"], true);
    assert!(
        long.starts_with(e["path"].as_str().unwrap()),
        "a prefix of the real path"
    );
}
