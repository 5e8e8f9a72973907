//! Metrics in Prometheus form, namespaced per plugin (Beam's metrics namespace).
//!
//! Every plugin records Beam's RunInference set under its namespace (see
//! [`PluginMetrics`]), labelled with the `model_id` that served the batch;
//! handler-defined metrics are created on first use under `<namespace>_<name>`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The label of every RunInference metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    /// The id(s) of the model(s) bound for the batch (empty for a handler without
    /// models).
    pub model_id: String,
}

type Histograms = Family<ModelLabel, Histogram, fn() -> Histogram>;

fn micros_histogram() -> Histogram {
    // 10 µs .. ~16 s
    Histogram::new(exponential_buckets(10.0, 3.0, 14))
}

fn size_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 14))
}

fn bytes_histogram() -> Histogram {
    Histogram::new(exponential_buckets(64.0, 4.0, 12))
}

fn millis_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 16))
}

/// Per-example latency histograms of one model set.
pub struct ElementTimers {
    queue_wait: Histogram,
    element_latency: Histogram,
}

impl ElementTimers {
    /// An example waited `wait` in the queue and got its result after `total`.
    pub fn record(&self, wait: Duration, total: Duration) {
        self.queue_wait.observe(wait.as_secs_f64() * 1e6);
        self.element_latency.observe(total.as_secs_f64() * 1e6);
    }
}

/// Beam's RunInference metrics for one namespace, plus queue wait and per-element
/// latency.
pub struct PluginMetrics {
    num_inferences: Family<ModelLabel, Counter>,
    failed_batches: Family<ModelLabel, Counter>,
    batch_size: Histograms,
    batch_byte_size: Histograms,
    batch_latency: Histograms,
    load_model_latency: Histograms,
    model_byte_size: Family<ModelLabel, Gauge>,
    model_loaded: Family<ModelLabel, Gauge>,
    queue_wait: Histograms,
    element_latency: Histograms,
}

impl PluginMetrics {
    fn register(registry: &mut Registry) -> PluginMetrics {
        let m = PluginMetrics {
            num_inferences: Family::default(),
            failed_batches: Family::default(),
            batch_size: Family::new_with_constructor(size_histogram),
            batch_byte_size: Family::new_with_constructor(bytes_histogram),
            batch_latency: Family::new_with_constructor(micros_histogram),
            load_model_latency: Family::new_with_constructor(millis_histogram),
            model_byte_size: Family::default(),
            model_loaded: Family::default(),
            queue_wait: Family::new_with_constructor(micros_histogram),
            element_latency: Family::new_with_constructor(micros_histogram),
        };
        registry.register(
            "num_inferences",
            "Examples inferred",
            m.num_inferences.clone(),
        );
        registry.register(
            "failed_batches_counter",
            "Batches that failed",
            m.failed_batches.clone(),
        );
        registry.register(
            "inference_request_batch_size",
            "Examples per batch",
            m.batch_size.clone(),
        );
        registry.register(
            "inference_request_batch_byte_size",
            "Bytes of the decoded examples per batch",
            m.batch_byte_size.clone(),
        );
        registry.register(
            "inference_batch_latency_micro_secs",
            "Time of run-inference per batch",
            m.batch_latency.clone(),
        );
        registry.register(
            "load_model_latency_milli_secs",
            "Time to load the models and start an instance (instantiate, init, load-model)",
            m.load_model_latency.clone(),
        );
        registry.register(
            "model_byte_size",
            "Size of the model files",
            m.model_byte_size.clone(),
        );
        registry.register(
            "model_loaded",
            "1 for each model id in use",
            m.model_loaded.clone(),
        );
        registry.register(
            "queue_wait_micro_secs",
            "Time from an example's arrival to the start of its batch",
            m.queue_wait.clone(),
        );
        registry.register(
            "element_latency_micro_secs",
            "Time from an example's arrival to its inference",
            m.element_latency.clone(),
        );
        m
    }

    fn label(model_id: &str) -> ModelLabel {
        ModelLabel {
            model_id: model_id.to_string(),
        }
    }

