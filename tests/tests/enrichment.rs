//! Enrichment end to end: ancestry, names of processes that are gone,
//! containers from cgroups, user names per mount namespace, executable
//! hashes and flags, with the real probe and agent.
use std::{path::Path, process::Command, time::Duration};

use serde_json::Value;
use vigil_tests::*;

fn sha256_of(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn argv_has(e: &Value, needle: &str) -> bool {
    e["process"]["argv"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(needle)))
}

#[test]
fn alert_carries_three_level_ancestry_cwd_and_user() {
    if !kernel_tests_enabled("alert_carries_three_level_ancestry_cwd_and_user") {
        return;
    }
    let db = tempfile::tempdir().unwrap();
    let (_collector, url) = start_collector(db.path(), "127.0.0.1:0");
    // Parallel tests keep the hash threads busy: wait longer than the
    // default for the marker's hash.
    let _agent = start_agent(&[
        "--collector",
        &url,
        "--drain-interval-ms",
        "10",
        "--enrich-wait-ms",
        "5000",
    ]);
    let (dir, marker) = marker_binary("/bin/true", "anc-marker");
    let tag = unique("anc");
    let inner = format!("{} {tag}", marker.display());
    let outer = format!("sh -c '{inner}'");
    let status = Command::new("sh")
        .args(["-c", &outer])
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(status.success());

    let alerts = query_until(
        &url,
        &["--rule", "Execution from a temporary directory"],
        Duration::from_secs(20),
        |a| a.iter().any(|x| argv_has(x, &tag)),
    );
    let a = alerts
        .iter()
        .find(|x| argv_has(x, &tag))
        .unwrap_or_else(|| panic!("no alert for the marker: {alerts:#?}"));
    let anc = a["ancestry"].as_array().expect("ancestry");
    assert!(anc.len() >= 3, "three levels at least: {anc:#?}");
    // Nearest first: the inner shell, the outer shell, then this test.
    assert_eq!(anc[0]["argv"], serde_json::json!(["sh", "-c", inner]));
    assert_eq!(anc[1]["argv"], serde_json::json!(["sh", "-c", outer]));
    assert_eq!(anc[2]["pid"], std::process::id());
    let me = std::fs::read_link("/proc/self/exe").unwrap();
    assert_eq!(anc[2]["exe"], me.to_str().unwrap());
    assert_eq!(anc[0]["comm"], "sh");
    assert_eq!(a["process"]["ppid"], anc[0]["pid"]);
    // The rest of the process context.
    let p = &a["process"];
    assert_eq!(p["cwd"], dir.path().to_str().unwrap());
    assert_eq!(p["user"], "root");
    assert_eq!(p["group"], "root");
    assert_eq!(p["executable"]["sha256"], sha256_of(&marker));
    assert_eq!(a["container"]["id"], "host");
    assert_eq!(a["container"]["runtime"], "host");
    // The default rule's message names them too.
    let out = a["output"].as_str().unwrap();
    for want in [
        "user=root".to_string(),
        format!("cwd={}", dir.path().display()),
        // The parent's process name (comm), as Falco's proc.pname: `sh`,
        // though the program /bin/sh runs may be dash.
        "parent=sh ".to_string(),
        "container=host".to_string(),
        format!("sha256={}", sha256_of(&marker)),
    ] {
        assert!(out.contains(&want), "{want} not in {out}");
    }
}

#[test]
fn exited_processes_are_still_named() {
    if !kernel_tests_enabled("exited_processes_are_still_named") {
        return;
    }
    let agent = start_agent(&["--events", "--drain-interval-ms", "10"]);
    let (_dir, marker) = marker_binary("/bin/true", "gone-marker");
    let tag = unique("gone");
    // The shell exits at once; its background child execs the marker after
    // that, so the marker's creator is gone from /proc by then.
    let script = format!("(sleep 0.3; exec {} {tag}) & exit 0", marker.display());
    let sh = Command::new("sh").args(["-c", &script]).spawn().unwrap();
    let sh_pid = sh.id();
    sh.wait_with_output().unwrap();

    let exec = agent.expect_json("marker exec", |e| e["type"] == "exec" && argv_has(e, &tag));
    let anc = exec["ancestry"].as_array().unwrap();
    // The marker is the background subshell after its exec: its creator
    // is the shell, exited by now.
    assert_eq!(
        anc[0]["pid"], sh_pid,
        "the exited shell is still the marker's creator: {anc:#?}"
    );
    assert_eq!(anc[0]["argv"][2], script.as_str());
    assert_eq!(anc[1]["pid"], std::process::id());
    // The marker's exit event comes after the process is gone: only the
    // table can still say what it was.
    let pid = exec["process"]["pid"].clone();
    let exit = agent.expect_json("marker exit", |e| {
        e["type"] == "exit" && e["process"]["pid"] == pid
    });
    assert_eq!(exit["process"]["exe"], marker.to_str().unwrap());
    assert!(argv_has(&exit, &tag));
}

