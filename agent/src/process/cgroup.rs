//! The process runtime's cgroups: one per task, under a directory that
//! belongs to this agent alone (`agora/<scope>/`, the scope a hash of the
//! agent's work dir), so that recovery can sweep what a previous run left
//! without touching another agent's tasks on the same host.

use agora_core::Resources;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the agent may create cgroups.
#[derive(Clone, Debug)]
pub(super) enum Cgroups {
    V2(PathBuf),
    V1 { cpu: PathBuf, memory: PathBuf },
    None(String),
}

/// FNV-1a: a stable short name for the agent's work dir.
pub(super) fn scope_name(work_dir: &Path) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in work_dir.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("agent-{h:016x}")
}

pub(super) fn detect(work_dir: &Path) -> Cgroups {
    detect_under(Path::new("/sys/fs/cgroup"), &scope_name(work_dir))
}

fn detect_under(base: &Path, scope: &str) -> Cgroups {
    if base.join("cgroup.controllers").exists() {
        let top = base.join("agora");
        let dir = top.join(scope);
        return match std::fs::create_dir_all(&dir) {
            Ok(()) => {
                // Delegate cpu and memory down to the tasks' cgroups.
                for d in [base, top.as_path(), dir.as_path()] {
                    let _ = std::fs::write(d.join("cgroup.subtree_control"), "+cpu +memory");
                }
                Cgroups::V2(dir)
            }
            Err(e) => Cgroups::None(format!("cannot create {}: {e}", dir.display())),
        };
    }
    let cpu = ["cpu,cpuacct", "cpu"]
        .iter()
        .map(|d| base.join(d))
        .find(|p| p.exists());
    let memory = base.join("memory");
    match cpu {
        Some(cpu) if memory.exists() => {
            let (c, m) = (
                cpu.join("agora").join(scope),
                memory.join("agora").join(scope),
            );
            match std::fs::create_dir_all(&c).and_then(|_| std::fs::create_dir_all(&m)) {
                Ok(()) => Cgroups::V1 { cpu: c, memory: m },
                Err(e) => Cgroups::None(format!(
                    "cannot create cgroups under {}: {e}",
                    base.display()
                )),
            }
        }
        _ => Cgroups::None("no cgroup cpu/memory controllers are mounted".into()),
    }
}

impl Cgroups {
    /// This agent's cgroup directories (the parents of its tasks' cgroups).
    pub(super) fn roots(&self) -> Vec<PathBuf> {
        match self {
            Cgroups::V2(d) => vec![d.clone()],
            Cgroups::V1 { cpu, memory } => vec![cpu.clone(), memory.clone()],
            Cgroups::None(_) => Vec::new(),
        }
    }

