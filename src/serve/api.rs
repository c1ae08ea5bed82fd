//! The HTTP side: JSON requests → checked texts → the queue → JSON answers, and every refusal
//! as a status with a one-line reason (`{"error": "…"}`).

use super::engine::{Job, ModelInfo, Output, Queue, Refused, Work};
use super::metrics::Metrics;
use crate::infer::embed::EmbedPooling;
use crate::data::classify::LabelSet;
use crate::infer::classifier::decide;
use crate::text::labelled::PAIR_SEPARATOR;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;
use subtle::ConstantTimeEq;

/// What every handler shares.
pub struct AppState {
    /// The model's description.
    pub info: ModelInfo,
    /// Its labels, for decisions.
    pub labels: LabelSet,
    /// The way to the inference thread.
    pub queue: Arc<Queue>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Most texts one request may carry.
    pub max_texts: usize,
    /// With `--api-key-file`: the bearer token every route but `/health` needs.
    pub api_key: Option<String>,
}

/// A refused request: its status and one line that says why.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    reason: String,
}

impl ApiError {
    fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Self { status, reason: reason.into() }
    }

    fn bad(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let line = self.reason.replace('\n', " ");
        let mut response = (self.status, Json(serde_json::json!({ "error": line }))).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// The body of `/v1/predict`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    /// Texts (a TAB makes a text a pair, as in `predict`'s input files).
    pub texts: Option<Vec<String>>,
    /// Sentence pairs.
    pub pairs: Option<Vec<(String, String)>>,
    /// At most this many labels a text (single-label: the top k).
    pub top_k: Option<usize>,
    /// One multi-label threshold for every label instead of the model's.
    pub threshold: Option<f64>,
}

/// The body of `/v1/embed`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedRequest {
    /// Texts.
    pub texts: Option<Vec<String>>,
    /// Sentence pairs.
    pub pairs: Option<Vec<(String, String)>>,
    /// `cls`, `mean` (default), `max` or `pooler`.
    pub pooling: Option<EmbedPooling>,
    /// Scale every vector to unit length.
    #[serde(default)]
    pub normalize: bool,
}

/// One chosen label.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct LabelScore {
    /// Its name.
    pub label: String,
    /// Its probability.
    pub probability: f32,
}

/// What `/v1/predict` says of one text.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Prediction {
    /// Chosen labels, most probable first.
    pub labels: Vec<LabelScore>,
    /// Whether the text was cut to the model's `max_len`.
    pub truncated: bool,
}

/// The answer of `/v1/predict`.
#[derive(Debug, Serialize, Deserialize)]
pub struct PredictResponse {
    /// One a text, in request order.
    pub predictions: Vec<Prediction>,
}

/// What `/v1/embed` says of one text.
#[derive(Debug, Serialize, Deserialize)]
pub struct Embedding {
    /// The vector.
    pub vector: Vec<f32>,
    /// Whether the text was cut to the model's `max_len`.
    pub truncated: bool,
}

/// The answer of `/v1/embed`.
#[derive(Debug, Serialize, Deserialize)]
pub struct EmbedResponse {
    /// One a text, in request order.
    pub embeddings: Vec<Embedding>,
}

fn parse<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad(format!("request body: {e}")))
}

/// The request's texts, checked: exactly one of `texts` and `pairs`, none empty, at most
/// `max` of them. Pairs become `a<TAB>b`.
fn texts_of(texts: Option<Vec<String>>, pairs: Option<Vec<(String, String)>>, max: usize) -> Result<Vec<String>, ApiError> {
    let out = match (texts, pairs) {
        (Some(texts), None) => {
            if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
                return Err(ApiError::bad(format!("texts[{i}]: empty text")));
            }
            texts
        }
        (None, Some(pairs)) => {
            for (i, (a, b)) in pairs.iter().enumerate() {
                for (side, t) in [(0, a), (1, b)] {
                    if t.trim().is_empty() {
                        return Err(ApiError::bad(format!("pairs[{i}][{side}]: empty text")));
                    }
                    if t.contains(PAIR_SEPARATOR) {
                        return Err(ApiError::bad(format!("pairs[{i}][{side}]: a TAB inside one side of a pair")));
                    }
                }
            }
            pairs.into_iter().map(|(a, b)| format!("{a}{PAIR_SEPARATOR}{b}")).collect()
        }
        (Some(_), Some(_)) => return Err(ApiError::bad("give `texts` or `pairs`, not both")),
        (None, None) => return Err(ApiError::bad("missing field `texts` (or `pairs`)")),
    };
    if out.is_empty() {
        return Err(ApiError::bad("no texts"));
    }
    if out.len() > max {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("{} texts in one request; at most {max}", out.len())));
    }
    Ok(out)
}

