//! The load test of `bertlu serve` (`bertlu bench --serve URL`): closed-loop async clients
//! (tokio + reqwest, one connection pool), each sending the next text of a file as fast as the
//! answers come back, optionally mixed with malformed requests; per level of concurrency the
//! texts a second, latency percentiles (HdrHistogram), the server's batch sizes and resident
//! memory (read from its `/metrics`), and the statuses — measured beside the same model's
//! offline throughput (`predict`'s code path, in this process) when it is given.

use crate::infer::classifier::LoadedClassifier;
use crate::serve::api::{Prediction, PredictResponse};
use crate::text::labelled::split_line;
use crate::text::reader::Lines;
use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to send.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// The server, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// Texts to send, in turn.
    pub texts: Vec<String>,
    /// Concurrent clients of each level.
    pub clients: Vec<usize>,
    /// How long each level lasts.
    pub duration: Duration,
    /// Load before the first level, not measured (model and allocator warm-up).
    pub warmup: Duration,
    /// Shares of malformed requests: each level runs once per share.
    pub malformed: Vec<f64>,
    /// Texts a request.
    pub texts_per_request: usize,
    /// Bearer token, when the server wants one.
    pub api_key: Option<String>,
    /// Seed of the choice of malformed requests.
    pub seed: u64,
}

/// One level's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct LevelResult {
    /// Concurrent clients.
    pub clients: usize,
    /// Share of malformed requests asked.
    pub malformed_share: f64,
    /// Seconds it ran.
    pub seconds: f64,
    /// Well-formed requests answered 200.
    pub ok: u64,
    /// Texts answered a second (well-formed requests only).
    pub texts_per_second: f64,
    /// Latency percentiles of the well-formed requests, milliseconds.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Malformed requests sent.
    pub malformed_sent: u64,
    /// Of those, answered with a 4xx status.
    pub malformed_4xx: u64,
    /// Statuses that should not have come: a well-formed request not answered 200, a malformed
    /// one not answered 4xx (status 0: no answer).
    pub unexpected: BTreeMap<u16, u64>,
    /// 5xx answers, all requests.
    pub server_errors: u64,
    /// Answers whose labels differ from the offline model's for the same text (with `offline`).
    pub label_mismatches: Option<u64>,
    /// Mean texts a model pass on the server during the level.
    pub mean_batch: f64,
    /// Upper bound of the largest batch the server ran (its histogram bucket).
    pub largest_batch_at_most: f64,
    /// Server resident memory at the level's start and end, MiB.
    pub rss_start_mib: f64,
    /// See `rss_start_mib`.
    pub rss_end_mib: f64,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// Texts offline a second (`predict`'s code path, batches of 64, tokenizing included).
    pub offline_texts_per_second: Option<f64>,
    /// Server memory after warm-up, MiB.
    pub rss_after_warmup_mib: f64,
    /// The levels.
    pub levels: Vec<LevelResult>,
}

/// Texts of a file (labels dropped; `a<TAB>b` pairs kept), as `predict` reads them.
pub fn read_texts(path: &Path) -> Result<Vec<String>> {
    let mut texts = Vec::new();
    for line in Lines::open(path)? {
        let line = line?;
        let (text, _) = split_line(&line.text).map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), line.number))?;
        if !text.trim().is_empty() {
            texts.push(text);
        }
    }
    if texts.is_empty() {
        bail!("{}: no texts", path.display());
    }
    Ok(texts)
}

/// Offline texts a second of `model` over `texts` as `predict` computes them (median of three
/// passes after one warm-up),
/// and its label names for each text (the reference the server's answers are checked against).
pub fn offline(model: &Path, texts: &[String]) -> Result<(f64, Vec<Vec<String>>)> {
    let clf = LoadedClassifier::open(model)?;
    let thresholds = clf.thresholds(None);
    let _ = clf.probabilities(&texts[..texts.len().min(256)], 64);
    let mut rates = Vec::new();
    let mut probs = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        // as `predict` runs: 1,024 lines at a time, batches of 64 sorted by length within them
        probs = texts.chunks(1024).flat_map(|c| clf.probabilities(c, 64)).collect();
        rates.push(texts.len() as f64 / start.elapsed().as_secs_f64());
    }
    let labels = probs
        .iter()
        .map(|p| crate::infer::classifier::decide(p, clf.problem, &thresholds, None).into_iter().map(|(i, _)| clf.labels.name(i).to_owned()).collect())
        .collect();
    Ok((crate::eval::stats::median(&rates), labels))
}

/// The malformed bodies sent, in turn: each must be answered 4xx.
const MALFORMED: &[&[u8]] = &[
    b"{\"texts\": [\"unclosed\"",
    b"{\"texts\": \"not a list\"}",
    b"{\"texts\": [\"a\"], \"unknown\": 1}",
    b"{\"texts\": [\"\"]}",
    b"{\"texts\": [\"\xff\xfe invalid utf-8\"]}",
    b"{\"texts\": [42]}",
];

