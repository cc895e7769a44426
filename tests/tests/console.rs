//! The console in a real browser: Debian's headless Chromium, driven
//! through chromedriver, against the real collector and the real agent.
//! A responder signs in, sees an alert the agent raised arrive without
//! reloading, opens it, sees its process tree, acknowledges it with the
//! keyboard, sees the audit entry, and signs out.
//!
//! With `VIGIL_SCREENSHOTS=DIR` the test saves a screenshot of each page
//! there (docs/console.md shows those).
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use fantoccini::{
    actions::{InputSource, KeyAction, KeyActions},
    Client, ClientBuilder, Locator,
};
use vigil_tests::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a free loopback port; its URL once it answers.
fn start_chromedriver() -> (Proc, String) {
    for p in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            Path::new(p).exists(),
            "{p} is missing: install Debian's chromium and chromium-driver (`cargo xtask test` and .ci/run do)"
        );
    }
    let port = free_port();
    let mut cmd = Command::new(CHROMEDRIVER);
    cmd.arg(format!("--port={port}"));
    let driver = Proc::spawn("chromedriver", cmd);
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = format!("127.0.0.1:{port}");
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    (driver, format!("http://127.0.0.1:{port}"))
}

async fn browser(driver: &str, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            // The machine's network is closed: no background fetches,
            // no first-run, no sandbox (we are root).
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-quic", "--window-size=1280,900",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(driver)
        .await
        .expect("a Chromium session")
}

async fn key(c: &Client, k: char) {
    let a = KeyActions::new("keyboard".into())
        .then(KeyAction::Down { value: k })
        .then(KeyAction::Up { value: k });
    c.perform_actions(a).await.unwrap();
}

