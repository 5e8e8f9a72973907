//! A loaded plugin: manifest, compiled component, model sets and warm instances.
//!
//! A *model set* binds the plugin's granted model names to loaded models; its warm
//! instances were started with those bindings. The base set binds `[models]`; each
//! `[[key_models]]` entry (Beam's `KeyModelMapping`) has its own set, loaded on first
//! use and subject to the host's LRU cap on per-key model sets.

pub mod compile;

use crate::contract::CONTRACT_VERSION;
use crate::error::{ErrorCode, InferenceError, PluginError};
use crate::host::{Evictable, Host, plugin_dirs};
use crate::manifest::{BatchingConfig, KeyName, Manifest, ModelEntry};
use crate::metrics::PluginMetrics;
use crate::model::GrantedModel;
use crate::sandbox::bindings::HandlerPre;
use crate::sandbox::instance::{
    HandlerInfo, HandlerInstance, Inferences, InstanceState, PluginEnv,
};
use crate::untrusted;
use crate::value::Value;
use compile::CompileReport;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Largest warm-up file: warm-up examples are a few representative requests.
const MAX_WARMUP_BYTES: u64 = 16 << 20;

/// Reads a file of at most `cap` bytes.
fn read_capped(path: &Path, cap: u64) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(cap + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > cap {
        return Err(std::io::Error::other(format!("larger than {cap} bytes")));
    }
    Ok(text)
}

/// Batching in force when neither the manifest nor the handler sets a value.
pub const DEFAULT_BATCHING: Batching = Batching {
    min_batch_size: 1,
    max_batch_size: 64,
    max_batch_duration: Duration::from_millis(10),
};

/// Effective batching of a plugin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Batching {
    /// Smallest batch formed while examples keep coming.
    pub min_batch_size: usize,
    /// Largest batch.
    pub max_batch_size: usize,
    /// Longest wait of the oldest example of a batch.
    pub max_batch_duration: Duration,
}

/// How a plugin load went, for reports.
#[derive(Clone, Debug, serde::Serialize)]
#[non_exhaustive]
pub struct LoadReport {
    /// Compiled or cached, and how long it took.
    pub compile: CompileReport,
    /// Models loaded for the plugin and how long they took.
    pub models: Duration,
    /// First instance: instantiate + init + load-model.
    pub first_instance: Duration,
}

/// Which model set serves an example.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// The models of `[models]`: unkeyed examples and keys no mapping names.
    Base,
    /// The set of the i-th `[[key_models]]` entry.
    KeyModelSet(usize),
}

/// Models bound to the granted names, with the idle instances started with them.
pub struct ModelSet {
    env: Arc<PluginEnv>,
    model_id: String,
    idle: Mutex<Vec<HandlerInstance>>,
}

impl ModelSet {
    /// The ids of the bound models, comma-separated (empty without models).
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// The bound models, by name.
    pub fn models(&self) -> impl Iterator<Item = &GrantedModel> {
        self.env.models.values().map(|m| m.as_ref())
    }
}

/// One `[[key_models]]` entry and its model set while loaded.
pub(crate) struct KeyModelSet {
    models: BTreeMap<String, ModelEntry>,
    live: Mutex<Option<Arc<ModelSet>>>,
    metrics: Arc<PluginMetrics>,
}

