//! The JSON shape of an alert, shared by the agent's stdout output and the
//! collector's `query --json`, so scripts parse one format.
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::v1::{Activity, Alert, Ancestor, ContainerInfo, HostInfo, ProcessInfo};

/// RFC 3339 UTC time with nanoseconds; negative times clamp to the epoch.
pub fn rfc3339(unix_ns: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_nanos(unix_ns.max(0) as u64);
    humantime::format_rfc3339_nanos(t).to_string()
}

pub fn host_json(h: &HostInfo) -> Value {
    json!({
        "hostname": h.hostname,
        "machine_id": h.machine_id,
        "kernel": h.kernel,
        "agent_version": h.agent_version,
    })
}

pub fn process_json(p: &ProcessInfo) -> Value {
    json!({
        "pid": p.pid,
        "tid": p.tid,
        "ppid": p.ppid,
        "uid": p.uid,
        "gid": p.gid,
        "comm": p.comm,
        "exe": p.exe,
        "argv": p.argv,
        "argv_truncated": p.argv_truncated,
        "cgroup_id": p.cgroup_id,
        "euid": p.euid,
        "egid": p.egid,
        "loginuid": p.loginuid,
        "mnt_ns": p.mnt_ns,
        "pid_ns": p.pid_ns,
        "start_boottime_ns": p.start_boottime_ns,
        "cwd": p.cwd,
        "user": p.user,
        "group": p.group,
        "login_user": p.login_user,
        "proc_id": p.proc_id,
        "parent_proc_id": p.parent_proc_id,
        "start": (p.start_unix_ns > 0).then(|| rfc3339(p.start_unix_ns)),
        "executable": p.executable.as_ref().map(|x| json!({
            "path": x.path,
            "dev": x.dev,
            "inode": x.inode,
            "size": x.size,
            "sha256": x.sha256,
            "deleted": x.deleted,
            "memfd": x.memfd,
            "drift": x.drift,
        })),
    })
}

pub fn ancestor_json(a: &Ancestor) -> Value {
    let mut v = json!({"pid": a.pid, "exe": a.exe, "argv": a.argv, "proc_id": a.proc_id});
    if !a.comm.is_empty() {
        v["comm"] = a.comm.clone().into();
    }
    v
}

pub fn container_json(c: &ContainerInfo) -> Value {
    let mut v = json!({
        "id": c.id,
        "runtime": c.runtime,
        "cgroup": c.cgroup,
    });
    if !c.unit.is_empty() {
        v["unit"] = json!(c.unit);
    }
    if !c.image.is_empty() {
        v["image"] = json!(c.image);
    }
    if !c.k8s_pod.is_empty() {
        v["k8s"] = json!({
            "namespace": c.k8s_namespace,
            "pod": c.k8s_pod,
            "container": c.k8s_container,
        });
    }
    v
}

/// One alert as a JSON object with `"type": "alert"`.
pub fn alert_json(a: &Alert) -> Value {
    let mut v = json!({
        "type": "alert",
        "id": a.id,
        "time": rfc3339(a.time_unix_ns),
        "time_unix_ns": a.time_unix_ns,
        "rule": a.rule,
        "severity": a.severity().name(),
        "output": a.output,
        "event_type": a.event_type,
        "tags": a.tags,
        "count": a.count.max(1),
        "fields": a.fields,
    });
    if !a.group_key.is_empty() {
        v["group_key"] = json!(a.group_key);
    }
    if !a.group_id.is_empty() {
        v["group_id"] = json!(a.group_id);
    }
    if !a.silenced_by.is_empty() {
        v["silenced_by"] = json!(a.silenced_by);
    }
    if let Some(p) = &a.process {
        v["process"] = process_json(p);
    }
    v["ancestry"] = a.ancestry.iter().map(ancestor_json).collect();
    if let Some(c) = &a.container {
        v["container"] = container_json(c);
    }
    if let Some(h) = &a.host {
        v["host"] = host_json(h);
    }
    if !a.context.is_empty() {
        v["context"] = a.context.iter().map(activity_json).collect();
    }
    v
}

/// One activity event as a JSON object with `"type": "activity"`; fields
/// that do not apply to its kind are left out.
pub fn activity_json(a: &Activity) -> Value {
    let mut v = json!({
        "type": "activity",
        "id": a.id,
        "time": rfc3339(a.time_unix_ns),
        "time_unix_ns": a.time_unix_ns,
        "kind": a.kind().as_str_name().trim_start_matches("ACTIVITY_KIND_").to_ascii_lowercase(),
        "event_type": a.event_type,
    });
    let mut put = |k: &str, val: Value, present: bool| {
        if present {
            v[k] = val;
        }
    };
    put("protocol", json!(a.protocol), !a.protocol.is_empty());
    put("local_addr", json!(a.local_addr), !a.local_addr.is_empty());
    put("local_port", json!(a.local_port), a.local_port != 0);
    put(
        "remote_addr",
        json!(a.remote_addr),
        !a.remote_addr.is_empty(),
    );
    put("remote_port", json!(a.remote_port), a.remote_port != 0);
    put("domain", json!(a.domain), !a.domain.is_empty());
    put("path", json!(a.path), !a.path.is_empty());
    put(
        "exit_code",
        json!(a.exit_code),
        a.kind() == crate::v1::ActivityKind::Exit,
    );
    put("result", json!(a.result), a.result != 0);
    put("detail", json!(a.detail), !a.detail.is_empty());
    if let Some(p) = &a.process {
        v["process"] = process_json(p);
    }
    if let Some(c) = &a.container {
        v["container"] = container_json(c);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::Severity;

    #[test]
    fn alert_json_has_process_and_time() {
        let a = Alert {
            id: "x".into(),
            rule: "r".into(),
            severity: Severity::Warning as i32,
            time_unix_ns: 1_700_000_000_123_456_789,
            process: Some(ProcessInfo {
                pid: 7,
                exe: "/tmp/a".into(),
                argv: vec!["/tmp/a".into(), "-x".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = alert_json(&a);
        assert_eq!(v["severity"], "warning");
        assert_eq!(v["process"]["pid"], 7);
        assert_eq!(v["process"]["argv"][1], "-x");
        assert_eq!(v["time"], "2023-11-14T22:13:20.123456789Z");
        assert!(v.get("host").is_none());
    }
}
