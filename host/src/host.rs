//! The host: one wasmtime engine, linker, compile cache, model registry and metrics,
//! shared by every plugin.

use crate::manifest::MANIFEST_FILE;
use crate::metrics::Metrics;
use crate::model::store::{ModelStore, StoreConfig};
use crate::model::{BackendKind, ModelRegistry, OnnxruntimeConfig};
use crate::plugin::compile::CompileCache;
use crate::sandbox::bindings::Handler;
use crate::sandbox::instance::InstanceState;
use crate::schedule::{HandlerPriority, Scheduler};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How to build a [`Host`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HostConfig {
    /// Compile cache; `None` compiles every component at every start.
    pub compile_cache: Option<CompileCache>,
    /// Granularity of handler time limits.
    pub epoch_tick: Duration,
    /// Most per-key model sets (`[[key_models]]`) loaded at once across all plugins;
    /// the least recently used is evicted past it.
    pub max_key_model_sets: usize,
    /// Wasm stack per call, in bytes (engine-wide: one engine serves all plugins).
    pub max_wasm_stack: usize,
    /// Instantiate from wasmtime's pooling allocator (pre-reserved slots) instead of
    /// allocating memories and tables on demand; `None` allocates on demand.
    pub pooling: Option<PoolingLimits>,
    /// The engine for models whose manifest entry names none.
    pub default_backend: BackendKind,
    /// Where onnxruntime is loaded from, and its threads per call.
    pub onnxruntime: OnnxruntimeConfig,
    /// The cache of remote models.
    pub model_store: StoreConfig,
    /// Handler calls running at once across all plugins (core slots shared fairly
    /// between tenants); 0: one per core.
    pub workers: usize,
    /// OS priority of the threads that run handlers, below the host's own threads
    /// if set (see [`HandlerPriority`]).
    pub handler_priority: HandlerPriority,
}

/// Sizes of the pooling allocator, set explicitly (the pool reserves address space
/// for all of them up front).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct PoolingLimits {
    /// Component instances alive at once, across all plugins.
    pub instances: u32,
    /// Largest linear memory of one instance, in MiB (plugins' `memory_mb` above it
    /// cannot grow that far).
    pub max_memory_mb: u32,
}

impl Default for PoolingLimits {
    fn default() -> Self {
        PoolingLimits {
            instances: 256,
            max_memory_mb: 1024,
        }
    }
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            compile_cache: CompileCache::default_dir().map(CompileCache::new),
            epoch_tick: Duration::from_millis(10),
            max_key_model_sets: 8,
            max_wasm_stack: 512 * 1024,
            pooling: None,
            default_backend: BackendKind::default(),
            onnxruntime: OnnxruntimeConfig::default(),
            model_store: StoreConfig::default(),
            workers: 0,
            handler_priority: HandlerPriority::Normal,
        }
    }
}

/// A per-key model set as the host's LRU cap sees it (the plugin owns the set).
pub(crate) trait Evictable: Send + Sync {
    /// True while the set's models are loaded.
    fn is_loaded(&self) -> bool;
    /// Lets the models go (batches running on them finish first); true if they were
    /// loaded.
    fn unload(&self) -> bool;
}

/// Recency of the loaded per-key model sets, across all plugins.
#[derive(Default)]
struct KeySetLru {
    tick: u64,
    entries: Vec<(Weak<dyn Evictable>, u64)>,
}

/// Shared by every plugin of a process. Cheap to clone.
#[derive(Clone)]
pub struct Host {
    inner: Arc<HostInner>,
}

pub(crate) struct HostInner {
    pub engine: Engine,
    pub linker: Linker<InstanceState>,
    pub config: HostConfig,
    pub models: ModelRegistry,
    pub store: ModelStore,
    pub metrics: Arc<Metrics>,
    pub scheduler: Arc<Scheduler>,
    ticker: EpochTicker,
    key_lru: Mutex<KeySetLru>,
    tenants: Mutex<TenantAssignment>,
}

/// The operator's say over who a plugin is. A plugin's manifest names its `tenant`
/// itself, so on its own it could claim another team's name (and use up that team's
/// quota, or be counted as them). When the operator lists a tenant's plugins, that
/// tenant is closed: only the listed plugins are it, whatever they declare, and a
/// plugin that claims it without being listed is its own unlisted tenant, `~NAME`
/// (no operator's tenant can be named so: `~` is not allowed in names).
#[derive(Clone, Debug, Default)]
pub struct TenantAssignment {
    /// Plugin name → the tenant the operator put it in.
    owners: HashMap<String, String>,
    /// Tenants whose plugins the operator listed.
    closed: HashSet<String>,
}

impl TenantAssignment {
    /// Puts `plugins` in `tenant`, and closes it to the others.
    pub fn assign(&mut self, tenant: &str, plugins: impl IntoIterator<Item = String>) {
        self.closed.insert(tenant.to_string());
        for plugin in plugins {
            self.owners.insert(plugin, tenant.to_string());
        }
    }

    /// The tenant of the plugin `name` whose manifest claims `claimed`.
    pub fn tenant_of(&self, name: &str, claimed: Option<&str>) -> String {
        if let Some(owner) = self.owners.get(name) {
            return owner.clone();
        }
        let claimed = claimed.unwrap_or(name);
        if self.closed.contains(claimed) {
            format!("~{name}")
        } else {
            claimed.to_string()
        }
    }
}

impl Drop for HostInner {
    fn drop(&mut self) {
        self.ticker.stop.store(true, Ordering::Relaxed);
    }
}

