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
use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::untrusted::{MAX_NAMESPACE_BYTES, Refused, check_metric_name};

/// The label of every RunInference metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ModelLabel {
    /// The id(s) of the model(s) bound for the batch (empty for a handler without
    /// models).
    pub model_id: String,
}

type Histograms = Family<ModelLabel, Histogram, fn() -> Histogram>;

/// A label value as the exposition format needs it: prometheus_client writes label
/// values as they are, and a model id comes from a file name the tenant chose.
fn label_value(value: &str) -> String {
    if !value.contains(['\\', '"', '\n']) {
        return value.to_string();
    }
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The families the host records for every plugin, with their kinds: a handler's own
/// metrics may not take these names (or any name that exposes the same samples).
const PLUGIN_FAMILIES: [(&str, Kind); 12] = [
    ("num_inferences", Kind::Counter),
    ("cancelled_examples", Kind::Counter),
    ("pending_requests", Kind::Gauge),
    ("failed_batches_counter", Kind::Counter),
    ("inference_request_batch_size", Kind::Histogram),
    ("inference_request_batch_byte_size", Kind::Histogram),
    ("inference_batch_latency_micro_secs", Kind::Histogram),
    ("load_model_latency_milli_secs", Kind::Histogram),
    ("model_byte_size", Kind::Gauge),
    ("model_loaded", Kind::Gauge),
    ("queue_wait_micro_secs", Kind::Histogram),
    ("element_latency_micro_secs", Kind::Histogram),
];

/// The kind of a metric family, which decides the sample names it exposes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "distribution",
        }
    }

    /// Every name a family of this kind puts in the exposition: two families must not
    /// share any, or a strict parser rejects the whole scrape.
    fn exposed(self, family: &str) -> Vec<String> {
        let suffixes: &[&str] = match self {
            Kind::Counter => &["", "_total", "_created"],
            Kind::Gauge => &[""],
            Kind::Histogram => &["", "_bucket", "_count", "_sum", "_created"],
        };
        suffixes.iter().map(|s| format!("{family}{s}")).collect()
    }
}

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
pub(crate) struct ElementTimers {
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

/// One served request in flight, counted in `<ns>_pending_requests` while it lives.
pub(crate) struct PendingRequest(Gauge);

impl Drop for PendingRequest {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Beam's RunInference metrics for one namespace, plus queue wait and per-element
/// latency.
pub struct PluginMetrics {
    num_inferences: Family<ModelLabel, Counter>,
    cancelled: Counter,
    pending_requests: Gauge,
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
            cancelled: Counter::default(),
            pending_requests: Gauge::default(),
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
            "cancelled_examples",
            "Examples dropped before their batch ran because their request was cancelled, timed out or its client went away",
            m.cancelled.clone(),
        );
        registry.register(
            "pending_requests",
            "Served requests (HTTP or gRPC) waiting for their results",
            m.pending_requests.clone(),
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
            model_id: label_value(model_id),
        }
    }

    /// A batch of `size` examples (`bytes` of decoded data) ran in `latency`.
    pub(crate) fn batch_done(&self, model_id: &str, size: usize, bytes: usize, latency: Duration) {
        let l = Self::label(model_id);
        self.num_inferences.get_or_create(&l).inc_by(size as u64);
        self.batch_size.get_or_create(&l).observe(size as f64);
        self.batch_byte_size.get_or_create(&l).observe(bytes as f64);
        self.batch_latency
            .get_or_create(&l)
            .observe(latency.as_secs_f64() * 1e6);
    }

    /// `count` examples were dropped unrun: nobody waits for their results.
    pub(crate) fn examples_cancelled(&self, count: usize) {
        self.cancelled.inc_by(count as u64);
    }

    /// A served request waits for its results until the returned guard is dropped,
    /// however the request ends (answered, failed, timed out, client gone).
    pub(crate) fn request_pending(&self) -> PendingRequest {
        self.pending_requests.inc();
        PendingRequest(self.pending_requests.clone())
    }

    /// A batch failed.
    pub(crate) fn batch_failed(&self, model_id: &str) {
        self.failed_batches
            .get_or_create(&Self::label(model_id))
            .inc();
    }

