//! The inference thread: owns the loaded model, takes the queued requests, runs them together
//! (dynamic batching) on the same path as `predict` and `embed`, and answers each request.
//!
//! One thread owns the model, so the model never crosses threads and requests never run
//! concurrently on it; the backend's own threads parallelise each pass. A round starts with the
//! oldest waiting request and gathers more until `max_batch` texts are waiting or `max_wait` has
//! passed; the texts of a round are then split into groups of similar length (where the padding
//! saved outweighs the cost of another pass) and each group runs through
//! [`LoadedClassifier::predict`] or [`Embedder::embed_flagged`], what `predict` and `embed` run.

use super::metrics::Metrics;
use crate::infer::embed::EmbedPooling;
use crate::data::batch::length_groups;
use crate::config::Precision;
use crate::data::classify::{LabelSet, Problem};
use crate::eval::thresholds::Thresholds;
use crate::infer::classifier::LoadedClassifier;
use crate::infer::embed::Embedder;
use crate::store::model_dir::{ModelKind, ModelMeta};
use anyhow::Result;
use burn::module::Module;
use serde::Serialize;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// What a request asks of the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Work {
    /// Label probabilities.
    Predict,
    /// Pooled vectors.
    Embed {
        /// How position states become one vector.
        pooling: EmbedPooling,
        /// Scale to unit length.
        normalize: bool,
    },
}

/// What the model says of one request's texts.
#[derive(Debug)]
pub enum Output {
    /// `[texts][labels]` probabilities, in the model's label order.
    Probabilities(Vec<Vec<f32>>),
    /// `[texts][dim]` vectors.
    Vectors(Vec<Vec<f32>>),
}

/// The answer to one request: its output and, per text, whether it was cut to `max_len`.
pub type Answer = Result<(Output, Vec<bool>), String>;

/// One request waiting for the model.
pub struct Job {
    /// Its texts (`a<TAB>b` is a pair), none empty.
    pub texts: Vec<String>,
    /// What to compute.
    pub work: Work,
    /// Where the answer goes (the request may have gone away: then it is dropped).
    pub reply: oneshot::Sender<Answer>,
}

/// What the server knows of its model without touching it: for `/v1/model` and for turning
/// probabilities into decisions on the request's own thread.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// `classifier`, `ensemble`, `linear` or `pretrained`.
    pub kind: ModelKind,
    /// Its problem type (classifiers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<Problem>,
    /// Its labels, in output order (classifiers).
    pub labels: Vec<String>,
    /// The default multi-label threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// One threshold a label, when tuned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_thresholds: Option<Vec<f64>>,
    /// The backbone's shape (models with one backbone): `[model]` settings as saved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<crate::config::ModelConfig>,
    /// Width of `/v1/embed`'s vectors (0: no embeddings).
    pub embedding_dim: usize,
    /// Whether `/v1/embed` can pool with BERT's pooler.
    pub has_pooler: bool,
    /// Trainable values of the backbone (models with one backbone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backbone_parameters: Option<usize>,
    /// Members of an ensemble, as named in its `model.json`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// The bertlu version that wrote it.
    pub bertlu_version: String,
}

impl ModelInfo {
    /// Whether `/v1/predict` can answer.
    pub fn predicts(&self) -> bool {
        self.kind != ModelKind::Pretrained
    }

    /// The stored thresholds, or one global `threshold` that replaces them.
    pub fn thresholds(&self, threshold: Option<f64>) -> Thresholds {
        match (threshold, &self.label_thresholds) {
            (Some(t), _) => Thresholds::Global(t),
            (None, Some(per)) => Thresholds::PerLabel(per.clone()),
            (None, None) => Thresholds::Global(self.threshold.unwrap_or(0.5)),
        }
    }

    /// The labels as a set.
    pub fn label_set(&self) -> LabelSet {
        LabelSet::from_names(self.labels.clone())
    }
}

/// The loaded model: a classifier (with its backbone as an embedder when it has exactly one),
/// or a pre-trained encoder that only embeds.
enum Engine {
    Classifier { clf: LoadedClassifier, embedder: Option<Embedder> },
    Encoder(Embedder),
}