/// Runs every level against the server.
pub fn run(spec: &LoadSpec, reference: Option<(f64, Vec<Vec<String>>)>) -> Result<LoadReport> {
    if spec.clients.is_empty() || spec.clients.contains(&0) || spec.texts_per_request == 0 {
        bail!("--clients and --texts-per-request must be positive");
    }
    if let Some(m) = spec.malformed.iter().find(|m| !(0.0..=1.0).contains(*m)) {
        bail!("--malformed: {m} is not a share between 0 and 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    runtime.block_on(async {
        let client = reqwest::Client::builder().pool_max_idle_per_host(1024).build()?;
        let base = spec.url.trim_end_matches('/').to_owned();
        let health = client.get(format!("{base}/health")).send().await.with_context(|| format!("{base}/health: no answer"))?;
        if !health.status().is_success() {
            bail!("{base}/health: answered {}", health.status());
        }
        let (offline_rate, reference) = match reference {
            Some((rate, labels)) => (Some(rate), Some(Arc::new(labels))),
            None => (None, None),
        };
        let shared = Arc::new(Shared { client, base, spec: spec.clone(), cursor: AtomicUsize::new(0), reference });
        if !spec.warmup.is_zero() {
            level(&shared, *spec.clients.iter().max().expect("clients"), 0.0, spec.warmup).await?;
        }
        let rss_after_warmup_mib = scrape(&shared).await?.rss_mib;
        let mut levels = Vec::new();
        for &share in &spec.malformed {
            for &clients in &spec.clients {
                eprintln!("bench --serve: {clients} clients, {:.0} % malformed, {:.0} s …", share * 100.0, spec.duration.as_secs_f64());
                let r = level(&shared, clients, share, spec.duration).await?;
                eprintln!("  {:.1} texts/s, p50 {:.1} ms, p99 {:.1} ms, mean batch {:.1}", r.texts_per_second, r.p50_ms, r.p99_ms, r.mean_batch);
                levels.push(r);
            }
        }
        Ok(LoadReport { offline_texts_per_second: offline_rate, rss_after_warmup_mib, levels })
    })
}

struct Shared {
    client: reqwest::Client,
    base: String,
    spec: LoadSpec,
    cursor: AtomicUsize,
    reference: Option<Arc<Vec<Vec<String>>>>,
}

#[derive(Default)]
struct ClientTally {
    ok: u64,
    texts: u64,
    malformed_sent: u64,
    malformed_4xx: u64,
    server_errors: u64,
    mismatches: u64,
    unexpected: BTreeMap<u16, u64>,
}

async fn level(shared: &Arc<Shared>, clients: usize, share: f64, duration: Duration) -> Result<LevelResult> {
    let before = scrape(shared).await?;
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move { one_client(&shared, c, share, deadline).await }));
    }
    let mut tally = ClientTally::default();
    let mut latency = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for t in tasks {
        let (t, h) = t.await??;
        latency.add(&h)?;
        tally.ok += t.ok;
        tally.texts += t.texts;
        tally.malformed_sent += t.malformed_sent;
        tally.malformed_4xx += t.malformed_4xx;
        tally.server_errors += t.server_errors;
        tally.mismatches += t.mismatches;
        for (k, v) in t.unexpected {
            *tally.unexpected.entry(k).or_default() += v;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let after = scrape(shared).await?;
    let batches = after.batch_count - before.batch_count;
    let largest = after.batch_buckets.iter().find(|(le, count)| *count - before.batch_buckets.get(le).copied().unwrap_or(0.0) >= batches && batches > 0.0).map(|(le, _)| le.0).unwrap_or(0.0);
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    Ok(LevelResult {
        clients,
        malformed_share: share,
        seconds,
        ok: tally.ok,
        texts_per_second: tally.texts as f64 / seconds,
        p50_ms: ms(0.50),
        p90_ms: ms(0.90),
        p99_ms: ms(0.99),
        malformed_sent: tally.malformed_sent,
        malformed_4xx: tally.malformed_4xx,
        unexpected: tally.unexpected,
        server_errors: tally.server_errors,
        label_mismatches: shared.reference.as_ref().map(|_| tally.mismatches),
        mean_batch: if batches > 0.0 { (after.batch_sum - before.batch_sum) / batches } else { 0.0 },
        largest_batch_at_most: largest,
        rss_start_mib: before.rss_mib,
        rss_end_mib: after.rss_mib,
    })
}

async fn one_client(shared: &Shared, id: usize, share: f64, deadline: Instant) -> Result<(ClientTally, hdrhistogram::Histogram<u64>)> {
    let spec = &shared.spec;
    let mut rng = StdRng::seed_from_u64(spec.seed.wrapping_mul(1_000_003).wrapping_add(id as u64));
    let mut tally = ClientTally::default();
    let mut latency = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let url = format!("{}/v1/predict", shared.base);
    let mut bad_turn = id;
    while Instant::now() < deadline {
        let malformed = share > 0.0 && rng.random::<f64>() < share;
        let (body, first) = if malformed {
            bad_turn += 1;
            (MALFORMED[bad_turn % MALFORMED.len()].to_vec(), 0)
        } else {
            let first = shared.cursor.fetch_add(spec.texts_per_request, Ordering::Relaxed);
            let texts: Vec<&String> = (0..spec.texts_per_request).map(|k| &spec.texts[(first + k) % spec.texts.len()]).collect();
            (serde_json::to_vec(&serde_json::json!({ "texts": texts }))?, first)
        };
        let mut request = shared.client.post(&url).header("content-type", "application/json").body(body);
        if let Some(key) = &spec.api_key {
            request = request.bearer_auth(key);
        }
        let sent = Instant::now();
        let (status, answer) = match request.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.bytes().await.ok())
            }
            Err(_) => (0, None),
        };
        if status >= 500 {
            tally.server_errors += 1;
        }
        if malformed {
            tally.malformed_sent += 1;
            if (400..500).contains(&status) {
                tally.malformed_4xx += 1;
            } else {
                *tally.unexpected.entry(status).or_default() += 1;
            }
            continue;
        }
        if status != 200 {
            *tally.unexpected.entry(status).or_default() += 1;
            continue;
        }
        latency.record((sent.elapsed().as_micros() as u64).max(1))?;
        tally.ok += 1;
        tally.texts += spec.texts_per_request as u64;
        if let Some(reference) = &shared.reference {
            let parsed: Option<PredictResponse> = answer.and_then(|b| serde_json::from_slice(&b).ok());
            match parsed {
                Some(p) if p.predictions.len() == spec.texts_per_request => {
                    for (k, pred) in p.predictions.iter().enumerate() {
                        if !same_labels(pred, &reference[(first + k) % spec.texts.len()]) {
                            tally.mismatches += 1;
                        }
                    }
                }
                _ => tally.mismatches += spec.texts_per_request as u64,
            }
        }
    }
    Ok((tally, latency))
}

