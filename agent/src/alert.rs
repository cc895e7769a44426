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
        EventBody::Exec(x) => (x.filename.clone(), x.argv.clone(), x.argv_truncated),
        EventBody::Fork(_) | EventBody::Exit(_) => (String::new(), Vec::new(), false),
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
        }),
        tags: rule.tags.clone(),
        host: None,
    }
}
