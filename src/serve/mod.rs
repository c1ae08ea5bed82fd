//! `bertlu serve`: a saved model behind HTTP (tokio + axum). Requests are checked on the
//! server's async threads, queued, and run together by one inference thread
//! ([`engine`]: dynamic batching on `predict`'s and `embed`'s own code path); [`api`] holds the
//! routes and [`metrics`] the Prometheus counters.
//!
//! | route | |
//! |---|---|
//! | `POST /v1/predict` | `{"texts": [...]}` or `{"pairs": [[a, b], ...]}`, optional `top_k`, `threshold` |
//! | `POST /v1/embed` | the same texts, optional `pooling` (`cls`, `mean`, `max`), `normalize` |
//! | `GET /v1/model` | kind, labels, thresholds, backbone shape |
//! | `GET /health` | `{"status": "ok"}` (never needs the API key) |
//! | `GET /metrics` | Prometheus text format |

pub mod api;
pub mod engine;
pub mod metrics;

use anyhow::{bail, Context, Result};
use api::AppState;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use crate::config::Precision;
use engine::{Batching, ModelInfo};
use metrics::Metrics;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The model directory: a classifier, an ensemble, a `linear` model or a pre-trained encoder.
    pub model: PathBuf,
    /// Where to listen.
    pub addr: SocketAddr,
    /// Most texts run together.
    pub max_batch: usize,
    /// Longest wait for more requests before a batch runs.
    pub max_wait: Duration,
    /// Most texts waiting; more are answered 503.
    pub max_queue: usize,
    /// Largest request body in bytes; larger ones are answered 413.
    pub max_body: usize,
    /// A file whose content (trimmed) is the bearer token every route but `/health` needs.
    pub api_key_file: Option<PathBuf>,
    /// Number format of the model's matrix-product inputs (bf16 where the CPU has AVX-512 BF16).
    pub precision: Precision,
    /// Pieces a text is cut at, when not the model's own `max_len`.
    pub max_len: Option<usize>,
}

impl ServeOptions {
    /// The defaults for a model: 127.0.0.1:8080, batches of 64, no wait for more requests, a queue of 1,024 texts, 1 MiB
    /// bodies, f32.
    pub fn new(model: PathBuf) -> Self {
        Self { model, addr: SocketAddr::from(([127, 0, 0, 1], 8080)), max_batch: 64, max_wait: Duration::ZERO, max_queue: 1024, max_body: 1 << 20, api_key_file: None, precision: Precision::F32, max_len: None }
    }

    /// Most texts one request may carry: four batches.
    pub fn max_texts(&self) -> usize {
        self.max_batch * 4
    }
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    info: ModelInfo,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    inference: std::thread::JoinHandle<()>,
}

impl Server {
    /// Loads the model, binds the address and starts answering (inside a tokio runtime).
    pub async fn start(options: ServeOptions) -> Result<Self> {
        if options.max_batch == 0 || options.max_queue == 0 || options.max_body == 0 {
            bail!("--max-batch, --max-queue and --max-body must be at least 1");
        }
        let api_key = options.api_key_file.as_ref().map(|f| read_api_key(f)).transpose()?;
        let metrics = Arc::new(Metrics::new());
        let batching = Batching { max_batch: options.max_batch, max_wait: options.max_wait, max_queue: options.max_queue };
        let (model, precision, max_len) = (options.model.clone(), options.precision, options.max_len);
        let m = metrics.clone();
        let (queue, info, inference) = tokio::task::spawn_blocking(move || engine::start(&model, batching, precision, max_len, m)).await.context("loading the model")??;
        let listener = match tokio::net::TcpListener::bind(options.addr).await {
            Ok(l) => l,
            Err(e) => {
                queue.close();
                let _ = inference.join();
                bail!("{}: cannot listen: {e}", options.addr);
            }
        };
        let addr = listener.local_addr()?;
        let state = Arc::new(AppState { labels: info.label_set(), info: info.clone(), queue: queue.clone(), metrics, max_texts: options.max_texts(), api_key });
        let app = router(state, options.max_body);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let result = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
            // in-flight requests are answered; the inference thread ends with the queue
            queue.close();
            result
        });
        Ok(Self { addr, info, stop, task, inference })
    }

    /// The address it listens on (with the port chosen when 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The model it serves.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Stops accepting connections, answers the requests in flight, and returns.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        self.task.await.context("the server task")?.context("serving")?;
        let inference = self.inference;
        tokio::task::spawn_blocking(move || inference.join()).await?.map_err(|_| anyhow::anyhow!("the inference thread panicked"))?;
        Ok(())
    }

    /// Serves until one of `signals` arrives (Ctrl-C or SIGTERM), then stops as
    /// [`Server::stop`] does.
    pub async fn run_until(self, signals: StopSignals) -> Result<()> {
        signals.recv().await;
        eprintln!("serve: stopping: answering the requests in flight");
        self.stop().await
    }
}

/// Ctrl-C and SIGTERM, listened for from the moment this is made: made before the server
/// starts, a signal that arrives before the server waits for one (a supervisor stopping it as
/// soon as it answers) still stops it gracefully instead of killing it by the default action.
pub struct StopSignals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    /// Starts listening; needs a Tokio runtime with its I/O driver.
    pub fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Self { interrupt: signal(SignalKind::interrupt()).ok(), terminate: signal(SignalKind::terminate()).ok() }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Waits for the first of the signals.
    async fn recv(self) {
        #[cfg(unix)]
        {
            async fn next(signal: Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                _ = next(self.interrupt) => {},
                _ = next(self.terminate) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn router(state: Arc<AppState>, max_body: usize) -> Router {
    Router::new()
        .route("/v1/predict", post(api::predict))
        .route("/v1/embed", post(api::embed))
        .route("/v1/model", get(api::model))
        .route("/health", get(api::health))
        .route("/metrics", get(api::metrics))
        .fallback(api::not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(state.clone(), api::authorize))
        .layer(axum::middleware::from_fn_with_state(state.clone(), api::count))
        .with_state(state)
}

fn read_api_key(path: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read the API key", path.display()))?;
    let key = text.trim();
    if key.is_empty() {
        bail!("{}: the API key file is empty", path.display());
    }
    if key.contains(char::is_whitespace) {
        bail!("{}: the API key holds white space", path.display());
    }
    Ok(key.to_owned())
}