impl Evictable for KeyModelSet {
    fn is_loaded(&self) -> bool {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    fn unload(&self) -> bool {
        let set = self.live.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(set) = &set {
            self.metrics.model_unloaded(set.model_id());
            tracing::info!(model_id = set.model_id(), "per-key model set evicted");
        }
        set.is_some()
    }
}

/// A plugin ready to serve.
pub struct Plugin {
    host: Host,
    manifest: Manifest,
    dir: PathBuf,
    pre: HandlerPre<InstanceState>,
    info: HandlerInfo,
    namespace: String,
    report: LoadReport,
    metrics: Arc<PluginMetrics>,
    /// Swapped whole by a model refresh; running batches keep the set they started with.
    base: RwLock<Arc<ModelSet>>,
    /// `[models]` entries replaced by [`Plugin::update_model_path`] (until the
    /// plugin is reloaded).
    model_paths: Mutex<BTreeMap<String, ModelEntry>>,
    /// One model refresh at a time (the poll, a rescan and `update_model_path` may
    /// ask at once); held across a download, so no host-wide lock is.
    refreshing: Mutex<()>,
    key_sets: Vec<Arc<KeyModelSet>>,
    key_index: HashMap<KeyName, usize>,
    max_instances: usize,
    /// Who the plugin is accounted, scheduled and limited as.
    tenant: String,
}

impl Plugin {
    pub(crate) fn load(host: &Host, dir: &Path) -> Result<Plugin, PluginError> {
        let manifest = Manifest::load(dir)?;
        let inner = host.inner();
        let plugin = manifest.name.clone();
        let (pre, compile) = link_component(host, &manifest, dir)?;

        let models_start = Instant::now();
        let env = bind_models(host, &manifest, dir, &manifest.models)?;
        let models = models_start.elapsed();

        let start = Instant::now();
        let first = start_instance(&pre, &manifest, env.clone())?;
        let first_instance = start.elapsed();
        let info = first.info().clone();
        let namespace = first.namespace().to_string();
        // Claimed by the first instance already; this only looks it up.
        let metrics = inner
            .metrics
            .plugin(&namespace, &env.owner())
            .map_err(|e| PluginError::Start {
                plugin: plugin.clone(),
                stage: "init",
                source: InferenceError::new(ErrorCode::InvalidInput, e.0),
            })?;
        let base = Arc::new(ModelSet {
            model_id: model_id(&env),
            env,
            idle: Mutex::new(vec![first]),
        });
        metrics.model_loaded(
            &base.model_id,
            model_bytes(&base.env),
            models + first_instance,
        );

        let (key_sets, key_index) = key_sets(&manifest, &metrics);
        tracing::info!(
            plugin = %plugin,
            compile = ?compile.source,
            compile_ms = compile.duration.as_secs_f64() * 1e3,
            first_instance_ms = first_instance.as_secs_f64() * 1e3,
            "plugin loaded"
        );
        // Looked up once: `available_parallelism` reads cgroup files.
        let max_instances = manifest.limits.instances.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get()),
            |n| n as usize,
        );
        let tenant = host.tenant_of(&manifest.name, manifest.tenant.as_deref());
        Ok(Plugin {
            max_instances,
            tenant,
            host: host.clone(),
            manifest,
            dir: dir.to_path_buf(),
            pre,
            info,
            namespace,
            report: LoadReport {
                compile,
                models,
                first_instance,
            },
            metrics,
            base: RwLock::new(base),
            model_paths: Mutex::default(),
            refreshing: Mutex::new(()),
            key_sets,
            key_index,
        })
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// The tenant the plugin is accounted, scheduled and limited as: the one the
    /// operator assigned it to, else the manifest's `tenant`, else its own name (see
    /// [`TenantAssignment`](crate::host::TenantAssignment)).
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The plugin directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// What the handler's `init` returned.
    pub fn info(&self) -> &HandlerInfo {
        &self.info
    }

    /// The metrics namespace: the manifest's, else the handler's, else the plugin name.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The plugin's RunInference metrics.
    pub(crate) fn metrics(&self) -> &Arc<PluginMetrics> {
        &self.metrics
    }

    /// How loading went.
    pub fn load_report(&self) -> &LoadReport {
        &self.report
    }

