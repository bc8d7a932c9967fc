//! A running cluster, as described by the `cluster.json` that `boxoffice dev` writes.

use std::path::Path;

use anyhow::Context;
use serde_json::Value;

pub struct ClusterInfo {
    /// `host:port` of each node's HTTP API.
    pub addrs: Vec<String>,
    pub admin_token: String,
    pub user_token: String,
}

impl ClusterInfo {
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let file: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("cluster.json")).with_context(|| {
                format!(
                    "reading {}/cluster.json; is `boxoffice dev` running?",
                    dir.display()
                )
            })?,
        )?;
        let addrs = file["nodes"]
            .as_array()
            .context("nodes")?
            .iter()
            .map(|n| n["http"].as_str().unwrap_or_default().to_string())
            .collect();
        Ok(Self {
            addrs,
            admin_token: file["admin_token"]
                .as_str()
                .context("admin_token")?
                .to_string(),
            user_token: file["user_token"]
                .as_str()
                .context("user_token")?
                .to_string(),
        })
    }

    pub fn urls(&self) -> Vec<String> {
        self.addrs.iter().map(|a| format!("http://{a}")).collect()
    }
}