#[test]
fn reused_pid_gets_its_own_identity() {
    if !kernel_tests_enabled("reused_pid_gets_its_own_identity") {
        return;
    }
    let agent = start_agent(&["--events", "--drain-interval-ms", "10"]);
    let (_dir, marker) = marker_binary("/bin/true", "reuse-marker");
    let first = Command::new(&marker).arg("first").spawn().unwrap();
    let pid = first.id();
    first.wait_with_output().unwrap();
    let mut reused = false;
    for _ in 0..20 {
        next_pid_will_be(pid);
        let c = Command::new(&marker).arg("second").spawn().unwrap();
        let got = c.id();
        c.wait_with_output().unwrap();
        if got == pid {
            reused = true;
            break;
        }
    }
    assert!(reused, "could not get pid {pid} reused");
    let exits = agent.wait_json(
        Duration::from_secs(20),
        |e| {
            e["type"] == "exit"
                && e["process"]["pid"] == pid
                && e["process"]["exe"] == marker.to_str().unwrap()
        },
        |f| f.iter().any(|e| argv_has(e, "second")),
    );
    let first = exits
        .iter()
        .find(|e| argv_has(e, "first"))
        .expect("first exit");
    let second = exits
        .iter()
        .find(|e| argv_has(e, "second"))
        .expect("second exit");
    assert_ne!(
        first["process"]["start_boottime_ns"],
        second["process"]["start_boottime_ns"]
    );
}