    /// Where to record, for each example of a batch, how long it waited in the queue
    /// and how long until its result (looked up once per batch, not per example).
    pub(crate) fn element_timers(&self, model_id: &str) -> ElementTimers {
        let l = Self::label(model_id);
        ElementTimers {
            queue_wait: self.queue_wait.get_or_create(&l).clone(),
            element_latency: self.element_latency.get_or_create(&l).clone(),
        }
    }

    /// Models (and an instance using them) were loaded in `latency`. Every series of
    /// the model id is created here, counters at 0, so that rates and alerts see
    /// them before the first batch (or the first failure).
    pub(crate) fn model_loaded(&self, model_id: &str, bytes: u64, latency: Duration) {
        let l = Self::label(model_id);
        let _ = self.num_inferences.get_or_create(&l);
        let _ = self.failed_batches.get_or_create(&l);
        for histogram in [
            &self.batch_size,
            &self.batch_byte_size,
            &self.batch_latency,
            &self.queue_wait,
            &self.element_latency,
        ] {
            let _ = histogram.get_or_create(&l);
        }
        self.load_model_latency
            .get_or_create(&l)
            .observe(latency.as_secs_f64() * 1e3);
        self.model_byte_size.get_or_create(&l).set(bytes as i64);
        self.model_loaded.get_or_create(&l).set(1);
    }

    /// Models were let go (evicted or replaced).
    pub(crate) fn model_unloaded(&self, model_id: &str) {
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
    fn kind(&self) -> Kind {
        match self {
            Custom::Counter(_) => Kind::Counter,
            Custom::Gauge(_) => Kind::Gauge,
            Custom::Histogram(_) => Kind::Histogram,
        }
    }
}

/// Who owns which names of the exposition. A namespace belongs to the first plugin
/// (by directory) that claims it, for the life of the process; every family's sample
/// names are taken once; and a handler metric may neither be nor end in one of the
/// host's per-plugin families (`x_num_inferences` is refused), so no handler can
/// write into, or squat on, the host's series of any namespace.
#[derive(Default)]
struct Names {
    /// Namespace prefix (`-` mapped to `_`) → owner and its RunInference metrics.
    namespaces: HashMap<String, (String, Arc<PluginMetrics>)>,
    /// Handler metrics by full name.
    custom: HashMap<String, Custom>,
    /// Handler metrics per namespace prefix, against the plugin's cap.
    custom_count: HashMap<String, usize>,
    /// Every sample name in the exposition.
    exposed: HashSet<String>,
}

impl Names {
    /// Takes the sample names of a new family, all or none.
    fn take(&mut self, family: &str, kind: Kind) -> Result<(), Refused> {
        let names = kind.exposed(family);
        if let Some(taken) = names.iter().find(|n| self.exposed.contains(*n)) {
            return Err(Refused(format!(
                "metric `{family}` would expose `{taken}`, which another metric already exposes"
            )));
        }
        self.exposed.extend(names);
        Ok(())
    }
}

/// The host's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    names: Mutex<Names>,
    model_loads: Counter,
    model_evictions: Counter,
    plugin_load_failures: Counter,
    model_refresh_failures: Counter,
    store: StoreMetrics,
    tenants: TenantMetrics,
}

/// Host-wide counters of remote model stores and the model cache.
#[derive(Clone)]
pub(crate) struct StoreMetrics {
    /// Objects downloaded into the cache.
    pub downloads: Counter,
    /// Bytes downloaded.
    pub download_bytes: Counter,
    /// Time per download.
    pub download_seconds: Histogram,
    /// Remote models found in the cache, unchanged.
    pub cache_hits: Counter,
    /// Store calls that failed (unreachable, denied, missing object, digest mismatch).
    pub errors: Counter,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            downloads: Counter::default(),
            download_bytes: Counter::default(),
            // 10 ms .. ~3 h
            download_seconds: Histogram::new(exponential_buckets(0.01, 3.0, 14)),
            cache_hits: Counter::default(),
            errors: Counter::default(),
        }
    }
}

/// The label of the per-tenant accounting.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TenantLabel {
    /// The plugin's tenant ([`crate::Plugin::tenant`]): checked names (letters,
    /// digits, `-`, `_`), or `~NAME` for a plugin that claimed a tenant the operator
    /// closed to it.
    pub tenant: String,
}

