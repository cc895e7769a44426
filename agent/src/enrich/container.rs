//! Which container (or host service) a cgroup belongs to.
//!
//! The probe reports the cgroup v2 id of each event's task. The resolver
//! turns the id into the cgroup's path (`open_by_handle_at` on the cgroup2
//! mount, where a cgroup's file handle is its id; a walk of the tree where
//! that is refused) and the path into a container id and runtime, by the
//! naming conventions of each runtime and cgroup driver. Kubernetes names
//! come from the kubelet's container log links (see [`K8sLinks`]).
use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use crate::event::{ContainerInfo, K8sInfo, Runtime};

/// What a cgroup path says, before timestamps and Kubernetes names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCgroup {
    pub id: String,
    pub runtime: Runtime,
    pub unit: Option<String>,
    /// How many leading path components make up the container's own
    /// cgroup (runtimes may nest sub-cgroups below it).
    pub depth: usize,
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Runtime prefixes of systemd scopes (`<prefix>-<id>.scope`) and cgroupfs
/// directories (`<prefix>-<id>`).
const SCOPE_PREFIXES: &[(&str, Runtime)] = &[
    ("docker-", Runtime::Docker),
    ("cri-containerd-", Runtime::Containerd),
    ("crio-", Runtime::CriO),
    ("libpod-", Runtime::Podman),
    ("nerdctl-", Runtime::Containerd),
];

/// The container a cgroup path belongs to. Components are searched from
/// the leaf up, so sub-cgroups a runtime makes inside a container (podman's
/// `container`, systemd-in-a-container's `init.scope`) still resolve to it.
pub fn parse_cgroup_path(path: &str) -> ParsedCgroup {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    for (i, c) in comps.iter().enumerate().rev() {
        let name = c.strip_suffix(".scope").unwrap_or(c);
        for (prefix, runtime) in SCOPE_PREFIXES {
            if let Some(id) = name.strip_prefix(prefix) {
                // conmon, the container monitor, sits beside the container.
                if is_container_id(id) {
                    return ParsedCgroup {
                        id: id.to_string(),
                        runtime: *runtime,
                        unit: c.ends_with(".scope").then(|| c.to_string()),
                        depth: i + 1,
                    };
                }
            }
        }
        if is_container_id(c) {
            // cgroupfs driver: /docker/<id>, /kubepods/<qos>/pod<uid>/<id>,
            // containerd's /<namespace>/<id>.
            let runtime = match comps.first() {
                Some(&"docker") => Runtime::Docker,
                Some(&"libpod_parent") => Runtime::Podman,
                // kubepods (cgroupfs kubelets) and containerd namespaces.
                _ => Runtime::Containerd,
            };
            return ParsedCgroup {
                id: c.to_string(),
                runtime,
                unit: None,
                depth: i + 1,
            };
        }
        if let Some(machine) = c
            .strip_prefix("systemd-nspawn@")
            .and_then(|m| m.strip_suffix(".service"))
        {
            return ParsedCgroup {
                id: machine.replace("\\x2d", "-"),
                runtime: Runtime::SystemdNspawn,
                unit: Some(c.to_string()),
                depth: i + 1,
            };
        }
    }
    let unit = comps
        .iter()
        .rev()
        .find(|c| c.ends_with(".service") || c.ends_with(".scope"))
        .map(|c| c.to_string());
    ParsedCgroup {
        id: "host".into(),
        runtime: Runtime::Host,
        unit,
        depth: 0,
    }
}

/// Kubernetes names from the kubelet's log links: for every container it
/// runs, the kubelet keeps `/var/log/containers/<pod>_<namespace>_<container>-<id>.log`.
/// Reading them needs no credentials and no API client, works the same with
/// containerd and cri-o, and is on every kubelet host; pod labels are not in
/// it (the CRI socket or the API server would be needed for those).
#[derive(Debug, Clone)]
pub struct K8sLinks {
    pub dir: PathBuf,
}

impl K8sLinks {
    /// The pod, namespace and container of container `id`, if the kubelet
    /// runs it.
    pub fn lookup(&self, id: &str) -> Option<K8sInfo> {
        let suffix = format!("-{id}.log");
        let dir = fs::read_dir(&self.dir).ok()?;
        dir.filter_map(|d| d.ok())
            .find_map(|d| parse_k8s_log_name(d.file_name().to_str()?, &suffix))
    }
}