/// Waits until `script` (a JS expression) is true.
async fn until(c: &Client, what: &str, script: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let v = c
            .execute(&format!("return !!({script});"), vec![])
            .await
            .unwrap();
        if v == serde_json::Value::Bool(true) {
            return;
        }
        if Instant::now() > deadline {
            let src = c.source().await.unwrap_or_default();
            panic!("timed out waiting for {what}; page:\n{src}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn shot(c: &Client, dir: &Option<PathBuf>, name: &str) {
    shot_at(c, dir, name, 1280).await
}

/// A screenshot of the whole page at `width` CSS pixels.
async fn shot_at(c: &Client, dir: &Option<PathBuf>, name: &str, width: u32) {
    if let Some(d) = dir {
        c.set_window_size(width, 900).await.unwrap();
        // The whole page, not only the window.
        let h = c
            .execute("return document.documentElement.scrollHeight;", vec![])
            .await
            .unwrap()
            .as_u64()
            .unwrap_or(900)
            .clamp(600, 3000);
        c.set_window_size(width, h as u32 + 100).await.unwrap();
        let png = c.screenshot().await.unwrap();
        c.set_window_size(1280, 900).await.unwrap();
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join(format!("{name}.png")), png).unwrap();
    }
}

#[test]
fn a_responder_triages_a_live_alert_in_a_real_browser() {
    if !kernel_tests_enabled("a_responder_triages_a_live_alert_in_a_real_browser") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let shots = std::env::var_os("VIGIL_SCREENSHOTS").map(PathBuf::from);
    // An account, made with the CLI before the collector starts.
    let pw = data.path().join("alice.pw");
    std::fs::write(&pw, "correct horse battery staple\n").unwrap();
    let out = Command::new(bin("vigil-collector"))
        .args([
            "user",
            "add",
            "alice",
            "--role",
            "responder",
            "--password-file",
        ])
        .arg(&pw)
        .arg("--db")
        .arg(collector_db(data.path()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ui_port = free_port();
    let ui = format!("127.0.0.1:{ui_port}");
    let (mut collector, url) =
        start_collector_with(data.path(), "127.0.0.1:0", &["--ui-listen", &ui]);
    collector.wait_stderr("web console serving", Duration::from_secs(20), |l| {
        l.contains("web console serving")
    });
    let (dir, marker) = marker_binary("/bin/true", "console-marker");
    let rule = unique("Console marker");
    let rules = dir.path().join("console.yaml");
    std::fs::write(
        &rules,
        format!(
            "- rule: {rule}\n  desc: d\n  priority: critical\n  condition: evt.type = execve and proc.exepath = \"{}\"\n  output: marker ran (%proc.exepath by %user.name)\n  tags: [mitre_execution, T1059]\n",
            marker.display()
        ),
    )
    .unwrap();
    let mut agent = start_agent(&["--collector", &url, "--rules", rules.to_str().unwrap()]);
    let (_driver, driver_url) = start_chromedriver();
    let base = format!("http://{ui}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = browser(&driver_url, &data.path().join("chromium")).await;
        // Not signed in: the sign-in page.
        c.goto(&format!("{base}/alerts")).await.unwrap();
        let user = c.wait().for_element(Locator::Id("username")).await.unwrap();
        assert!(c.current_url().await.unwrap().path().starts_with("/login"));
        shot(&c, &shots, "login").await;
        user.send_keys("alice").await.unwrap();
        c.find(Locator::Id("password"))
            .await
            .unwrap()
            .send_keys("correct horse battery staple")
            .await
            .unwrap();
        c.find(Locator::Css("form button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        c.wait().for_element(Locator::Id("rows")).await.unwrap();
        assert_eq!(c.current_url().await.unwrap().path(), "/alerts");
        let who = c.find(Locator::Id("whoami")).await.unwrap().text().await.unwrap();
        assert!(who.contains("alice"), "{who}");
        // A mark that survives only as long as the page is not reloaded.
        c.execute("window.vigilStayed = true;", vec![]).await.unwrap();

        // The real agent raises the alert; it appears without a reload.
        assert!(Command::new(&marker).status().unwrap().success());
        let row = format!("#rows tr[data-rule={}]", serde_json::json!(rule));
        until(
            &c,
            "the alert to appear live",
            &format!("document.querySelector({})", serde_json::json!(row)),
            Duration::from_secs(30),
        )
        .await;
        let stayed = c.execute("return window.vigilStayed === true;", vec![]).await.unwrap();
        assert_eq!(stayed, serde_json::Value::Bool(true), "the page was reloaded");
        shot(&c, &shots, "alerts").await;

        // Keyboard: j selects the newest group (ours), Enter opens it.
        key(&c, 'j').await;
        until(
            &c,
            "the first row to be selected",
            &format!(
                "document.querySelector('#rows tr.selected') && document.querySelector('#rows tr.selected').dataset.rule === {}",
                serde_json::json!(rule)
            ),
            Duration::from_secs(5),
        )
        .await;
        key(&c, '\u{E007}').await; // Enter
        c.wait().for_element(Locator::Id("tree")).await.unwrap();
        assert!(c.current_url().await.unwrap().path().starts_with("/alerts/"));
        // Its process tree, the alerting process highlighted.
        let alerting = c
            .find(Locator::Css("#tree li.role-alerting"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            alerting.contains(marker.to_str().unwrap()),
            "alerting node: {alerting}"
        );
        let tags = c.find(Locator::Css("ul.tags")).await.unwrap().html(false).await.unwrap();
        assert!(tags.contains("https://attack.mitre.org/techniques/T1059/"), "{tags}");
        assert_eq!(
            c.find(Locator::Id("state")).await.unwrap().text().await.unwrap(),
            "open"
        );
        shot(&c, &shots, "alert").await;
        // On a phone: the acknowledge button at the top, nothing cut off.
        c.set_window_size(400, 900).await.unwrap();
        let wide = c
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
                vec![],
            )
            .await
            .unwrap();
        if wide != serde_json::Value::Bool(true) {
            let culprits = c
                .execute(
                    "return Array.from(document.querySelectorAll('body *')).filter(e => e.getBoundingClientRect().right > window.innerWidth + 1).slice(0, 8).map(e => e.tagName + '.' + e.className + '#' + e.id).join(', ');",
                    vec![],
                )
                .await
                .unwrap();
            panic!("sideways scrolling on a phone, from: {culprits}");
        }
        shot_at(&c, &shots, "alert-phone", 400).await;
        c.set_window_size(1280, 900).await.unwrap();

        // a acknowledges; the page shows the new state and the audit entry.
        key(&c, 'a').await;
        until(
            &c,
            "the group to be acknowledged",
            "document.getElementById('state') && document.getElementById('state').textContent === 'acknowledged'",
            Duration::from_secs(15),
        )
        .await;
        let audit = c.find(Locator::Id("audit")).await.unwrap().text().await.unwrap();
        assert!(
            audit.lines().any(|l| l.contains("console:alice") && l.contains("acknowledged")),
            "audit trail: {audit}"
        );

        // Back on the list: r resolves the selected group through its
        // dialog, s silences its rule on its host.
        c.goto(&format!("{base}/alerts?state=acknowledged&since=1h")).await.unwrap();
        c.wait().for_element(Locator::Css(&row)).await.unwrap();
        key(&c, 'j').await;
        key(&c, 'r').await;
        let reason = c.wait().for_element(Locator::Id("resolve-reason")).await.unwrap();
        until(
            &c,
            "the resolve dialog to open, focused",
            "document.getElementById('resolve-dialog').open && document.activeElement.id === 'resolve-reason'",
            Duration::from_secs(5),
        )
        .await;
        reason.select_by_value("false_positive").await.unwrap();
        c.find(Locator::Css("#resolve-dialog button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        until(
            &c,
            "the resolved group to leave the acknowledged list",
            &format!(
                "document.readyState === 'complete' && document.getElementById('rows') \
                 && !document.getElementById('resolve-dialog').open && !document.querySelector({})",
                serde_json::json!(row)
            ),
            Duration::from_secs(15),
        )
        .await;
        c.goto(&format!("{base}/alerts?state=resolved&since=1h")).await.unwrap();
        c.wait().for_element(Locator::Css(&row)).await.unwrap();
        key(&c, 'j').await;
        key(&c, 's').await;
        let why = c.wait().for_element(Locator::Id("silence-reason")).await.unwrap();
        until(
            &c,
            "the silence dialog to open",
            "document.getElementById('silence-dialog').open",
            Duration::from_secs(5),
        )
        .await;
        why.send_keys("known test marker").await.unwrap();
        c.find(Locator::Css("#silence-dialog button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        // The form's page has replaced this one (its dialog is closed)
        // before the next navigation, which would otherwise race it.
        until(
            &c,
            "the silence to be added",
            "document.readyState === 'complete' && document.getElementById('silence-dialog') && !document.getElementById('silence-dialog').open",
            Duration::from_secs(15),
        )
        .await;

        // Hosts and rules, for the record.
        c.goto(&format!("{base}/hosts")).await.unwrap();
        c.wait().for_element(Locator::Id("hosts")).await.unwrap();
        let hosts = c.find(Locator::Id("hosts")).await.unwrap().text().await.unwrap();
        assert!(hosts.contains(&hostname()), "{hosts}");
        shot(&c, &shots, "hosts").await;
        // A host's page: its agent, recent groups and activity.
        c.find(Locator::Css("#hosts a")).await.unwrap().click().await.unwrap();
        until(
            &c,
            "the host's page",
            &format!(
                "document.querySelector('h1') && document.querySelector('h1').textContent === {}",
                serde_json::json!(hostname())
            ),
            Duration::from_secs(15),
        )
        .await;
        let host_page = c.source().await.unwrap();
        assert!(host_page.contains(&rule), "the host's recent groups");
        shot(&c, &shots, "host").await;
        // A pivot: where the marker's executable ran.
        c.goto(&format!(
            "{base}/pivot?exe={}",
            marker.to_str().unwrap().replace('/', "%2F")
        ))
        .await
        .unwrap();
        let pivot = c.wait().for_element(Locator::Css("main")).await.unwrap().text().await.unwrap();
        assert!(pivot.contains(&hostname()), "{pivot}");
        shot(&c, &shots, "pivot").await;
        c.goto(&format!("{base}/rules")).await.unwrap();
        let rules_text = c.wait().for_element(Locator::Id("rules")).await.unwrap().text().await.unwrap();
        assert!(rules_text.contains(&rule), "{rules_text}");
        shot(&c, &shots, "rules").await;

        // Signing out ends the session: the pages ask to sign in again.
        c.find(Locator::Id("sign-out")).await.unwrap().click().await.unwrap();
        c.wait().for_element(Locator::Id("username")).await.unwrap();
        c.goto(&format!("{base}/alerts")).await.unwrap();
        c.wait().for_element(Locator::Id("username")).await.unwrap();
        assert!(c.current_url().await.unwrap().path().starts_with("/login"));
        c.close().await.unwrap();
    });
    // The same changes, as the collector's own CLI sees them.
    let cli = |args: &[&str]| {
        let out = Command::new(bin("vigil-collector"))
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let groups = cli(&[
        "query", "--server", &url, "groups", "--state", "resolved", "--json",
    ]);
    assert!(
        groups.contains(&rule) && groups.contains("false_positive"),
        "{groups}"
    );
    let silences = cli(&["silence", "--server", &url, "list", "--json"]);
    assert!(
        silences.contains(&format!("rule={rule}"))
            && silences.contains("known test marker")
            && silences.contains("console:alice"),
        "{silences}"
    );
    agent.kill();
    assert!(collector.stop().success());
}