type Seconds = Counter<f64, AtomicU64>;

/// Who used what: per tenant, the examples and handler calls run, and the CPU time
/// they took in the handler (wasm, host imports but the engine) and in the engine.
#[derive(Clone, Default)]
pub(crate) struct TenantMetrics {
    rows: Family<TenantLabel, Counter>,
    calls: Family<TenantLabel, Counter>,
    handler_seconds: Family<TenantLabel, Seconds>,
    engine_seconds: Family<TenantLabel, Seconds>,
    refused_requests: Family<TenantLabel, Counter>,
    refused_rows: Family<TenantLabel, Counter>,
    core_wait_seconds: Family<TenantLabel, Seconds>,
}

/// One tenant's counters so far (what `serve`'s `GET /v2/tenants` shows next to
/// the metrics).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct TenantCounts {
    /// Examples run.
    pub examples: u64,
    /// `run-inference` calls.
    pub handler_calls: u64,
    /// CPU time in the handler (wasm and host imports but the engine).
    pub handler_cpu_seconds: f64,
    /// CPU time in model engines.
    pub engine_cpu_seconds: f64,
    /// Time its calls waited for a core slot.
    pub core_wait_seconds: f64,
    /// Requests refused by its quota.
    pub refused_requests: u64,
    /// Examples of those requests.
    pub refused_examples: u64,
}

impl TenantMetrics {
    /// The counters of `tenant` (zeros for a tenant not seen yet).
    pub(crate) fn counts(&self, tenant: &str) -> TenantCounts {
        let label = TenantLabel {
            tenant: tenant.to_string(),
        };
        let count =
            |family: &Family<TenantLabel, Counter>| family.get(&label).map_or(0, |c| c.get());
        let seconds =
            |family: &Family<TenantLabel, Seconds>| family.get(&label).map_or(0.0, |c| c.get());
        TenantCounts {
            examples: count(&self.rows),
            handler_calls: count(&self.calls),
            handler_cpu_seconds: seconds(&self.handler_seconds),
            engine_cpu_seconds: seconds(&self.engine_seconds),
            core_wait_seconds: seconds(&self.core_wait_seconds),
            refused_requests: count(&self.refused_requests),
            refused_examples: count(&self.refused_rows),
        }
    }

    /// Counts a request of `rows` examples refused by its tenant's quota.
    pub(crate) fn refused(&self, tenant: &str, rows: usize) {
        let label = TenantLabel {
            tenant: tenant.to_string(),
        };
        self.refused_requests.get_or_create(&label).inc();
        self.refused_rows.get_or_create(&label).inc_by(rows as u64);
    }

    /// Records how long a call waited for a core slot (at first and when it gave its
    /// slot to others).
    pub(crate) fn waited(&self, tenant: &str, waited: Duration) {
        let label = TenantLabel {
            tenant: tenant.to_string(),
        };
        self.core_wait_seconds
            .get_or_create(&label)
            .inc_by(waited.as_secs_f64());
    }