#[test]
fn container_scope_cgroup_gives_container_id_k8s_names_and_drift() {
    if !kernel_tests_enabled("container_scope_cgroup_gives_container_id_k8s_names_and_drift") {
        return;
    }
    let id = format!(
        "{:0>64x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let k8s = tempfile::tempdir().unwrap();
    std::fs::write(k8s.path().join(format!("web-5f7d_shop_nginx-{id}.log")), "").unwrap();
    // containerd's record of the container's OCI spec, with the image the
    // CRI plugin annotates.
    let runtime = tempfile::tempdir().unwrap();
    let spec_dir = runtime.path().join(format!(
        "run/containerd/io.containerd.runtime.v2.task/k8s.io/{id}"
    ));
    std::fs::create_dir_all(&spec_dir).unwrap();
    std::fs::write(
        spec_dir.join("config.json"),
        r#"{"ociVersion": "1.1.0", "annotations": {"io.kubernetes.cri.image-name": "docker.io/library/nginx:1.25"}}"#,
    )
    .unwrap();
    let db = tempfile::tempdir().unwrap();
    let (_collector, url) = start_collector(db.path(), "127.0.0.1:0");
    let agent = start_agent(&[
        "--events",
        "--collector",
        &url,
        "--drain-interval-ms",
        "10",
        "--k8s-log-dir",
        k8s.path().to_str().unwrap(),
        "--container-runtime-root",
        runtime.path().to_str().unwrap(),
        "--enrich-wait-ms",
        "5000",
    ]);
    // A binary from before the container started, and one its process
    // writes after (coarse file times: let a clock tick pass between).
    let (dir, image) = marker_binary("/bin/true", "ctr-image");
    std::thread::sleep(Duration::from_millis(50));
    let cg = TestCgroup::new(&format!("cri-containerd-{id}.scope"));
    let dropped = dir.path().join("ctr-dropped");
    let tag = unique("ctr");
    let script = format!(
        "echo $$ > {cg}/cgroup.procs && {image} {tag} && sleep 0.05 && cp /bin/true {dropped} && exec {dropped} {tag}",
        cg = cg.dir.display(),
        image = image.display(),
        dropped = dropped.display()
    );
    assert!(Command::new("sh")
        .args(["-c", &script])
        .status()
        .unwrap()
        .success());

    let execs = agent.wait_json(
        Duration::from_secs(20),
        |e| e["type"] == "exec" && argv_has(e, &tag),
        |f| f.len() >= 2,
    );
    assert_eq!(execs.len(), 2, "{execs:#?}");
    for e in &execs {
        let c = &e["container"];
        assert_eq!(c["id"], id.as_str(), "{e:#}");
        assert_eq!(c["runtime"], "containerd");
        assert!(c["cgroup"]
            .as_str()
            .unwrap()
            .ends_with(&format!("cri-containerd-{id}.scope")));
        assert_eq!(c["k8s"]["pod"], "web-5f7d");
        assert_eq!(c["k8s"]["namespace"], "shop");
        assert_eq!(c["k8s"]["container"], "nginx");
        assert_eq!(c["image"], "docker.io/library/nginx:1.25");
    }
    let by_exe = |p: &Path| {
        execs
            .iter()
            .find(|e| e["process"]["exe"] == p.to_str().unwrap())
            .unwrap_or_else(|| panic!("exec of {}", p.display()))
    };
    assert_eq!(by_exe(&image)["process"]["exe_drift"], false);
    assert_eq!(
        by_exe(&dropped)["process"]["exe_drift"],
        true,
        "written after the container started"
    );
    // Both ran from /tmp, so both raised the default rule's alert; the
    // collector finds them by pod and by short container id.
    let tmp_rule = |x: &serde_json::Value| {
        argv_has(x, &tag) && x["rule"] == "Execution from a temporary directory"
    };
    for filter in ["shop/web-5f7d", &id[..12]] {
        let alerts = query_until(
            &url,
            &["--container", filter],
            Duration::from_secs(20),
            |a| a.iter().filter(|x| tmp_rule(x)).count() >= 2,
        );
        let mine: Vec<_> = alerts.iter().filter(|x| tmp_rule(x)).collect();
        assert_eq!(mine.len(), 2, "--container {filter}: {alerts:#?}");
        assert_eq!(mine[0]["container"]["k8s"]["pod"], "web-5f7d");
        assert_eq!(
            mine[0]["container"]["image"],
            "docker.io/library/nginx:1.25"
        );
        let drifted = mine
            .iter()
            .any(|a| a["process"]["executable"]["drift"] == true);
        assert!(drifted, "the dropped binary's alert says drift");
    }
    // The default drift rule fires for the dropped binary only.
    let drift = query_until(
        &url,
        &["--rule", "Drifted binary executed in container"],
        Duration::from_secs(10),
        |a| a.iter().any(|x| argv_has(x, &tag)),
    );
    let drift: Vec<_> = drift.iter().filter(|x| argv_has(x, &tag)).collect();
    assert_eq!(drift.len(), 1, "{drift:#?}");
    assert_eq!(drift[0]["process"]["exe"], dropped.to_str().unwrap());
    // Rules and outputs see the image split as Falco splits it.
    assert_eq!(
        drift[0]["fields"]["container.image.repository"],
        "docker.io/library/nginx"
    );
    assert_eq!(drift[0]["fields"]["container.image.tag"], "1.25");
    let none = query_until(
        &url,
        &["--container", "host"],
        Duration::from_secs(2),
        |_| false,
    );
    assert!(
        !none.iter().any(|x| argv_has(x, &tag)),
        "the container's alerts are not the host's"
    );
}

#[test]
fn rewritten_binary_gets_a_new_hash() {
    if !kernel_tests_enabled("rewritten_binary_gets_a_new_hash") {
        return;
    }
    let agent = start_agent(&[
        "--events",
        "--drain-interval-ms",
        "10",
        "--enrich-wait-ms",
        "5000",
    ]);
    let (_dir, bin) = marker_binary("/bin/true", "rehash");
    let first = sha256_of(&bin);
    assert!(Command::new(&bin).arg("one").status().unwrap().success());
    let e1 = agent.expect_json("first exec", |e| {
        e["type"] == "exec" && argv_has(e, "one") && e["process"]["exe"] == bin.to_str().unwrap()
    });
    assert_eq!(e1["process"]["exe_sha256"], first.as_str());
    // Same path, same inode, new content.
    copy_executable("/bin/false", &bin);
    let second = sha256_of(&bin);
    assert_ne!(first, second);
    let _ = Command::new(&bin).arg("two").status().unwrap();
    let e2 = agent.expect_json("second exec", |e| {
        e["type"] == "exec" && argv_has(e, "two") && e["process"]["exe"] == bin.to_str().unwrap()
    });
    assert_eq!(e2["process"]["exe_sha256"], second.as_str());
    assert_eq!(
        e1["process"]["exe_file"]["ino"], e2["process"]["exe_file"]["ino"],
        "rewritten in place"
    );
}

#[test]
fn deleted_executable_is_flagged() {
    if !kernel_tests_enabled("deleted_executable_is_flagged") {
        return;
    }
    let agent = start_agent(&["--events", "--drain-interval-ms", "10"]);
    let (dir, shell) = marker_binary("/bin/sh", "self-deleting");
    let probe_file = dir.path().join(unique("after-delete"));
    // The shell deletes its own binary, then opens a file.
    let script = format!("rm -f {}; : > {}", shell.display(), probe_file.display());
    assert!(Command::new(&shell)
        .args(["-c", &script])
        .status()
        .unwrap()
        .success());
    let open = agent.expect_json("open after delete", |e| {
        e["type"] == "file" && e["path"] == probe_file.to_str().unwrap()
    });
    assert_eq!(open["process"]["exe_deleted"], true, "{open:#}");
    assert_eq!(open["process"]["exe"], shell.to_str().unwrap());
}

#[test]
fn user_names_come_from_the_process_own_passwd() {
    if !kernel_tests_enabled("user_names_come_from_the_process_own_passwd") {
        return;
    }
    let agent = start_agent(&["--events", "--drain-interval-ms", "10"]);
    let (_dir, sleeper) = marker_binary("/bin/sleep", "own-passwd");
    // A private mount namespace whose /etc says uid 0 is "alice", like a
    // container image would.
    let script = format!(
        "mount -t tmpfs none /etc && echo 'alice:x:0:0::/:/bin/sh' > /etc/passwd && echo 'wonderland:x:0:' > /etc/group && exec {} 1",
        sleeper.display()
    );
    assert!(Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .status()
        .unwrap()
        .success());
    let exec = agent.expect_json("exec in own mount namespace", |e| {
        e["type"] == "exec" && e["process"]["exe"] == sleeper.to_str().unwrap()
    });
    assert_eq!(exec["process"]["user"], "alice", "{exec:#}");
    assert_eq!(exec["process"]["group"], "wonderland");
    // The host's own processes keep the host's names.
    let host = agent.expect_json("host exec", |e| {
        e["type"] == "exec"
            && e["process"]["uid"] == 0
            && e["process"]["mnt_ns"] != exec["process"]["mnt_ns"]
    });
    assert_eq!(host["process"]["user"], "root");
}

/// The usual dropper: a payload written, executed and deleted 10 ms
/// later. Its alert still carries its SHA-256 in at least 95 of 100 runs
/// (the hash is read through /proc/PID/exe, which reaches the deleted
/// file while the payload runs; docs/enrichment.md).
#[test]
fn short_lived_payloads_keep_their_hash() {
    if !kernel_tests_enabled("short_lived_payloads_keep_their_hash") {
        return;
    }
    const RUNS: usize = 100;
    let agent = start_agent(&["--drain-interval-ms", "10"]);
    let dir = tempfile::Builder::new()
        .prefix("vigil-dropper-")
        .tempdir_in("/tmp")
        .unwrap();
    let want = sha256_of(Path::new("/bin/sleep"));
    let mut pids = Vec::new();
    for i in 0..RUNS {
        let payload = dir.path().join(format!("payload-{i}"));
        copy_executable("/bin/sleep", &payload);
        let mut child = Command::new(&payload).arg("0.05").spawn().unwrap();
        std::thread::sleep(Duration::from_millis(10));
        std::fs::remove_file(&payload).unwrap();
        pids.push(child.id());
        child.wait().unwrap();
    }
    let alerts = agent.wait_json(
        Duration::from_secs(30),
        |v| v["type"] == "alert" && v["rule"] == "Execution from a temporary directory",
        |found| {
            pids.iter()
                .all(|p| found.iter().any(|v| v["process"]["pid"] == *p))
        },
    );
    let mut hashed = 0;
    let mut missing = Vec::new();
    for p in &pids {
        let Some(a) = alerts.iter().find(|v| v["process"]["pid"] == *p) else {
            missing.push(format!("{p}: no alert"));
            continue;
        };
        if a["process"]["executable"]["sha256"] == want.as_str() {
            hashed += 1;
        } else {
            missing.push(format!("{p}: {}", a["process"]["executable"]));
        }
    }
    eprintln!("short-lived payloads hashed: {hashed} of {RUNS}");
    assert!(
        hashed * 100 >= 95 * RUNS,
        "{hashed} of {RUNS} hashed; misses: {missing:#?}"
    );
}
