//! Metrics in Prometheus form, namespaced per plugin (Beam's metrics namespace).
//!
//! Handler-defined metrics are created on first use under `<namespace>_<name>`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

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
#[derive(Default)]
pub struct Metrics {
    registry: Mutex<Registry>,
    custom: Mutex<HashMap<String, Custom>>,
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