    /// Records one `run-inference` call of `rows` examples.
    pub(crate) fn record(&self, tenant: &str, rows: usize, cpu: &CallCpu) {
        let label = TenantLabel {
            tenant: tenant.to_string(),
        };
        self.rows.get_or_create(&label).inc_by(rows as u64);
        self.calls.get_or_create(&label).inc();
        self.handler_seconds
            .get_or_create(&label)
            .inc_by(cpu.handler.as_secs_f64());
        self.engine_seconds
            .get_or_create(&label)
            .inc_by(cpu.engine.as_secs_f64());
    }
}

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`): what a handler call
/// cost, whatever else the machine ran meanwhile (wall time would charge a tenant
/// for its neighbours).
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; the clock id is a constant the
    // platform defines.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    if status != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        now.tv_sec.max(0) as u64,
        now.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

thread_local! {
    /// CPU time this thread spent in model engines (engines run on the caller's
    /// thread: tract always, onnxruntime with one intra-op thread, the default).
    static ENGINE_CPU: std::cell::Cell<Duration> = const { std::cell::Cell::new(Duration::ZERO) };
}

/// Runs `run` (a model engine call) and charges its CPU time to the engine.
pub(crate) fn engine_call<T>(run: impl FnOnce() -> T) -> T {
    let start = thread_cpu_time();
    let out = run();
    let spent = thread_cpu_time().saturating_sub(start);
    ENGINE_CPU.with(|e| e.set(e.get() + spent));
    out
}

/// The CPU time of one handler call, split between the handler and the engine.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct CallCpu {
    /// In the handler: wasm and host imports, models excepted.
    pub handler: Duration,
    /// In model engines.
    pub engine: Duration,
}

/// Measures the CPU time of a handler call made on this thread.
pub(crate) struct CpuMeter {
    total: Duration,
    engine: Duration,
}

impl CpuMeter {
    pub(crate) fn start() -> CpuMeter {
        CpuMeter {
            total: thread_cpu_time(),
            engine: ENGINE_CPU.with(std::cell::Cell::get),
        }
    }

    pub(crate) fn stop(self) -> CallCpu {
        let total = thread_cpu_time().saturating_sub(self.total);
        let engine = ENGINE_CPU
            .with(std::cell::Cell::get)
            .saturating_sub(self.engine)
            .min(total);
        CallCpu {
            handler: total - engine,
            engine,
        }
    }
}

/// Prefix of the host-wide metrics; no namespace may take it.
const HOST_PREFIX: &str = "runinfer";

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let mut names = Names::default();
        let model_loads = Counter::default();
        let model_evictions = Counter::default();
        let plugin_load_failures = Counter::default();
        let model_refresh_failures = Counter::default();
        let store = StoreMetrics::default();
        for (name, help, counter) in [
            (
                "runinfer_model_loads",
                "Model files loaded by the host (not found already loaded)",
                &model_loads,
            ),
            (
                "runinfer_model_evictions",
                "Per-key model sets evicted by the LRU cap",
                &model_evictions,
            ),
            (
                "runinfer_plugin_load_failures",
                "Plugin directories that failed to load (each version once)",
                &plugin_load_failures,
            ),
            (
                "runinfer_model_refresh_failures",
                "Model refreshes that failed (the old model kept serving)",
                &model_refresh_failures,
            ),
            (
                "runinfer_model_downloads",
                "Remote model objects downloaded into the model cache",
                &store.downloads,
            ),
            (
                "runinfer_model_download_bytes",
                "Bytes of remote model objects downloaded",
                &store.download_bytes,
            ),
            (
                "runinfer_model_cache_hits",
                "Remote models served from the model cache without a download (unchanged, or the store unreachable)",
                &store.cache_hits,
            ),
            (
                "runinfer_model_store_errors",
                "Calls to a model store that failed (unreachable, denied, no such object, digest mismatch)",
                &store.errors,
            ),
        ] {
            names
                .take(name, Kind::Counter)
                .expect("the host's own names are distinct");
            registry.register(name, help, counter.clone());
        }
        names
            .take("runinfer_model_download_seconds", Kind::Histogram)
            .expect("the host's own names are distinct");
        registry.register(
            "runinfer_model_download_seconds",
            "Time to download a remote model object",
            store.download_seconds.clone(),
        );
        let tenants = TenantMetrics::default();
        for (name, help, family) in [
            (
                "runinfer_tenant_examples",
                "Examples run through a tenant's handlers",
                &tenants.rows,
            ),
            (
                "runinfer_tenant_handler_calls",
                "run-inference calls into a tenant's handlers",
                &tenants.calls,
            ),
            (
                "runinfer_tenant_refused_requests",
                "serve requests refused by the tenant's quota",
                &tenants.refused_requests,
            ),
            (
                "runinfer_tenant_refused_examples",
                "Examples of the serve requests refused by the tenant's quota",
                &tenants.refused_rows,
            ),
        ] {
            names
                .take(name, Kind::Counter)
                .expect("the host's own names are distinct");
            registry.register(name, help, family.clone());
        }
        for (name, help, family) in [
            (
                "runinfer_tenant_handler_cpu_seconds",
                "CPU time in a tenant's handlers (wasm and host imports, engines excepted)",
                &tenants.handler_seconds,
            ),
            (
                "runinfer_tenant_engine_cpu_seconds",
                "CPU time in model engines for a tenant's handlers",
                &tenants.engine_seconds,
            ),
            (
                "runinfer_tenant_core_wait_seconds",
                "Time a tenant's calls waited for a core slot (the fair scheduler's queue)",
                &tenants.core_wait_seconds,
            ),
        ] {
            names
                .take(name, Kind::Counter)
                .expect("the host's own names are distinct");
            registry.register(name, help, family.clone());
        }
        Metrics {
            registry: Mutex::new(registry),
            names: Mutex::new(names),
            model_loads,
            model_evictions,
            plugin_load_failures,
            model_refresh_failures,
            store,
            tenants,
        }
    }
}

/// The Prometheus prefix for a namespace (`my-plugin` -> `my_plugin`).
pub(crate) fn prefix(namespace: &str) -> String {
    namespace.replace('-', "_")
}

/// Longest handler metric name.
const MAX_METRIC_NAME: usize = 64;

impl Metrics {
    /// An empty set of metrics.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn names(&self) -> std::sync::MutexGuard<'_, Names> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims `namespace` for `owner` (a plugin's identity: its directory) and
    /// returns its RunInference metrics, registered with every family on first claim.
    /// The same owner may claim its namespace again (a new version, a model refresh);
    /// another owner, the host's `runinfer` prefix and names outside the metric
    /// alphabet are refused.
    pub(crate) fn plugin(
        &self,
        namespace: &str,
        owner: &str,
    ) -> Result<Arc<PluginMetrics>, Refused> {
        let ns = prefix(namespace);
        check_metric_name("metrics namespace", &ns, MAX_NAMESPACE_BYTES)?;
        if ns == HOST_PREFIX || ns.starts_with(&format!("{HOST_PREFIX}_")) {
            return Err(Refused(format!(
                "metrics namespace `{ns}`: the prefix `{HOST_PREFIX}` is the host's own"
            )));
        }
        let mut names = self.names();
        if let Some((claimed_by, metrics)) = names.namespaces.get(&ns) {
            return if claimed_by == owner {
                Ok(metrics.clone())
            } else {
                Err(Refused(format!(
                    "metrics namespace `{ns}` belongs to another plugin ({claimed_by}); set `metrics_namespace` (or `tenant`) in plugin.toml"
                )))
            };
        }
        let families: Vec<(String, Kind)> = PLUGIN_FAMILIES
            .iter()
            .map(|(name, kind)| (format!("{ns}_{name}"), *kind))
            .collect();
        for (i, (family, kind)) in families.iter().enumerate() {
            if let Err(e) = names.take(family, *kind) {
                for (taken, kind) in &families[..i] {
                    for name in kind.exposed(taken) {
                        names.exposed.remove(&name);
                    }
                }
                return Err(e);
            }
        }
        let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let metrics = Arc::new(PluginMetrics::register(
            registry.sub_registry_with_prefix(&ns),
        ));
        names
            .namespaces
            .insert(ns, (owner.to_string(), metrics.clone()));
        Ok(metrics)
    }

    /// The handler metric `name` of `namespace` (a claimed one), created as `kind` on
    /// first use if the plugin has fewer than `cap` handler metrics.
    fn custom(
        &self,
        namespace: &str,
        name: &str,
        kind: Kind,
        cap: usize,
    ) -> Result<Custom, Refused> {
        check_metric_name("metric name", name, MAX_METRIC_NAME)?;
        let ns = prefix(namespace);
        let full = format!("{ns}_{name}");
        let mut names = self.names();
        if let Some(existing) = names.custom.get(&full) {
            return if existing.kind() == kind {
                Ok(existing.clone())
            } else {
                Err(Refused(format!(
                    "metric `{name}` is a {}, not a {}",
                    existing.kind().name(),
                    kind.name()
                )))
            };
        }
        // No full name may end in one of the host's families: not this namespace's
        // (`num_inferences`), nor a longer one's (`twin_num_inferences` under `iris`
        // is `iris_twin`'s), nor one the namespace and the name make up together
        // (`loaded` under `x_model` is `x`'s `model_loaded`).
        let exposed = kind.exposed(&full);
        if let Some((reserved, _)) = PLUGIN_FAMILIES.iter().find(|(reserved, reserved_kind)| {
            reserved_kind
                .exposed(reserved)
                .iter()
                .any(|host| exposed.iter().any(|n| n.ends_with(&format!("_{host}"))))
        }) {
            return Err(Refused(format!(
                "metric name `{name}` is reserved: the host records `{reserved}` for every plugin"
            )));
        }
        let count = names.custom_count.get(&ns).copied().unwrap_or(0);
        if count >= cap {
            return Err(Refused(format!(
                "metric `{name}` would be this plugin's metric number {}, more than limits.max_custom_metrics ({cap})",
                count + 1
            )));
        }
        names.take(&full, kind)?;
        let metric = match kind {
            Kind::Counter => Custom::Counter(Counter::default()),
            Kind::Gauge => Custom::Gauge(Gauge::default()),
            Kind::Histogram => {
                Custom::Histogram(Histogram::new(exponential_buckets(0.001, 4.0, 14)))
            }
        };
        let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let help = format!("Handler metric `{name}` of namespace `{ns}`");
        match metric.clone() {
            Custom::Counter(m) => registry.register(&full, help, m),
            Custom::Gauge(m) => registry.register(&full, help, m),
            Custom::Histogram(m) => registry.register(&full, help, m),
        }
        names.custom.insert(full, metric.clone());
        *names.custom_count.entry(ns).or_default() += 1;
        Ok(metric)
    }

    /// The counter of model file loads (shared with the model registry).
    pub(crate) fn model_loads(&self) -> Counter {
        self.model_loads.clone()
    }

    /// The metrics of remote model stores (shared with the model store).
    pub(crate) fn store(&self) -> StoreMetrics {
        self.store.clone()
    }

    /// The per-tenant accounting.
    pub(crate) fn tenants(&self) -> &TenantMetrics {
        &self.tenants
    }

    /// The counters of plugin load failures and model refresh failures.
    pub(crate) fn watch_counters(&self) -> (Counter, Counter) {
        (
            self.plugin_load_failures.clone(),
            self.model_refresh_failures.clone(),
        )
    }

    /// Counts an eviction of a per-key model set.
    pub(crate) fn count_model_eviction(&self) {
        self.model_evictions.inc();
    }

    /// Adds to a handler counter (refused if it would overflow: a counter never
    /// wraps).
    pub(crate) fn counter_add(
        &self,
        namespace: &str,
        name: &str,
        delta: u64,
        cap: usize,
    ) -> Result<(), Refused> {
        let Custom::Counter(c) = self.custom(namespace, name, Kind::Counter, cap)? else {
            unreachable!("custom() returns the kind asked for");
        };
        if c.get().checked_add(delta).is_none() {
            return Err(Refused(format!(
                "counter `{name}` would overflow (at {}, adding {delta})",
                c.get()
            )));
        }
        c.inc_by(delta);
        Ok(())
    }

    /// Sets a handler gauge (finite values only).
    pub(crate) fn gauge_set(
        &self,
        namespace: &str,
        name: &str,
        value: f64,
        cap: usize,
    ) -> Result<(), Refused> {
        finite(name, value)?;
        let Custom::Gauge(g) = self.custom(namespace, name, Kind::Gauge, cap)? else {
            unreachable!("custom() returns the kind asked for");
        };
        g.set(value);
        Ok(())
    }

    /// Records one observation of a handler distribution (finite values only).
    pub(crate) fn observe(
        &self,
        namespace: &str,
        name: &str,
        value: f64,
        cap: usize,
    ) -> Result<(), Refused> {
        finite(name, value)?;
        let Custom::Histogram(h) = self.custom(namespace, name, Kind::Histogram, cap)? else {
            unreachable!("custom() returns the kind asked for");
        };
        h.observe(value);
        Ok(())
    }

    /// The current value of a handler counter, if it exists.
    pub fn counter_value(&self, namespace: &str, name: &str) -> Option<u64> {
        let full = format!("{}_{name}", prefix(namespace));
        match self.names().custom.get(&full) {
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

/// A handler's value must be finite: a NaN or infinite observation leaves a histogram
/// whose count and buckets disagree, and strict parsers reject the scrape.
fn finite(name: &str, value: f64) -> Result<(), Refused> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(Refused(format!(
            "metric `{name}`: {value} is not a finite number"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: usize = 64;

    #[test]
    fn handler_metrics_are_namespaced_and_typed() {
        let m = Metrics::new();
        m.plugin("my-plugin", "a").unwrap();
        m.counter_add("my-plugin", "words", 3, CAP).unwrap();
        m.counter_add("my-plugin", "words", 4, CAP).unwrap();
        assert_eq!(m.counter_value("my-plugin", "words"), Some(7));
        assert_eq!(
            m.gauge_set("my-plugin", "words", 1.0, CAP).unwrap_err().0,
            "metric `words` is a counter, not a gauge"
        );
        assert!(m.counter_add("my-plugin", "bad name", 1, CAP).is_err());
        m.plugin("other", "b").unwrap();
        m.observe("other", "latency", 0.5, CAP).unwrap();
        let text = m.encode();
        assert!(text.contains("my_plugin_words_total 7"), "{text}");
        assert!(text.contains("other_latency_count 1"), "{text}");
    }

    #[test]
    fn namespaces_belong_to_one_plugin_and_never_nest() {
        let m = Metrics::new();
        m.plugin("iris", "plugins/iris").unwrap();
        m.plugin("iris", "plugins/iris")
            .expect("the owner may claim it again");
        let taken = m.plugin("iris", "plugins/thief").err().unwrap().0;
        assert!(
            taken.contains("belongs to another plugin (plugins/iris)"),
            "{taken}"
        );
        // A longer namespace is another one: its series cannot meet iris's.
        m.plugin("iris_twin", "plugins/iris-twin").unwrap();
        assert!(
            m.counter_add("iris", "twin_num_inferences", 1, CAP)
                .unwrap_err()
                .0
                .contains("is reserved")
        );
        // The namespace and the name together may not make up another's family.
        m.plugin("x_model", "plugins/x-model").unwrap();
        assert!(
            m.gauge_set("x_model", "loaded", 1.0, CAP)
                .unwrap_err()
                .0
                .contains("is reserved")
        );
        for bad in ["runinfer", "runinfer_x", "a\nb", "9x", ""] {
            assert!(m.plugin(bad, "plugins/thief").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn handler_metrics_cannot_shadow_the_hosts_or_grow_without_bound() {
        let m = Metrics::new();
        m.plugin("ns", "a").unwrap();
        for (name, kind) in [
            ("num_inferences", "counter"),
            ("num_inferences_total", "gauge"),
        ] {
            let e = if kind == "counter" {
                m.counter_add("ns", name, 1, CAP)
            } else {
                m.gauge_set("ns", name, 1.0, CAP)
            };
            assert!(e.unwrap_err().0.contains("is reserved"), "{name}");
        }
        m.counter_add("ns", "x", 1, CAP).unwrap();
        assert!(
            m.gauge_set("ns", "x_total", 1.0, CAP)
                .unwrap_err()
                .0
                .contains("already exposes")
        );
        for value in [f64::INFINITY, f64::NAN, f64::NEG_INFINITY] {
            assert!(m.observe("ns", "h", value, CAP).is_err());
            assert!(m.gauge_set("ns", "g", value, CAP).is_err());
        }
        assert!(
            m.counter_add("ns", "x", u64::MAX, CAP)
                .unwrap_err()
                .0
                .contains("overflow")
        );
        for i in 1..3 {
            m.counter_add("ns", &format!("c{i}"), 1, 3).unwrap();
        }
        assert!(
            m.counter_add("ns", "c3", 1, 3)
                .unwrap_err()
                .0
                .contains("max_custom_metrics (3)")
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        let p = m.plugin("ns", "a").unwrap();
        p.model_loaded("m\"} 1\nforged_total 9\n", 1, Duration::from_millis(1));
        let text = m.encode();
        assert!(
            !text.lines().any(|l| l.starts_with("forged_total")),
            "{text}"
        );
        assert!(
            text.contains(r#"ns_num_inferences_total{model_id="m\"} 1\nforged_total 9\n"} 0"#),
            "{text}"
        );
    }
}
