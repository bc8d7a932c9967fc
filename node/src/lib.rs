//! The boxoffice server as a library: the `boxoffice` binary is a thin command
//! line over it, and tests drive its router in-process.
//!
//! - [`config`]: every setting, with defaults and validation.
//! - [`node`]: one node's runtime (database, Raft groups, write forwarding, read
//!   barrier); [`proposer`] batches a group's proposals on its leader; [`clock`]
//!   bounds a leader's stamps by its peers' clocks.
//! - [`app`]: the routers of the public, admin and peer listeners and their
//!   bounds; [`listener`]: TLS and write deadlines on them; [`api`]: the handlers, a file per
//!   resource; [`error`]: problem+json answers; [`auth`]: bearer tokens;
//!   [`rate_limits`]: per user and per client address.
//! - [`console`]: the operator console (`/console`, served with the admin API).
//! - [`backup`]: backups on disk (manifest, checks) and restoring one into a new
//!   node's data directory; [`ctl`]: `boxoffice ctl`, the operator's command line.
//! - [`live`]: live seat-map streams; [`search`]: the node's search index;
//!   [`event_cache`]: rendered event views.
//! - [`local_cluster`]: real node processes on this machine (the dev cluster, the
//!   integration tests, the fault harness and the benchmarks all start theirs
//!   with it); [`dev`] and [`dev_demo`]: `boxoffice dev` and its demo catalogue.

pub mod api;
pub mod app;
pub mod auth;
pub mod backup;
pub mod clock;
pub mod config;
pub mod console;
pub mod ctl;
pub mod dev;
pub mod dev_demo;
pub mod error;
pub mod event_cache;
pub mod listener;
pub mod live;
pub mod local_cluster;
pub mod metrics;
pub mod node;
pub mod openapi;
pub mod payments;
pub mod placement;
pub mod proposer;
pub mod queue;
pub mod rate_limits;
pub mod request_id;
pub mod search;

use anyhow::Context;

/// Runs one node until Ctrl-C or SIGTERM: opens its data, serves its listeners
/// (public, peer, and admin if it has its own), then shuts its groups down and
/// syncs its log.
pub async fn run_node(config: config::NodeConfig) -> anyhow::Result<()> {
    let keys = auth::TokenKeys::from_config(&config)?;
    let tls = &config.tls;
    let public_tls = match (&tls.cert_file, &tls.key_file) {
        (Some(c), Some(k)) => Some(listener::acceptor(c, k)?),
        _ => None,
    };
    let peer_tls = match (&tls.peer_cert_file, &tls.peer_key_file) {
        (Some(c), Some(k)) => Some(listener::acceptor(c, k)?),
        _ => None,
    };
    let handshakes = listener::HandshakeLimits {
        timeout: std::time::Duration::from_millis(tls.handshake_timeout_ms),
        in_progress_max: tls.handshakes_max,
    };
    let send_buffer = config.limits.socket_send_buffer_bytes;
    let write_timeout_ms = config.limits.socket_write_timeout_ms;
    let (listen, peer_listen, admin_listen) =
        (config.listen, config.peer_listen, config.admin_listen);
    // Bound before the node opens, so that a taken port fails fast.
    let public = bind(listen).await?;
    let peer = bind(peer_listen).await?;
    let admin = match admin_listen {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let node = node::Node::open(config).await?;
    let state = app::AppState::new(node.clone(), keys);
    tracing::info!(node_id = node.id(), %listen, %peer_listen, ?admin_listen, tls = public_tls.is_some(), peer_tls = peer_tls.is_some(), "node listening");
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let stopping = node.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        // Leaderships go to other voters first (bounded by
        // `placement.handoff_on_stop_ms`), so writes pause for a handoff,
        // not for an election timeout.
        stopping.hand_off_leaderships().await;
        let _ = stop_tx.send(true);
    });
    let opts = SocketOptions {
        send_buffer,
        write_timeout_ms,
    };
    let servers = vec![
        tokio::spawn(serve(
            public,
            public_tls.clone(),
            app::router(state.clone()),
            opts,
            handshakes,
            stop.clone(),
        )),
        tokio::spawn(serve(
            peer,
            peer_tls,
            app::peer_router(state.clone()),
            opts,
            handshakes,
            stop.clone(),
        )),
    ]
    .into_iter()
    .chain(admin.map(|admin| {
        tokio::spawn(serve(
            admin,
            public_tls,
            app::admin_router(state.clone()),
            opts,
            handshakes,
            stop.clone(),
        ))
    }));
    for server in servers.collect::<Vec<_>>() {
        server.await??;
    }
    for (g, raft) in node.groups.all() {
        if let Err(e) = raft.shutdown().await {
            tracing::warn!(%g, error = %e, "raft shutdown");
        }
    }
    node.db.sync_wal()?;
    Ok(())
}

async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}

/// Options set on every accepted socket.
#[derive(Clone, Copy)]
struct SocketOptions {
    send_buffer: usize,
    write_timeout_ms: u64,
}

impl SocketOptions {
    fn apply(self, tcp: &tokio::net::TcpStream) {
        // Answers (Raft RPC replies over HTTP/2 above all) are small writes that
        // must not wait for the peer's delayed ACK under Nagle's algorithm: that
        // stall is ~40 ms on Linux, and it would sit in every replication round.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "setting TCP_NODELAY failed");
        }
        if self.send_buffer > 0 {
            if let Err(e) = socket2::SockRef::from(tcp).set_send_buffer_size(self.send_buffer) {
                tracing::warn!(error = %e, "setting the socket send buffer failed");
            }
        }
    }
}

/// Serves `router` on `listener` (over TLS with `tls`) until `stop` turns true,
/// then finishes the requests in flight. The peer's address reaches the
/// handlers (the per-address rate limits).
async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: axum::Router,
    opts: SocketOptions,
    handshakes: listener::HandshakeLimits,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    use axum::serve::ListenerExt;
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let write_timeout = std::time::Duration::from_millis(opts.write_timeout_ms);
    match tls {
        None => {
            let listener = listener::DeadlineListener::new(listener, write_timeout)
                .tap_io(move |io| opts.apply(io.get_ref()));
            axum::serve(listener, service)
                .with_graceful_shutdown(stopped)
                .await?
        }
        Some(acceptor) => {
            let listener =
                listener::TlsListener::new(listener, acceptor, handshakes, move |tcp| {
                    opts.apply(tcp)
                })?;
            let listener = listener::DeadlineListener::new(listener, write_timeout).tap_io(|_| {});
            axum::serve(listener, service)
                .with_graceful_shutdown(stopped)
                .await?
        }
    }
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
