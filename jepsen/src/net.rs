//! The network the cluster runs on.
//!
//! With root and `ip netns`, a run happens inside a network namespace created for
//! it (`bo-jepsen-<pid>`): the harness re-executes itself there, the nodes listen
//! on 127.0.0.(10+id) inside it and send from those addresses, and partitions are
//! iptables rules in that namespace that drop packets between node addresses —
//! real packet loss, with TCP left to time out, and nothing outside the
//! namespace touched. Without namespaces the run uses the host's loopback and
//! partitions are unavailable (the run says so).

use std::collections::BTreeSet;
use std::process::Command;

use anyhow::{bail, Context};

use boxoffice_node::local_cluster::node_ip;

/// How the run's network is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NetMode {
    /// Namespace if available, else loopback.
    Auto,
    /// A network namespace with iptables partitions (root, `ip`, `iptables`).
    Netns,
    /// The host's loopback; no partitions.
    Loopback,
}

/// Whether namespaces and iptables can be used here.
pub fn netns_available() -> Result<(), String> {
    if unsafe { libc::geteuid() } != 0 {
        return Err("not running as root".into());
    }
    for tool in ["ip", "iptables"] {
        let ok = Command::new(tool)
            .arg("-V")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            return Err(format!(
                "`{tool}` is not installed (apt-get install iproute2 iptables)"
            ));
        }
    }
    Ok(())
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// A namespace created for this run; deleted (with any process left in it) on drop.
pub struct Namespace {
    pub name: String,
}

impl Namespace {
    pub fn create() -> anyhow::Result<Self> {
        let name = format!("bo-jepsen-{}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Namespace { name };
        run(Command::new("ip").args(["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"]))?;
        Ok(ns)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Only processes inside this run's own namespace: the harness and its nodes.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<libc::pid_t>() {
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Drops packets between node addresses (inside the run's namespace).
pub struct Firewall {
    /// Directed (from, to) pairs currently cut.
    pub cut: BTreeSet<(u64, u64)>,
}

impl Firewall {
    pub fn new() -> Self {
        Firewall {
            cut: BTreeSet::new(),
        }
    }

    /// Cuts traffic both ways between every node of `a` and every node of `b`.
    pub fn partition(&mut self, a: &[u64], b: &[u64]) -> anyhow::Result<()> {
        for &x in a {
            for &y in b {
                for (from, to) in [(x, y), (y, x)] {
                    if from != to && self.cut.insert((from, to)) {
                        run(Command::new("iptables").args([
                            "-w",
                            "-A",
                            "INPUT",
                            "-s",
                            &node_ip(from).to_string(),
                            "-d",
                            &node_ip(to).to_string(),
                            "-j",
                            "DROP",
                        ]))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes every rule.
    pub fn heal(&mut self) -> anyhow::Result<()> {
        run(Command::new("iptables").args(["-w", "-F", "INPUT"]))?;
        self.cut.clear();
        Ok(())
    }
}

impl Default for Firewall {
    fn default() -> Self {
        Self::new()
    }
}
