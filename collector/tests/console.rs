//! The web console over real HTTP (and real TLS with client
//! certificates), on a real SQLite file and on PostgreSQL: every page for
//! each role, every action with its audit entry, and what must be refused
//! (no session, no CSRF token, a viewer changing things, a foreign
//! redirect, hostile text).
use std::{path::Path, sync::Arc, time::Duration};

use reqwest::{header, redirect::Policy, Client, StatusCode};
use tokio::{net::TcpListener, sync::oneshot};
use vigil_collector::{
    accounts::{self, Role, User},
    console::{self, ConsoleOptions},
    pki,
    sql::SqlStore,
    store::{now_ns, AgentRecord, AgentState, AlertStore},
    tls::{Listener, Purpose, ServerTls, ServerTlsFiles},
};
use vigil_proto::v1::{
    AgentHeartbeat, Alert, ExecutableInfo, HostInfo, LoadedRule, ProcessInfo, Severity,
};

struct Ui {
    base: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn open(db: String) -> Arc<SqlStore> {
    Arc::new(
        tokio::task::spawn_blocking(move || SqlStore::open_db(&db))
            .await
            .unwrap()
            .unwrap(),
    )
}

/// The console on `127.0.0.1:0`, plain HTTP or TLS.
async fn start(store: Arc<SqlStore>, tls: Option<Arc<ServerTls>>) -> Ui {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let base = format!("{scheme}://{}", tcp.local_addr().unwrap());
    let revoked = tls.as_ref().map(|t| t.revoked().clone());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(console::run(
        Listener { tcp, tls },
        store.clone(),
        ConsoleOptions { revoked },
        async {
            let _ = rx.await;
        },
    ));
    Ui {
        base,
        stop: Some(tx),
        task,
    }
}

impl Ui {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

fn client() -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder()
        .redirect(Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn add_user(store: &SqlStore, name: &str, role: Role, password: &str) {
    let u = User {
        name: name.into(),
        role,
        created_ns: now_ns(),
    };
    store
        .put_user(&u, &accounts::hash_password(password).unwrap(), true)
        .unwrap();
}

/// A signed-in browser: its cookie and the session's CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

fn cookie_of(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn hidden_csrf(html: &str) -> String {
    let i = html
        .find("name=\"csrf_token\" value=\"")
        .expect("a CSRF field")
        + 25;
    html[i..i + html[i..].find('"').unwrap()].to_string()
}

async fn login_answer(c: &Client, base: &str, user: &str, password: &str) -> reqwest::Response {
    let page = c.get(format!("{base}/login")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let login_cookie = cookie_of(&page, "vigil_login").unwrap();
    let html = page.text().await.unwrap();
    // The contract: fields username and password, a hidden csrf* field.
    assert!(html.contains("name=\"username\"") && html.contains("name=\"password\""));
    assert!(html.contains("type=\"hidden\" name=\"csrf"));
    let csrf = hidden_csrf(&html);
    c.post(format!("{base}/login"))
        .header(header::COOKIE, format!("vigil_login={login_cookie}"))
        .form(&[
            ("username", user),
            ("password", password),
            ("csrf_token", csrf.as_str()),
            ("next", "/hosts"),
        ])
        .send()
        .await
        .unwrap()
}

async fn login(c: &Client, base: &str, user: &str, password: &str) -> Session {
    let res = login_answer(c, base, user, password).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "sign-in of {user}");
    assert_eq!(res.headers()[header::LOCATION], "/hosts");
    let cookie = format!(
        "vigil_session={}",
        cookie_of(&res, "vigil_session").unwrap()
    );
    let html = get_ok(c, base, "/alerts", &cookie).await;
    Session {
        cookie,
        csrf: hidden_csrf(&html),
    }
}

async fn get(c: &Client, base: &str, path: &str, cookie: &str) -> reqwest::Response {
    c.get(format!("{base}{path}"))
        .header(header::COOKIE, cookie)
        .send()
        .await
        .unwrap()
}

async fn get_ok(c: &Client, base: &str, path: &str, cookie: &str) -> String {
    let res = get(c, base, path, cookie).await;
    assert_eq!(res.status(), 200, "GET {path}");
    res.text().await.unwrap()
}

async fn post(
    c: &Client,
    base: &str,
    path: &str,
    cookie: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    c.post(format!("{base}{path}"))
        .header(header::COOKIE, cookie)
        .form(form)
        .send()
        .await
        .unwrap()
}

fn host(name: &str) -> HostInfo {
    HostInfo {
        hostname: name.into(),
        machine_id: "m".into(),
        kernel: "6.18.0".into(),
        agent_version: "0.1.0".into(),
    }
}

fn alert(id: &str, rule: &str, sev: Severity, tags: &[&str], exe: &str) -> Alert {
    let t = now_ns();
    Alert {
        id: id.into(),
        rule: rule.into(),
        severity: sev as i32,
        output: format!("{rule}: {exe} ran (user=root)"),
        time_unix_ns: t,
        event_type: "execve".into(),
        tags: tags.iter().map(|s| s.to_string()).collect(),
        process: Some(ProcessInfo {
            pid: 4242,
            ppid: 1,
            exe: exe.into(),
            argv: vec![exe.into(), "-c".into(), "id".into()],
            user: "root".into(),
            executable: Some(ExecutableInfo {
                sha256: "ab".repeat(32),
                ..Default::default()
            }),
            proc_id: format!("p-{id}"),
            ..Default::default()
        }),
        fields: [("proc.exepath".to_string(), exe.to_string())]
            .into_iter()
            .collect(),
        group_key: [("proc.exepath".to_string(), exe.to_string())]
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

/// Two hosts' alerts and one agent's registry entry.
fn seed(store: &SqlStore) -> (String, String) {
    store
        .insert_batch(
            &host("web-1"),
            &[
                alert(
                    "a1",
                    "Shell in a container",
                    Severity::Warning,
                    &["container", "shell", "mitre_execution", "T1059"],
                    "/bin/sh",
                ),
                alert(
                    "a2",
                    "<script>alert(1)</script>",
                    Severity::Critical,
                    &["hostile"],
                    "/tmp/x",
                ),
            ],
        )
        .unwrap();
    store
        .insert_batch(
            &host("db-1"),
            &[alert(
                "a3",
                "Read sensitive file untrusted",
                Severity::Notice,
                &["filesystem"],
                "/usr/bin/cat",
            )],
        )
        .unwrap();
    store
        .save_agent(&AgentRecord {
            hostname: "web-1".into(),
            state: AgentState::Degraded,
            reason: "kernel:file lost 12".into(),
            last_seen_ns: now_ns(),
            heartbeat: AgentHeartbeat {
                host: Some(host("web-1")),
                rules_digest: "f00dfeedbeefcafe".into(),
                rules: 2,
                spool_depth: 3,
                loaded_rules: vec![
                    LoadedRule {
                        name: "Shell in a container".into(),
                        severity: Severity::Warning as i32,
                        tags: vec!["container".into(), "T1059".into()],
                        origin: "vigil_rules.yaml:10".into(),
                    },
                    LoadedRule {
                        name: "Never fires".into(),
                        severity: Severity::Error as i32,
                        tags: vec![],
                        origin: "vigil_rules.yaml:40".into(),
                    },
                ],
                ..Default::default()
            },
        })
        .unwrap();
    let id_of = |rule: &str| {
        store
            .groups(&vigil_collector::groups::GroupFilter {
                rule: Some(rule.into()),
                limit: 1,
                ..Default::default()
            })
            .unwrap()[0]
            .id
            .clone()
    };
    (
        id_of("Shell in a container"),
        id_of("<script>alert(1)</script>"),
    )
}

fn state_of(store: &SqlStore, id: &str) -> String {
    store.group(id).unwrap().unwrap().state.name().to_string()
}

/// A fresh PostgreSQL database from a throwaway cluster, or None where no
/// server binaries are installed (CI installs them; `cargo xtask test`).
async fn postgres() -> Option<String> {
    match tokio::task::spawn_blocking(vigil_collector::sql::throwaway::database)
        .await
        .unwrap()
    {
        Ok(url) => Some(url),
        Err(e) if std::env::var_os("CI").is_some() => panic!("PostgreSQL: {e}"),
        Err(e) => {
            eprintln!("skipping the PostgreSQL run: {e}");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_actions_per_role_on_sqlite_and_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let mut dbs = vec![dir.path().join("a.db").to_str().unwrap().to_string()];
    dbs.extend(postgres().await);
    for db in dbs {
        let store = open(db.clone()).await;
        pages_and_actions(store).await;
    }
}

async fn pages_and_actions(store: Arc<SqlStore>) {
    let (shell, hostile) = seed(&store);
    add_user(&store, "alice", Role::Responder, "alice's long password");
    add_user(&store, "victor", Role::Viewer, "victor's long password");
    let ui = start(store.clone(), None).await;
    let (c, base) = (client(), ui.base.clone());

    // Nobody signed in: pages go to the sign-in page, the API says 401.
    let res = get(&c, &base, "/alerts?state=any", "").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        res.headers()[header::LOCATION],
        "/login?next=%2Falerts%3Fstate%3Dany"
    );
    assert_eq!(get(&c, &base, "/api/groups", "").await.status(), 401);
    assert_eq!(
        post(
            &c,
            &base,
            &format!("/alerts/{shell}/action"),
            "",
            &[("action", "ack")]
        )
        .await
        .status(),
        401
    );
    // A bad password, and a sign-in form not from the console.
    assert_eq!(
        login_answer(&c, &base, "alice", "wrong password here")
            .await
            .status(),
        401
    );
    assert_eq!(
        login_answer(&c, &base, "nobody", "whatever password")
            .await
            .status(),
        401
    );
    let forged = c
        .post(format!("{base}/login"))
        .form(&[
            ("username", "alice"),
            ("password", "alice's long password"),
            ("csrf_token", "x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert!(cookie_of(&forged, "vigil_session").is_none());

    let alice = login(&c, &base, "alice", "alice's long password").await;
    let victor = login(&c, &base, "victor", "victor's long password").await;

    // The alert list, with its filters in the URL.
    let list = get_ok(&c, &base, "/alerts?state=any&since=24h", &alice.cookie).await;
    assert!(list.contains("Shell in a container") && list.contains("db-1"));
    assert!(list.contains(&format!("href=\"/alerts/{shell}\"")));
    // Hostile text from a host is shown, escaped, never run.
    assert!(!list.contains("<script>alert(1)</script>"));
    assert!(list.contains("&#60;script&#62;alert(1)&#60;/script&#62;"));
    let warn = get_ok(&c, &base, "/alerts?severity=critical", &alice.cookie).await;
    assert!(warn.contains("alert(1)") && !warn.contains("Shell in a container"));
    let tagged = get_ok(&c, &base, "/alerts?tag=T1059", &alice.cookie).await;
    assert!(tagged.contains("Shell in a container") && !tagged.contains("db-1"));
    let by_host = get_ok(&c, &base, "/alerts/rows?host=db-1", &alice.cookie).await;
    assert!(by_host.contains("Read sensitive file") && !by_host.contains("Shell"));
    assert!(!by_host.contains("<html"), "rows alone");
    assert_eq!(
        get(&c, &base, "/alerts?severity=loud", &alice.cookie)
            .await
            .status(),
        400
    );
    // A viewer sees the list without the triage controls.
    let viewer_list = get_ok(&c, &base, "/alerts", &victor.cookie).await;
    assert!(viewer_list.contains("Shell in a container"));
    assert!(!viewer_list.contains("value=\"resolve\""));

    // One group: fields, MITRE links, pivots, audit trail, tree.
    let page = get_ok(&c, &base, &format!("/alerts/{shell}"), &alice.cookie).await;
    for want in [
        "/bin/sh -c id",
        "https://attack.mitre.org/tactics/TA0002/",
        "https://attack.mitre.org/techniques/T1059/",
        &format!("/pivot?sha256={}", "ab".repeat(32)),
        "/pivot?exe=%2Fbin%2Fsh",
        "/pivot?user=root",
        "id=\"tree\"",
        "role-alerting",
        "opened",
        "id=\"ack\"",
    ] {
        assert!(page.contains(want), "the group page shows {want}");
    }
    // The delivery log: what was sent to whom for this group.
    store
        .enqueue(
            None,
            &[vigil_collector::sql::Queued {
                receiver: "pager".into(),
                group: shell.clone(),
                event: "opened".into(),
                body: b"{}".to_vec(),
                count: Some(1),
            }],
        )
        .unwrap();
    let page = get_ok(&c, &base, &format!("/alerts/{shell}"), &alice.cookie).await;
    let log = &page[page.find("id=\"delivery-h\"").unwrap()..];
    assert!(
        log.contains("<td>pager</td><td>opened</td><td>pending</td>"),
        "{log}"
    );
    // An alert's id leads to its group's page.
    assert!(get_ok(&c, &base, "/alerts/a1", &alice.cookie)
        .await
        .contains("Shell in a container"));
    assert_eq!(
        get(&c, &base, "/alerts/nope", &alice.cookie).await.status(),
        404
    );
    // Hosts, a host, rules, a pivot.
    let hosts = get_ok(&c, &base, "/hosts", &victor.cookie).await;
    assert!(hosts.contains("web-1") && hosts.contains("degraded"));
    assert!(hosts.contains("kernel:file lost 12"));
    let h = get_ok(&c, &base, "/hosts/web-1", &victor.cookie).await;
    assert!(h.contains("Shell in a container") && h.contains("f00dfeedbeef"));
    assert_eq!(
        get(&c, &base, "/hosts/nowhere", &victor.cookie)
            .await
            .status(),
        404
    );
    let rules = get_ok(&c, &base, "/rules", &victor.cookie).await;
    assert!(rules.contains("Never fires") && rules.contains("vigil_rules.yaml:10"));
    assert!(
        rules.contains("Read sensitive file untrusted"),
        "fired, not loaded"
    );
    let pivot = get_ok(&c, &base, "/pivot?exe=/bin/sh", &victor.cookie).await;
    assert!(pivot.contains("Where exe"));
    assert_eq!(
        get(&c, &base, "/pivot?exe=a&user=b", &victor.cookie)
            .await
            .status(),
        400
    );

    // A viewer cannot acknowledge, even with a good token.
    let ack = [("csrf_token", victor.csrf.as_str()), ("action", "ack")];
    let res = post(
        &c,
        &base,
        &format!("/alerts/{shell}/action"),
        &victor.cookie,
        &ack,
    )
    .await;
    assert_eq!(res.status(), 403);
    assert!(res.text().await.unwrap().contains("viewer role"));
    assert_eq!(state_of(&store, &shell), "open");
    // Without the CSRF token nothing changes.
    for form in [
        vec![("action", "ack")],
        vec![("action", "ack"), ("csrf_token", victor.csrf.as_str())],
    ] {
        let res = post(
            &c,
            &base,
            &format!("/alerts/{shell}/action"),
            &alice.cookie,
            &form,
        )
        .await;
        assert_eq!(res.status(), 403);
        assert!(res.text().await.unwrap().contains("CSRF"));
    }
    assert_eq!(state_of(&store, &shell), "open");

    // A responder acknowledges, assigns, notes, resolves; each in the
    // audit trail under the console user's name.
    let act = |form: Vec<(&'static str, String)>| {
        let (c, base, cookie, csrf, shell) = (
            c.clone(),
            base.clone(),
            alice.cookie.clone(),
            alice.csrf.clone(),
            shell.clone(),
        );
        async move {
            let mut f: Vec<(&str, String)> = vec![("csrf_token", csrf)];
            f.extend(form);
            c.post(format!("{base}/alerts/{shell}/action"))
                .header(header::COOKIE, cookie)
                .form(&f)
                .send()
                .await
                .unwrap()
        }
    };
    let res = act(vec![("action", "ack".into()), ("note", "on it".into())]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[header::LOCATION], format!("/alerts/{shell}"));
    assert_eq!(state_of(&store, &shell), "acknowledged");
    // Acknowledging twice is refused, saying why.
    let again = act(vec![("action", "ack".into())]).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(
        act(vec![("action", "assign".into()), ("to", "alice".into())])
            .await
            .status(),
        303
    );
    assert_eq!(
        act(vec![
            ("action", "note".into()),
            ("note", "checked cron".into())
        ])
        .await
        .status(),
        303
    );
    assert_eq!(
        act(vec![
            ("action", "resolve".into()),
            ("reason", "maybe".into())
        ])
        .await
        .status(),
        400
    );
    let res = act(vec![
        ("action", "resolve".into()),
        ("reason", "benign".into()),
        ("back", "//evil.example/".into()),
    ])
    .await;
    assert_eq!(res.headers()[header::LOCATION], format!("/alerts/{shell}"));
    assert_eq!(state_of(&store, &shell), "resolved");
    let history = store.history(&shell).unwrap();
    let by_alice: Vec<_> = history
        .iter()
        .filter(|h| h.actor == "console:alice")
        .map(|h| h.action.as_str())
        .collect();
    assert_eq!(
        by_alice,
        ["acknowledged", "assigned", "note", "resolved"],
        "{history:?}"
    );
    assert!(history
        .iter()
        .any(|h| h.client.starts_with("127.0.0.1:") && h.client.ends_with("(console)")));
    let page = get_ok(&c, &base, &format!("/alerts/{shell}"), &victor.cookie).await;
    assert!(page.contains("console:alice") && page.contains("checked cron"));

    // A silence from the group's page, shown on it and on the rules page,
    // then ended.
    let res = act(vec![
        ("action", "silence".into()),
        ("matcher", "rule=Shell in a container".into()),
        ("matcher", "host=web-1".into()),
        ("for", "2h".into()),
        ("silence_reason", "maintenance".into()),
    ])
    .await;
    assert_eq!(res.status(), 303);
    let live = store.silences(false).unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].created_by, "console:alice");
    let rules = get_ok(&c, &base, "/rules", &alice.cookie).await;
    assert!(rules.contains(&live[0].id));
    assert_eq!(
        act(vec![
            ("action", "silence".into()),
            ("matcher", "rule=x".into()),
            ("for", "400d".into()),
            ("silence_reason", "too long".into()),
        ])
        .await
        .status(),
        400
    );
    let res = post(
        &c,
        &base,
        &format!("/silences/{}/expire", live[0].id),
        &alice.cookie,
        &[("csrf_token", &alice.csrf)],
    )
    .await;
    assert_eq!(res.status(), 303);
    assert!(store.silences(false).unwrap().is_empty());

    // Bulk: acknowledge two groups at once; one that cannot be is named.
    let res = post(
        &c,
        &base,
        "/alerts/bulk",
        &alice.cookie,
        &[
            ("csrf_token", &alice.csrf),
            ("action", "ack"),
            ("id", &hostile),
            ("id", &shell),
            ("back", "/alerts?state=any"),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert!(res.text().await.unwrap().contains(&shell[..10]));
    assert_eq!(state_of(&store, &hostile), "acknowledged");
    let db1 = store
        .groups(&vigil_collector::groups::GroupFilter {
            host: Some("db-1".into()),
            limit: 1,
            ..Default::default()
        })
        .unwrap()[0]
        .id
        .clone();
    let res = post(
        &c,
        &base,
        "/alerts/bulk",
        &alice.cookie,
        &[
            ("csrf_token", &alice.csrf),
            ("action", "close"),
            ("reason", "duplicate"),
            ("id", &db1),
            ("id", &hostile),
            ("back", "/alerts?state=any"),
        ],
    )
    .await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()[header::LOCATION], "/alerts?state=any");
    assert_eq!(state_of(&store, &db1), "closed");
    assert_eq!(state_of(&store, &hostile), "closed");

    // An API token: JSON and actions without a CSRF token, as `token:`.
    let token = accounts::new_token("vgt_").unwrap();
    store
        .add_credential(
            &accounts::token_digest(&token),
            &accounts::Credential {
                kind: accounts::CredentialKind::Api,
                user: "alice".into(),
                role: Role::Responder,
                csrf: String::new(),
                label: "ticket sync".into(),
                expires_ns: now_ns() + 3_600_000_000_000,
            },
        )
        .unwrap();
    let json: serde_json::Value = c
        .get(format!("{base}/api/groups?state=any"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    assert_eq!(json.as_array().unwrap().len(), 3);
    assert!(json[0]["tags"].is_array());
    let res = c
        .post(format!("{base}/alerts/{db1}/action"))
        .bearer_auth(&token)
        .form(&[("action", "note"), ("note", "from the ticket")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert!(store
        .history(&db1)
        .unwrap()
        .iter()
        .any(|h| h.actor == "token:alice" && h.detail.contains("from the ticket")));
    // A session cookie sent as a bearer token, or a made-up token: 401.
    for bad in [alice.cookie.trim_start_matches("vigil_session="), "vgt_00"] {
        let res = c
            .get(format!("{base}/api/whoami"))
            .bearer_auth(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
    }

    // Signing out ends the session on the server, not only the cookie.
    let res = post(
        &c,
        &base,
        "/logout",
        &victor.cookie,
        &[("csrf_token", &victor.csrf)],
    )
    .await;
    assert_eq!(res.status(), 303);
    assert_eq!(get(&c, &base, "/hosts", &victor.cookie).await.status(), 303);
    // Removing an account ends its sessions at once.
    store.remove_user("alice").unwrap();
    assert_eq!(get(&c, &base, "/hosts", &alice.cookie).await.status(), 303);
    ui.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_is_held_off_and_hostile_requests_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path().join("a.db").to_str().unwrap().into()).await;
    seed(&store);
    add_user(&store, "alice", Role::Admin, "alice's long password");
    let ui = start(store.clone(), None).await;
    let (c, base) = (client(), ui.base.clone());
    for _ in 0..5 {
        assert_eq!(
            login_answer(&c, &base, "alice", "not the password")
                .await
                .status(),
            401
        );
    }
    // Held off now, even with the right password.
    let res = login_answer(&c, &base, "alice", "alice's long password").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    // Other names are not.
    add_user(&store, "bob", Role::Viewer, "bob's long password!");
    let bob = login(&c, &base, "bob", "bob's long password!").await;
    // Only local paths after signing in.
    for next in ["//evil.example/x", "/%09/evil.example", "/%5Cevil.example"] {
        let page = c
            .get(format!("{base}/login?next={next}"))
            .send()
            .await
            .unwrap();
        assert!(
            page.text().await.unwrap().contains("value=\"/alerts\""),
            "{next}"
        );
    }
    // A form larger than any the console makes.
    let big = "x".repeat(100 * 1024);
    let res = post(
        &c,
        &base,
        "/alerts/bulk",
        &bob.cookie,
        &[("csrf_token", &bob.csrf), ("note", &big)],
    )
    .await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let res = c
        .post(format!("{base}/login"))
        .form(&[("username", big.as_str()), ("password", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Security headers on every page.
    let res = get(&c, &base, "/alerts", &bob.cookie).await;
    let csp = res.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(res.headers()[header::X_FRAME_OPTIONS], "DENY");
    ui.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_updates_arrive_as_server_sent_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path().join("a.db").to_str().unwrap().into()).await;
    add_user(&store, "alice", Role::Viewer, "alice's long password");
    let ui = start(store.clone(), None).await;
    let c = client();
    let alice = login(&c, &ui.base, "alice", "alice's long password").await;
    let mut res = get(&c, &ui.base, "/events", &alice.cookie).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "text/event-stream");
    // Give the poller a tick to take its first reading, then an alert.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    store
        .insert_batch(
            &host("web-2"),
            &[alert("live1", "Live rule", Severity::Error, &[], "/bin/x")],
        )
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        let mut seen = String::new();
        while let Some(chunk) = res.chunk().await.unwrap() {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("event: changed") {
                return seen;
            }
        }
        seen
    })
    .await
    .expect("an event within 10 s");
    assert!(got.contains("event: changed"), "{got}");
    ui.stop().await;
}

/// A rustls client config trusting `dir`'s CA, with `who`'s certificate
/// when given.
fn tls_client(dir: &Path, who: Option<(vigil_proto::tls::Role, &str)>) -> Client {
    use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.join("ca.crt")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match who {
        Some((role, name)) => {
            let (crt, key) = pki::client_paths(dir, role, name);
            let chain: Vec<_> = CertificateDer::pem_file_iter(&crt)
                .unwrap()
                .map(|c| c.unwrap())
                .collect();
            b.with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(&key).unwrap())
                .unwrap()
        }
        None => b.with_no_client_auth(),
    };
    Client::builder()
        .use_preconfigured_tls(config)
        .redirect(Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_responders_sign_in_with_their_certificate() {
    use vigil_proto::tls::Role as CertRole;
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    pki::init(&pki_dir, &[], 30).unwrap();
    pki::issue_client(&pki_dir, CertRole::Responder, "carol", 30, false).unwrap();
    pki::issue_client(&pki_dir, CertRole::Agent, "web-1", 30, false).unwrap();
    pki::issue_client(&pki_dir, CertRole::Responder, "mallory", 30, false).unwrap();
    let store = open(dir.path().join("a.db").to_str().unwrap().into()).await;
    let (shell, _) = seed(&store);
    add_user(&store, "alice", Role::Viewer, "alice's long password");
    let tls = ServerTls::load_for(ServerTlsFiles::from_pki(&pki_dir), Purpose::Console).unwrap();
    let ui = start(store.clone(), Some(tls.clone())).await;
    let base = ui.base.replace("127.0.0.1", "localhost");

    // A responder's certificate: signed in, no password.
    let carol = tls_client(&pki_dir, Some((CertRole::Responder, "carol")));
    let res = carol
        .get(format!("{base}/api/whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res
        .headers()
        .contains_key(header::STRICT_TRANSPORT_SECURITY));
    let cookie = cookie_of(&res, "vigil_session").expect("a session for the certificate");
    let set = res.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(set.contains("Secure") && set.contains("HttpOnly") && set.contains("SameSite=Strict"));
    let me: serde_json::Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
    assert_eq!(me["user"], "carol");
    assert_eq!(me["via"], "certificate");
    let cookie = format!("vigil_session={cookie}");
    let html = get_ok(&carol, &base, "/alerts", &cookie).await;
    let csrf = hidden_csrf(&html);
    let res = post(
        &carol,
        &base,
        &format!("/alerts/{shell}/action"),
        &cookie,
        &[("csrf_token", &csrf), ("action", "ack")],
    )
    .await;
    assert_eq!(res.status(), 303);
    assert!(store
        .history(&shell)
        .unwrap()
        .iter()
        .any(|h| h.actor == "responder:carol" && h.action == "acknowledged"));
    // Another site making the browser send the certificate gets no
    // session (the browser withholds the SameSite cookie there).
    let res = carol
        .get(format!("{base}/alerts"))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert!(cookie_of(&res, "vigil_session").is_none());
    // The certificate's session cookie is no good without the certificate.
    let bare = tls_client(&pki_dir, None);
    assert_eq!(get(&bare, &base, "/alerts", &cookie).await.status(), 303);
    // No certificate: the password form, over TLS.
    let alice = login(&bare, &base, "alice", "alice's long password").await;
    assert!(get_ok(&bare, &base, "/hosts", &alice.cookie)
        .await
        .contains("web-1"));
    // An agent's certificate does not sign anyone in.
    let agent = tls_client(&pki_dir, Some((CertRole::Agent, "web-1")));
    assert_eq!(get(&agent, &base, "/alerts", "").await.status(), 303);
    // A revoked certificate: refused at the handshake, or at its next request.
    pki::revoke(&pki_dir, "mallory").unwrap();
    tls.reload_if_changed();
    let mallory = tls_client(&pki_dir, Some((CertRole::Responder, "mallory")));
    if let Ok(res) = mallory.get(format!("{base}/api/whoami")).send().await {
        assert_eq!(res.status(), 401);
    }
    ui.stop().await;
}
