//! What `/metrics` shows, in the Prometheus text format: requests by endpoint and status,
//! latency, the sizes of the batches run, the queue, examples done and the process's memory.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Labels of a request count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route (`/v1/predict`, …; `other` for an unknown path).
    pub endpoint: String,
    /// The HTTP status answered.
    pub status: u16,
}

/// Labels of a latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// The route.
    pub endpoint: String,
}

/// How far back `bertlu_examples_per_second` looks.
const RATE_WINDOW: Duration = Duration::from_secs(10);

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~33 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

/// The server's counters.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    batch_size: Histogram,
    examples: Counter,
    queue_depth: Gauge,
    examples_per_second: Gauge<f64, AtomicU64>,
    resident_bytes: Gauge,
    /// (when, texts answered then) of each round in the last [`RATE_WINDOW`].
    done: Mutex<VecDeque<(Instant, u64)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<EndpointLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        // 1, 2, 4, … 4096 texts
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 13));
        let examples = Counter::default();
        let queue_depth = Gauge::default();
        let examples_per_second = Gauge::<f64, AtomicU64>::default();
        let resident_bytes = Gauge::default();
        registry.register("bertlu_requests", "HTTP requests answered, by endpoint and status", requests.clone());
        registry.register("bertlu_request_duration_seconds", "Time from a request's arrival to its answer", latency.clone());
        registry.register("bertlu_batch_size", "Texts run through the model together (one dynamic batch)", batch_size.clone());
        registry.register("bertlu_examples", "Texts answered", examples.clone());
        registry.register("bertlu_queue_depth", "Texts waiting for the model", queue_depth.clone());
        registry.register("bertlu_examples_per_second", "Texts answered a second over the last 10 seconds", examples_per_second.clone());
        registry.register("process_resident_memory_bytes", "Resident memory of the server process", resident_bytes.clone());
        Self { registry, requests, latency, batch_size, examples, queue_depth, examples_per_second, resident_bytes, done: Mutex::new(VecDeque::new()) }
    }

    /// Counts an answered request.
    pub fn observe_request(&self, endpoint: &str, status: u16, elapsed: Duration) {
        self.requests.get_or_create(&RequestLabels { endpoint: endpoint.to_owned(), status }).inc();
        self.latency.get_or_create(&EndpointLabels { endpoint: endpoint.to_owned() }).observe(elapsed.as_secs_f64());
    }

    /// Counts one dynamic batch of `n` texts.
    pub fn observe_batch(&self, n: usize) {
        self.batch_size.observe(n as f64);
    }

    /// Counts `n` answered texts.
    pub fn add_examples(&self, n: usize) {
        self.examples.inc_by(n as u64);
        let now = Instant::now();
        let mut done = self.done.lock().expect("metrics lock");
        done.push_back((now, n as u64));
        while done.front().is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW) {
            done.pop_front();
        }
    }

    /// The text exposition, with the queue depth and memory read now.
    pub fn render(&self, queue_depth: usize) -> String {
        self.queue_depth.set(queue_depth as i64);
        self.examples_per_second.set(self.rate());
        if let Some(bytes) = resident_bytes() {
            self.resident_bytes.set(bytes as i64);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }

    /// Texts answered in the last [`RATE_WINDOW`], a second.
    fn rate(&self) -> f64 {
        let now = Instant::now();
        let done = self.done.lock().expect("metrics lock");
        let n: u64 = done.iter().filter(|(t, _)| now.duration_since(*t) <= RATE_WINDOW).map(|(_, n)| n).sum();
        n as f64 / RATE_WINDOW.as_secs_f64()
    }
}

/// Resident memory of this process now (Linux `VmRSS`), in bytes.
pub fn resident_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
