//! tracefs: mounted by the agent when absent, and the source of tracepoint
//! record layouts (`events/<category>/<name>/format`).
use std::{
    ffi::CString,
    fs, io,
    path::{Path, PathBuf},
};

const MOUNT_POINTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error("tracefs is not mounted and mounting it on /sys/kernel/tracing failed: {0}")]
    Mount(io::Error),
    #[error("cannot read tracepoint format {path}: {source}")]
    Format {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Returns where tracefs is mounted, mounting it on `/sys/kernel/tracing`
/// when no mount is found, as aya looks only at those two places.
pub fn ensure_mounted() -> Result<PathBuf, TracefsError> {
    if let Some(p) = find_mounted() {
        return Ok(p);
    }
    if let Err(e) = mount_tracefs(Path::new(MOUNT_POINTS[0])) {
        // Another process (a second agent starting at the same moment)
        // may have mounted it in between: EBUSY then means it is there.
        return find_mounted().ok_or(TracefsError::Mount(e));
    }
    tracing::info!(
        path = MOUNT_POINTS[0],
        "tracefs was not mounted; mounted it"
    );
    Ok(PathBuf::from(MOUNT_POINTS[0]))
}

fn find_mounted() -> Option<PathBuf> {
    MOUNT_POINTS
        .iter()
        .map(Path::new)
        .find(|p| p.join("events").is_dir())
        .map(Path::to_path_buf)
}

fn mount_tracefs(target: &Path) -> io::Result<()> {
    let src = CString::new("tracefs").expect("static");
    let tgt = CString::new(target.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    // SAFETY: all pointers are valid NUL-terminated strings for the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            src.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One field of a tracepoint record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: u32,
    pub size: u32,
}

/// Reads and parses `events/<category>/<event>/format`.
pub fn read_format(root: &Path, category: &str, event: &str) -> Result<Vec<Field>, TracefsError> {
    let path = root
        .join("events")
        .join(category)
        .join(event)
        .join("format");
    let text = fs::read_to_string(&path).map_err(|source| TracefsError::Format {
        path: path.display().to_string(),
        source,
    })?;
    Ok(parse_format(&text))
}

/// Parses the `field:<decl>; offset:N; size:N; signed:N;` lines of a
/// tracepoint format file; the field name is the last word of the
/// declaration, without any array suffix.
pub fn parse_format(text: &str) -> Vec<Field> {
    text.lines().filter_map(parse_field_line).collect()
}

fn parse_field_line(line: &str) -> Option<Field> {
    let mut decl = None;
    let mut offset = None;
    let mut size = None;
    for part in line.trim().split(';') {
        let part = part.trim();
        if let Some(d) = part.strip_prefix("field:") {
            decl = Some(d.trim());
        } else if let Some(o) = part.strip_prefix("offset:") {
            offset = o.trim().parse().ok();
        } else if let Some(s) = part.strip_prefix("size:") {
            size = s.trim().parse().ok();
        }
    }
    let name = decl?.rsplit(' ').next()?;
    let name = name.split('[').next()?.to_string();
    Some(Field {
        name,
        offset: offset?,
        size: size?,
    })
}

/// Checks that a `syscalls:sys_enter_*` record has the layout the probe
/// reads: `__syscall_nr` at 8 and argument `i` at `16 + 8 * i`.
pub fn check_sys_enter_layout(fields: &[Field]) -> Result<(), String> {
    if field_offset(fields, "__syscall_nr") != Some(8) {
        return Err("__syscall_nr is not at offset 8".into());
    }
    let args = fields
        .iter()
        .skip_while(|f| f.name != "__syscall_nr")
        .skip(1);
    for (i, f) in args.enumerate() {
        if f.offset as usize != 16 + 8 * i || f.size != 8 {
            return Err(format!(
                "argument {i} ({}) is at offset {} size {}, expected {} size 8",
                f.name,
                f.offset,
                f.size,
                16 + 8 * i
            ));
        }
    }
    Ok(())
}

/// Checks that a `syscalls:sys_exit_*` record has `ret` at offset 16.
pub fn check_sys_exit_layout(fields: &[Field]) -> Result<(), String> {
    match field_offset(fields, "ret") {
        Some(16) => Ok(()),
        other => Err(format!("ret is at {other:?}, expected 16")),
    }
}

/// Offset of `name` in a parsed format.
pub fn field_offset(fields: &[Field], name: &str) -> Option<u32> {
    fields.iter().find(|f| f.name == name).map(|f| f.offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXEC: &str = "name: sched_process_exec
ID: 310
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;
\tfield:pid_t pid;\toffset:12;\tsize:4;\tsigned:1;
\tfield:char comm[16];\toffset:16;\tsize:16;\tsigned:0;
\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;

print fmt: \"filename=%s pid=%d\", __get_str(filename), REC->pid
";

    #[test]
    fn parses_fields_data_loc_and_arrays() {
        let f = parse_format(EXEC);
        assert_eq!(field_offset(&f, "filename"), Some(8));
        assert_eq!(field_offset(&f, "pid"), Some(12));
        assert_eq!(field_offset(&f, "comm"), Some(16));
        assert_eq!(field_offset(&f, "group_dead"), Some(32));
        assert_eq!(field_offset(&f, "old_pid"), None);
        assert_eq!(f.iter().find(|x| x.name == "comm").unwrap().size, 16);
    }

    #[test]
    fn syscall_record_layouts() {
        let enter = parse_format(
            "\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\tfield:int dfd;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;\n",
        );
        assert_eq!(check_sys_enter_layout(&enter), Ok(()));
        let odd = parse_format("\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\tfield:int dfd;\toffset:12;\tsize:4;\tsigned:0;\n");
        assert!(check_sys_enter_layout(&odd).unwrap_err().contains("dfd"));
        let exit = parse_format("\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\tfield:long ret;\toffset:16;\tsize:8;\tsigned:1;\n");
        assert_eq!(check_sys_exit_layout(&exit), Ok(()));
    }

    #[test]
    fn missing_format_file_names_the_path() {
        let err = read_format(Path::new("/nonexistent"), "sched", "x").unwrap_err();
        assert!(err
            .to_string()
            .contains("/nonexistent/events/sched/x/format"));
    }
}
