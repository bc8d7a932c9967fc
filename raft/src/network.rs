//! Node-to-node Raft RPC, client side.
//!
//! Every group's messages to a peer travel over one shared `reqwest` client speaking
//! HTTP/2 with prior knowledge, so all groups between a pair of nodes are multiplexed
//! over one TCP connection. Bodies are [`crate::codec`] (postcard) encoded.

use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::{de::DeserializeOwned, Serialize};

use crate::codec;
use crate::types::{GroupId, NodeId, TypeConfig};

/// Header carrying the cluster key on every node-to-node request.
pub const CLUSTER_KEY_HEADER: &str = "x-boxoffice-cluster-key";
/// Header on every peer-listener answer naming the answering node's public
/// address (its `advertise`): how nodes learn where clients reach each other
/// (the leader hints of write answers) without showing cluster addresses.
pub const PUBLIC_ADDR_HEADER: &str = "x-boxoffice-public-addr";

/// Header on every peer-listener answer: the highest feature level the
/// answering node lets its groups reach (`raft.feature_level_max`). A leader
/// raises a group's level only to what every member said.
pub const FEATURE_LEVEL_HEADER: &str = "x-boxoffice-feature-level";

/// Peers remembered at most (a cluster has far fewer).
const PEERS_MAX: usize = 1024;

/// What a peer's last answer said about it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerFacts {
    /// Its public address (`advertise`).
    pub public_addr: Option<String>,
    /// The highest feature level it allows; `None` from a release that does
    /// not say (level 0).
    pub feature_level: Option<u32>,
}

/// Settings for node-to-node RPC.
#[derive(Clone, Debug)]
pub struct RpcConfig {
    /// Shared secret every node presents to its peers.
    pub cluster_key: String,
    /// Time allowed to open a TCP connection to a peer.
    pub connect_timeout_ms: u64,
    /// Upper bound on one RPC when openraft gives no tighter deadline.
    pub request_timeout_ms_max: u64,
    /// Source address for outgoing connections (None: the OS picks).
    pub bind_ip: Option<std::net::IpAddr>,
    /// When set, peers are called over https and their certificates must chain
    /// to these (PEM); the usual web roots are not trusted.
    pub tls_ca_pem: Option<Vec<u8>>,
}

/// The shared HTTP client used for all Raft groups' RPC to all peers.
#[derive(Clone)]
pub struct RpcClient {
    http: reqwest::Client,
    config: RpcConfig,
    scheme: &'static str,
    /// Cluster address → what each peer's last answer said.
    peers: std::sync::Arc<std::sync::RwLock<std::collections::HashMap<String, PeerFacts>>>,
}

