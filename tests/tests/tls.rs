//! Trusted transport, end to end: the real collector serving mutual TLS
//! from a PKI made by `vigil-collector pki`, the real query CLI, and, for
//! what the CLIs refuse to do (claim another host, present an expired
//! certificate), a client speaking the real protocol over real TLS.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use vigil_proto::v1::{collector_client::CollectorClient, Alert, AlertBatch, AlertQuery, HostInfo};
use vigil_tests::*;

/// A PKI in a temporary directory, with agents `host-a` and a responder
/// `alice`, and a collector serving it.
struct Setup {
    _dir: tempfile::TempDir,
    pki: PathBuf,
    collector: Proc,
    url: String,
}

fn setup(init_args: &[&str]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    let p = pki_dir.to_str().unwrap();
    pki(&[&["init", p], init_args].concat());
    pki(&["issue", p, "--agent", "host-a"]);
    pki(&["issue", p, "--responder", "alice"]);
    let (collector, url) = start_tls_collector(dir.path(), &pki_dir);
    Setup {
        _dir: dir,
        pki: pki_dir,
        collector,
        url,
    }
}

impl Setup {
    fn p(&self) -> &str {
        self.pki.to_str().unwrap()
    }

    /// `vigil-collector query --server URL ARGS... alerts --json`.
    fn query(&self, url: &str, args: &[&str]) -> Output {
        Command::new(bin("vigil-collector"))
            .args(["query", "--server", url])
            .args(args)
            .args(["alerts", "--json"])
            .output()
            .unwrap()
    }

    fn query_as(&self, name: &str) -> Output {
        self.query(&self.url, &["--pki", self.p(), "--as", name])
    }

