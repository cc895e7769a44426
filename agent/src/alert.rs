//! Building alerts from a matched event.
use vigil_proto::v1::{Alert, ProcessInfo};

use crate::{
    event::{Event, EventBody},
    rules::RuleMeta,
};

/// The alert `rule` raises for `ev`, with a fresh id.
pub fn build(rule: &RuleMeta, ev: &Event) -> Alert {
    let p = &ev.process;
    let (exe, argv, argv_truncated) = match &ev.body {
        EventBody::Exec(x) => (x.exe_path().to_string(), x.argv.clone(), x.argv_truncated),
        EventBody::Fork(_)
        | EventBody::Exit(_)
        | EventBody::File(_)
        | EventBody::Control(_)
        | EventBody::Network(_) => (String::new(), Vec::new(), false),
    };
    Alert {
        id: uuid::Uuid::new_v4().to_string(),
        rule: rule.name.clone(),
        severity: rule.severity as i32,
        output: rule.output.render(ev),
        time_unix_ns: ev.time_unix_ns,
        event_type: ev.type_name().to_string(),
        process: Some(ProcessInfo {
            pid: p.pid,
            tid: p.tid,
            ppid: p.ppid,
            uid: p.uid,
            gid: p.gid,
            comm: p.comm.clone(),
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
        }),
        tags: rule.tags.clone(),
        host: None,
    }
}
