//! The boxoffice server as a library: the `boxoffice` binary is a thin command
//! line over it, and tests drive its router in-process.
//!
//! - [`config`]: every setting, with defaults and validation.
//! - [`node`]: one node's runtime (database, Raft groups, write forwarding, read
//!   barrier); [`proposer`] batches a group's proposals on its leader; [`clock`]
//!   bounds a leader's stamps by its peers' clocks.
//! - [`app`]: the HTTP router and its bounds; [`api`]: the handlers, a file per
//!   resource; [`error`]: problem+json answers; [`auth`]: bearer tokens;
//!   [`rate_limits`]: per user and per client address.
//! - [`live`]: live seat-map streams; [`search`]: the node's search index;
//!   [`event_cache`]: rendered event views.
//! - [`local_cluster`]: real node processes on this machine (the dev cluster, the
//!   integration tests, the fault harness and the benchmarks all start theirs
//!   with it); [`dev`] and [`dev_demo`]: `boxoffice dev` and its demo catalogue.

pub mod api;
pub mod app;
pub mod auth;
pub mod clock;
pub mod config;
pub mod dev;
pub mod dev_demo;
pub mod error;
pub mod event_cache;
pub mod live;
pub mod local_cluster;
pub mod node;
pub mod proposer;
pub mod rate_limits;
pub mod search;

use anyhow::Context;

/// Runs one node until Ctrl-C or SIGTERM: opens its data, serves its router, then
/// shuts its groups down and syncs its log.
pub async fn run_node(config: config::NodeConfig) -> anyhow::Result<()> {
    let listen = config.listen;
    let send_buffer = config.limits.socket_send_buffer_bytes;
    let keys = auth::TokenKeys::from_config(&config)?;
    let node = node::Node::open(config).await?;
    let router = app::router(app::AppState::new(node.clone(), keys));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(node_id = node.id(), %listen, "node listening");
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(move |tcp| {
        // Answers (Raft RPC replies over HTTP/2 above all) are small writes that
        // must not wait for the peer's delayed ACK under Nagle's algorithm: that
        // stall is ~40 ms on Linux, and it would sit in every replication round.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "setting TCP_NODELAY failed");
        }
        if send_buffer > 0 {
            if let Err(e) = socket2::SockRef::from(&*tcp).set_send_buffer_size(send_buffer) {
                tracing::warn!(error = %e, "setting the socket send buffer failed");
            }
        }
    });
    // The peer's address reaches the handlers for the per-address rate limits.
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    for (g, raft) in node.groups.all() {
        if let Err(e) = raft.shutdown().await {
            tracing::warn!(%g, error = %e, "raft shutdown");
        }
    }
    node.db.sync_wal()?;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "no SIGTERM handler; only Ctrl-C stops the node");
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}

/// Makes any panic, on any thread, end the process (after logging it), so that a
/// broken invariant is a crash a supervisor sees and restarts, never a node that
/// stays up with a dead Raft group (openraft runs each group on a tokio task,
/// and tokio would otherwise keep the rest of the process running).
pub fn abort_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!(panic = %info, "panic: the node stops");
        default(info);
        std::process::abort();
    }));
}