    /// Files of a client certificate in the PKI.
    fn files(&self, role_dir: &str, name: &str) -> (PathBuf, PathBuf) {
        let d = self.pki.join(role_dir);
        (d.join(format!("{name}.crt")), d.join(format!("{name}.key")))
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A refusal: non-zero exit, one line on stderr containing `needle`.
fn assert_refused(o: &Output, needle: &str) {
    let e = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure; stdout: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(e.contains(needle), "stderr lacks `{needle}`: {e}");
    assert_eq!(e.trim().lines().count(), 1, "one line: {e}");
}

/// A client certificate refused at the handshake: the CLI names `reason`
/// when the alert reached it before the connection closed, and says the
/// certificate was probably refused otherwise (which of the two is a race
/// in the HTTP/2 client; the collector's log always names the reason).
fn assert_cert_refused(o: &Output, reason: &str) {
    let e = stderr(o);
    if !e.contains(reason) {
        assert_refused(o, "it probably refused this client's certificate");
    } else {
        assert_refused(o, reason);
    }
}

/// `--tls-cert CRT --tls-key KEY --ca CA`.
fn tls_files<'a>(crt: &'a Path, key: &'a Path, ca: &'a Path) -> [&'a str; 6] {
    let s = |p: &'a Path| p.to_str().unwrap();
    ["--tls-cert", s(crt), "--tls-key", s(key), "--ca", s(ca)]
}

/// Waits up to `secs` for a log line of `p` containing every needle.
fn wait_log(p: &Proc, needles: &[&str], secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !p
        .stderr_lines()
        .iter()
        .any(|l| needles.iter().all(|n| l.contains(n)))
    {
        assert!(
            Instant::now() < deadline,
            "no log line with {needles:?}:\n{}",
            p.stderr_lines().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A gRPC client over TLS with these files, none of them checked first
/// (the CLIs check theirs before connecting).
async fn client(
    url: &str,
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<CollectorClient<Channel>, String> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()))
        .identity(Identity::from_pem(
            std::fs::read(cert).unwrap(),
            std::fs::read(key).unwrap(),
        ))
        .domain_name("127.0.0.1");
    let ch = Endpoint::from_shared(url.to_string())
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(CollectorClient::new(ch))
}

fn batch(seq: u64, host: &str, rule: &str) -> AlertBatch {
    AlertBatch {
        activity: Vec::new(),
        host: Some(HostInfo {
            hostname: host.into(),
            ..Default::default()
        }),
        seq,
        alerts: vec![Alert {
            id: unique("id"),
            rule: rule.into(),
            severity: 4,
            time_unix_ns: 1,
            ..Default::default()
        }],
    }
}

/// An open alert stream: batches go in, acks (or the error) come out.
struct Stream {
    tx: tokio::sync::mpsc::Sender<AlertBatch>,
    acks: tonic::Streaming<vigil_proto::v1::Ack>,
}

async fn open_stream(c: &mut CollectorClient<Channel>) -> Result<Stream, tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let acks = c
        .stream_alerts(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok(Stream { tx, acks })
}

impl Stream {
    async fn send(&mut self, b: AlertBatch) -> Result<u64, tonic::Status> {
        let _ = self.tx.send(b).await;
        match self.acks.message().await? {
            Some(ack) => Ok(ack.seq),
            None => Err(tonic::Status::aborted("stream ended")),
        }
    }
}

/// Stored alerts of `rule`, asked as responder alice.
fn stored(s: &Setup, rule: &str) -> Vec<serde_json::Value> {
    query_until(
        &s.url,
        &["--pki", s.p(), "--as", "alice", "--rule", rule],
        Duration::from_secs(1),
        |_| false,
    )
}

#[test]
fn plaintext_and_certificates_of_another_ca_are_refused() {
    let s = setup(&[]);
    // A plaintext client gets nothing from the TLS port.
    let addr = s.url.trim_start_matches("https://");
    let o = s.query(&format!("http://{addr}"), &[]);
    assert_refused(&o, "the collector probably serves TLS");

    // A responder certificate from another PKI's CA, with the right CA
    // for the server: the collector refuses the handshake.
    let other = tempfile::tempdir().unwrap();
    let op = other.path().join("pki");
    let opp = op.to_str().unwrap();
    pki(&["init", opp]);
    pki(&["issue", opp, "--responder", "mallory"]);
    let ca = s.pki.join("ca.crt");
    let crt = op.join("responders/mallory.crt");
    let key = op.join("responders/mallory.key");
    let o = s.query(&s.url, &tls_files(&crt, &key, &ca));
    assert_cert_refused(&o, "not signed by a CA it trusts");
    // The client's refusal can arrive before the collector's log line.
    wait_log(
        &s.collector,
        &["TLS handshake refused", "UnknownIssuer"],
        10,
    );

    // With alice's own certificate but another PKI's CA, the client
    // refuses the collector.
    let (acrt, akey) = s.files("responders", "alice");
    let o = s.query(&s.url, &tls_files(&acrt, &akey, &op.join("ca.crt")));
    assert_refused(
        &o,
        "the collector's certificate is not signed by the CA given (--ca)",
    );

    // The right certificate works.
    let o = s.query_as("alice");
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn expired_certificates_are_refused() {
    let s = setup(&[]);
    // An expired responder certificate signed by the right CA.
    let (crt, key) = sign(&s, Some("responder"), "old", -1);
    let crt_path = s.pki.join("responders/old.crt");
    let key_path = s.pki.join("responders/old.key");
    std::fs::rename(crt, &crt_path).unwrap();
    std::fs::rename(key, &key_path).unwrap();

    // The CLI names the file and the reason before connecting.
    let o = s.query_as("old");
    assert_refused(&o, "certificate expired");
    assert!(stderr(&o).contains("responders/old.crt"), "{}", stderr(&o));

    // The collector refuses it too, when a client does not check.
    let rt = runtime();
    let refused = rt.block_on(async {
        let mut c = client(&s.url, &s.pki.join("ca.crt"), &crt_path, &key_path).await?;
        c.query_alerts(AlertQuery::default())
            .await
            .map(|_| ())
            .map_err(|e| format!("{e:?}"))
    });
    assert!(refused.is_err(), "an expired certificate queried");
    wait_log(&s.collector, &["TLS handshake refused", "xpired"], 5);
}

#[test]
fn an_agent_is_the_host_its_certificate_names() {
    let s = setup(&[]);
    let (crt, key) = s.files("agents", "host-a");
    let ca = s.pki.join("ca.crt");
    let rule_b = unique("claims host-b");
    let rule_a = unique("from host-a");
    let rt = runtime();
    let (lie, truth) = rt.block_on(async {
        let mut c = client(&s.url, &ca, &crt, &key).await.unwrap();
        let mut st = open_stream(&mut c).await.unwrap();
        let lie = st.send(batch(1, "host-b", &rule_b)).await;
        let mut st = open_stream(&mut c).await.unwrap();
        let truth = st.send(batch(2, "host-a", &rule_a)).await;
        (lie, truth)
    });
    let lie = lie.unwrap_err();
    assert_eq!(lie.code(), tonic::Code::PermissionDenied, "{lie:?}");
    assert!(
        lie.message().contains("host-b") && lie.message().contains("host-a"),
        "{}",
        lie.message()
    );
    assert_eq!(truth.unwrap(), 2);
    assert!(
        stored(&s, &rule_b).is_empty(),
        "nothing stored from the lying batch"
    );
    let a = stored(&s, &rule_a);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0]["host"]["hostname"], "host-a");
}

#[test]
fn roles_decide_who_reads_and_who_writes() {
    let s = setup(&[]);
    // An agent certificate cannot query.
    let o = s.query_as("host-a");
    assert_refused(&o, "permission denied");
    assert!(stderr(&o).contains("role agent"), "{}", stderr(&o));
    // A responder can, and cannot stream alerts.
    let o = s.query_as("alice");
    assert!(o.status.success(), "{}", stderr(&o));
    let (crt, key) = s.files("responders", "alice");
    let rt = runtime();
    let res = rt.block_on(async {
        let mut c = client(&s.url, &s.pki.join("ca.crt"), &crt, &key)
            .await
            .unwrap();
        let mut st = open_stream(&mut c).await?;
        st.send(batch(1, "alice", "x")).await
    });
    let e = res.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains("may not stream alerts"),
        "{}",
        e.message()
    );
    // An admin may query.
    pki(&["issue", s.p(), "--admin", "root-admin"]);
    let o = s.query_as("root-admin");
    assert!(o.status.success(), "{}", stderr(&o));
    // A certificate of the right CA without a role may do nothing.
    let (crt, key) = sign(&s, None, "norole", 30);
    let o = s.query(&s.url, &tls_files(&crt, &key, &s.pki.join("ca.crt")));
    assert_refused(&o, "carries no Vigil role");
}