impl RpcClient {
    /// Builds the client. Fails if `tls_ca_pem` holds no certificate or the HTTP
    /// stack cannot initialise.
    pub fn new(config: RpcConfig) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .http2_prior_knowledge()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .tcp_nodelay(true)
            .no_proxy()
            .local_address(config.bind_ip);
        let scheme = match &config.tls_ca_pem {
            None => "http",
            Some(pem) => {
                let certs = reqwest::Certificate::from_pem_bundle(pem)
                    .map_err(|e| format!("peer CA certificates: {e}"))?;
                if certs.is_empty() {
                    return Err("the peer CA file holds no certificate".into());
                }
                builder = builder.tls_built_in_root_certs(false);
                for cert in certs {
                    builder = builder.add_root_certificate(cert);
                }
                "https"
            }
        };
        let http = builder.build().map_err(|e| e.to_string())?;
        Ok(RpcClient {
            http,
            config,
            scheme,
            peers: Default::default(),
        })
    }

    /// What the last answer of the peer at cluster address `addr` said.
    pub fn peer(&self, addr: &str) -> Option<PeerFacts> {
        self.peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(addr)
            .cloned()
    }

    /// The public address of the peer at cluster address `addr`, as its last
    /// answer said.
    pub fn public_addr(&self, addr: &str) -> Option<String> {
        self.peer(addr).and_then(|p| p.public_addr)
    }

    fn note_peer(&self, addr: &str, headers: &reqwest::header::HeaderMap) {
        let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
        // An answer without the address did not come from the peer's routes (an
        // overload refusal in front of them, say): it says nothing of the peer.
        let Some(public) = header(PUBLIC_ADDR_HEADER) else {
            return;
        };
        let facts = PeerFacts {
            public_addr: Some(public.to_string()),
            feature_level: header(FEATURE_LEVEL_HEADER).and_then(|v| v.parse().ok()),
        };
        if self.peer(addr).as_ref() == Some(&facts) {
            return;
        }
        let mut map = self.peers.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= PEERS_MAX {
            map.clear();
        }
        map.insert(addr.to_string(), facts);
    }

    /// The cluster key presented to peers.
    pub fn cluster_key(&self) -> &str {
        &self.config.cluster_key
    }

    /// The underlying HTTP client (for other internal calls between nodes).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A POST of `body` (codec-encoded) to a peer's `path`, with the cluster
    /// key and the id of the request this call serves, if any, so the peer's
    /// logs name it too.
    fn post<Req: Serialize>(&self, addr: &str, path: &str, body: &Req) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .post(format!("{}://{addr}{path}", self.scheme))
            .header(CLUSTER_KEY_HEADER, &self.config.cluster_key)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream");
        if let Some(id) = crate::request_id::current() {
            req = req.header(crate::request_id::REQUEST_ID_HEADER, &*id);
        }
        req.body(codec::encode_message(body))
    }

    /// POSTs a codec-encoded body to `http(s)://{addr}{path}` and hands back the
    /// answer as it starts (status and headers, the body still streaming), for
    /// answers relayed to a client as they come (a read, a live stream).
    /// `timeout` bounds the wait for the answer to start, not its body.
    pub async fn call_streaming<Req: Serialize>(
        &self,
        addr: &str,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<reqwest::Response, CallError> {
        let send = self.post(addr, path, body).send();
        let resp = match tokio::time::timeout(timeout, send).await {
            Err(_) => return Err(CallError::Timeout),
            Ok(Err(e)) if e.is_connect() => return Err(CallError::Unreachable(e.to_string())),
            Ok(Err(e)) => return Err(CallError::Network(e.to_string())),
            Ok(Ok(r)) => r,
        };
        self.note_peer(addr, resp.headers());
        Ok(resp)
    }

    /// POSTs a codec-encoded body to `http(s)://{addr}{path}` and decodes the reply.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let timeout = timeout.min(Duration::from_millis(self.config.request_timeout_ms_max));
        let resp = self
            .post(addr, path, body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    CallError::Unreachable(e.to_string())
                } else if e.is_timeout() {
                    CallError::Timeout
                } else {
                    CallError::Network(e.to_string())
                }
            })?;
        let status = resp.status();
        self.note_peer(addr, resp.headers());
        let bytes = resp.bytes().await.map_err(|e| {
            if e.is_timeout() {
                CallError::Timeout
            } else {
                CallError::Network(e.to_string())
            }
        })?;
        if !status.is_success() {
            return Err(CallError::Status(
                status.as_u16(),
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
        }
        codec::decode_message(&bytes).map_err(|e| CallError::Decode(e.to_string()))
    }
}

/// Why an internal call failed before the peer could answer it.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Could not connect.
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    /// No answer within the deadline: the outcome is unknown.
    #[error("peer did not answer in time")]
    Timeout,
    /// The connection failed mid-request: the outcome is unknown.
    #[error("network error: {0}")]
    Network(String),
    /// The peer answered with an HTTP error status.
    #[error("peer answered {0}: {1}")]
    Status(u16, String),
    /// The peer's answer could not be decoded.
    #[error("undecodable answer: {0}")]
    Decode(String),
}

/// Creates per-peer network handles for one group.
#[derive(Clone)]
pub struct NetworkFactory {
    group: GroupId,
    rpc: RpcClient,
}

impl NetworkFactory {
    /// A factory for `group`'s RPC, sharing `rpc`'s connections.
    pub fn new(group: GroupId, rpc: RpcClient) -> Self {
        NetworkFactory { group, rpc }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerLink;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerLink {
        PeerLink {
            group: self.group,
            target,
            addr: node.addr.clone(),
            rpc: self.rpc.clone(),
        }
    }
}

/// One group's link to one peer.
pub struct PeerLink {
    group: GroupId,
    target: NodeId,
    addr: String,
    rpc: RpcClient,
}

impl PeerLink {
    async fn send<Req, Resp, E>(
        &self,
        kind: &str,
        action: openraft::RPCTypes,
        body: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let path = format!("/raft/v1/{}/{}", self.group.0, kind);
        let ttl = option.hard_ttl();
        let reply: Result<Resp, RaftError<NodeId, E>> = self
            .rpc
            .call(&self.addr, &path, body, ttl)
            .await
            .map_err(|e| match e {
                CallError::Unreachable(_) => RPCError::Unreachable(Unreachable::new(&e)),
                CallError::Timeout => RPCError::Timeout(Timeout {
                    action,
                    id: 0,
                    target: self.target,
                    timeout: ttl,
                }),
                other => RPCError::Network(NetworkError::new(&other)),
            })?;
        reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerLink {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.send("append", openraft::RPCTypes::AppendEntries, &rpc, &option)
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.send(
            "snapshot",
            openraft::RPCTypes::InstallSnapshot,
            &rpc,
            &option,
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.send("vote", openraft::RPCTypes::Vote, &rpc, &option)
            .await
    }
}
