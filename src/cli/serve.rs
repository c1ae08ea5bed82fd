//! `bertlu serve`: a model behind HTTP until Ctrl-C or SIGTERM.

use anyhow::Result;
use bertlu::serve::{ServeOptions, Server, StopSignals};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Model directory: a classifier, an ensemble, a `linear` model, or a pre-trained encoder (embeddings only).
    #[arg(long)]
    pub model: PathBuf,
    /// Address to listen on (loopback unless told otherwise).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Most texts run through the model together; a request may carry four times as many.
    #[arg(long, default_value_t = 64)]
    pub max_batch: usize,
    /// Longest wait, in milliseconds, for more requests to join a batch. 0: a round takes what
    /// is waiting and runs at once (requests that arrive during a round wait for the next one),
    /// measured best at 1 and 16 clients and level at 64 for the small models.
    #[arg(long, default_value_t = 0)]
    pub max_wait_ms: u64,
    /// Most texts waiting for the model; beyond, requests get 503 with Retry-After.
    #[arg(long, default_value_t = 1024)]
    pub max_queue: usize,
    /// Largest request body in bytes (413 beyond).
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body: usize,
    /// File holding the API key: every route but /health then needs `Authorization: Bearer KEY`.
    #[arg(long)]
    pub api_key_file: Option<PathBuf>,
    /// Threads answering HTTP (parsing, JSON); the model runs on its own thread and the backend's.
    #[arg(long, default_value_t = 2)]
    pub http_threads: usize,
    #[command(flatten)]
    pub prediction: super::PredictionOptions,
}

/// Runs `serve`.
pub fn run(a: ServeArgs) -> Result<()> {
    let options = ServeOptions {
        addr: a.addr,
        max_batch: a.max_batch,
        max_wait: Duration::from_millis(a.max_wait_ms),
        max_queue: a.max_queue,
        max_body: a.max_body,
        api_key_file: a.api_key_file,
        precision: a.prediction.checked("serve"),
        max_len: a.prediction.max_len,
        ..ServeOptions::new(a.model)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(a.http_threads.max(1)).enable_all().build()?;
    runtime.block_on(async {
        // listened for before the server answers, so an early SIGTERM stops it gracefully too
        let signals = StopSignals::listen();
        let server = Server::start(options).await?;
        let info = server.info();
        eprintln!(
            "serve: {} model, {} labels, on http://{} (POST /v1/predict, /v1/embed; GET /v1/model, /health, /metrics); Ctrl-C stops",
            serde_json::to_value(info.kind)?.as_str().unwrap_or("?"),
            info.labels.len(),
            server.addr()
        );
        server.run_until(signals).await?;
        eprintln!("serve: stopped");
        Ok(())
    })
}