/// A client certificate signed by the setup's CA, outside the PKI tool:
/// with `ou` (None: no role), expiring `days_left` days from now
/// (negative: already expired).
fn sign(s: &Setup, ou: Option<&str>, cn: &str, days_left: i64) -> (PathBuf, PathBuf) {
    let ca_pem = std::fs::read_to_string(s.pki.join("ca.crt")).unwrap();
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(s.pki.join("ca.key")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    if let Some(ou) = ou {
        dn.push(rcgen::DnType::OrganizationalUnitName, ou);
    }
    dn.push(rcgen::DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let now = std::time::SystemTime::now();
    let day = Duration::from_secs(86_400);
    params.not_before = (now - day * 10).into();
    params.not_after = if days_left < 0 {
        now - day * (-days_left) as u32
    } else {
        now + day * days_left as u32
    }
    .into();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let crt_path = s.pki.join(format!("{cn}.crt"));
    let key_path = s.pki.join(format!("{cn}.key"));
    std::fs::write(&crt_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (crt_path, key_path)
}

#[test]
fn a_revoked_certificate_stops_working_without_a_restart() {
    let s = setup(&[]);
    assert!(s.query_as("alice").status.success());
    let (crt, key) = s.files("agents", "host-a");
    let ca = s.pki.join("ca.crt");
    let rt = runtime();
    let mut c = rt.block_on(client(&s.url, &ca, &crt, &key)).unwrap();
    let mut st = rt.block_on(open_stream(&mut c)).unwrap();
    assert_eq!(
        rt.block_on(st.send(batch(1, "host-a", &unique("before"))))
            .unwrap(),
        1
    );

    pki(&["revoke", s.p(), "alice"]);
    pki(&["revoke", s.p(), "host-a"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while s.query_as("alice").status.success() {
        assert!(
            Instant::now() < deadline,
            "alice still queries after revocation"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let o = s.query_as("alice");
    assert_cert_refused(&o, "it is revoked");
    // The stream opened before the revocation ends at its next batch.
    let e = rt
        .block_on(st.send(batch(2, "host-a", &unique("after"))))
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("revoked"), "{}", e.message());
    // And a new connection is refused at the handshake.
    let again = rt.block_on(async {
        let mut c = client(&s.url, &ca, &crt, &key).await?;
        let mut st = open_stream(&mut c).await.map_err(|e| format!("{e:?}"))?;
        st.send(batch(3, "host-a", "x"))
            .await
            .map_err(|e| format!("{e:?}"))
    });
    assert!(again.is_err());
    wait_log(&s.collector, &["revoked certificates reloaded"], 10);
    wait_log(&s.collector, &["TLS handshake refused", "Revoked"], 10);
}

#[test]
fn a_rotated_collector_certificate_is_served_without_a_restart() {
    // The first certificate names only localhost: a client asking for
    // 127.0.0.1 refuses it.
    let s = setup(&["--san", "localhost"]);
    let o = s.query_as("alice");
    assert!(
        !o.status.success(),
        "the collector's certificate does not name 127.0.0.1"
    );
    assert!(
        stderr(&o).contains("NotValidForName") || stderr(&o).contains("not valid for name"),
        "{}",
        stderr(&o)
    );
    let port = s.url.rsplit(':').next().unwrap();
    let o = s.query(
        &format!("https://localhost:{port}"),
        &["--pki", s.p(), "--as", "alice"],
    );
    assert!(o.status.success(), "{}", stderr(&o));

    // Rotation: a new certificate naming 127.0.0.1 too, picked up live.
    pki(&[
        "issue",
        s.p(),
        "--collector",
        "--san",
        "localhost",
        "--san",
        "127.0.0.1",
        "--force",
    ]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let o = s.query_as("alice");
        if o.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rotation not picked up: {}",
            stderr(&o)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // An agent connects with the rotated certificate.
    let (crt, key) = s.files("agents", "host-a");
    let rt = runtime();
    let acked = rt.block_on(async {
        let mut c = client(&s.url, &s.pki.join("ca.crt"), &crt, &key)
            .await
            .unwrap();
        let mut st = open_stream(&mut c).await.unwrap();
        st.send(batch(1, "host-a", &unique("rotated"))).await
    });
    assert_eq!(acked.unwrap(), 1);
}

#[test]
fn serving_without_tls_is_refused_unless_on_loopback() {
    let run = |args: &[&str]| {
        Command::new(bin("vigil-collector"))
            .args(args)
            .output()
            .unwrap()
    };
    let o = run(&["serve", "--listen", "127.0.0.1:0", "--db", "/tmp/never.db"]);
    assert_refused(&o, "no TLS certificate: give --pki DIR");
    let o = run(&[
        "serve",
        "--insecure-plaintext",
        "--listen",
        "0.0.0.0:0",
        "--db",
        "/tmp/never.db",
    ]);
    assert_refused(&o, "--insecure-plaintext is refused on 0.0.0.0:0");
    let o = run(&[
        "serve",
        "--pki",
        "/nonexistent/pki",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_refused(&o, "/nonexistent/pki/collector.crt: cannot read");
    // A key that is not the certificate's.
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("pki");
    let ps = p.to_str().unwrap();
    pki(&["init", ps]);
    pki(&["issue", ps, "--responder", "x"]);
    std::fs::copy(p.join("responders/x.key"), p.join("collector.key")).unwrap();
    let o = run(&["serve", "--pki", ps, "--listen", "127.0.0.1:0"]);
    assert_refused(
        &o,
        "collector.key: the key does not belong to the certificate",
    );
}

#[test]
fn the_agent_refuses_a_collector_its_url_does_not_name() {
    if !kernel_tests_enabled("the_agent_refuses_a_collector_its_url_does_not_name") {
        return;
    }
    let s = setup(&["--san", "localhost"]);
    let host = hostname();
    pki(&["issue", s.p(), "--agent", &host]);
    let (crt, key) = s.files("agents", &host);
    let ca = s.pki.join("ca.crt");
    let mut agent = start_agent(&[
        "--collector",
        &s.url,
        "--tls-cert",
        crt.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--ca",
        ca.to_str().unwrap(),
    ]);
    let line = agent.wait_stderr("refusal", Duration::from_secs(20), |l| {
        l.contains("collector unreachable")
    });
    assert!(
        line.contains("NotValidForName") || line.contains("not valid for name"),
        "{line}"
    );
    let tag = unique("vigil-unnamed");
    let (_d, prog) = marker_binary("/bin/true", "unnamed-true");
    Command::new(&prog).arg(&tag).status().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let port = s.url.rsplit(':').next().unwrap();
    let o = s.query(
        &format!("https://localhost:{port}"),
        &["--pki", s.p(), "--as", "alice"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        o.stdout.is_empty(),
        "nothing reached the collector: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(agent.alive());
}

#[test]
fn a_bad_rotation_keeps_the_previous_files_in_force() {
    let s = setup(&[]);
    // A key that is not the certificate's: the reload is refused and the
    // old pair keeps serving.
    std::fs::copy(
        s.pki.join("responders/alice.key"),
        s.pki.join("collector.key"),
    )
    .unwrap();
    wait_log(
        &s.collector,
        &["TLS files not reloaded", "collector.key"],
        10,
    );
    let o = s.query_as("alice");
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn explicit_files_and_a_revoked_directory_work_without_the_pki_layout() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pki");
    let ps = p.to_str().unwrap();
    pki(&["init", ps]);
    pki(&["issue", ps, "--responder", "bob"]);
    let revoked = dir.path().join("gone");
    std::fs::create_dir(&revoked).unwrap();
    let serve = |db: &str, revoked: &Path| {
        let mut cmd = Command::new(bin("vigil-collector"));
        cmd.args([
            "serve",
            "--metrics-listen",
            "off",
            "--listen",
            "127.0.0.1:0",
            "--db",
        ])
        .arg(dir.path().join(db))
        .arg("--tls-cert")
        .arg(p.join("collector.crt"))
        .arg("--tls-key")
        .arg(p.join("collector.key"))
        .arg("--client-ca")
        .arg(p.join("ca.crt"))
        .arg("--revoked")
        .arg(revoked);
        cmd
    };
    let mut collector = Proc::spawn("vigil-collector", serve("a.db", &revoked));
    let addr = collector.logged_addr("collector serving", "listen");
    let url = format!("https://{addr}");
    let crt = p.join("responders/bob.crt");
    let key = p.join("responders/bob.key");
    let bob = || {
        Command::new(bin("vigil-collector"))
            .args(["query", "--server", &url, "--tls-cert"])
            .arg(&crt)
            .arg("--tls-key")
            .arg(&key)
            .arg("--ca")
            .arg(p.join("ca.crt"))
            .arg("alerts")
            .output()
            .unwrap()
    };
    let o = bob();
    assert!(o.status.success(), "{}", stderr(&o));
    // Revoking by hand: a copy of the certificate in the directory.
    std::fs::copy(&crt, revoked.join("bob.crt")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let o = bob();
        if !o.status.success() {
            // Refused at the handshake; or, when the list was reread
            // between this connection's handshake and its request, at the
            // request.
            if stderr(&o).contains("has been revoked") {
                assert_refused(&o, "certificate `bob` (responder) has been revoked");
            } else {
                assert_cert_refused(&o, "it is revoked");
            }
            break;
        }
        assert!(Instant::now() < deadline, "bob still queries");
        std::thread::sleep(Duration::from_millis(200));
    }
    // A new connection now: refused at its handshake, and logged.
    assert!(!bob().status.success());
    wait_log(&collector, &["TLS handshake refused", "Revoked"], 10);
    // A missing revoked directory is refused at start: revocation must
    // not fail open.
    let o = serve("b.db", &dir.path().join("nope")).output().unwrap();
    assert_refused(&o, "no such directory of revoked certificates");
    collector.stop();
}