/// Queues texts and waits for the model's answer.
async fn ask(state: &AppState, texts: Vec<String>, work: Work) -> Result<(Output, Vec<bool>), ApiError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    state.queue.submit(Job { texts, work, reply }).map_err(|r| match r {
        Refused::Full => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the queue is full; retry later"),
        Refused::Closed => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping"),
    })?;
    match answer.await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(reason)) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, reason)),
        Err(_) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the model stopped before answering")),
    }
}

/// `POST /v1/predict`.
pub async fn predict(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Result<Json<PredictResponse>, ApiError> {
    let req: PredictRequest = parse(body)?;
    if !state.info.predicts() {
        return Err(ApiError::bad("this is a pre-trained encoder without labels: it answers /v1/embed only"));
    }
    if let Some(t) = req.threshold {
        if !(0.0..=1.0).contains(&t) {
            return Err(ApiError::bad(format!("threshold: {t} is not within 0 and 1")));
        }
    }
    if req.top_k == Some(0) {
        return Err(ApiError::bad("top_k: must be at least 1"));
    }
    let texts = texts_of(req.texts, req.pairs, state.max_texts)?;
    let (Output::Probabilities(probs), cut) = ask(&state, texts, Work::Predict).await? else {
        return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the model answered with vectors"));
    };
    let thresholds = state.info.thresholds(req.threshold);
    let problem = state.info.problem.unwrap_or(crate::data::classify::Problem::MultiLabel);
    let predictions = probs
        .iter()
        .zip(cut)
        .map(|(p, truncated)| Prediction {
            labels: decide(p, problem, &thresholds, req.top_k).into_iter().map(|(i, probability)| LabelScore { label: state.labels.name(i).to_owned(), probability }).collect(),
            truncated,
        })
        .collect();
    Ok(Json(PredictResponse { predictions }))
}

/// `POST /v1/embed`.
pub async fn embed(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Result<Json<EmbedResponse>, ApiError> {
    let req: EmbedRequest = parse(body)?;
    if state.info.embedding_dim == 0 {
        return Err(ApiError::bad("this model has no single encoder to embed with (a linear model or an ensemble): it answers /v1/predict only"));
    }
    if req.pooling == Some(EmbedPooling::Pooler) && !state.info.has_pooler {
        return Err(ApiError::bad("pooling: this model has no pooler (dense + tanh); use cls, mean or max"));
    }
    let texts = texts_of(req.texts, req.pairs, state.max_texts)?;
    let work = Work::Embed { pooling: req.pooling.unwrap_or(EmbedPooling::Mean), normalize: req.normalize };
    let (Output::Vectors(vectors), cut) = ask(&state, texts, work).await? else {
        return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the model answered with probabilities"));
    };
    Ok(Json(EmbedResponse { embeddings: vectors.into_iter().zip(cut).map(|(vector, truncated)| Embedding { vector, truncated }).collect() }))
}

/// `GET /v1/model`.
pub async fn model(State(state): State<Arc<AppState>>) -> Json<ModelInfo> {
    Json(state.info.clone())
}

/// `GET /health`.
pub async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let text = state.metrics.render(state.queue.depth());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// An unknown path.
pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint (see /v1/predict, /v1/embed, /v1/model, /health, /metrics)")
}

/// The routes the metrics name; anything else is `other`, so a scan of random paths cannot grow
/// the metrics without bound.
pub const ENDPOINTS: &[&str] = &["/v1/predict", "/v1/embed", "/v1/model", "/health", "/metrics"];

/// Middleware: counts every answer by endpoint and status, with its latency.
pub async fn count(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let path = request.uri().path();
    let endpoint = ENDPOINTS.iter().find(|e| **e == path).copied().unwrap_or("other");
    let response = next.run(request).await;
    state.metrics.observe_request(endpoint, response.status().as_u16(), started.elapsed());
    response
}

/// Middleware: with an API key, every route but `/health` needs `Authorization: Bearer KEY`
/// (compared in constant time).
pub async fn authorize(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let Some(key) = &state.api_key else {
        return next.run(request).await;
    };
    if request.uri().path() == "/health" {
        return next.run(request).await;
    }
    let given = request.headers().get(header::AUTHORIZATION).and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    match given {
        Some(token) if bool::from(token.ct_eq(key.as_bytes())) => next.run(request).await,
        Some(_) => unauthorized("wrong API key"),
        None => unauthorized("missing `Authorization: Bearer <API key>` header"),
    }
}

fn unauthorized(reason: &str) -> Response {
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, reason).into_response();
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}
