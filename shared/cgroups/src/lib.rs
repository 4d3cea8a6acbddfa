//! berth's cgroup layer, synchronous and std-only so the shim stays small.
//!
//! A container's cgroup is `berth/<id>` below the root of each hierarchy:
//! - cgroup v1 (and the hybrid layout): one directory per controller, for `memory`, `cpu`,
//!   `cpuacct`, `pids`, `freezer` and `devices` (co-mounted controllers share one directory);
//! - pure cgroup v2: one directory below the unified mount, with the `memory`, `cpu` and `pids`
//!   controllers enabled in `berth/`'s parent and in `berth/`; device rules are a BPF program
//!   attached to it (`devices.rs`).
//!
//! The layout is detected from `/proc/self/mountinfo`: v1 when a v1 `memory` hierarchy is
//! mounted, else v2 when a cgroup2 file system is mounted.

pub mod devices;

pub use devices::{Access, DeviceRule, DeviceType};
use std::fs;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The directory below each hierarchy's root that holds berth's containers.
pub const PARENT: &str = "berth";

/// Controllers berth uses on cgroup v1.
pub const V1_CONTROLLERS: [&str; 6] = ["memory", "cpu", "cpuacct", "pids", "freezer", "devices"];

/// The v1 controllers a container cannot go without: its limits, and its device rules
/// (without the `devices` controller root in a container could open any host device).
const V1_REQUIRED: [&str; 4] = ["memory", "pids", "cpu", "devices"];

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroups: no v1 memory hierarchy and no cgroup2 mount found in /proc/self/mountinfo")]
    NoHierarchy,
    #[error("cgroups: v1 controller {0} is not mounted")]
    MissingController(String),
    #[error("cgroups: {step} {path}: {source}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cgroups: container id {0:?} is not a valid cgroup name")]
    BadId(String),
    #[error("cgroups: {step}: {source}")]
    Bpf {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cgroups: {path} still has processes after {waited:?}")]
    Busy { path: PathBuf, waited: Duration },
}

fn io_err<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        step,
        path: path.to_path_buf(),
        source,
    }
}

/// Which cgroup layout the host has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// v1 or hybrid: mount point of each controller berth uses.
    V1 { mounts: Vec<(String, PathBuf)> },
    /// Pure v2: the unified mount point.
    V2 { root: PathBuf },
}

impl Layout {
    /// Detect the layout of this host from `/proc/self/mountinfo`.
    pub fn detect() -> Result<Layout, CgroupError> {
        let p = Path::new("/proc/self/mountinfo");
        let text = fs::read_to_string(p).map_err(io_err("read", p))?;
        Self::from_mountinfo(&text)
    }

    /// Parse a mountinfo text (one mount per line).
    pub fn from_mountinfo(text: &str) -> Result<Layout, CgroupError> {
        let mut v1: Vec<(String, PathBuf)> = Vec::new();
        let mut v2: Option<PathBuf> = None;
        for line in text.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            if left.len() < 5 || right.len() < 3 {
                continue;
            }
            let mount_point = PathBuf::from(unescape_mountinfo(left[4]));
            match right[0] {
                "cgroup" => {
                    for opt in right[2].split(',') {
                        if V1_CONTROLLERS.contains(&opt) && !v1.iter().any(|(c, _)| c == opt) {
                            v1.push((opt.to_string(), mount_point.clone()));
                        }
                    }
                }
                "cgroup2" if v2.is_none() => v2 = Some(mount_point),
                _ => {}
            }
        }
        if v1.iter().any(|(c, _)| c == "memory") {
            Ok(Layout::V1 { mounts: v1 })
        } else if let Some(root) = v2 {
            Ok(Layout::V2 { root })
        } else {
            Err(CgroupError::NoHierarchy)
        }
    }

    pub fn is_v2(&self) -> bool {
        matches!(self, Layout::V2 { .. })
    }
}