/// `<pod>_<namespace>_<container>-<id>.log` → names. Pod and namespace
/// names are DNS labels (no `_`), container names too.
pub fn parse_k8s_log_name(name: &str, suffix: &str) -> Option<K8sInfo> {
    let stem = name.strip_suffix(suffix)?;
    let mut parts = stem.splitn(3, '_');
    let pod = parts.next()?;
    let namespace = parts.next()?;
    let container = parts.next()?;
    if pod.is_empty() || namespace.is_empty() || container.is_empty() {
        return None;
    }
    Some(K8sInfo {
        namespace: namespace.into(),
        pod: pod.into(),
        container: container.into(),
    })
}

/// Finds cgroup paths by id on the cgroup2 mount.
#[derive(Debug)]
pub struct CgroupFs {
    mount: PathBuf,
    mount_fd: Option<fs::File>,
}

impl CgroupFs {
    /// The cgroup2 mount from `/proc/self/mountinfo`.
    pub fn detect() -> Option<CgroupFs> {
        let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
        let mount = cgroup2_mount(&info)?;
        Some(CgroupFs::at(mount))
    }

    pub fn at(mount: PathBuf) -> CgroupFs {
        let mount_fd = fs::File::open(&mount).ok();
        CgroupFs { mount, mount_fd }
    }

    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// The path (below the mount) of cgroup `id`; None when it is gone.
    pub fn path_of(&self, id: u64) -> Option<String> {
        if id <= 1 {
            return Some("/".into());
        }
        let full = self.open_by_id(id).or_else(|| self.walk_for(id))?;
        let rel = full.strip_prefix(&self.mount).ok()?;
        Some(format!("/{}", rel.display()))
    }

    /// The cgroup's directory, for its creation time.
    pub fn full_path(&self, rel: &str) -> PathBuf {
        self.mount.join(rel.trim_start_matches('/'))
    }

    /// `open_by_handle_at` with the kernfs file handle (type
    /// `FILEID_KERNFS`, 8 bytes: the cgroup id), then the path of the open
    /// directory. Needs CAP_DAC_READ_SEARCH.
    fn open_by_id(&self, id: u64) -> Option<PathBuf> {
        use std::os::fd::{AsRawFd, FromRawFd};
        #[repr(C)]
        struct Handle {
            bytes: u32,
            kind: i32,
            id: u64,
        }
        const FILEID_KERNFS: i32 = 0xfe;
        let mount_fd = self.mount_fd.as_ref()?;
        let mut h = Handle {
            bytes: 8,
            kind: FILEID_KERNFS,
            id,
        };
        // SAFETY: h is a valid `struct file_handle` with 8 bytes of handle.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                mount_fd.as_raw_fd(),
                &mut h as *mut Handle,
                libc::O_RDONLY | libc::O_CLOEXEC | libc::O_DIRECTORY,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: fd was just returned to us and is owned here.
        let dir = unsafe { fs::File::from_raw_fd(fd as i32) };
        fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd())).ok()
    }

    /// Walks the tree for a directory whose inode is `id`.
    fn walk_for(&self, id: u64) -> Option<PathBuf> {
        let mut stack = vec![self.mount.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(rd) = fs::read_dir(&dir) else {
                continue;
            };
            for d in rd.flatten() {
                if d.file_type().is_ok_and(|t| t.is_dir()) {
                    if d.metadata().is_ok_and(|m| m.ino() == id) {
                        return Some(d.path());
                    }
                    stack.push(d.path());
                }
            }
        }
        None
    }
}

/// The mount point of the cgroup2 file system in a mountinfo text.
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mp = left.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_mountinfo(mp)))
    })
}

fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t")
}

