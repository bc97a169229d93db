//! The HTTP side: `/metrics` asks the tracing loop for a scrape over a channel (the
//! loop owns the probes; no lock is shared with the server), `/` says where to look.

use std::net::SocketAddr;

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use tokio::sync::{mpsc, oneshot};

/// A scrape request: the loop answers with the exposition, or why it failed.
pub type ScrapeRequest = oneshot::Sender<Result<String, String>>;

/// The Prometheus text format's content type.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Why `serve` cannot listen where it was told.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(
        "cannot listen on {addr}: the port is taken (another vmmtrace serve or exporter?); \
         stop it or choose another port with --listen HOST:PORT"
    )]
    InUse { addr: SocketAddr },
    #[error(
        "cannot listen on {addr}: it is not an address of this host; give one of its addresses, e.g. 127.0.0.1:9477"
    )]
    NotHere { addr: SocketAddr },
    #[error("cannot listen on {addr}: ports below 1024 need root or CAP_NET_BIND_SERVICE; choose a port above 1023")]
    Privileged { addr: SocketAddr },
    #[error("cannot listen on {addr}")]
    Other {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Binds `addr`, saying what to do when it cannot.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ListenError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|source| match source.kind() {
        std::io::ErrorKind::AddrInUse => ListenError::InUse { addr },
        std::io::ErrorKind::AddrNotAvailable => ListenError::NotHere { addr },
        std::io::ErrorKind::PermissionDenied => ListenError::Privileged { addr },
        _ => ListenError::Other { addr, source },
    })
}

/// Serves until `shutdown` resolves; then finishes the requests in flight.
pub async fn run(
    listener: tokio::net::TcpListener,
    scrapes: mpsc::Sender<ScrapeRequest>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new().route("/metrics", get(metrics)).route("/", get(index)).with_state(scrapes);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

async fn metrics(State(scrapes): State<mpsc::Sender<ScrapeRequest>>) -> impl IntoResponse {
    let (tx, rx) = oneshot::channel();
    let answer = match scrapes.send(tx).await {
        Ok(()) => rx.await.unwrap_or_else(|_| Err("vmmtrace is stopping".into())),
        Err(_) => Err("vmmtrace is stopping".into()),
    };
    match answer {
        Ok(text) => (StatusCode::OK, [(header::CONTENT_TYPE, TEXT_FORMAT)], text),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, [(header::CONTENT_TYPE, "text/plain")], format!("{why}\n")),
    }
}

async fn index() -> &'static str {
    "vmmtrace serve: the metrics are at /metrics (Prometheus text format); see docs/user-guide.md, Prometheus and Grafana\n"
}