    /// A batch of `size` examples (`bytes` of decoded data) ran in `latency`.
    pub fn batch_done(&self, model_id: &str, size: usize, bytes: usize, latency: Duration) {
        let l = Self::label(model_id);
        self.num_inferences.get_or_create(&l).inc_by(size as u64);
        self.batch_size.get_or_create(&l).observe(size as f64);
        self.batch_byte_size.get_or_create(&l).observe(bytes as f64);
        self.batch_latency
            .get_or_create(&l)
            .observe(latency.as_secs_f64() * 1e6);
    }

    /// A batch failed.
    pub fn batch_failed(&self, model_id: &str) {
        self.failed_batches
            .get_or_create(&Self::label(model_id))
            .inc();
    }

    /// Where to record, for each example of a batch, how long it waited in the queue
    /// and how long until its result (looked up once per batch, not per example).
    pub fn element_timers(&self, model_id: &str) -> ElementTimers {
        let l = Self::label(model_id);
        ElementTimers {
            queue_wait: self.queue_wait.get_or_create(&l).clone(),
            element_latency: self.element_latency.get_or_create(&l).clone(),
        }
    }

    /// Models (and an instance using them) were loaded in `latency`.
    pub fn model_loaded(&self, model_id: &str, bytes: u64, latency: Duration) {
        let l = Self::label(model_id);
        self.load_model_latency
            .get_or_create(&l)
            .observe(latency.as_secs_f64() * 1e3);
        self.model_byte_size.get_or_create(&l).set(bytes as i64);
        self.model_loaded.get_or_create(&l).set(1);
    }

    /// Models were let go (evicted or replaced).
    pub fn model_unloaded(&self, model_id: &str) {
        self.model_loaded
            .get_or_create(&Self::label(model_id))
            .set(0);
    }
}

/// One handler-defined metric.
#[derive(Clone)]
enum Custom {
    Counter(Counter),
    Gauge(Gauge<f64, AtomicU64>),
    Histogram(Histogram),
}

impl Custom {
    fn kind(&self) -> &'static str {
        match self {
            Custom::Counter(_) => "counter",
            Custom::Gauge(_) => "gauge",
            Custom::Histogram(_) => "distribution",
        }
    }
}

/// The host's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    custom: Mutex<HashMap<String, Custom>>,
    plugins: Mutex<HashMap<String, Arc<PluginMetrics>>>,
    model_loads: Counter,
    model_evictions: Counter,
    plugin_load_failures: Counter,
    model_refresh_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let model_loads = Counter::default();
        let model_evictions = Counter::default();
        registry.register(
            "runinfer_model_loads",
            "Model files loaded by the host (not found already loaded)",
            model_loads.clone(),
        );
        registry.register(
            "runinfer_model_evictions",
            "Per-key model sets evicted by the LRU cap",
            model_evictions.clone(),
        );
        let plugin_load_failures = Counter::default();
        let model_refresh_failures = Counter::default();
        registry.register(
            "runinfer_plugin_load_failures",
            "Plugin directories that failed to load (each version once)",
            plugin_load_failures.clone(),
        );
        registry.register(
            "runinfer_model_refresh_failures",
            "Model refreshes that failed (the old model kept serving)",
            model_refresh_failures.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            custom: Mutex::default(),
            plugins: Mutex::default(),
            model_loads,
            model_evictions,
            plugin_load_failures,
            model_refresh_failures,
        }
    }
}

/// A metric name the handler may use: `[a-zA-Z_][a-zA-Z0-9_]*`, at most 64 bytes.
fn check_metric_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid metric name {name:?}: expected 1-64 letters, digits or `_`, not starting with a digit"
        ))
    }
}

/// The Prometheus prefix for a namespace (`my-plugin` -> `my_plugin`).
pub fn prefix(namespace: &str) -> String {
    namespace.replace('-', "_")
}

impl Metrics {
    /// An empty set of metrics.
    pub fn new() -> Self {
        Self::default()
    }

