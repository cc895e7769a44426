//! Network events from real syscalls on loopback: socket (raw and packet
//! visible), connect (IPv4, IPv6, unix; non-blocking in progress), bind,
//! listen, accept4 with the peer address.
use std::{process::Command, time::Duration};

use serde_json::Value;
use vigil_tests::*;

fn run_helper(args: &[&str]) -> (u32, i64) {
    let child = Command::new(bin("vigil-test-helper"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    (
        pid,
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap(),
    )
}

fn events(agent: &Proc, pid: u32, op: &str, n: usize) -> Vec<Value> {
    let evs = agent.wait_json(
        Duration::from_secs(15),
        |v| v["type"] == "network" && v["process"]["pid"] == pid && v["op"] == op,
        |f| f.len() >= n,
    );
    assert!(evs.len() >= n, "no {op} event from pid {pid}");
    evs
}

#[test]
fn sockets_connects_and_servers() {
    if !kernel_tests_enabled("sockets_connects_and_servers") {
        return;
    }
    let agent = start_agent(&["--events", "--drain-interval-ms", "10"]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();

    let (pid, fd) = run_helper(&["socket-raw"]);
    assert!(fd >= 0);
    let e = &events(&agent, pid, "socket", 1)[0];
    assert_eq!(
        (
            e["family"].as_str(),
            e["socket_type"].as_str(),
            e["protocol"].as_u64()
        ),
        (Some("inet"), Some("raw"), Some(1))
    );
    assert_eq!(e["fd"], fd);

    let (pid, fd) = run_helper(&["socket-packet"]);
    assert!(fd >= 0);
    let e = &events(&agent, pid, "socket", 1)[0];
    assert_eq!(e["family"], "packet");

    let (pid, r) = run_helper(&["connect4", &port.to_string()]);
    assert_eq!(r, 0);
    let e = &events(&agent, pid, "connect", 1)[0];
    assert_eq!(
        e["address"],
        serde_json::json!({"family": "inet", "ip": "127.0.0.1", "port": port})
    );
    assert_eq!(e["result"], 0);

    let (pid, r) = run_helper(&["connect4-nonblock", &port.to_string()]);
    assert!(r == 0 || r == -(libc_einprogress()), "{r}");
    let e = &events(&agent, pid, "connect", 1)[0];
    assert_eq!(e["in_progress"], r != 0);

    let (pid, r) = run_helper(&["connect6", "1"]);
    assert!(r < 0, "nothing listens on [::1]:1");
    let e = &events(&agent, pid, "connect", 1)[0];
    assert_eq!(
        e["address"],
        serde_json::json!({"family": "inet6", "ip": "::1", "port": 1})
    );
    assert_eq!(e["error"], "ECONNREFUSED");

    let (pid, _) = run_helper(&["connect-unix", "/run/vigil-no-such.sock"]);
    let e = &events(&agent, pid, "connect", 1)[0];
    assert_eq!(
        e["address"],
        serde_json::json!({"family": "unix", "path": "/run/vigil-no-such.sock"})
    );

    let free = free_port();
    let (pid, fd) = run_helper(&["serve-once", &free.to_string()]);
    assert!(fd >= 0, "accept4 returned {fd}");
    let bind = &events(&agent, pid, "bind", 1)[0];
    assert_eq!(bind["address"]["port"], free);
    let listen = &events(&agent, pid, "listen", 1)[0];
    assert_eq!(listen["backlog"], 7);
    let accept = &events(&agent, pid, "accept", 1)[0];
    assert_eq!(accept["syscall"], "accept4");
    assert_eq!(accept["fd"], fd);
    assert_eq!(accept["address"]["ip"], "127.0.0.1");
    assert_ne!(accept["address"]["port"], free, "the peer's ephemeral port");
    drop(listener);
}

fn libc_einprogress() -> i64 {
    115
}

#[test]
fn dns_queries_are_decoded_and_other_sends_only_to_new_destinations() {
    if !kernel_tests_enabled("dns_queries_are_decoded_and_other_sends_only_to_new_destinations") {
        return;
    }
    let agent = start_agent(&["--events", "--drain-interval-ms", "10"]);
    let (pid, r) = run_helper(&["dns-sendto", "c2.vigil-test.example", "53"]);
    assert!(r > 0, "sendto returned {r}");
    let e = &events(&agent, pid, "dns_query", 1)[0];
    assert_eq!(e["syscall"], "sendto");
    assert_eq!(e["dns"]["name"], "c2.vigil-test.example");
    assert_eq!(e["dns"]["qtype"], "A");
    assert_eq!(e["address"]["port"], 53);

    let (pid, r) = run_helper(&["dns-connected-sendmmsg", "pool.vigil-test.example"]);
    assert_eq!(r, 1, "one message sent");
    let e = &events(&agent, pid, "dns_query", 1)[0];
    assert_eq!(e["syscall"], "sendmmsg");
    assert_eq!(e["dns"]["name"], "pool.vigil-test.example");

    // The same payload to another port is filtered out in the kernel.
    let (pid, r) = run_helper(&["dns-sendto", "quiet.vigil-test.example", "5353"]);
    assert!(r > 0);
    agent.expect_json("the quiet helper's exit", |v| {
        v["type"] == "exit" && v["process"]["pid"] == pid
    });
    agent.settle(ENRICH_WAIT);
    let leaked = agent
        .json_lines()
        .into_iter()
        .any(|v| v["type"] == "network" && v["op"] == "dns_query" && v["process"]["pid"] == pid);
    assert!(!leaked, "a send to port 5353 must not be reported as DNS");
    // It is reported as a send to a new destination: the address, no
    // payload.
    let e = &events(&agent, pid, "send", 1)[0];
    assert_eq!(e["address"]["port"], 5353);
    assert_eq!(e["socket_type"], "dgram");
    assert!(e.get("dns").is_none());

    // Sends to one destination again and again are one event per
    // destination (fd.name_changed): 3 destinations, 4 sends each.
    let (pid, r) = run_helper(&["udp-spray", "3", "47000", "4"]);
    assert_eq!(r, 12);
    agent.expect_json("the spray helper's exit", |v| {
        v["type"] == "exit" && v["process"]["pid"] == pid
    });
    agent.settle(ENRICH_WAIT);
    let ports: Vec<Value> = (agent.json_lines().into_iter())
        .filter(|v| v["type"] == "network" && v["op"] == "send" && v["process"]["pid"] == pid)
        .map(|v| v["address"]["port"].clone())
        .collect();
    assert_eq!(ports, [47000, 47001, 47002]);
    // Sanity: the helper did run and was seen.
    assert!(
        agent
            .stdout_lines()
            .iter()
            .any(|l| l.contains("quiet.vigil-test")),
        "helper exec seen"
    );
}
