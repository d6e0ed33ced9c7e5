//! The service's Prometheus metrics (`GET /metrics`, text exposition format).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Counters, gauges and histograms shared by the HTTP layer and the scheduler.
pub struct Metrics {
    registry: Registry,
    /// Requests answered, by outcome (`ok`, `bad_request`, `too_large`, `queue_full`,
    /// `timeout`, `cancelled`, `error`).
    pub requests: Family<Vec<(String, String)>, Counter>,
    /// Requests waiting to be admitted.
    pub queued: Gauge,
    /// Requests being sampled.
    pub running: Gauge,
    /// Samples per network call.
    pub batch_size: Histogram,
    /// Wall time of one scheduler round of one batch (network call and the runs' updates).
    pub step_seconds: Histogram,
    /// Time in the network.
    pub network_seconds: Counter<f64>,
    /// Time in scheduler rounds (the network's share is `network / busy`).
    pub busy_seconds: Counter<f64>,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mrsampler");
        let requests = Family::<Vec<(String, String)>, Counter>::default();
        let queued = Gauge::default();
        let running = Gauge::default();
        let batch_size = Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]);
        let step_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let network_seconds = Counter::<f64>::default();
        let busy_seconds = Counter::<f64>::default();
        registry.register(
            "requests",
            "Requests answered, by outcome",
            requests.clone(),
        );
        registry.register(
            "queue_depth",
            "Requests waiting to be admitted",
            queued.clone(),
        );
        registry.register("running", "Requests being sampled", running.clone());
        registry.register("batch_size", "Samples per network call", batch_size.clone());
        registry.register(
            "step_seconds",
            "Wall time of one batched step (network call and updates)",
            step_seconds.clone(),
        );
        registry.register(
            "network_seconds",
            "Time spent in the network",
            network_seconds.clone(),
        );
        registry.register(
            "busy_seconds",
            "Time spent in batched steps (network share = network / busy)",
            busy_seconds.clone(),
        );
        Self {
            registry,
            requests,
            queued,
            running,
            batch_size,
            step_seconds,
            network_seconds,
            busy_seconds,
        }
    }

    /// Counts a request answered with `outcome`.
    pub fn finished(&self, outcome: &str) {
        self.requests
            .get_or_create(&vec![("outcome".to_owned(), outcome.to_owned())])
            .inc();
    }

    /// The exposition text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