/// Advances the engine's epoch so that a handler past its deadline is interrupted
/// (really stopped, not abandoned).
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: &Engine, tick: Duration) -> std::io::Result<EpochTicker> {
        let stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("runinfer-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })?;
        Ok(EpochTicker { stop })
    }
}

impl Host {
    /// A host with its own engine.
    pub fn new(config: HostConfig) -> anyhow::Result<Host> {
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .max_wasm_stack(config.max_wasm_stack);
        if let Some(limits) = config.pooling {
            // Each component instance of a Rust or Python guest has a few core
            // instances, memories and tables; size the pool for that.
            let mut pool = PoolingAllocationConfig::new();
            pool.total_component_instances(limits.instances)
                .total_core_instances(limits.instances * 4)
                .total_memories(limits.instances * 2)
                .total_tables(limits.instances * 4)
                .total_stacks(limits.instances)
                .max_memory_size(limits.max_memory_mb as usize * 1024 * 1024);
            wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&wasm)?;
        let mut linker = Linker::new(&engine);
        // Guests built for wasm32-wasip2 import WASI even when they do no I/O; each
        // instance's WASI context grants nothing.
        crate::sandbox::instance::add_wasi_to_linker(&mut linker)?;
        Handler::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
        let ticker = EpochTicker::start(&engine, config.epoch_tick)?;
        let metrics = Arc::new(Metrics::new());
        let models = ModelRegistry::new(metrics.model_loads(), config.onnxruntime.clone());
        let store = ModelStore::new(config.model_store.clone(), metrics.store());
        let workers = match config.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let kick = engine.weak();
        let scheduler = Scheduler::new(workers, move || {
            if let Some(engine) = kick.upgrade() {
                engine.increment_epoch();
            }
        });
        Ok(Host {
            inner: Arc::new(HostInner {
                engine,
                linker,
                config,
                models,
                store,
                metrics,
                scheduler,
                ticker,
                key_lru: Mutex::default(),
                tenants: Mutex::default(),
            }),
        })
    }

    /// Marks a per-key model set as just used.
    pub(crate) fn touch_key_set(&self, slot: &Arc<dyn Evictable>) {
        let mut lru = self.inner.key_lru.lock().unwrap_or_else(|e| e.into_inner());
        lru.tick += 1;
        let tick = lru.tick;
        lru.entries.retain(|(s, _)| s.strong_count() > 0);
        match lru
            .entries
            .iter_mut()
            .find(|(s, _)| std::ptr::addr_eq(s.as_ptr(), Arc::as_ptr(slot)))
        {
            Some(entry) => entry.1 = tick,
            None => lru.entries.push((Arc::downgrade(slot), tick)),
        }
    }

    /// Unloads the least recently used per-key model sets past the cap. Batches
    /// running on an unloaded set finish on it; the next use loads it again.
    pub(crate) fn enforce_key_set_cap(&self) {
        let mut lru = self.inner.key_lru.lock().unwrap_or_else(|e| e.into_inner());
        let cap = self.inner.config.max_key_model_sets;
        loop {
            let mut live: Vec<(usize, u64)> = lru
                .entries
                .iter()
                .enumerate()
                .filter(|(_, (s, _))| s.upgrade().is_some_and(|s| s.is_loaded()))
                .map(|(i, (_, tick))| (i, *tick))
                .collect();
            if live.len() <= cap {
                return;
            }
            live.sort_by_key(|&(_, tick)| tick);
            let (slot, _) = lru.entries.remove(live[0].0);
            if slot.upgrade().is_some_and(|s| s.unload()) {
                self.inner.metrics.count_model_eviction();
            }
        }
    }

    pub(crate) fn inner(&self) -> &HostInner {
        &self.inner
    }

    /// The model registry shared by all plugins.
    pub fn models(&self) -> &ModelRegistry {
        &self.inner.models
    }

    /// The host's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Sets the operator's assignment of plugins to tenants, for the plugins loaded
    /// from now on.
    pub fn assign_tenants(&self, assignment: TenantAssignment) {
        *self.inner.tenants.lock().unwrap_or_else(|e| e.into_inner()) = assignment;
    }

    /// The tenant of the plugin `name` whose manifest claims `claimed`.
    pub(crate) fn tenant_of(&self, name: &str, claimed: Option<&str>) -> String {
        self.inner
            .tenants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .tenant_of(name, claimed)
    }

    /// The core slots every handler call runs on, shared fairly between tenants.
    pub fn scheduler(&self) -> &Arc<Scheduler> {
        &self.inner.scheduler
    }
}

/// The plugin directories (those with a `plugin.toml`) under `root`, sorted.
pub fn plugin_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .filter(|path| path.join(MANIFEST_FILE).is_file())
        .collect();
    dirs.sort();
    dirs
}

#[cfg(test)]
mod tests {
    use super::TenantAssignment;

    #[test]
    fn a_closed_tenant_is_only_the_plugins_the_operator_listed() {
        let mut assignment = TenantAssignment::default();
        assert_eq!(assignment.tenant_of("iris", Some("acme")), "acme");
        assert_eq!(assignment.tenant_of("iris", None), "iris");
        assignment.assign("acme", ["iris".to_string()]);
        // Listed: the operator's tenant, whatever the manifest says.
        assert_eq!(assignment.tenant_of("iris", Some("other")), "acme");
        assert_eq!(assignment.tenant_of("iris", None), "acme");
        // Claiming a closed tenant, or being named like it, gets nothing of it.
        assert_eq!(assignment.tenant_of("intruder", Some("acme")), "~intruder");
        assert_eq!(assignment.tenant_of("acme", None), "~acme");
        // Open tenants stay self-declared.
        assert_eq!(assignment.tenant_of("ocr", Some("beta")), "beta");
    }
}