/// A mountinfo field with its `\ooo` escapes (spaces, tabs, newlines, backslashes, commas
/// in options) decoded.
pub fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(oct, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Resource limits of one container's cgroup.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    /// CPUs as a fraction (`0.5` = 50 ms per 100 ms period).
    pub cpus: Option<f64>,
    /// Relative weight, Docker's `--cpu-shares` scale (2..262144, default 1024).
    pub cpu_shares: Option<u64>,
    /// Maximum number of tasks; `None` = unlimited.
    pub pids_max: Option<u64>,
}

pub const CPU_PERIOD_US: u64 = 100_000;

/// Usage figures of one container, for `berth stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub memory_bytes: u64,
    /// `None` when unlimited.
    pub memory_limit: Option<u64>,
    pub cpu_usage_ns: u64,
    pub pids: u64,
    /// `None` when unlimited.
    pub pids_limit: Option<u64>,
    pub oom_kills: u64,
}

/// One container's cgroup (`berth/<id>` in every hierarchy berth uses).
#[derive(Debug, Clone)]
pub struct Cgroup {
    layout: Layout,
    id: String,
    /// (controller, directory) with directories deduplicated; on v2 one entry named `unified`.
    dirs: Vec<(String, PathBuf)>,
}

fn check_id(id: &str) -> Result<(), CgroupError> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    {
        return Err(CgroupError::BadId(id.to_string()));
    }
    Ok(())
}

impl Cgroup {
    /// The cgroup of container `id` in `layout`, whether or not it exists.
    pub fn at(layout: &Layout, id: &str) -> Result<Cgroup, CgroupError> {
        check_id(id)?;
        let mut dirs: Vec<(String, PathBuf)> = Vec::new();
        match layout {
            Layout::V1 { mounts } => {
                for c in V1_CONTROLLERS {
                    let Some((_, mp)) = mounts.iter().find(|(n, _)| n == c) else {
                        if V1_REQUIRED.contains(&c) {
                            return Err(CgroupError::MissingController(c.to_string()));
                        }
                        continue;
                    };
                    let d = mp.join(PARENT).join(id);
                    if !dirs.iter().any(|(_, p)| *p == d) {
                        dirs.push((c.to_string(), d));
                    }
                }
            }
            Layout::V2 { root } => dirs.push(("unified".into(), root.join(PARENT).join(id))),
        }
        Ok(Cgroup {
            layout: layout.clone(),
            id: id.to_string(),
            dirs,
        })
    }

    /// The existing cgroup of container `id` on this host.
    pub fn open(id: &str) -> Result<Cgroup, CgroupError> {
        let cg = Self::at(&Layout::detect()?, id)?;
        let d = &cg.dirs[0].1;
        if !d.is_dir() {
            return Err(CgroupError::Io {
                step: "open",
                path: d.clone(),
                source: io::Error::from(ErrorKind::NotFound),
            });
        }
        Ok(cg)
    }

    /// Create the cgroup of container `id` with `limits`. On error nothing created stays.
    pub fn create(layout: &Layout, id: &str, limits: &Limits) -> Result<Cgroup, CgroupError> {
        let cg = Self::at(layout, id)?;
        let mut made: Vec<PathBuf> = Vec::new();
        let r = cg.create_dirs(&mut made).and_then(|_| cg.apply(limits));
        if let Err(e) = r {
            for d in made.iter().rev() {
                let _ = fs::remove_dir(d);
            }
            return Err(e);
        }
        Ok(cg)
    }