/// When the earliest process now in these cgroups started (ns since the
/// epoch): the container's start as far as can be told. cgroup v2 keeps
/// no creation time (kernfs stamps an inode when it is first looked up),
/// so it is the oldest member process; a container whose first process is
/// gone reads as started later, which can only hide drift, never invent it.
fn earliest_start_unix_ns(cgroups: &[PathBuf]) -> Option<u64> {
    let tick = crate::util::clock::tick_ns();
    let clock = crate::util::clock::BootClock::now();
    cgroups
        .iter()
        .filter_map(|c| fs::read_to_string(c.join("cgroup.procs")).ok())
        .flat_map(|procs| {
            procs
                .lines()
                .filter_map(|l| l.trim().parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (_, _, ticks) = crate::util::proc_text::parse_stat(&stat)?;
            Some(clock.to_unix_ns(ticks * tick).max(0) as u64)
        })
        .min()
}

/// Resolves cgroup ids to [`ContainerInfo`].
#[derive(Debug)]
pub struct ContainerResolver {
    pub cgroups: Option<CgroupFs>,
    pub k8s: Option<K8sLinks>,
    pub images: Option<ImageLookup>,
}

/// The container's image, from the state files its runtime writes on the
/// host (no runtime API is called, so nothing blocks on a daemon):
///
/// - containerd (CRI, Kubernetes): the OCI spec at
///   `/run/containerd/io.containerd.runtime.v2.task/<namespace>/<id>/config.json`,
///   annotation `io.kubernetes.cri.image-name`;
/// - cri-o: `/run/containers/storage/overlay-containers/<id>/userdata/config.json`
///   (or under `/var/lib/containers/storage`), annotation
///   `io.kubernetes.cri-o.ImageName`;
/// - docker: `/var/lib/docker/containers/<id>/config.v2.json`, `Config.Image`.
///
/// Podman and plain `ctr` containers record no image name there.
#[derive(Debug, Clone)]
pub struct ImageLookup {
    /// Prefix of those paths: `/`, or the host's root as the agent sees it.
    pub root: PathBuf,
}

/// State files larger than this are not read (specs are tens of KiB).
const STATE_FILE_MAX: u64 = 4 << 20;

impl ImageLookup {
    pub fn lookup(&self, runtime: Runtime, id: &str) -> Option<String> {
        let at = |p: &str| self.root.join(p.trim_start_matches('/'));
        match runtime {
            Runtime::Containerd => {
                let tasks = at("/run/containerd/io.containerd.runtime.v2.task");
                std::fs::read_dir(tasks).ok()?.flatten().find_map(|ns| {
                    let spec = read_json(&ns.path().join(id).join("config.json"))?;
                    annotation(&spec, "io.kubernetes.cri.image-name")
                })
            }
            Runtime::CriO => ["/run/containers/storage", "/var/lib/containers/storage"]
                .iter()
                .find_map(|base| {
                    let spec = read_json(
                        &at(base).join(format!("overlay-containers/{id}/userdata/config.json")),
                    )?;
                    annotation(&spec, "io.kubernetes.cri-o.ImageName")
                }),
            Runtime::Docker => {
                let cfg = read_json(&at(&format!(
                    "/var/lib/docker/containers/{id}/config.v2.json"
                )))?;
                cfg.get("Config")?
                    .get("Image")?
                    .as_str()
                    .map(str::to_string)
            }
            _ => None,
        }
    }
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    let f = std::fs::File::open(path).ok()?;
    if f.metadata().ok()?.len() > STATE_FILE_MAX {
        return None;
    }
    serde_json::from_reader(std::io::BufReader::new(f)).ok()
}

fn annotation(spec: &serde_json::Value, key: &str) -> Option<String> {
    spec.get("annotations")?
        .get(key)?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl ContainerResolver {
    pub fn resolve(&self, cgroup_id: u64) -> ContainerInfo {
        let Some(fs) = &self.cgroups else {
            return ContainerInfo::unknown(String::new());
        };
        let Some(path) = fs.path_of(cgroup_id) else {
            return ContainerInfo::unknown(String::new());
        };
        let parsed = parse_cgroup_path(&path);
        let own: String = {
            let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
            format!("/{}", comps[..parsed.depth.min(comps.len())].join("/"))
        };
        let started = (parsed.depth > 0)
            .then(|| {
                let leaf = fs.full_path(&path);
                let own = fs.full_path(&own);
                earliest_start_unix_ns(&[own, leaf])
            })
            .flatten();
        let k8s = match (&self.k8s, parsed.runtime) {
            (Some(links), Runtime::Containerd | Runtime::CriO | Runtime::Docker) => {
                links.lookup(&parsed.id)
            }
            _ => None,
        };
        let image = self
            .images
            .as_ref()
            .and_then(|images| images.lookup(parsed.runtime, &parsed.id));
        ContainerInfo {
            id: parsed.id,
            runtime: parsed.runtime,
            unit: parsed.unit,
            cgroup: path,
            image,
            k8s,
            started_unix_ns: started,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2a8c9d1e0b4a5f6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b";

    fn p(path: &str) -> (String, &'static str, Option<String>) {
        let r = parse_cgroup_path(path);
        (r.id, r.runtime.name(), r.unit)
    }

    #[test]
    fn docker_systemd_and_cgroupfs_drivers() {
        assert_eq!(
            p(&format!("/system.slice/docker-{ID}.scope")),
            (ID.into(), "docker", Some(format!("docker-{ID}.scope")))
        );
        assert_eq!(p(&format!("/docker/{ID}")), (ID.into(), "docker", None));
    }

    #[test]
    fn containerd_cri_kubepods_paths() {
        let systemd = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(p(&systemd).1, "containerd");
        assert_eq!(p(&systemd).0, ID);
        let cgroupfs = format!("/kubepods/burstable/pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/{ID}");
        assert_eq!(p(&cgroupfs), (ID.into(), "containerd", None));
        assert_eq!(p(&format!("/k8s.io/{ID}")).1, "containerd");
        assert_eq!(
            p(&format!("/system.slice/nerdctl-{ID}.scope")).1,
            "containerd"
        );
    }

    #[test]
    fn crio_paths_and_conmon_is_not_the_container() {
        let c = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podabc.slice/crio-{ID}.scope"
        );
        assert_eq!(p(&c).0, ID);
        assert_eq!(p(&c).1, "cri-o");
        let conmon = format!("/kubepods.slice/kubepods-podabc.slice/crio-conmon-{ID}.scope");
        assert_eq!(p(&conmon).1, "host", "conmon is the runtime's monitor");
    }

    #[test]
    fn podman_rootful_rootless_and_nested() {
        assert_eq!(p(&format!("/machine.slice/libpod-{ID}.scope")).1, "podman");
        let rootless = format!(
            "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"
        );
        let r = parse_cgroup_path(&rootless);
        assert_eq!((r.id.as_str(), r.runtime), (ID, Runtime::Podman));
        assert_eq!(r.depth, 5, "the container's own cgroup, not the sub-cgroup");
        assert_eq!(p(&format!("/libpod_parent/libpod-{ID}")).1, "podman");
    }

    #[test]
    fn systemd_services_and_nspawn_machines() {
        assert_eq!(
            p("/system.slice/nginx.service"),
            ("host".into(), "host", Some("nginx.service".into()))
        );
        assert_eq!(
            p("/user.slice/user-1000.slice/session-3.scope"),
            ("host".into(), "host", Some("session-3.scope".into()))
        );
        assert_eq!(
            p("/machine.slice/systemd-nspawn@web\\x2d1.service/payload"),
            (
                "web-1".into(),
                "systemd-nspawn",
                Some("systemd-nspawn@web\\x2d1.service".into())
            )
        );
        assert_eq!(p("/"), ("host".into(), "host", None));
    }

    #[test]
    fn short_or_non_hex_ids_are_not_containers() {
        assert_eq!(p("/system.slice/docker-abc.scope").1, "host");
        assert_eq!(p(&format!("/docker/{}", &ID[..63])).1, "host");
    }

    #[test]
    fn images_come_from_each_runtimes_state_files() {
        let root = tempfile::tempdir().unwrap();
        let put = |rel: &str, body: &str| {
            let p = root.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        };
        put(
            &format!("run/containerd/io.containerd.runtime.v2.task/k8s.io/{ID}/config.json"),
            r#"{"annotations": {"io.kubernetes.cri.image-name": "docker.io/library/nginx:1.25"}}"#,
        );
        put(
            &format!("var/lib/containers/storage/overlay-containers/{ID}/userdata/config.json"),
            r#"{"annotations": {"io.kubernetes.cri-o.ImageName": "quay.io/app:2"}}"#,
        );
        put(
            &format!("var/lib/docker/containers/{ID}/config.v2.json"),
            r#"{"Config": {"Image": "redis:7"}}"#,
        );
        let l = ImageLookup {
            root: root.path().to_path_buf(),
        };
        assert_eq!(
            l.lookup(Runtime::Containerd, ID).as_deref(),
            Some("docker.io/library/nginx:1.25")
        );
        assert_eq!(
            l.lookup(Runtime::CriO, ID).as_deref(),
            Some("quay.io/app:2")
        );
        assert_eq!(l.lookup(Runtime::Docker, ID).as_deref(), Some("redis:7"));
        assert_eq!(l.lookup(Runtime::Podman, ID), None);
        assert_eq!(l.lookup(Runtime::Containerd, "0123"), None);
        put(
            &format!("var/lib/docker/containers/{ID}/config.v2.json"),
            "{not json",
        );
        assert_eq!(l.lookup(Runtime::Docker, ID), None);
    }

    #[test]
    fn kubelet_log_link_names() {
        let suffix = format!("-{ID}.log");
        let name = format!("web-7d4b9c-xk2lp_shop_nginx{suffix}");
        assert_eq!(
            parse_k8s_log_name(&name, &suffix),
            Some(K8sInfo {
                namespace: "shop".into(),
                pod: "web-7d4b9c-xk2lp".into(),
                container: "nginx".into(),
            })
        );
        assert_eq!(parse_k8s_log_name("x.log", &suffix), None);
    }

    #[test]
    fn finds_cgroup2_mount_in_mountinfo() {
        let info = "25 30 0:22 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n26 30 0:23 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(
            cgroup2_mount(info),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(cgroup2_mount("1 2 0:1 / / rw - ext4 /dev/sda rw"), None);
    }
}