impl Engine {
    /// Loads the model at `path`, its products' inputs in `precision`, texts cut at `max_len`
    /// pieces when given (else the model's own).
    fn open(path: &Path, precision: Precision, max_len: Option<usize>) -> Result<(Self, ModelInfo)> {
        let meta = ModelMeta::read(path)?;
        let mut info = ModelInfo {
            kind: meta.kind,
            problem: meta.problem,
            labels: Vec::new(),
            threshold: None,
            label_thresholds: None,
            model: None,
            embedding_dim: 0,
            has_pooler: false,
            backbone_parameters: None,
            members: meta.members.clone(),
            bertlu_version: meta.bertlu_version.clone(),
        };
        let embedder = match meta.kind {
            ModelKind::Pretrained | ModelKind::Classifier => Some(Embedder::open(path)?.with_precision(precision).with_max_len(max_len)?),
            ModelKind::Linear | ModelKind::Ensemble => None,
        };
        if let Some(e) = &embedder {
            info.model = Some(e.dir().config.model.clone());
            info.embedding_dim = e.dim();
            info.has_pooler = e.has_pooler();
            info.backbone_parameters = Some(e.backbone().num_params());
        }
        if meta.kind == ModelKind::Pretrained {
            return Ok((Engine::Encoder(embedder.expect("a pre-trained model has a backbone")), info));
        }
        let clf = LoadedClassifier::open(path)?.with_precision(precision).with_max_len(max_len)?;
        info.problem = Some(clf.problem);
        info.labels = clf.labels.names().to_vec();
        info.threshold = Some(clf.meta.threshold);
        info.label_thresholds = clf.meta.label_thresholds.clone();
        Ok((Engine::Classifier { clf, embedder }, info))
    }

    /// Runs texts; an error is a reason the request gets.
    fn run(&self, texts: &[String], work: Work, max_batch: usize) -> Result<(Output, Vec<bool>), String> {
        match (self, work) {
            (Engine::Classifier { clf, .. }, Work::Predict) => {
                let p = clf.predict(texts, max_batch);
                Ok((Output::Probabilities(p.probs), p.truncated))
            }
            (Engine::Encoder(_), Work::Predict) => Err("this is a pre-trained encoder without labels: it answers /v1/embed only".into()),
            (Engine::Classifier { embedder: Some(e), .. } | Engine::Encoder(e), Work::Embed { pooling, normalize }) => {
                let (vectors, cut) = e.embed_flagged(texts, pooling, normalize, max_batch);
                Ok((Output::Vectors(vectors), cut))
            }
            (Engine::Classifier { .. }, Work::Embed { .. }) => Err("this model has no single encoder to embed with (a linear model or an ensemble): it answers /v1/predict only".into()),
        }
    }
}

/// The queue in front of the inference thread.
pub struct Queue {
    sender: std::sync::Mutex<Option<mpsc::Sender<Job>>>,
    waiting: Arc<AtomicUsize>,
    capacity: usize,
}

/// Why a request was not queued.
#[derive(Debug, PartialEq)]
pub enum Refused {
    /// More texts are waiting than the queue holds.
    Full,
    /// The server is stopping.
    Closed,
}

impl Queue {
    /// Queues a job unless more than `capacity` texts would then be waiting (a job alone in an
    /// empty queue always goes in, so one large request can never be refused forever).
    pub fn submit(&self, job: Job) -> Result<(), Refused> {
        let n = job.texts.len();
        let before = self.waiting.fetch_add(n, Ordering::SeqCst);
        if before + n > self.capacity && before > 0 {
            self.waiting.fetch_sub(n, Ordering::SeqCst);
            return Err(Refused::Full);
        }
        let sent = self.sender.lock().expect("queue lock").as_ref().map(|s| s.send(job).is_ok()).unwrap_or(false);
        if !sent {
            self.waiting.fetch_sub(n, Ordering::SeqCst);
            return Err(Refused::Closed);
        }
        Ok(())
    }

    /// Texts waiting.
    pub fn depth(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Stops taking jobs; the inference thread ends once it has answered those queued.
    pub fn close(&self) {
        self.sender.lock().expect("queue lock").take();
    }
}

/// Batching settings.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Most texts a round gathers (a longer request runs alone, in batches of this size).
    pub max_batch: usize,
    /// Longest wait for more requests after the first of a round.
    pub max_wait: Duration,
    /// Most texts waiting; more are refused.
    pub max_queue: usize,
}