    /// Whether `dir` is a task cgroup of this agent (a direct child of one
    /// of its roots): what a sandbox's `cgroup` file says is checked
    /// before the agent kills what is inside.
    pub(super) fn owns(&self, dir: &Path) -> bool {
        let plain = dir
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| !n.is_empty() && n != "." && n != "..");
        plain
            && self
                .roots()
                .iter()
                .any(|r| dir.parent() == Some(r.as_path()))
    }

    /// Every task cgroup of this agent.
    pub(super) fn children(&self) -> Vec<PathBuf> {
        let mut v = Vec::new();
        for r in self.roots() {
            if let Ok(rd) = std::fs::read_dir(&r) {
                v.extend(
                    rd.flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
        }
        v
    }
}

/// Creates the task's cgroup(s) with its limits. The task's first process
/// moves itself in before it execs the command, so nothing it forks
/// escapes the limits. If a limit cannot be written, the directories
/// created are removed again.
pub(super) fn prepare(cg: &Cgroups, name: &str, r: &Resources) -> Result<Vec<PathBuf>, String> {
    let mut created = Vec::new();
    let res = prepare_into(cg, name, r, &mut created);
    if res.is_err() {
        remove(&created);
    }
    res.map(|()| created)
}

fn prepare_into(
    cg: &Cgroups,
    name: &str,
    r: &Resources,
    created: &mut Vec<PathBuf>,
) -> Result<(), String> {
    let quota = r.cpus_milli.saturating_mul(100).max(1000); // µs per 100 ms period
    let mem = r.mem_mib.saturating_mul(1 << 20);
    let w = |p: &Path, f: &str, v: String| {
        std::fs::write(p.join(f), v).map_err(|e| format!("{}: {e}", p.join(f).display()))
    };
    let mut mkdir = |d: PathBuf| -> Result<PathBuf, String> {
        std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        created.push(d.clone());
        Ok(d)
    };
    match cg {
        Cgroups::None(why) => Err(why.clone()),
        Cgroups::V2(root) => {
            let d = mkdir(root.join(name))?;
            if r.cpus_milli > 0 {
                w(&d, "cpu.max", format!("{quota} 100000"))?;
            }
            if mem > 0 {
                w(&d, "memory.max", mem.to_string())?;
                let _ = w(&d, "memory.swap.max", "0".into());
            }
            Ok(())
        }
        Cgroups::V1 { cpu, memory } => {
            let c = mkdir(cpu.join(name))?;
            let m = mkdir(memory.join(name))?;
            if r.cpus_milli > 0 {
                w(&c, "cpu.cfs_period_us", "100000".into())?;
                w(&c, "cpu.cfs_quota_us", quota.to_string())?;
                w(
                    &c,
                    "cpu.shares",
                    (r.cpus_milli.saturating_mul(1024) / 1000)
                        .max(2)
                        .to_string(),
                )?;
            }
            if mem > 0 {
                w(&m, "memory.limit_in_bytes", mem.to_string())?;
                let _ = w(&m, "memory.memsw.limit_in_bytes", mem.to_string());
            }
            Ok(())
        }
    }
}

/// Whether the kernel OOM-killed something in these cgroups.
pub(super) fn oom_killed(dirs: &[PathBuf]) -> bool {
    dirs.iter().any(|d| {
        let events = std::fs::read_to_string(d.join("memory.events")).unwrap_or_default();
        let control = std::fs::read_to_string(d.join("memory.oom_control")).unwrap_or_default();
        events.lines().chain(control.lines()).any(|l| {
            l.starts_with("oom_kill ") && l.split_whitespace().nth(1).is_some_and(|n| n != "0")
        })
    })
}

/// The processes in a cgroup.
pub(super) fn procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .filter(|p| *p > 0)
        .collect()
}

/// SIGKILLs everything in the cgroups (`cgroup.kill` on cgroup v2 where the
/// kernel has it, else each process listed, until none is left), waits up
/// to `patience` for them to be gone, and removes the directories.
/// Returns how many processes were signalled (`cgroup.kill`: at least 1 if
/// any was there).
pub(super) async fn kill_and_remove(dirs: &[PathBuf], patience: Duration) -> usize {
    let mut signalled = 0;
    let deadline = tokio::time::Instant::now() + patience;
    for d in dirs {
        loop {
            let pids = procs(d);
            if pids.is_empty() {
                break;
            }
            let killfile = d.join("cgroup.kill");
            if !(killfile.exists() && std::fs::write(&killfile, "1").is_ok()) {
                for p in &pids {
                    let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
                }
            }
            signalled += pids.len();
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(cgroup = %d.display(), left = pids.len(), "processes of the task's cgroup outlive SIGKILL");
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    remove(dirs);
    signalled
}

/// Removes the cgroup directories (they must be empty of processes).
pub(super) fn remove(dirs: &[PathBuf]) {
    for d in dirs {
        if let Err(e) = std::fs::remove_dir(d)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(cgroup = %d.display(), error = %e, "cannot remove the task's cgroup");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_names_differ_per_work_dir_and_stay_the_same() {
        let a = scope_name(Path::new("/var/lib/agora/a"));
        assert_eq!(a, scope_name(Path::new("/var/lib/agora/a")));
        assert_ne!(a, scope_name(Path::new("/var/lib/agora/b")));
    }

    #[test]
    fn only_direct_children_of_the_agents_roots_are_its_cgroups() {
        let cg = Cgroups::V1 {
            cpu: "/sys/fs/cgroup/cpu/agora/s".into(),
            memory: "/sys/fs/cgroup/memory/agora/s".into(),
        };
        assert!(cg.owns(Path::new("/sys/fs/cgroup/cpu/agora/s/t-1")));
        assert!(cg.owns(Path::new("/sys/fs/cgroup/memory/agora/s/t-1")));
        for not in [
            "/sys/fs/cgroup/cpu/agora/s",
            "/sys/fs/cgroup/cpu",
            "/sys/fs/cgroup/cpu/agora/other/t",
            "/sys/fs/cgroup/cpu/agora/s/t/u",
            "/sys/fs/cgroup/cpu/agora/s/..",
        ] {
            assert!(!cg.owns(Path::new(not)), "{not}");
        }
    }
}
