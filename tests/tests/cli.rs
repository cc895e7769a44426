//! Bad input to the binaries: one-line errors naming the culprit, non-zero
//! exits, never a panic.
use std::process::{Command, Output};

use vigil_tests::*;

fn run(bin_name: &str, args: &[&str]) -> Output {
    Command::new(bin(bin_name)).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_clean_failure(o: &Output, needle: &str) {
    let e = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr: {e}"
    );
    assert!(!e.contains("panicked"), "panic: {e}");
    assert!(e.contains(needle), "stderr should name `{needle}`:\n{e}");
}

#[test]
fn unknown_flags_are_rejected() {
    let o = run("vigil-agent", &["run", "--frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    assert_clean_failure(&o, "--frobnicate");
    let o = run("vigil-collector", &["serve", "--frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    assert_clean_failure(&o, "--frobnicate");
}

#[test]
fn unreadable_rules_path_is_named() {
    let o = run(
        "vigil-agent",
        &["run", "--rules", "/nonexistent/rules.yaml"],
    );
    assert_clean_failure(&o, "/nonexistent/rules.yaml");
    assert_eq!(
        stderr(&o).trim().lines().count(),
        1,
        "one line: {}",
        stderr(&o)
    );
}

#[test]
fn malformed_rules_name_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.yaml");
    std::fs::write(
        &f,
        "- rule: ok\n  priority: info\n  condition: evt.type = execve\n- rule: bad\n  priority: info\n  condition: >\n    evt.type = execve\n    and proc.exe_path startswith /tmp/\n",
    )
    .unwrap();
    let o = run("vigil-agent", &["rules", "check", f.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(&format!("{}:8:9: ", f.display())),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("unknown field `proc.exe_path`; did you mean `proc.exepath`?"));
    // The agent refuses to start on it, with the same message.
    let o = run("vigil-agent", &["run", "--rules", f.to_str().unwrap()]);
    assert_clean_failure(&o, &format!("{}:8:9: ", f.display()));

    let good = concat!(env!("CARGO_MANIFEST_DIR"), "/../rules");
    let o = run("vigil-agent", &["rules", "check", good]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn bad_collector_url_is_named() {
    let o = run("vigil-agent", &["run", "--collector", "localhost:50051"]);
    assert_clean_failure(&o, "localhost:50051");
}

#[test]
fn bad_listen_address_and_database_path() {
    let o = run(
        "vigil-collector",
        &["serve", "--listen", "not-an-address", "--db", "/tmp/x.db"],
    );
    assert_clean_failure(&o, "not-an-address");
    let o = run(
        "vigil-collector",
        &[
            "serve",
            "--insecure-plaintext",
            "--listen",
            "127.0.0.1:0",
            "--db",
            "/nonexistent-dir/alerts.db",
        ],
    );
    assert_clean_failure(&o, "/nonexistent-dir");
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
    let o = run(
        "vigil-collector",
        &[
            "query",
            "--server",
            "http://127.0.0.1:1",
            "alerts",
            "--since",
            "soon",
        ],
    );
    assert_clean_failure(&o, "soon");
}

#[test]
fn missing_btf_is_explained() {
    let o = run("vigil-agent", &["run", "--btf", "/nonexistent/vmlinux"]);
    if is_root() {
        assert_clean_failure(&o, "no kernel BTF at /nonexistent/vmlinux");
        assert!(stderr(&o).contains("CONFIG_DEBUG_INFO_BTF"));
    } else {
        assert_clean_failure(&o, "needs root");
    }
}

#[test]
fn unprivileged_run_says_what_is_missing() {
    if !is_root() {
        let o = run("vigil-agent", &["run"]);
        assert_clean_failure(&o, "needs root");
        return;
    }
    // Drop to nobody with setpriv (util-linux) to see the unprivileged path.
    let agent = bin("vigil-agent");
    let o = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&agent)
        .arg("run")
        .output();
    let Ok(o) = o else {
        assert!(std::env::var_os("CI").is_none(), "setpriv missing on CI");
        return;
    };
    assert_clean_failure(&o, "needs root (or CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN)");
}

#[test]
fn help_documents_the_contract() {
    let o = run("vigil-agent", &["run", "--help"]);
    let h = String::from_utf8_lossy(&o.stdout);
    for flag in ["--events", "--rules", "--collector", "--ring-buffer-size"] {
        assert!(h.contains(flag), "agent help lacks {flag}");
    }
    let o = run("vigil-collector", &["query", "alerts", "--help"]);
    let h = String::from_utf8_lossy(&o.stdout);
    for flag in ["--since", "--host", "--rule", "--severity", "--json"] {
        assert!(h.contains(flag), "query help lacks {flag}");
    }
}

#[test]
fn migrate_creates_then_finds_the_schema_current_on_both_stores() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("alerts.db");
    let url = vigil_collector::sql::throwaway::database().unwrap();
    for db in [file.to_str().unwrap(), url.as_str()] {
        let first = run("vigil-collector", &["migrate", "--db", db]);
        assert!(first.status.success(), "{}", stderr(&first));
        let out = String::from_utf8_lossy(&first.stdout);
        assert!(out.contains("schema created at version"), "{out}");
        let again = run("vigil-collector", &["migrate", "--db", db]);
        let out = String::from_utf8_lossy(&again.stdout);
        assert!(out.contains("(current, nothing to do)"), "{out}");
    }
    // An unreachable server: a clean error naming it, not a panic.
    let o = run(
        "vigil-collector",
        &[
            "migrate",
            "--db",
            "postgres://vigil:pw@127.0.0.1:1/x?connect_timeout=2",
        ],
    );
    assert_clean_failure(&o, "cannot connect to PostgreSQL");
    assert!(
        stderr(&o).contains("postgres://vigil:***@127.0.0.1:1/x"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn console_accounts_are_made_listed_tokened_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("alerts.db");
    let db = db.to_str().unwrap();
    let pw = dir.path().join("pw");
    let pw_s = pw.to_str().unwrap();
    let add = |name: &str, role: &str, extra: &[&str]| {
        let mut args = vec![
            "user",
            "add",
            name,
            "--role",
            role,
            "--password-file",
            pw_s,
            "--db",
            db,
        ];
        args.extend_from_slice(extra);
        run("vigil-collector", &args)
    };
    // No file, a short password, a bad role, a bad name: each named.
    assert_clean_failure(&add("alice", "responder", &[]), pw_s);
    std::fs::write(&pw, "short\n").unwrap();
    assert_clean_failure(&add("alice", "responder", &[]), "at least 12");
    std::fs::write(&pw, "a long enough password\nignored second line\n").unwrap();
    assert_clean_failure(&add("alice", "boss", &[]), "viewer, responder or admin");
    assert_clean_failure(&add("a b", "viewer", &[]), "user name `a b`");
    let o = add("alice", "responder", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_clean_failure(&add("alice", "admin", &[]), "--replace");
    let o = add("alice", "admin", &["--replace"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run("vigil-collector", &["user", "list", "--db", db]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("alice") && out.contains("admin"), "{out}");
    let o = run(
        "vigil-collector",
        &["user", "token", "alice", "--label", "ci", "--db", db],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let token = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(token.starts_with("vgt_") && token.len() == 68, "{token}");
    assert_clean_failure(
        &run("vigil-collector", &["user", "token", "nobody", "--db", db]),
        "no user `nobody`",
    );
    let o = run("vigil-collector", &["user", "remove", "alice", "--db", db]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_clean_failure(
        &run("vigil-collector", &["user", "remove", "alice", "--db", db]),
        "no user `alice`",
    );
    // The console refuses plain HTTP off loopback, before serving anything.
    let o = run(
        "vigil-collector",
        &[
            "serve",
            "--insecure-plaintext",
            "--ui-listen",
            "0.0.0.0:0",
            "--db",
            db,
        ],
    );
    assert_clean_failure(&o, "refused for the console");
}