/// Loads the model on a new thread that then serves the queue; returns once the model is
/// loaded (or failed to load).
pub fn start(path: &Path, batching: Batching, precision: Precision, max_len: Option<usize>, metrics: Arc<Metrics>) -> Result<(Arc<Queue>, ModelInfo, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<Job>();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<ModelInfo>>();
    let waiting = Arc::new(AtomicUsize::new(0));
    let queue = Arc::new(Queue { sender: std::sync::Mutex::new(Some(tx)), waiting: waiting.clone(), capacity: batching.max_queue });
    let shown = path.display().to_string();
    let path = path.to_path_buf();
    let handle = std::thread::Builder::new()
        .name("bertlu-inference".into())
        .spawn(move || {
            let engine = match Engine::open(&path, precision, max_len) {
                Ok((engine, info)) => {
                    let _ = ready_tx.send(Ok(info));
                    engine
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            serve_queue(&engine, &rx, &waiting, batching, &metrics);
        })?;
    match ready_rx.recv() {
        Ok(Ok(info)) => Ok((queue, info, handle)),
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(e)
        }
        Err(_) => {
            let _ = handle.join();
            anyhow::bail!("{shown}: the inference thread ended while loading the model");
        }
    }
}

/// The inference thread's loop: rounds until the queue is closed and empty.
fn serve_queue(engine: &Engine, rx: &mpsc::Receiver<Job>, waiting: &AtomicUsize, b: Batching, metrics: &Metrics) {
    while let Ok(first) = rx.recv() {
        let deadline = Instant::now() + b.max_wait;
        let mut count = first.texts.len();
        let mut jobs = vec![first];
        while count < b.max_batch {
            let job = match rx.try_recv() {
                Ok(job) => job,
                Err(mpsc::TryRecvError::Disconnected) => break,
                Err(mpsc::TryRecvError::Empty) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => match rx.recv_timeout(left) {
                        Ok(job) => job,
                        Err(_) => break,
                    },
                    _ => break,
                },
            };
            count += job.texts.len();
            jobs.push(job);
        }
        waiting.fetch_sub(count, Ordering::SeqCst);
        run_round(engine, jobs, b.max_batch, metrics);
    }
}

/// A pass through the model costs about as much as this many texts of the round's mean length:
/// a round is split by length where the padding saved is worth more (see [`length_groups`]).
/// Measured on Debtags test texts with a 2-layer Transformer, 64 clients: 0 → 641 texts/s,
/// 0.3 → 921, 1 → 881–1,011, 3 → 961, 8 → 816, 20 → 645 (one pass a round: ~730).
const PASS_COST_TEXTS: f64 = 2.0;

/// Runs a round's jobs: those asking the same thing go through the model together, split into
/// groups of similar length.
fn run_round(engine: &Engine, jobs: Vec<Job>, max_batch: usize, metrics: &Metrics) {
    let mut rest = jobs;
    while let Some(work) = rest.first().map(|j| j.work) {
        let (same, other): (Vec<Job>, Vec<Job>) = rest.into_iter().partition(|j| j.work == work);
        rest = other;
        let texts: Vec<&String> = same.iter().flat_map(|j| j.texts.iter()).collect();
        metrics.observe_batch(texts.len());
        // characters stand in for word pieces: the grouping needs no tokenizing
        let lengths: Vec<usize> = texts.iter().map(|t| t.chars().count().max(1)).collect();
        let mean = lengths.iter().sum::<usize>() as f64 / lengths.len().max(1) as f64;
        let mut outputs: Vec<Option<(Vec<f32>, bool)>> = (0..texts.len()).map(|_| None).collect();
        let mut failure = None;
        for group in length_groups(&lengths, max_batch, PASS_COST_TEXTS * mean) {
            let batch: Vec<String> = group.iter().map(|&i| texts[i].clone()).collect();
            // a panic inside the model answers with an error and leaves the server up
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine.run(&batch, work, max_batch))).unwrap_or_else(|_| Err("internal error while running the model".into()));
            match result {
                Ok((Output::Probabilities(rows) | Output::Vectors(rows), cut)) => {
                    for ((&i, row), c) in group.iter().zip(rows).zip(cut) {
                        outputs[i] = Some((row, c));
                    }
                }
                Err(e) => failure = Some(e),
            }
        }
        if failure.is_none() {
            metrics.add_examples(texts.len());
        }
        let mut outputs = outputs.into_iter();
        for job in same {
            let mine: Vec<Option<(Vec<f32>, bool)>> = outputs.by_ref().take(job.texts.len()).collect();
            let answer = match (&failure, mine.into_iter().collect::<Option<Vec<_>>>()) {
                (None, Some(rows)) => {
                    let (rows, cut): (Vec<Vec<f32>>, Vec<bool>) = rows.into_iter().unzip();
                    Ok((if work == Work::Predict { Output::Probabilities(rows) } else { Output::Vectors(rows) }, cut))
                }
                (Some(e), _) => Err(e.clone()),
                (None, None) => Err("internal error: a text without an answer".into()),
            };
            let _ = job.reply.send(answer);
        }
    }
}
