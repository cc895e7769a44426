//! `vigil-agent run --events`: process events straight from the kernel,
//! decoded into JSON lines.
use std::{process::Command, time::Duration};

use serde_json::Value;
use vigil_tests::*;

fn events_for(agent: &mut Proc, pid: u32, want: &[&str]) -> Vec<Value> {
    agent.wait_json(
        Duration::from_secs(20),
        |v| v["process"]["pid"] == pid || v["child_pid"] == pid,
        |evs| want.iter().all(|t| evs.iter().any(|e| e["type"] == *t)),
    )
}

#[test]
fn fork_exec_exit_carry_ids_and_exit_code() {
    if !kernel_tests_enabled("fork_exec_exit_carry_ids_and_exit_code") {
        return;
    }
    let mut agent = start_agent(&["--events"]);
    let (_dir, marker) = marker_binary("/bin/false", "marker-false");
    let child = Command::new(&marker).arg("--events-test").spawn().unwrap();
    let pid = child.id();
    let status = child.wait_with_output().unwrap().status;
    assert_eq!(status.code(), Some(1));

    let evs = events_for(&mut agent, pid, &["fork", "exec", "exit"]);
    let get = |t: &str| {
        evs.iter()
            .find(|e| e["type"] == t)
            .unwrap_or_else(|| panic!("no {t} event in {evs:#?}"))
    };
    let me = std::process::id();

    let fork = get("fork");
    assert_eq!(
        fork["process"]["pid"], me,
        "fork is reported from the parent"
    );
    assert_eq!(fork["child_pid"], pid);

    let exec = get("exec");
    assert_eq!(exec["process"]["pid"], pid);
    assert_eq!(exec["process"]["ppid"], me);
    assert_eq!(exec["process"]["uid"], 0);
    assert_eq!(exec["filename"], marker.to_str().unwrap());
    assert_eq!(
        exec["argv"],
        serde_json::json!([marker.to_str().unwrap(), "--events-test"])
    );
    assert_eq!(exec["process"]["comm"], "marker-false");
    assert!(exec["process"]["cgroup_id"].as_u64().unwrap() > 0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let t = exec["time_unix_ns"].as_i64().unwrap();
    assert!(
        (now - t).abs() < 60_000_000_000,
        "event time is wall-clock: {t} vs {now}"
    );

    let exit = get("exit");
    assert_eq!(exit["exit_code"], 1);
    assert_eq!(exit["signal"], Value::Null);

    // No events about the agent itself: it is filtered in the kernel.
    let apid = agent.pid();
    let own = agent
        .json_lines()
        .into_iter()
        .filter(|v| v["process"]["pid"] == apid)
        .count();
    assert_eq!(own, 0);
    assert!(agent.stop().success());
}

#[test]
fn long_argv_is_truncated_and_flagged() {
    if !kernel_tests_enabled("long_argv_is_truncated_and_flagged") {
        return;
    }
    let mut agent = start_agent(&["--events"]);
    let (_dir, marker) = marker_binary("/bin/true", "marker-long");
    let args: Vec<String> = (0..400)
        .map(|i| format!("arg{i:04}-{}", "x".repeat(40)))
        .collect();
    let full_len: usize = std::iter::once(marker.to_str().unwrap().to_string())
        .chain(args.iter().cloned())
        .map(|a| a.len() + 1)
        .sum();
    let child = Command::new(&marker).args(&args).spawn().unwrap();
    let pid = child.id();
    child.wait_with_output().unwrap();

    let evs = events_for(&mut agent, pid, &["exec"]);
    let exec = evs
        .iter()
        .find(|e| e["type"] == "exec")
        .expect("exec event");
    assert_eq!(exec["argv_truncated"], true);
    assert_eq!(exec["argv_bytes"].as_u64().unwrap() as usize, full_len);
    let argv = exec["argv"].as_array().unwrap();
    assert_eq!(argv[1], args[0].as_str());
    let kept: usize = argv.iter().map(|a| a.as_str().unwrap().len() + 1).sum();
    assert!((4096..=4097).contains(&kept), "kept {kept} bytes");
    // Arguments before the cut are whole, the last one is a prefix.
    let n = argv.len();
    for (i, a) in argv[1..n - 1].iter().enumerate() {
        assert_eq!(a, args[i].as_str());
    }
    assert!(args[n - 2].starts_with(argv[n - 1].as_str().unwrap()));
    assert!(agent.stop().success());
}

#[test]
fn ring_buffer_overflow_is_counted_and_reported() {
    if !kernel_tests_enabled("ring_buffer_overflow_is_counted_and_reported") {
        return;
    }
    // An exec record is larger than a 4 KiB ring: every exec reservation
    // fails, so the loss is certain rather than a race.
    let mut agent = start_agent(&[
        "--events",
        "--process-ring-buffer-size",
        "4K",
        "--stats-interval",
        "1",
    ]);
    agent.wait_stderr("small-ring warning", Duration::from_secs(5), |l| {
        l.contains("ring buffer is small")
    });
    let (_dir, marker) = marker_binary("/bin/true", "marker-lost");
    for _ in 0..5 {
        assert!(Command::new(&marker).status().unwrap().success());
    }
    let lost = agent.wait_stdout("lost record", Duration::from_secs(10), |l| {
        serde_json::from_str::<Value>(l).is_ok_and(|v| {
            v["type"] == "lost" && v["kind"] == "exec" && v["total"].as_u64().unwrap_or(0) >= 5
        })
    });
    let v: Value = serde_json::from_str(&lost).unwrap();
    assert!(v["count"].as_u64().unwrap() >= 1);
    agent.wait_stderr("loss warning", Duration::from_secs(5), |l| {
        l.contains("events lost in the kernel") && l.contains("exec")
    });
    // Nothing about the marker got through as an exec event.
    assert!(!agent
        .stdout_lines()
        .iter()
        .any(|l| l.contains("marker-lost") && l.contains("\"type\":\"exec\"")));
    assert!(agent.stop().success());
}

#[test]
fn exe_is_resolved_and_fileless_exec_is_flagged() {
    if !kernel_tests_enabled("exe_is_resolved_and_fileless_exec_is_flagged") {
        return;
    }
    let mut agent = start_agent(&["--events", "--drain-interval-ms", "10"]);
    let (dir, marker) = marker_binary("/bin/true", "marker-rel");
    // A relative exec: the kernel's exe_file gives the absolute path.
    let child = Command::new("./marker-rel")
        .current_dir(dir.path())
        .spawn()
        .unwrap();
    let pid = child.id();
    child.wait_with_output().unwrap();
    let evs = events_for(&mut agent, pid, &["exec"]);
    let exec = evs.iter().find(|e| e["type"] == "exec").expect("exec");
    assert_eq!(exec["filename"], "./marker-rel");
    assert_eq!(exec["exe"], marker.to_str().unwrap());
    assert_eq!(exec["exe_memfd"], false);
    assert_eq!(exec["exe_unreachable"], false);

    // memfd_create + fexecve: nothing on disk.
    let child = Command::new(bin("vigil-test-helper"))
        .arg("memfd-exec")
        .spawn()
        .unwrap();
    let pid = child.id();
    assert!(child.wait_with_output().unwrap().status.success());
    let fileless = agent.expect_json("fileless exec event", |v| {
        v["type"] == "exec" && v["process"]["pid"] == pid && v["argv"][1] == "--fileless"
    });
    assert_eq!(fileless["exe"], "/memfd:payload");
    assert_eq!(fileless["exe_memfd"], true);
    assert!(
        fileless["filename"]
            .as_str()
            .unwrap()
            .starts_with("/dev/fd/"),
        "{}",
        fileless["filename"]
    );
    assert!(agent.stop().success());
}
