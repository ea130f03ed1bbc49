//! Prometheus metrics: a recorder for the `metrics` facade and a `/metrics`
//! endpoint serving it in the Prometheus text format.
//!
//! Code anywhere in the process records with `metrics::counter!`,
//! `metrics::gauge!` and `metrics::histogram!`; without an installed
//! exporter those calls do nothing. Histograms are real buckets: sizes
//! (names ending in `_size`) from 1 to 5,000, every other histogram (the
//! `_seconds` ones) from 1 ms to 30 s.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Bucket bounds of every histogram not named `*_size`: latencies, 1 ms to 30 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Bucket bounds of every `*_size` histogram (counts of things, e.g. rows per batch).
pub const SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
];

/// How often histogram samples are folded into their buckets between scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The running `/metrics` endpoint; dropping it stops serving (the recorder
/// stays installed).
pub struct MetricsServer {
    addr: SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl MetricsServer {
    /// The address the endpoint is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Installs the Prometheus recorder as the process's global `metrics`
/// recorder and serves it on `addr` at `/metrics`. Runs on the current tokio
/// runtime, or on a thread of its own when called outside one. Fails if the
/// address cannot be bound or a recorder is already installed.
pub fn install(addr: SocketAddr) -> anyhow::Result<MetricsServer> {
    let recorder = PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_size".to_owned()), SIZE_BUCKETS)?
        .build_recorder();
    let handle = recorder.handle();
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("cannot listen for metrics on {addr}"))?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    metrics::set_global_recorder(recorder)
        .map_err(|_| anyhow::anyhow!("a metrics recorder is already installed"))?;

    let task = match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            let _entered = runtime.enter();
            let listener = tokio::net::TcpListener::from_std(listener)?;
            Some(runtime.spawn(serve(listener, handle)))
        }
        Err(_) => {
            std::thread::Builder::new()
                .name("metrics-http".to_owned())
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build();
                    match runtime {
                        Ok(runtime) => runtime.block_on(async move {
                            match tokio::net::TcpListener::from_std(listener) {
                                Ok(listener) => serve(listener, handle).await,
                                Err(error) => {
                                    tracing::error!(%error, "metrics endpoint cannot start");
                                }
                            }
                        }),
                        Err(error) => tracing::error!(%error, "metrics endpoint cannot start"),
                    }
                })?;
            None
        }
    };
    Ok(MetricsServer { addr: local, task })
}

async fn serve(listener: tokio::net::TcpListener, handle: PrometheusHandle) {
    let upkeep = handle.clone();
    let mut every = tokio::time::interval(UPKEEP_INTERVAL);
    loop {
        tokio::select! {
            _ = every.tick() => upkeep.run_upkeep(),
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let handle = handle.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |request| {
                            let handle = handle.clone();
                            async move { Ok::<_, Infallible>(respond(&handle, &request)) }
                        });
                        if let Err(error) = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                        {
                            tracing::debug!(%error, "metrics connection failed");
                        }
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "metrics endpoint cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

fn respond(handle: &PrometheusHandle, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    if request.method() != Method::GET {
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    } else if request.uri().path() == "/metrics" {
        *response.body_mut() = Full::new(Bytes::from(handle.render()));
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
    } else {
        *response.status_mut() = StatusCode::NOT_FOUND;
    }
    response
}