    /// The models of `[models]`, by name.
    pub fn models(&self) -> std::vec::IntoIter<Arc<GrantedModel>> {
        self.base_set()
            .env
            .models
            .values()
            .cloned()
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// The ids of the models serving unkeyed examples now, comma-separated (empty
    /// without models): what predictions of the base model set carry.
    pub fn model_id(&self) -> String {
        self.base_set().model_id().to_string()
    }

    fn base_set(&self) -> Arc<ModelSet> {
        self.base.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Model refresh (Beam's `WatchFilePattern` + `update_model_path`): when what a
    /// model in force names changed — the newest file of a pattern, a remote object's
    /// revision, a path given to [`Plugin::update_model_path`] — loads it, starts an instance on it
    /// (`init`, `load-model`, `update-model-path`, `load-model`), and only when all of
    /// that succeeded swaps the base model set. Batches already running finish on the
    /// old set. Returns the new model id, or `None` when nothing changed. On error the
    /// old set keeps serving.
    pub fn refresh_models(&self) -> Result<Option<String>, PluginError> {
        let _refreshing = self.refreshing.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.base_set();
        let entries = self.model_entries();
        let sources = resolve_models(&self.host, &self.manifest, &self.dir, &entries)?;
        let changed: Vec<String> = entries
            .keys()
            .filter(|name| {
                let now = &sources[*name];
                current
                    .env
                    .models
                    .get(*name)
                    .is_none_or(|m| m.path != now.path || m.revision != now.revision)
            })
            .cloned()
            .collect();
        if changed.is_empty() {
            return Ok(None);
        }
        let start = Instant::now();
        let env = bind_sources(&self.host, &self.manifest, &self.dir, &entries, sources)?;
        let mut instance = self.start_instance(env.clone())?;
        for name in &changed {
            let path = env.models[name].path.to_string_lossy().into_owned();
            instance
                .update_model_path(name, Some(&path))
                .map_err(|source| PluginError::Start {
                    plugin: self.name().to_string(),
                    stage: "update-model-path",
                    source,
                })?;
        }
        let set = Arc::new(ModelSet {
            model_id: model_id(&env),
            env,
            idle: Mutex::new(vec![instance]),
        });
        self.metrics
            .model_loaded(&set.model_id, model_bytes(&set.env), start.elapsed());
        let old = std::mem::replace(
            &mut *self.base.write().unwrap_or_else(|e| e.into_inner()),
            set.clone(),
        );
        if old.model_id != set.model_id {
            self.metrics.model_unloaded(&old.model_id);
        }
        tracing::info!(plugin = %self.name(), model_id = %set.model_id, "models refreshed");
        Ok(Some(set.model_id.clone()))
    }

    /// The `[models]` entries in force: the manifest's, with those replaced by
    /// [`Plugin::update_model_path`].
    fn model_entries(&self) -> BTreeMap<String, ModelEntry> {
        let mut entries = self.manifest.models.clone();
        let replaced = self.model_paths.lock().unwrap_or_else(|e| e.into_inner());
        entries.extend(replaced.iter().map(|(k, v)| (k.clone(), v.clone())));
        entries
    }

    /// True when a model in force names a remote object (polled for changes).
    pub fn has_remote_models(&self) -> bool {
        self.model_entries().values().any(|e| e.remote().is_some())
    }

    /// Beam's `update_model_path`: serves the model `model` (the plugin's only one
    /// when `None`) from `path` — a file of the plugin (or a pattern) or a remote
    /// object — through model refresh: loaded beside the current one and swapped in
    /// only if it loads and the handler accepts it; on error the current one keeps
    /// serving. Later polls and rescans follow the new path until the plugin is
    /// reloaded. Returns the model id now serving.
    pub fn update_model_path(
        &self,
        model: Option<&str>,
        path: &str,
    ) -> Result<String, PluginError> {
        let refuse = |message: String| PluginError::ModelPath {
            plugin: self.name().to_string(),
            message,
        };
        let name = match model {
            Some(name) => name.to_string(),
            None if self.manifest.models.len() == 1 => self
                .manifest
                .models
                .keys()
                .next()
                .expect("one model")
                .clone(),
            None => {
                return Err(refuse(format!(
                    "name the model: the plugin has {} in [models]",
                    self.manifest.models.len()
                )));
            }
        };
        let Some(declared) = self.manifest.models.get(&name) else {
            return Err(refuse(format!(
                "`{}` is not a model of [models]",
                crate::untrusted::guest_text(&name)
            )));
        };
        let entry = declared.with_path(PathBuf::from(path));
        crate::manifest::check_model_entry(&entry).map_err(refuse)?;
        let previous = self
            .model_paths
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone(), entry);
        match self.refresh_models() {
            Ok(id) => Ok(id.unwrap_or_else(|| self.model_id())),
            Err(e) => {
                let mut replaced = self.model_paths.lock().unwrap_or_else(|e| e.into_inner());
                match previous {
                    Some(entry) => replaced.insert(name, entry),
                    None => replaced.remove(&name),
                };
                Err(e)
            }
        }
    }

    /// Warm instances to keep per model set, and the most batches run at once:
    /// `[limits] instances`, else the number of cores.
    pub fn max_instances(&self) -> usize {
        self.max_instances
    }

    /// Batching in force: `overrides` (e.g. from the command line), else the
    /// manifest's `[batching]`, else the handler's kwargs, else [`DEFAULT_BATCHING`].
    pub fn batching(&self, overrides: &BatchingConfig) -> Batching {
        let layers = [overrides, &self.manifest.batching, &self.info.batching];
        let pick = |get: fn(&BatchingConfig) -> Option<u32>| layers.iter().find_map(|l| get(l));
        let max =
            pick(|b| b.max_batch_size).map_or(DEFAULT_BATCHING.max_batch_size, |v| v as usize);
        let min =
            pick(|b| b.min_batch_size).map_or(DEFAULT_BATCHING.min_batch_size, |v| v as usize);
        Batching {
            min_batch_size: min.min(max),
            max_batch_size: max,
            max_batch_duration: pick(|b| b.max_batch_duration_ms)
                .map_or(DEFAULT_BATCHING.max_batch_duration, |ms| {
                    Duration::from_millis(ms.into())
                }),
        }
    }

    /// The model set for an example's key: its `[[key_models]]` set, or the base set
    /// for unkeyed examples and keys that no mapping names.
    pub fn route(&self, key: Option<&serde_json::Value>) -> Route {
        key.and_then(KeyName::of)
            .and_then(|k| self.key_index.get(&k).copied())
            .map_or(Route::Base, Route::KeyModelSet)
    }

    /// The model set of `route`, loading a per-key set if it is not loaded (which may
    /// evict the least recently used per-key set of the host).
    pub fn model_set(&self, route: Route) -> Result<Arc<ModelSet>, PluginError> {
        let Route::KeyModelSet(index) = route else {
            return Ok(self.base_set());
        };
        let slot = &self.key_sets[index];
        let mut live = slot.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = live.as_ref() {
            let set = set.clone();
            drop(live);
            self.host
                .touch_key_set(&(slot.clone() as Arc<dyn Evictable>));
            return Ok(set);
        }
        let start = Instant::now();
        let mut bound = self.manifest.models.clone();
        bound.extend(slot.models.clone());
        let env = bind_models(&self.host, &self.manifest, &self.dir, &bound)?;
        let first = self.start_instance(env.clone())?;
        let set = Arc::new(ModelSet {
            model_id: model_id(&env),
            env,
            idle: Mutex::new(vec![first]),
        });
        self.metrics
            .model_loaded(&set.model_id, model_bytes(&set.env), start.elapsed());
        *live = Some(set.clone());
        drop(live);
        self.host
            .touch_key_set(&(slot.clone() as Arc<dyn Evictable>));
        self.host.enforce_key_set_cap();
        Ok(set)
    }

    /// A new instance for one of the plugin's model sets. Examples were decoded by the
    /// signature the plugin loaded with, so a refreshed or per-key model whose handler
    /// declares another one is refused.
    fn start_instance(&self, env: Arc<PluginEnv>) -> Result<HandlerInstance, PluginError> {
        let instance = start_instance(&self.pre, &self.manifest, env)?;
        let (want, got) = (&self.info.signature, &instance.info().signature);
        if want != got {
            return Err(PluginError::Start {
                plugin: self.name().to_string(),
                stage: "signature",
                source: InferenceError::new(
                    ErrorCode::Signature,
                    format!(
                        "with this model set the handler declares inputs {} and outputs {}, but the plugin serves inputs {} and outputs {}; a refreshed or per-key model must keep the signature",
                        got.inputs, got.outputs, want.inputs, want.outputs
                    ),
                ),
            });
        }
        Ok(instance)
    }

    /// The OS priority its handler threads take when they start (the host's).
    pub(crate) fn handler_priority(&self) -> crate::schedule::HandlerPriority {
        self.host.inner().config.handler_priority
    }

    /// A new instance of the base model set: instantiate, `init`, `load-model`.
    pub fn instantiate(&self) -> Result<HandlerInstance, PluginError> {
        self.start_instance(self.base_set().env.clone())
    }

    /// Runs the manifest's `warmup` examples on the base model set, in batches of at
    /// most `max_batch_size`, so that its first instance has run before the plugin
    /// is served. Returns how many examples ran; a file that cannot be read or
    /// decoded, or a failing batch, fails the plugin's start with the reason.
    pub fn warm_up(&self, args: &[(String, String)]) -> Result<usize, PluginError> {
        let Some(file) = &self.manifest.warmup else {
            return Ok(0);
        };
        let fail = |source| PluginError::Start {
            plugin: self.name().to_string(),
            stage: "warm-up",
            source,
        };
        let invalid = |message: String| fail(InferenceError::new(ErrorCode::InvalidInput, message));
        let path = self.dir.join(file);
        let text = read_capped(&path, MAX_WARMUP_BYTES)
            .map_err(|e| invalid(format!("{}: {e}", file.display())))?;
        let input = &self.info().signature.inputs;
        let mut values = Vec::new();
        for (number, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let decoded = crate::pipeline::decode::decode_line(line, input).map_err(|e| {
                invalid(format!(
                    "{} line {}: {}",
                    file.display(),
                    number + 1,
                    e.error.message
                ))
            })?;
            values.push(decoded.value);
        }
        let count = values.len();
        let set = self.base_set();
        let size = self.batching(&BatchingConfig::default()).max_batch_size;
        let mut values = values.into_iter().peekable();
        while values.peek().is_some() {
            let batch: Vec<Value> = values.by_ref().take(size.max(1)).collect();
            self.run_batch(&set, batch, args).map_err(fail)?;
        }
        Ok(count)
    }

    /// Runs one batch on warm instances of `set` (blocking). A batch whose examples
    /// differ in shape (ragged sequence lengths) is run as one call per shape, in order
    /// of first appearance, and the inferences are put back in input order: a handler
    /// never receives examples it cannot stack, and no example is padded.
    pub fn run_batch(
        &self,
        set: &ModelSet,
        batch: Vec<Value>,
        args: &[(String, String)],
    ) -> Result<Inferences, InferenceError> {
        let Some(groups) = shape_groups(&batch) else {
            return self.run_call(set, batch, args);
        };
        let mut slots: Vec<Option<Value>> = batch.into_iter().map(Some).collect();
        let mut values: Vec<Option<Result<Value, InferenceError>>> =
            (0..slots.len()).map(|_| None).collect();
        let mut model_ids = std::collections::BTreeSet::new();
        for group in groups {
            let call = group
                .iter()
                .map(|&i| slots[i].take().expect("each index is in one group"))
                .collect();
            let done = self.run_call(set, call, args)?;
            model_ids.extend(done.model_ids);
            for (i, value) in group.into_iter().zip(done.values) {
                values[i] = Some(value);
            }
        }
        Ok(Inferences {
            values: values
                .into_iter()
                .map(|v| v.expect("every group answered every example"))
                .collect(),
            model_ids: model_ids.into_iter().collect(),
        })
    }

    /// One `run-inference` call on a warm instance of `set`. An instance that trapped
    /// or timed out is dropped; the next call starts a fresh one.
    fn run_call(
        &self,
        set: &ModelSet,
        batch: Vec<Value>,
        args: &[(String, String)],
    ) -> Result<Inferences, InferenceError> {
        let tenant = self.tenant();
        // The core slot first: starting an instance is work on a core too.
        let slot = self.host.scheduler().acquire(tenant, self.name());
        let idle = set.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut instance = match idle {
            Some(instance) => instance,
            None => self.start_instance(set.env.clone()).map_err(|e| {
                InferenceError::new(ErrorCode::Internal, format!("no handler instance: {e}"))
            })?,
        };
        let rows = batch.len();
        let meter = crate::metrics::CpuMeter::start();
        instance.set_slot(Some(slot));
        let result = instance.run_inference(batch, args);
        let slot = instance.set_slot(None);
        let cpu = meter.stop();
        let tenants = self.host.inner().metrics.tenants();
        tenants.record(tenant, rows, &cpu);
        if let Some(slot) = slot {
            tenants.waited(tenant, slot.waited());
        }
        match &result {
            Err(e) if e.instance_lost() => {
                tracing::warn!(plugin = %self.name(), error = %e, "handler instance discarded");
            }
            // Idle instances never outnumber the callers that ran at once (the
            // dispatcher's workers), so this stays bounded without a cap.
            _ => set
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(instance),
        }
        result
    }
}

/// The indices of `batch` grouped by the shapes of their tensors, in order of first
/// appearance; `None` when every example has the same shapes (the common case, one
/// call).
fn shape_groups(batch: &[Value]) -> Option<Vec<Vec<usize>>> {
    let first = batch.first()?;
    if batch.iter().all(|v| v.same_shapes(first)) {
        return None;
    }
    let mut index: HashMap<Vec<&[usize]>, usize> = HashMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, value) in batch.iter().enumerate() {
        let group = *index.entry(value.shapes()).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[group].push(i);
    }
    Some(groups)
}

/// Reads and compiles (or finds in the cache) the plugin's component and links it
/// against the host's imports.
fn link_component(
    host: &Host,
    manifest: &Manifest,
    dir: &Path,
) -> Result<(HandlerPre<InstanceState>, CompileReport), PluginError> {
    let inner = host.inner();
    let path = dir.join(&manifest.component);
    let component_error = |message: String| PluginError::Component {
        plugin: manifest.name.clone(),
        path: path.clone(),
        message,
    };
    let wasm = std::fs::read(&path).map_err(|e| {
        // Plugins in other languages ship sources and a build script.
        let hint = if e.kind() == std::io::ErrorKind::NotFound && dir.join("build.sh").exists() {
            format!(" (not built yet: run {})", dir.join("build.sh").display())
        } else {
            String::new()
        };
        component_error(format!("{e}{hint}"))
    })?;
    let (component, compile) =
        compile::compile(&inner.engine, &wasm, inner.config.compile_cache.as_ref())
            .map_err(|e| component_error(format!("{e:#}")))?;
    if let Some(found) = contract_version(&component, &inner.engine)
        && found != CONTRACT_VERSION
    {
        return Err(PluginError::ContractVersion {
            plugin: manifest.name.clone(),
            path: path.clone(),
            found: untrusted::guest_text(&found),
        });
    }
    let wrong_world = |e: wasmtime::Error| PluginError::WrongWorld {
        plugin: manifest.name.clone(),
        path: path.clone(),
        message: format!("{e:#}"),
    };
    let pre = inner
        .linker
        .instantiate_pre(&component)
        .map_err(wrong_world)?;
    Ok((HandlerPre::new(pre).map_err(wrong_world)?, compile))
}

/// The `runinfer:handler` version a component was built against, from the names of
/// its imports and exports (`runinfer:handler/handler-api@0.1.0`).
fn contract_version(
    component: &wasmtime::component::Component,
    engine: &wasmtime::Engine,
) -> Option<String> {
    let ty = component.component_type();
    let mut names = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .chain(ty.imports(engine).map(|(name, _)| name.to_string()));
    names.find_map(|name| {
        name.strip_prefix("runinfer:handler/")
            .and_then(|rest| rest.split_once('@'))
            .map(|(_, version)| version.to_string())
    })
}

/// A new instance bound to `env`: instantiate, `init` with the manifest's args,
/// `load-model`.
fn start_instance(
    pre: &HandlerPre<InstanceState>,
    manifest: &Manifest,
    env: Arc<PluginEnv>,
) -> Result<HandlerInstance, PluginError> {
    HandlerInstance::start(
        pre,
        env,
        manifest.metrics_namespace.as_deref(),
        &manifest.handler_args(),
    )
    .map_err(|(stage, source)| PluginError::Start {
        plugin: manifest.name.clone(),
        stage,
        source,
    })
}

/// The `[[key_models]]` entries, not loaded yet, and the index of each key.
fn key_sets(
    manifest: &Manifest,
    metrics: &Arc<PluginMetrics>,
) -> (Vec<Arc<KeyModelSet>>, HashMap<KeyName, usize>) {
    let mut sets = Vec::new();
    let mut index = HashMap::new();
    for (i, mapping) in manifest.key_models.iter().enumerate() {
        for key in &mapping.keys {
            index.insert(key.clone(), i);
        }
        sets.push(Arc::new(KeyModelSet {
            models: mapping.models.clone(),
            live: Mutex::new(None),
            metrics: metrics.clone(),
        }));
    }
    (sets, index)
}

/// Loading lives here, not in `host`: the host is what plugins share and knows no
/// plugin.
impl Host {
    /// Loads the plugin in `dir` (a directory with a `plugin.toml`).
    pub fn load_plugin(&self, dir: &Path) -> Result<Plugin, PluginError> {
        Plugin::load(self, dir)
    }

