//! CPU time from `/proc`: of given processes, of this process and of the whole
//! machine, so that a benchmark can say what its figures cost.

use std::time::Instant;

/// Clock ticks a second of `/proc` CPU times (USER_HZ, 100 on Linux).
pub const CLK_TCK: f64 = 100.0;

/// CPU seconds of processes and of the machine, from `/proc`.
#[derive(Clone)]
pub struct CpuSnap {
    pub at: Instant,
    /// CPU seconds of each process asked for (NaN if it is gone).
    pub procs: Vec<f64>,
    /// The machine's busy CPU seconds (all but idle and iowait) since boot.
    pub busy: f64,
    /// The machine's CPU seconds since boot.
    pub total: f64,
}

pub fn proc_cpu_s(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the command name (which may hold spaces): state is the first.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (t(11) + t(12)) / CLK_TCK
}

pub fn cpu_snap(pids: &[String]) -> CpuSnap {
    let (mut busy, mut total) = (f64::NAN, f64::NAN);
    if let Ok(s) = std::fs::read_to_string("/proc/stat") {
        if let Some(line) = s.lines().next() {
            let v: Vec<f64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            if v.len() >= 5 {
                total = v.iter().sum::<f64>() / CLK_TCK;
                busy = total - (v[3] + v[4]) / CLK_TCK;
            }
        }
    }
    CpuSnap {
        at: Instant::now(),
        procs: pids.iter().map(|p| proc_cpu_s(p)).collect(),
        busy,
        total,
    }
}

/// Cores used by each process and the machine's busy share between two snapshots.
pub fn cpu_line(names: &[String], a: &CpuSnap, b: &CpuSnap) -> String {
    let secs = (b.at - a.at).as_secs_f64().max(0.001);
    let mut parts: Vec<String> = names
        .iter()
        .zip(a.procs.iter().zip(&b.procs))
        .map(|(n, (x, y))| format!("{n} {:.2}", (y - x) / secs))
        .collect();
    parts.push(format!(
        "machine {:.0}% busy",
        100.0 * (b.busy - a.busy) / (b.total - a.total).max(0.001)
    ));
    parts.join(", ")
}

/// Every process descended from `root` (children, their children, ...), with
/// `root` first: what a server that forks workers (PostgreSQL) runs as.
pub fn process_tree(root: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // After the command name: state, then the parent's pid.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    tree
}

/// Sends `signal` (`STOP`, `CONT`, ...) to the given processes with kill(1).
pub fn signal(pids: &[u32], signal: &str) {
    if pids.is_empty() {
        return;
    }
    let _ = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .args(pids.iter().map(u32::to_string))
        .stderr(std::process::Stdio::null())
        .status();
}

/// The machine's busy share (0..1) over `window`.
pub async fn busy_share(window: std::time::Duration) -> f64 {
    let a = cpu_snap(&[]);
    tokio::time::sleep(window).await;
    let b = cpu_snap(&[]);
    (b.busy - a.busy) / (b.total - a.total).max(1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_tree_finds_children_and_signals_stop_and_resume_them() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep runs");
        let me = std::process::id();
        let tree = process_tree(me);
        assert_eq!(tree[0], me);
        assert!(tree.contains(&child.id()), "{tree:?} lacks {}", child.id());
        assert!(!process_tree(child.id()).contains(&me));
        let state = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim().chars().next()))
                .flatten()
        };
        signal(&[child.id()], "STOP");
        let stopped = (0..50).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            state(child.id()) == Some('T')
        });
        assert!(stopped, "state {:?}", state(child.id()));
        signal(&[child.id()], "CONT");
        let resumed = (0..50).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            state(child.id()) != Some('T')
        });
        assert!(resumed);
        let _ = child.kill();
        let _ = child.wait();
        let snap = cpu_snap(&[me.to_string(), "0".into()]);
        assert!(snap.busy > 0.0 && snap.total >= snap.busy);
        assert!(snap.procs[0] >= 0.0 && snap.procs[1].is_nan());
    }
}