fn same_labels(p: &Prediction, expected: &[String]) -> bool {
    p.labels.len() == expected.len() && p.labels.iter().zip(expected).all(|(a, b)| a.label == *b)
}

/// Bucket bound, ordered.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
struct Le(f64);

impl Eq for Le {}
impl Ord for Le {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// What the load test reads from the server's `/metrics`.
struct Scraped {
    batch_sum: f64,
    batch_count: f64,
    batch_buckets: BTreeMap<Le, f64>,
    rss_mib: f64,
}

async fn scrape(shared: &Shared) -> Result<Scraped> {
    let mut request = shared.client.get(format!("{}/metrics", shared.base));
    if let Some(key) = &shared.spec.api_key {
        request = request.bearer_auth(key);
    }
    let text = request.send().await?.error_for_status()?.text().await?;
    let values = parse_metrics(&text);
    let get = |name: &str| values.get(name).copied().unwrap_or(0.0);
    let batch_buckets = values
        .iter()
        .filter_map(|(k, v)| {
            let le = k.strip_prefix("bertlu_batch_size_bucket{le=\"")?.split('"').next()?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((Le(le), *v))
        })
        .collect();
    Ok(Scraped { batch_sum: get("bertlu_batch_size_sum"), batch_count: get("bertlu_batch_size_count"), batch_buckets, rss_mib: get("process_resident_memory_bytes") / (1024.0 * 1024.0) })
}

/// `name{labels} value` lines of the Prometheus text format, by their name with labels.
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The Markdown table of a report.
pub fn table(r: &LoadReport) -> String {
    let mut s = String::from("| clients | malformed | texts/s | vs offline | p50 ms | p90 ms | p99 ms | mean batch | largest batch ≤ | malformed → 4xx | unexpected statuses | 5xx | label mismatches | RSS MiB start → end |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for l in &r.levels {
        let vs = r.offline_texts_per_second.map(|o| format!("{:.0} %", 100.0 * l.texts_per_second / o)).unwrap_or_else(|| "–".into());
        let unexpected = if l.unexpected.is_empty() { "none".to_owned() } else { l.unexpected.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ") };
        s.push_str(&format!(
            "| {} | {:.0} % | {:.1} | {vs} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {} / {} | {unexpected} | {} | {} | {:.0} → {:.0} |\n",
            l.clients,
            l.malformed_share * 100.0,
            l.texts_per_second,
            l.p50_ms,
            l.p90_ms,
            l.p99_ms,
            l.mean_batch,
            l.largest_batch_at_most,
            l.malformed_4xx,
            l.malformed_sent,
            l.server_errors,
            l.label_mismatches.map(|m| m.to_string()).unwrap_or_else(|| "–".into()),
            l.rss_start_mib,
            l.rss_end_mib
        ));
    }
    if let Some(o) = r.offline_texts_per_second {
        s.push_str(&format!("\nOffline (same model, `predict`'s code path, batches of 64, tokenizing included): {o:.1} texts/s. Server memory after warm-up: {:.0} MiB.\n", r.rss_after_warmup_mib));
    }
    s
}
