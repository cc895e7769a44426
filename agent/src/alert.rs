//! Building alerts from a matched, enriched event.
use vigil_proto::v1::{Alert, Ancestor, ContainerInfo, ExecutableInfo, ProcessInfo};

use crate::{
    event::Event,
    rules::{extract::extract, matcher::render, RuleMeta},
    util::{clock::BootClock, procid::ProcIds},
};

fn text(s: &Option<std::sync::Arc<str>>) -> String {
    s.as_deref().unwrap_or_default().to_string()
}

/// The alert `rule` raises for `ev`, with a fresh id; `count` > 1 for a
/// dedup summary. `ids` names its processes fleet-wide.
pub fn build(rule: &RuleMeta, ev: &Event, count: u64, ids: &ProcIds) -> Alert {
    let (mut output, fields) = rule.output.render_with_fields(ev);
    if count > 1 {
        output = format!("{output} (repeated {count} times)");
    }
    Alert {
        id: uuid::Uuid::new_v4().to_string(),
        rule: rule.name.clone(),
        severity: rule.severity as i32,
        output,
        fields: fields.into_iter().collect(),
        count,
        group_key: rule
            .key
            .iter()
            .map(|(name, f)| (name.clone(), render(extract(ev, f).as_ref()).into_owned()))
            .collect(),
        group_id: String::new(),
        silenced_by: String::new(),
        time_unix_ns: ev.time_unix_ns,
        event_type: ev.type_name().to_string(),
        process: Some(process_info(ev, ids)),
        tags: rule.tags.clone(),
        host: None,
        ancestry: ev.ancestry.iter().map(|a| ancestor(a, ids)).collect(),
        container: ev.container.as_deref().map(container_info),
        context: Vec::new(),
    }
}

/// The wire form of one creator.
pub fn ancestor(a: &crate::event::Ancestor, ids: &ProcIds) -> Ancestor {
    Ancestor {
        pid: a.pid,
        comm: a.comm.as_deref().unwrap_or_default().to_string(),
        exe: text(&a.exe),
        argv: a.argv.to_vec(),
        proc_id: ids.of(a.pid, Some(a.start_ns)),
    }
}

/// The wire form of where a process runs.
pub fn container_info(c: &crate::event::ContainerInfo) -> ContainerInfo {
    ContainerInfo {
        id: c.id.clone(),
        runtime: c.runtime.name().to_string(),
        unit: c.unit.clone().unwrap_or_default(),
        cgroup: c.cgroup.clone(),
        k8s_namespace: c
            .k8s
            .as_ref()
            .map(|k| k.namespace.clone())
            .unwrap_or_default(),
        k8s_pod: c.k8s.as_ref().map(|k| k.pod.clone()).unwrap_or_default(),
        k8s_container: c
            .k8s
            .as_ref()
            .map(|k| k.container.clone())
            .unwrap_or_default(),
        image: c.image.clone().unwrap_or_default(),
    }
}

/// The event's process: exe and argv from the process table (so every
/// event type names them), falling back to the exec record itself.
pub fn process_info(ev: &Event, ids: &ProcIds) -> ProcessInfo {
    let p = &ev.process;
    let d = p.detail.as_deref();
    let exe = ev.exe().unwrap_or_default().to_string();
    let (argv, argv_truncated) = ev
        .argv()
        .map_or((Vec::new(), false), |(a, t)| (a.to_vec(), t));
    ProcessInfo {
        pid: p.pid,
        tid: p.tid,
        ppid: p.ppid,
        uid: p.uid,
        gid: p.gid,
        comm: p.comm.clone(),
        executable: d.map(|d| ExecutableInfo {
            path: exe.clone(),
            dev: d.exe_file.map_or(0, |f| f.dev),
            inode: d.exe_file.map_or(0, |f| f.ino),
            size: d.exe_file.map_or(0, |f| f.size),
            sha256: text(&d.exe_sha256),
            deleted: d.exe_deleted,
            memfd: d.exe_memfd,
            drift: d.exe_drift,
        }),
        exe,
        argv,
        argv_truncated,
        cgroup_id: p.cgroup_id,
        euid: p.euid.unwrap_or(0),
        egid: p.egid.unwrap_or(0),
        loginuid: p.loginuid.unwrap_or(-1),
        mnt_ns: p.mnt_ns.unwrap_or(0),
        pid_ns: p.pid_ns.unwrap_or(0),
        start_boottime_ns: p.start_boottime_ns.unwrap_or(0),
        cwd: d.map(|d| text(&d.cwd)).unwrap_or_default(),
        user: d.map(|d| text(&d.user)).unwrap_or_default(),
        group: d.map(|d| text(&d.group)).unwrap_or_default(),
        login_user: d.map(|d| text(&d.login_user)).unwrap_or_default(),
        proc_id: ids.of(p.pid, p.start_boottime_ns),
        parent_proc_id: parent_proc_id(ev, ids),
        start_unix_ns: start_unix_ns(p.start_boottime_ns),
    }
}

/// A process start (CLOCK_BOOTTIME) as wall-clock ns; 0 when unknown.
pub fn start_unix_ns(start_boottime_ns: Option<u64>) -> i64 {
    start_boottime_ns.map_or(0, |s| BootClock::now().to_unix_ns(s))
}

/// The creator's id (the process that created it, not a reaper it was
/// reparented to), from the ancestry; empty when the table lacks it.
pub fn parent_proc_id(ev: &Event, ids: &ProcIds) -> String {
    ev.ancestry
        .first()
        .map(|a| ids.of(a.pid, Some(a.start_ns)))
        .unwrap_or_default()
}
