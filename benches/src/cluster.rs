//! A running cluster, as described by the `cluster.json` that `boxoffice dev` writes.

use std::path::Path;

use anyhow::Context;
use boxoffice_node::dev::read_cluster_file;

pub struct ClusterInfo {
    /// `host:port` of each node's HTTP API.
    pub addrs: Vec<String>,
    /// Each node's id, in the order of `addrs`.
    pub ids: Vec<u64>,
    pub admin_token: String,
    pub user_token: String,
    /// The HS256 secret of user tokens, to mint one per simulated user.
    pub token_secret: String,
}

impl ClusterInfo {
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let file = read_cluster_file(dir).with_context(|| {
            format!(
                "reading {}/cluster.json; is `boxoffice dev` running?",
                dir.display()
            )
        })?;
        Ok(Self {
            ids: file.nodes.iter().map(|n| n.id).collect(),
            addrs: file.nodes.into_iter().map(|n| n.http).collect(),
            admin_token: file.admin_token,
            user_token: file.user_token,
            token_secret: file.token_secret,
        })
    }

    /// A token (valid an hour) of user `name`, signed with the cluster's user
    /// secret: each simulated buyer is a user of its own, as on a real site
    /// (one user's writes are bounded per shard, `USER_SESSIONS_MAX`).
    pub fn mint_user(&self, name: &str) -> anyhow::Result<String> {
        // Box-office tokens: the benches confirm holds directly (see benches/README.md).
        Ok(
            boxoffice_node::auth::Signer::hs256(&self.token_secret).mint_with_scope(
                name,
                3600,
                Some(boxoffice_node::auth::BOX_OFFICE_SCOPE),
            )?,
        )
    }

    pub fn urls(&self) -> Vec<String> {
        self.addrs.iter().map(|a| format!("http://{a}")).collect()
    }
}
