//! `--metrics ADDR`: an HTTP endpoint with the node's metrics in the Prometheus text format
//! at `/metrics` (rendered by `metrics-exporter-prometheus`) and its view of the cluster as
//! JSON at `/status` ([`Cluster::status`]).
//!
//! It answers `GET` only, one request per connection, and trusts nothing it reads: a
//! request head over 8 KiB, or not in within 5 s, is answered `400` or dropped; at most 16
//! connections are served at once, one more is closed at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use solo::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::view::status_json;

/// The longest request head read.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a client may take to send its request and read the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once.
const MAX_CONNECTIONS: usize = 16;
/// How often the recorder drains what histograms recorded when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);
/// Histogram buckets of every `_seconds` metric: from half a millisecond (a failover over
/// loopback) to ten seconds (a suspicion timing out on a slow network).
const SECONDS_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The endpoint, bound, with the process's recorder installed (before the node starts, so
/// that its handles record).
pub(crate) struct Endpoint {
    listener: TcpListener,
    handle: PrometheusHandle,
}

impl Endpoint {
    /// Installs the Prometheus recorder and binds `addr`.
    pub(crate) async fn bind(addr: SocketAddr) -> Result<Self, String> {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
            .and_then(PrometheusBuilder::install_recorder)
            .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("--metrics {addr}: cannot bind: {e}"))?;
        Ok(Self { listener, handle })
    }

    /// The address it listens on.
    pub(crate) fn local_addr(&self) -> Result<SocketAddr, String> {
        self.listener
            .local_addr()
            .map_err(|e| format!("--metrics: {e}"))
    }

    /// Serves requests for `cluster` until the process ends.
    pub(crate) fn serve(self, cluster: Cluster) {
        let Self { listener, handle } = self;
        let upkeep = handle.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(UPKEEP_EVERY).await;
                upkeep.run_upkeep();
            }
        });
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                // Beyond the limit the connection is closed unread.
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    continue;
                };
                let (cluster, handle) = (cluster.clone(), handle.clone());
                tokio::spawn(async move {
                    let _ =
                        tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &cluster, &handle))
                            .await;
                    drop(slot);
                });
            }
        });
    }
}

/// Reads one request and answers it.
async fn answer(
    mut stream: TcpStream,
    cluster: &Cluster,
    handle: &PrometheusHandle,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() >= MAX_REQUEST {
            return respond(&mut stream, "400 Bad Request", "text/plain", "too long\n").await;
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..read]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut words = std::str::from_utf8(line).unwrap_or_default().split(' ');
    let (method, path) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    );
    if method != "GET" {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n",
        )
        .await;
    }
    match path {
        "/metrics" => {
            let body = handle.render();
            respond(&mut stream, "200 OK", "text/plain; version=0.0.4", &body).await
        }
        "/status" => match cluster.status().await {
            Ok(status) => {
                let body = status_json(&status);
                respond(&mut stream, "200 OK", "application/json", &body).await
            }
            Err(e) => {
                let body = format!("{e}\n");
                respond(&mut stream, "503 Service Unavailable", "text/plain", &body).await
            }
        },
        _ => {
            respond(
                &mut stream,
                "404 Not Found",
                "text/plain",
                "/metrics or /status\n",
            )
            .await
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
