//! A loaded plugin: manifest, compiled component, granted models and warm instances.

use crate::bindings::HandlerPre;
use crate::compile::{self, CompileReport};
use crate::error::{InferenceError, PluginError};
use crate::host::Host;
use crate::instance::{GrantedModel, HandlerInfo, HandlerInstance, InstanceState, PluginEnv};
use crate::manifest::{BatchingConfig, Manifest};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
pub struct LoadReport {
    /// Compiled or cached, and how long it took.
    pub compile: CompileReport,
    /// Models loaded for the plugin and how long they took.
    pub models: Duration,
    /// First instance: instantiate + init + load-model.
    pub first_instance: Duration,
}

/// A plugin ready to serve.
pub struct Plugin {
    manifest: Manifest,
    dir: PathBuf,
    pre: HandlerPre<InstanceState>,
    env: Arc<PluginEnv>,
    info: HandlerInfo,
    namespace: String,
    report: LoadReport,
    idle: Mutex<Vec<HandlerInstance>>,
}

impl Plugin {
    pub(crate) fn load(host: &Host, dir: &Path) -> Result<Plugin, PluginError> {
        let manifest = Manifest::load(dir)?;
        let inner = host.inner();
        let plugin = manifest.name.clone();
        let component_path = dir.join(&manifest.component);
        let wasm = std::fs::read(&component_path).map_err(|e| PluginError::Component {
            plugin: plugin.clone(),
            path: component_path.clone(),
            message: e.to_string(),
        })?;
        let (component, compile) =
            compile::compile(&inner.engine, &wasm, inner.config.compile_cache.as_ref()).map_err(
                |e| PluginError::Component {
                    plugin: plugin.clone(),
                    path: component_path.clone(),
                    message: format!("{e:#}"),
                },
            )?;
        let wrong_world = |e: wasmtime::Error| PluginError::WrongWorld {
            plugin: plugin.clone(),
            path: component_path.clone(),
            message: format!("{e:#}"),
        };
        let pre = inner
            .linker
            .instantiate_pre(&component)
            .map_err(wrong_world)?;
        let pre = HandlerPre::new(pre).map_err(wrong_world)?;

        let models_start = Instant::now();
        let mut models = BTreeMap::new();
        for (name, entry) in &manifest.models {
            let path = dir.join(entry.path());
            let model = inner
                .models
                .load(&path, entry.backend())
                .map_err(|source| PluginError::Model {
                    plugin: plugin.clone(),
                    model: name.clone(),
                    source,
                })?;
            let id = format!("{}@{}", entry.path().display(), &model.digest()[..12]);
            models.insert(
                name.clone(),
                Arc::new(GrantedModel {
                    name: name.clone(),
                    path: entry.path().to_path_buf(),
                    id,
                    model,
                }),
            );
        }
        let models_time = models_start.elapsed();

        let env = Arc::new(PluginEnv {
            plugin: plugin.clone(),
            models,
            metrics: inner.metrics.clone(),
            limits: manifest.limits.clone(),
            epoch_tick: inner.config.epoch_tick,
        });
        let start = Instant::now();
        let first = HandlerInstance::start(
            &pre,
            env.clone(),
            manifest.metrics_namespace.as_deref(),
            &manifest.handler_args(),
        )
        .map_err(|(stage, source)| PluginError::Start {
            plugin: plugin.clone(),
            stage,
            source,
        })?;
        let first_instance = start.elapsed();
        let info = first.info().clone();
        let namespace = first.namespace().to_string();
        tracing::info!(
            plugin = %plugin,
            compile = ?compile.source,
            compile_ms = compile.duration.as_secs_f64() * 1e3,
            first_instance_ms = first_instance.as_secs_f64() * 1e3,
            "plugin loaded"
        );
        Ok(Plugin {
            manifest,
            dir: dir.to_path_buf(),
            pre,
            env,
            info,
            namespace,
            report: LoadReport {
                compile,
                models: models_time,
                first_instance,
            },
            idle: Mutex::new(vec![first]),
        })
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.manifest.name
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

    /// How loading went.
    pub fn load_report(&self) -> &LoadReport {
        &self.report
    }

    /// The models granted to the plugin, by name.
    pub fn models(&self) -> impl Iterator<Item = &GrantedModel> {
        self.env.models.values().map(|m| m.as_ref())
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

    /// A new instance: instantiate, `init`, `load-model`.
    pub fn instantiate(&self) -> Result<HandlerInstance, PluginError> {
        HandlerInstance::start(
            &self.pre,
            self.env.clone(),
            self.manifest.metrics_namespace.as_deref(),
            &self.manifest.handler_args(),
        )
        .map_err(|(stage, source)| PluginError::Start {
            plugin: self.name().to_string(),
            stage,
            source,
        })
    }

    /// A warm instance if one is idle, else a new one.
    pub fn checkout(&self) -> Result<HandlerInstance, PluginError> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idle {
            Some(instance) => Ok(instance),
            None => self.instantiate(),
        }
    }

    /// Returns an instance to the warm set after a call that did not lose it.
    pub fn checkin(&self, instance: HandlerInstance) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(instance);
    }

    /// Runs one batch on a warm instance; an instance that trapped or timed out is
    /// dropped (and replaced on the next checkout).
    pub fn run_batch(
        &self,
        batch: Vec<crate::value::Value>,
        args: &[(String, String)],
    ) -> Result<crate::instance::Inferences, InferenceError> {
        let mut instance = self.checkout().map_err(|e| {
            InferenceError::new(
                crate::error::ErrorCode::Internal,
                format!("no handler instance: {e}"),
            )
        })?;
        let result = instance.run_inference(batch, args);
        match &result {
            Err(e) if e.instance_lost() => {
                tracing::warn!(plugin = %self.name(), error = %e, "handler instance discarded");
            }
            _ => self.checkin(instance),
        }
        result
    }
}
