//! The settings files of the real binaries: keys are flags, flags win,
//! errors name FILE:LINE and the allowed values, and SIGHUP rereads the
//! file (the agent's rules at once; anything else is logged as needing a
//! restart).
use std::{path::Path, process::Command, time::Duration};

use vigil_tests::*;

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn run(bin_name: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin(bin_name)).args(args).output().unwrap()
}

#[test]
fn bad_settings_name_the_file_line_and_what_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("agent.yaml");
    let fs = f.to_str().unwrap();
    write(&f, "# agent\nspool_max: 64M\nunsupported: maybe\n");
    let o = run("vigil-agent", &["run", "--config", fs]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("{fs}:3: `unsupported`: invalid value 'maybe'")),
        "{err}"
    );
    assert!(
        err.contains("[possible values: error, skip, absent]"),
        "{err}"
    );

    write(&f, "spool_mx: 64M\n");
    let err = String::from_utf8_lossy(&run("vigil-agent", &["doctor", "--config", fs]).stderr)
        .into_owned();
    assert!(
        err.contains(&format!(
            "{fs}:1: unknown key `spool_mx`; did you mean `spool_max`?"
        )),
        "{err}"
    );

    let c = dir.path().join("collector.yaml");
    let cs = c.to_str().unwrap();
    write(&c, "listen: 127.0.0.1:0\n\nretention: [90d]\n");
    let o = run("vigil-collector", &["serve", "--config", cs]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("{cs}:3: `retention` takes one value, not a list")),
        "{err}"
    );

    // A --config that does not exist is an error; the default path is not.
    let o = run(
        "vigil-collector",
        &["serve", "--config", "/nonexistent/collector.yaml"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("/nonexistent/collector.yaml: No such file")
    );
}

#[test]
fn the_collector_takes_its_settings_from_the_file_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("from-file.db");
    let f = dir.path().join("collector.yaml");
    let settings = |retention: &str| {
        format!(
            "listen: 127.0.0.1:1\ninsecure_plaintext: true\ndb: {}\nmetrics_listen: 127.0.0.1:0\nretention: {retention}\n",
            db.display()
        )
    };
    write(&f, &settings("90d"));
    let mut cmd = Command::new(bin("vigil-collector"));
    // The file's listen address (port 1) is overridden here.
    cmd.args([
        "serve",
        "--config",
        f.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    let mut collector = Proc::spawn("vigil-collector", cmd);
    let line = collector.wait_stderr("serving", Duration::from_secs(20), |l| {
        l.contains("collector serving")
    });
    assert!(line.contains(&format!("db={}", db.display())), "{line}");
    assert!(!line.contains("127.0.0.1:1 "), "{line}");
    let read = collector.wait_stderr("settings", Duration::from_secs(5), |l| {
        l.contains("settings file read")
    });
    assert!(read.contains("overridden_by_flags=[\"listen\"]"), "{read}");
    assert!(db.exists());

    // SIGHUP: a changed key is named as needing a restart; the collector
    // keeps serving.
    write(&f, &settings("30d"));
    unsafe { libc::kill(collector.pid() as i32, libc::SIGHUP) };
    let line = collector.wait_stderr("restart notice", Duration::from_secs(10), |l| {
        l.contains("restart vigil-collector to apply it")
    });
    assert!(line.contains("key=\"retention\""), "{line}");
    // A broken file on SIGHUP is reported, and changes nothing.
    write(&f, "retention: often\n");
    unsafe { libc::kill(collector.pid() as i32, libc::SIGHUP) };
    let line = collector.wait_stderr("bad file", Duration::from_secs(10), |l| {
        l.contains("the settings file has an error")
    });
    assert!(line.contains("collector.yaml:1: `retention`"), "{line}");
    assert!(collector.alive());
}

/// SIGHUP rereads the agent's file: a new rules directory takes effect
/// at once (in the kernel too), and a changed ring size is logged as
/// needing a restart.
#[test]
fn sighup_rereads_the_agents_settings_file() {
    if !kernel_tests_enabled("sighup_rereads_the_agents_settings_file") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    let marker = unique("--settings-marker");
    for (d, name) in [(&first, "From first"), (&second, "From second")] {
        std::fs::create_dir(d).unwrap();
        write(
            &d.join("r.yaml"),
            &format!(
                "- rule: {name}\n  desc: d\n  priority: critical\n  condition: evt.type = execve and proc.args contains \"{marker}\"\n"
            ),
        );
    }
    let f = dir.path().join("agent.yaml");
    let settings = |rules: &Path, ring: &str| {
        format!(
            "events: all\nrules: [{}]\nrules_poll: 0\ndrain_interval_ms: 10\nring_buffer_size: {ring}\n",
            rules.display()
        )
    };
    write(&f, &settings(&first, "4M"));
    let mut agent = start_agent(&["--config", f.to_str().unwrap()]);
    let fire = |agent: &Proc, rule: &str| {
        let _ = Command::new("/bin/true").arg(&marker).status();
        !agent
            .wait_json(
                Duration::from_secs(10),
                |v| v["type"] == "alert" && v["rule"] == rule,
                |f| !f.is_empty(),
            )
            .is_empty()
    };
    assert!(
        fire(&agent, "From first"),
        "rules from the file's directory"
    );

    write(&f, &settings(&second, "8M"));
    unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
    let line = agent.wait_stderr("rules reloaded", Duration::from_secs(20), |l| {
        l.contains("rules reloaded")
    });
    assert!(line.contains("second/r.yaml"), "{line}");
    assert!(fire(&agent, "From second"));
    let log = agent.stderr_lines().join("\n");
    assert!(
        log.contains("setting changed: restart vigil-agent to apply it key=\"ring_buffer_size\""),
        "{log}"
    );
    assert!(
        log.contains("setting changed: applied key=\"rules\""),
        "{log}"
    );
    assert!(agent.alive());
}