    fn create_dirs(&self, made: &mut Vec<PathBuf>) -> Result<(), CgroupError> {
        if let Layout::V2 { root } = &self.layout {
            enable_v2_controllers(root)?;
            let parent = root.join(PARENT);
            if !parent.is_dir() {
                match fs::create_dir(&parent) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_err("mkdir", &parent)(e)),
                }
            }
            enable_v2_controllers(&parent)?;
        }
        for (_, d) in &self.dirs {
            if let Some(parent) = d.parent() {
                match fs::create_dir(parent) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_err("mkdir", parent)(e)),
                }
            }
            fs::create_dir(d).map_err(io_err("mkdir", d))?;
            made.push(d.clone());
        }
        Ok(())
    }

    /// The directory of `controller` (`memory`, `cpu`, `cpuacct`, `pids`, `freezer`); on v2
    /// the one directory whatever the controller.
    pub fn dir(&self, controller: &str) -> Option<&Path> {
        if self.layout.is_v2() {
            return Some(&self.dirs[0].1);
        }
        match &self.layout {
            Layout::V1 { mounts } => {
                let mp = &mounts.iter().find(|(n, _)| n == controller)?.1;
                let d = mp.join(PARENT).join(&self.id);
                self.dirs
                    .iter()
                    .find(|(_, p)| *p == d)
                    .map(|(_, p)| p.as_path())
            }
            Layout::V2 { .. } => None,
        }
    }

    /// Every directory of this cgroup (one per distinct hierarchy).
    pub fn dirs(&self) -> impl Iterator<Item = &Path> {
        self.dirs.iter().map(|(_, p)| p.as_path())
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn write(&self, controller: &str, file: &str, value: &str) -> Result<(), CgroupError> {
        let Some(d) = self.dir(controller) else {
            return Err(CgroupError::MissingController(controller.to_string()));
        };
        let p = d.join(file);
        fs::write(&p, value).map_err(io_err("write", &p))
    }

    fn read(&self, controller: &str, file: &str) -> Result<String, CgroupError> {
        let Some(d) = self.dir(controller) else {
            return Err(CgroupError::MissingController(controller.to_string()));
        };
        let p = d.join(file);
        fs::read_to_string(&p).map_err(io_err("read", &p))
    }

    /// Write `limits` into the cgroup.
    pub fn apply(&self, limits: &Limits) -> Result<(), CgroupError> {
        let v2 = self.layout.is_v2();
        if let Some(m) = limits.memory_bytes {
            if v2 {
                self.write("memory", "memory.max", &m.to_string())?;
                let swap = self.dir("memory").unwrap().join("memory.swap.max");
                if swap.exists() {
                    fs::write(&swap, "0").map_err(io_err("write", &swap))?;
                }
            } else {
                self.write("memory", "memory.limit_in_bytes", &m.to_string())?;
                let sw = self
                    .dir("memory")
                    .unwrap()
                    .join("memory.memsw.limit_in_bytes");
                if sw.exists() {
                    fs::write(&sw, m.to_string()).map_err(io_err("write", &sw))?;
                }
            }
        }
        if let Some(c) = limits.cpus {
            let quota = (c * CPU_PERIOD_US as f64).round() as u64;
            if v2 {
                self.write("cpu", "cpu.max", &format!("{quota} {CPU_PERIOD_US}"))?;
            } else {
                self.write("cpu", "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
                self.write("cpu", "cpu.cfs_quota_us", &quota.to_string())?;
            }
        }
        if let Some(s) = limits.cpu_shares {
            if v2 {
                self.write("cpu", "cpu.weight", &shares_to_weight(s).to_string())?;
            } else {
                self.write("cpu", "cpu.shares", &s.to_string())?;
            }
        }
        match limits.pids_max {
            Some(n) => self.write("pids", "pids.max", &n.to_string())?,
            None => self.write("pids", "pids.max", "max")?,
        }
        Ok(())
    }

    /// Allow the cgroup's processes only the devices `rules` allow: on v1 every device is
    /// denied (`a` to `devices.deny`), then each rule allowed; on v2 a device program made of
    /// the rules is attached. On v1 a process inside is refused every device between the two
    /// steps: call it before the processes that need devices are inside.
    pub fn set_devices(&self, rules: &[DeviceRule]) -> Result<(), CgroupError> {
        if self.layout.is_v2() {
            return devices::attach_program(&self.dirs[0].1, rules);
        }
        self.write("devices", "devices.deny", "a")?;
        self.allow_devices(rules)
    }

    /// Allow the devices of `rules` beyond what is allowed already (cgroup v1 only: on v2 the
    /// whole set is one program, given to [`Cgroup::set_devices`]).
    pub fn allow_devices(&self, rules: &[DeviceRule]) -> Result<(), CgroupError> {
        if self.layout.is_v2() {
            return Err(CgroupError::Io {
                step: "add device rules to",
                path: self.dirs[0].1.clone(),
                source: io::Error::from(ErrorKind::Unsupported),
            });
        }
        for r in rules {
            // One rule a write: the kernel parses one per call.
            self.write("devices", "devices.allow", &r.v1_line())?;
        }
        Ok(())
    }

    /// Move process `pid` into the cgroup (every hierarchy).
    pub fn add(&self, pid: i32) -> Result<(), CgroupError> {
        for (_, d) in &self.dirs {
            let p = d.join("cgroup.procs");
            fs::write(&p, pid.to_string()).map_err(io_err("join", &p))?;
        }
        Ok(())
    }

    /// Pids of the processes in the cgroup.
    pub fn procs(&self) -> Result<Vec<i32>, CgroupError> {
        let p = self.dirs[0].1.join("cgroup.procs");
        let t = fs::read_to_string(&p).map_err(io_err("read", &p))?;
        Ok(t.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// How many times the kernel's OOM killer killed a process of this cgroup.
    pub fn oom_kills(&self) -> Result<u64, CgroupError> {
        if self.layout.is_v2() {
            let t = self.read("memory", "memory.events")?;
            return Ok(keyed(&t, "oom_kill").unwrap_or(0));
        }
        let t = self.read("memory", "memory.oom_control")?;
        if let Some(n) = keyed(&t, "oom_kill") {
            return Ok(n);
        }
        // Kernels before 4.13 have no oom_kill counter: the limit being hit is the best sign.
        Ok(self
            .read("memory", "memory.failcnt")?
            .trim()
            .parse::<u64>()
            .map(|n| n.min(1))
            .unwrap_or(0))
    }

    pub fn stats(&self) -> Result<Stats, CgroupError> {
        let num = |s: String| s.trim().parse::<u64>().ok();
        let limit = |s: String| {
            let s = s.trim().to_string();
            if s == "max" {
                None
            } else {
                s.parse::<u64>().ok().filter(|&n| n < (1u64 << 62))
            }
        };
        let mut st = Stats {
            oom_kills: self.oom_kills()?,
            pids: num(self.read("pids", "pids.current")?).unwrap_or(0),
            pids_limit: limit(self.read("pids", "pids.max")?),
            ..Stats::default()
        };
        if self.layout.is_v2() {
            st.memory_bytes = num(self.read("memory", "memory.current")?).unwrap_or(0);
            st.memory_limit = limit(self.read("memory", "memory.max")?);
            st.cpu_usage_ns = keyed(&self.read("cpu", "cpu.stat")?, "usage_usec")
                .unwrap_or(0)
                .saturating_mul(1000);
        } else {
            st.memory_bytes = num(self.read("memory", "memory.usage_in_bytes")?).unwrap_or(0);
            st.memory_limit = limit(self.read("memory", "memory.limit_in_bytes")?);
            st.cpu_usage_ns = match self.dir("cpuacct") {
                Some(_) => num(self.read("cpuacct", "cpuacct.usage")?).unwrap_or(0),
                None => 0,
            };
        }
        Ok(st)
    }

    /// Freeze every process of the container.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        self.set_frozen(true)
    }

    pub fn thaw(&self) -> Result<(), CgroupError> {
        self.set_frozen(false)
    }

    fn set_frozen(&self, on: bool) -> Result<(), CgroupError> {
        if self.layout.is_v2() {
            self.write("freezer", "cgroup.freeze", if on { "1" } else { "0" })
        } else {
            self.write(
                "freezer",
                "freezer.state",
                if on { "FROZEN" } else { "THAWED" },
            )
        }
    }

    /// SIGKILL every process in the cgroup.
    pub fn kill(&self) -> Result<(), CgroupError> {
        if self.layout.is_v2() {
            let p = self.dirs[0].1.join("cgroup.kill");
            if p.exists() {
                return fs::write(&p, "1").map_err(io_err("write", &p));
            }
        }
        for pid in self.procs()? {
            // SAFETY: kill(2) with a pid read from the cgroup and a constant signal.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // Frozen tasks die only once thawed.
        if self.dir("freezer").is_some() {
            let _ = self.thaw();
        }
        Ok(())
    }

    /// Give the cgroup another id, keeping its processes (cgroup v1 only: v2 has no rename).
    /// A process already inside stays inside, so a child it forks is born in the cgroup and
    /// never migrates: the standby shim's pre-init joins a placeholder cgroup while idle, and
    /// the container's init is created inside it once the placeholder takes the container's
    /// id. On error the directories renamed so far take their old name back.
    pub fn rename(&self, new_id: &str) -> Result<Cgroup, CgroupError> {
        let to = Cgroup::at(&self.layout, new_id)?;
        if self.layout.is_v2() {
            return Err(CgroupError::Io {
                step: "rename",
                path: self.dirs[0].1.clone(),
                source: io::Error::from(ErrorKind::Unsupported),
            });
        }
        for (i, ((_, a), (_, b))) in self.dirs.iter().zip(&to.dirs).enumerate() {
            if let Err(e) = fs::rename(a, b) {
                for ((_, a), (_, b)) in self.dirs.iter().zip(&to.dirs).take(i) {
                    let _ = fs::rename(b, a);
                }
                return Err(io_err("rename", a)(e));
            }
        }
        Ok(to)
    }

    /// What identifies this cgroup's directories (device and inode of each), to be given to
    /// [`Cgroup::remove_ended`] later.
    pub fn identify(&self) -> Vec<Option<(u64, u64)>> {
        self.dirs.iter().map(|(_, d)| dir_identity(d)).collect()
    }

    /// Remove the directories of a cgroup whose processes have ended (a container's, after
    /// its init), killing nothing, waiting up to `within` for the last ones to be released.
    /// `ids` ([`Cgroup::identify`], taken while the cgroup was surely this one): a directory
    /// removed meanwhile and made again under the same name (the next instance of the same
    /// container, whose shim takes the name as soon as the exit is recorded) is not this
    /// cgroup's and is left alone.
    pub fn remove_ended(
        &self,
        ids: &[Option<(u64, u64)>],
        within: Duration,
    ) -> Result<(), CgroupError> {
        let deadline = Instant::now() + within;
        for ((_, d), id) in self.dirs.iter().zip(ids).rev() {
            if let Some(id) = *id {
                rmdir_until(d, deadline, within, || dir_identity(d) == Some(id), || {})?;
            }
        }
        Ok(())
    }

    /// Kill what is left, then remove the cgroup's directories, waiting up to `within` for
    /// the processes to go. A cgroup already gone is not an error.
    pub fn remove(&self, within: Duration) -> Result<(), CgroupError> {
        let deadline = Instant::now() + within;
        for (_, d) in self.dirs.iter().rev() {
            rmdir_until(
                d,
                deadline,
                within,
                || true,
                || {
                    let _ = self.kill();
                },
            )?;
        }
        Ok(())
    }

    /// Pids of every process in the cgroup and in cgroups below it, in every hierarchy
    /// (a cgroup already gone has none).
    pub fn all_procs(&self) -> Vec<i32> {
        let mut out = Vec::new();
        for (_, d) in &self.dirs {
            collect_procs(d, &mut out);
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Kill every process of the cgroup so that none can fork meanwhile, and wait up to
    /// `within` until none is left: `cgroup.kill` on v2 where the kernel has it; else freeze,
    /// SIGKILL each process, thaw (a frozen process dies once thawed), again while any is
    /// left. Returns how many processes were found. A cgroup already gone has none.
    pub fn kill_all(&self, within: Duration) -> Result<usize, CgroupError> {
        let deadline = Instant::now() + within;
        let mut found = std::collections::HashSet::new();
        let v2_kill = self.layout.is_v2() && self.dirs[0].1.join("cgroup.kill").exists();
        loop {
            let procs = self.all_procs();
            if procs.is_empty() {
                return Ok(found.len());
            }
            found.extend(procs.iter().copied());
            if Instant::now() >= deadline {
                return Err(CgroupError::Busy {
                    path: self.dirs[0].1.clone(),
                    waited: within,
                });
            }
            if v2_kill {
                let p = self.dirs[0].1.join("cgroup.kill");
                fs::write(&p, "1").map_err(io_err("write", &p))?;
            } else {
                let frozen = self.dir("freezer").is_some() && self.freeze_and_wait(deadline);
                for pid in self.all_procs() {
                    found.insert(pid);
                    // SAFETY: kill(2) with a pid read from the cgroup and a constant signal.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                if frozen {
                    let _ = self.thaw();
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Freeze the cgroup and wait until the kernel says every process is frozen (or the
    /// deadline passes: `false`).
    fn freeze_and_wait(&self, deadline: Instant) -> bool {
        if self.freeze().is_err() {
            return false;
        }
        let (file, done) = if self.layout.is_v2() {
            ("cgroup.events", "frozen 1")
        } else {
            ("freezer.state", "FROZEN")
        };
        while Instant::now() < deadline {
            match self.read("freezer", file) {
                Ok(t) if t.lines().any(|l| l.trim() == done) => return true,
                Ok(_) => std::thread::sleep(Duration::from_millis(1)),
                Err(_) => return false,
            }
        }
        false
    }

    /// Kill every process of the cgroup ([`Cgroup::kill_all`]) and remove its directories
    /// (those of cgroups below it first). Returns how many processes were killed.
    pub fn destroy(&self, within: Duration) -> Result<usize, CgroupError> {
        let deadline = Instant::now() + within;
        let killed = self.kill_all(within)?;
        for (_, d) in self.dirs.iter().rev() {
            remove_tree(d, deadline, within)?;
        }
        Ok(killed)
    }
}

/// The pids in `dir`'s `cgroup.procs` and in those of the cgroups below it.
fn collect_procs(dir: &Path, out: &mut Vec<i32>) {
    if let Ok(t) = fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(t.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_procs(&e.path(), out);
            }
        }
    }
}

/// Remove cgroup directory `d` and the cgroups below it (their processes are gone).
fn remove_tree(d: &Path, deadline: Instant, within: Duration) -> Result<(), CgroupError> {
    if let Ok(rd) = fs::read_dir(d) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path(), deadline, within)?;
            }
        }
    }
    rmdir_until(d, deadline, within, || true, || {})
}

/// The names of the cgroups in berth's parent (`berth/`) of every hierarchy, each once:
/// containers' ids and standby placeholders.
pub fn list(layout: &Layout) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in parents(layout) {
        let Ok(rd) = fs::read_dir(&r) else { continue };
        for e in rd.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            if !out.contains(&name) {
                out.push(name);
            }
        }
    }
    out
}

/// `berth/` in each hierarchy of `layout`.
fn parents(layout: &Layout) -> Vec<PathBuf> {
    match layout {
        Layout::V1 { mounts } => {
            let mut v: Vec<PathBuf> = Vec::new();
            for (_, m) in mounts {
                let p = m.join(PARENT);
                if !v.contains(&p) {
                    v.push(p);
                }
            }
            v
        }
        Layout::V2 { root } => vec![root.join(PARENT)],
    }
}

/// Remove directory `d` (gone already: done) while `ours()` holds, retrying while it is busy
/// until `deadline`, calling `busy` before each retry.
fn rmdir_until(
    d: &Path,
    deadline: Instant,
    within: Duration,
    ours: impl Fn() -> bool,
    busy: impl Fn(),
) -> Result<(), CgroupError> {
    while ours() {
        match fs::remove_dir(d) {
            Ok(()) => break,
            Err(e) if e.kind() == ErrorKind::NotFound => break,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                if Instant::now() >= deadline {
                    return Err(CgroupError::Busy {
                        path: d.to_path_buf(),
                        waited: within,
                    });
                }
                busy();
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(io_err("rmdir", d)(e)),
        }
    }
    Ok(())
}

/// Device and inode of a directory.
fn dir_identity(d: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(d).ok().map(|m| (m.dev(), m.ino()))
}

/// The prefix of a standby shim's placeholder cgroup: `berth/standby-<shim pid>` (a
/// container id is hexadecimal, so the names never meet).
pub const STANDBY_PREFIX: &str = "standby-";

/// Remove the placeholder cgroups of standby shims that no longer run (a shim killed while
/// it waited). Returns how many were removed.
pub fn sweep_standby(layout: &Layout) -> usize {
    let mut n = 0;
    for r in parents(layout) {
        let Ok(rd) = fs::read_dir(&r) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix(STANDBY_PREFIX)
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            if Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            // rmdir fails while a process is inside: then it is not stale.
            if fs::remove_dir(e.path()).is_ok() {
                n += 1;
            }
        }
    }
    n
}

/// Enable memory, cpu and pids for the children of `dir` (v2), as far as the parent offers
/// them.
fn enable_v2_controllers(dir: &Path) -> Result<(), CgroupError> {
    let avail_p = dir.join("cgroup.controllers");
    let avail = fs::read_to_string(&avail_p).map_err(io_err("read", &avail_p))?;
    let sub_p = dir.join("cgroup.subtree_control");
    let on = fs::read_to_string(&sub_p).map_err(io_err("read", &sub_p))?;
    for c in ["memory", "cpu", "pids"] {
        let has = |t: &str| t.split_whitespace().any(|w| w == c);
        if has(&avail) && !has(&on) {
            fs::write(&sub_p, format!("+{c}")).map_err(io_err("enable controller", &sub_p))?;
        }
    }
    Ok(())
}

/// `key value` lines (memory.events, cpu.stat, memory.oom_control).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Docker's mapping of cpu shares (2..262144) to cgroup v2 weight (1..10000).
pub fn shares_to_weight(shares: u64) -> u64 {
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";

    #[test]
    fn hybrid_is_v1_with_each_controller() {
        let l = Layout::from_mountinfo(HYBRID).unwrap();
        let cg = Cgroup::at(&l, "abc").unwrap();
        assert_eq!(
            cg.dir("memory").unwrap(),
            Path::new("/sys/fs/cgroup/memory/berth/abc")
        );
        assert_eq!(
            cg.dir("pids").unwrap(),
            Path::new("/sys/fs/cgroup/pids/berth/abc")
        );
        assert_eq!(
            cg.dir("devices").unwrap(),
            Path::new("/sys/fs/cgroup/devices/berth/abc")
        );
        assert_eq!(cg.dirs().count(), 6);
    }

    #[test]
    fn v1_without_the_devices_controller_is_refused() {
        let no_devices: String = HYBRID
            .lines()
            .filter(|l| !l.contains("devices"))
            .collect::<Vec<_>>()
            .join("\n");
        let l = Layout::from_mountinfo(&no_devices).unwrap();
        let e = Cgroup::at(&l, "abc").unwrap_err().to_string();
        assert!(e.contains("devices is not mounted"), "{e}");
    }

    #[test]
    fn comounted_controllers_share_a_dir_and_pure_v2_is_detected() {
        let t = "1 0 0:1 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
2 0 0:2 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
3 0 0:3 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
4 0 0:4 / /sys/fs/cgroup/devices rw - cgroup cgroup rw,devices";
        let l = Layout::from_mountinfo(t).unwrap();
        let cg = Cgroup::at(&l, "x").unwrap();
        assert_eq!(cg.dir("cpu"), cg.dir("cpuacct"));
        assert_eq!(cg.dirs().count(), 4);
        let v2 = "9 1 0:5 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate";
        let l = Layout::from_mountinfo(v2).unwrap();
        assert_eq!(
            l,
            Layout::V2 {
                root: "/sys/fs/cgroup".into()
            }
        );
        assert!(Layout::from_mountinfo("1 0 0:1 / / rw - ext4 /dev/sda rw").is_err());
    }

    #[test]
    fn ids_and_weights() {
        let l = Layout::from_mountinfo(HYBRID).unwrap();
        assert!(Cgroup::at(&l, "../etc").is_err());
        assert!(Cgroup::at(&l, "").is_err());
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(keyed("low 0\noom_kill 3\n", "oom_kill"), Some(3));
    }
}