    /// Loads the plugin called `name` from the plugin root.
    pub fn load_plugin_named(&self, root: &Path, name: &str) -> Result<Plugin, PluginError> {
        let dirs = plugin_dirs(root);
        let found = dirs.iter().find(|dir| {
            dir.file_name().is_some_and(|n| n == name)
                || crate::manifest::Manifest::load(dir).is_ok_and(|m| m.name == name)
        });
        match found {
            Some(dir) => self.load_plugin(dir),
            None => Err(PluginError::NotFound {
                name: name.to_string(),
                root: root.to_path_buf(),
                available: {
                    let names: Vec<String> = dirs
                        .iter()
                        .filter_map(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
                        .collect();
                    if names.is_empty() {
                        "none".into()
                    } else {
                        names.join(", ")
                    }
                },
            }),
        }
    }
}

/// Where a granted model's bytes come from, as resolved now.
struct Source {
    /// The file relative to the plugin directory, or the remote object's URL.
    path: PathBuf,
    /// The remote object's revision.
    revision: Option<String>,
    /// The file to load: in the plugin directory, or the model cache's blob.
    file: PathBuf,
}

/// Resolves each of `entries`: a pattern to its newest file or object, a remote
/// object to its cached copy (downloaded if it changed).
fn resolve_models(
    host: &Host,
    manifest: &Manifest,
    dir: &Path,
    entries: &BTreeMap<String, ModelEntry>,
) -> Result<BTreeMap<String, Source>, PluginError> {
    let inner = host.inner();
    let mut sources = BTreeMap::new();
    for (name, entry) in entries {
        let model_error = |source| PluginError::Model {
            plugin: manifest.name.clone(),
            model: name.clone(),
            source,
        };
        let source = match entry.remote() {
            Some(url) => {
                let fetched = inner
                    .store
                    .check_allowed(&manifest.name, &url)
                    .and_then(|()| inner.store.fetch(&url, entry.is_pattern(), entry.sha256()))
                    .map_err(|e| model_error(e.into()))?;
                Source {
                    path: PathBuf::from(&fetched.location),
                    revision: Some(fetched.revision.clone()),
                    file: inner.store.blob(&fetched),
                }
            }
            None => {
                let relative = entry
                    .resolve(dir)
                    .map_err(|m| model_error(crate::model::ModelError::Pattern(m)))?;
                let file = dir.join(&relative);
                if let Some(pin) = entry.sha256() {
                    check_pin(&file, pin).map_err(model_error)?;
                }
                Source {
                    path: relative,
                    revision: None,
                    file,
                }
            }
        };
        sources.insert(name.clone(), source);
    }
    Ok(sources)
}

/// A local model file must have the pinned SHA-256.
fn check_pin(file: &Path, pin: &str) -> Result<(), crate::model::ModelError> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut reader =
        std::fs::File::open(file).map_err(|source| crate::model::ModelError::Read {
            path: file.to_path_buf(),
            source,
        })?;
    std::io::copy(&mut reader, &mut hasher).map_err(|source| crate::model::ModelError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    let actual = crate::model::store::hex(&hasher.finalize());
    if !actual.eq_ignore_ascii_case(pin) {
        return Err(crate::model::ModelError::Digest {
            path: file.to_path_buf(),
            expected: pin.to_ascii_lowercase(),
            actual,
        });
    }
    Ok(())
}

/// Loads (or finds loaded) the models `entries` and binds them to their names.
fn bind_models(
    host: &Host,
    manifest: &Manifest,
    dir: &Path,
    entries: &BTreeMap<String, ModelEntry>,
) -> Result<Arc<PluginEnv>, PluginError> {
    let sources = resolve_models(host, manifest, dir, entries)?;
    bind_sources(host, manifest, dir, entries, sources)
}

/// Loads (or finds loaded) the models of resolved `entries`.
fn bind_sources(
    host: &Host,
    manifest: &Manifest,
    dir: &Path,
    entries: &BTreeMap<String, ModelEntry>,
    mut sources: BTreeMap<String, Source>,
) -> Result<Arc<PluginEnv>, PluginError> {
    let inner = host.inner();
    let mut models = BTreeMap::new();
    for (name, entry) in entries {
        let model_error = |source| PluginError::Model {
            plugin: manifest.name.clone(),
            model: name.clone(),
            source,
        };
        let source = sources.remove(name).expect("every entry is resolved");
        let model = inner
            .models
            .load(
                &source.file,
                entry.backend().unwrap_or(inner.config.default_backend),
                entry.input_shapes(),
            )
            .map_err(model_error)?;
        let id = format!("{}@{}", source.path.display(), &model.digest()[..12]);
        models.insert(
            name.clone(),
            Arc::new(GrantedModel {
                name: name.clone(),
                path: source.path,
                revision: source.revision,
                id,
                model,
            }),
        );
    }
    Ok(Arc::new(PluginEnv {
        plugin: manifest.name.clone(),
        tenant: manifest.tenant.clone(),
        dir: dir.to_path_buf(),
        grants: manifest.grants.clone(),
        models,
        metrics: inner.metrics.clone(),
        limits: manifest.limits.clone(),
    }))
}

fn model_id(env: &PluginEnv) -> String {
    env.models
        .values()
        .map(|m| m.id.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn model_bytes(env: &PluginEnv) -> u64 {
    env.models.values().map(|m| m.model.byte_size()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{DType, Tensor};
    use crate::value::Field;

    fn ids(len: usize) -> Value {
        let tensor = Tensor::from_bytes(DType::I64, vec![len], vec![0; len * 8]).unwrap();
        Value::Fields(vec![
            ("input_ids".into(), Field::Tensor(tensor)),
            ("text".into(), Field::Text("x".into())),
        ])
    }

    #[test]
    fn ragged_batches_are_grouped_by_shape_in_order_of_first_appearance() {
        assert_eq!(shape_groups(&[ids(3), ids(3), ids(3)]), None);
        assert_eq!(
            shape_groups(&[ids(3), ids(5), ids(3), ids(7), ids(5)]),
            Some(vec![vec![0, 2], vec![1, 4], vec![3]])
        );
        assert_eq!(shape_groups(&[]), None);
    }
}