    fn custom(
        &self,
        namespace: &str,
        name: &str,
        make: impl FnOnce() -> Custom,
    ) -> Result<Custom, String> {
        check_metric_name(name)?;
        let full = format!("{}_{name}", prefix(namespace));
        let mut custom = self.custom.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = custom.get(&full) {
            return Ok(existing.clone());
        }
        let metric = make();
        let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let help = format!("Handler metric `{name}` of namespace `{namespace}`");
        match metric.clone() {
            Custom::Counter(m) => registry.register(&full, help, m),
            Custom::Gauge(m) => registry.register(&full, help, m),
            Custom::Histogram(m) => registry.register(&full, help, m),
        }
        custom.insert(full, metric.clone());
        Ok(metric)
    }

    /// The RunInference metrics of `namespace`, registered on first use.
    pub fn plugin(&self, namespace: &str) -> Arc<PluginMetrics> {
        let mut plugins = self.plugins.lock().unwrap_or_else(|e| e.into_inner());
        plugins
            .entry(namespace.to_string())
            .or_insert_with(|| {
                let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
                Arc::new(PluginMetrics::register(
                    registry.sub_registry_with_prefix(prefix(namespace)),
                ))
            })
            .clone()
    }

    /// The counter of model file loads (shared with the model registry).
    pub fn model_loads(&self) -> Counter {
        self.model_loads.clone()
    }

    /// The counters of plugin load failures and model refresh failures.
    pub fn watch_counters(&self) -> (Counter, Counter) {
        (
            self.plugin_load_failures.clone(),
            self.model_refresh_failures.clone(),
        )
    }

    /// Counts an eviction of a per-key model set.
    pub fn count_model_eviction(&self) {
        self.model_evictions.inc();
    }

    /// Adds to a handler counter.
    pub fn counter_add(&self, namespace: &str, name: &str, delta: u64) -> Result<(), String> {
        match self.custom(namespace, name, || Custom::Counter(Counter::default()))? {
            Custom::Counter(c) => {
                c.inc_by(delta);
                Ok(())
            }
            other => Err(mismatch(name, other.kind(), "counter")),
        }
    }

    /// Sets a handler gauge.
    pub fn gauge_set(&self, namespace: &str, name: &str, value: f64) -> Result<(), String> {
        match self.custom(namespace, name, || Custom::Gauge(Gauge::default()))? {
            Custom::Gauge(g) => {
                g.set(value);
                Ok(())
            }
            other => Err(mismatch(name, other.kind(), "gauge")),
        }
    }

    /// Records one observation of a handler distribution.
    pub fn observe(&self, namespace: &str, name: &str, value: f64) -> Result<(), String> {
        let make = || Custom::Histogram(Histogram::new(exponential_buckets(0.001, 4.0, 14)));
        match self.custom(namespace, name, make)? {
            Custom::Histogram(h) => {
                h.observe(value);
                Ok(())
            }
            other => Err(mismatch(name, other.kind(), "distribution")),
        }
    }

    /// The current value of a handler counter, if it exists.
    pub fn counter_value(&self, namespace: &str, name: &str) -> Option<u64> {
        let full = format!("{}_{name}", prefix(namespace));
        match self
            .custom
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&full)
        {
            Some(Custom::Counter(c)) => Some(c.get()),
            _ => None,
        }
    }

    /// All metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }
}

fn mismatch(name: &str, is: &str, used_as: &str) -> String {
    format!("metric `{name}` is a {is}, not a {used_as}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_metrics_are_namespaced_and_typed() {
        let m = Metrics::new();
        m.counter_add("my-plugin", "words", 3).unwrap();
        m.counter_add("my-plugin", "words", 4).unwrap();
        assert_eq!(m.counter_value("my-plugin", "words"), Some(7));
        assert_eq!(
            m.gauge_set("my-plugin", "words", 1.0).unwrap_err(),
            "metric `words` is a counter, not a gauge"
        );
        assert!(m.counter_add("my-plugin", "bad name", 1).is_err());
        m.observe("other", "latency", 0.5).unwrap();
        let text = m.encode();
        assert!(text.contains("my_plugin_words_total 7"), "{text}");
        assert!(text.contains("other_latency_count 1"), "{text}");
    }
}
