//! The host: one wasmtime engine, linker, compile cache, model registry and metrics,
//! shared by every plugin.

use crate::bindings::Handler;
use crate::compile::CompileCache;
use crate::error::PluginError;
use crate::instance::InstanceState;
use crate::manifest::MANIFEST_FILE;
use crate::metrics::Metrics;
use crate::model::ModelRegistry;
use crate::plugin::Plugin;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine};

/// How to build a [`Host`].
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// Compile cache; `None` compiles every component at every start.
    pub compile_cache: Option<CompileCache>,
    /// Granularity of handler time limits.
    pub epoch_tick: Duration,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            compile_cache: CompileCache::default_dir().map(CompileCache::new),
            epoch_tick: Duration::from_millis(10),
        }
    }
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
    pub metrics: Arc<Metrics>,
    ticker: EpochTicker,
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
    fn start(engine: &Engine, tick: Duration) -> EpochTicker {
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
            })
            .expect("cannot start the epoch thread");
        EpochTicker { stop }
    }
}

impl Host {
    /// A host with its own engine.
    pub fn new(config: HostConfig) -> anyhow::Result<Host> {
        let mut wasm = Config::new();
        wasm.wasm_component_model(true).epoch_interruption(true);
        let engine = Engine::new(&wasm)?;
        let mut linker = Linker::new(&engine);
        // Guests built for wasm32-wasip2 import WASI even when they do no I/O; each
        // instance's WASI context grants nothing.
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        Handler::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
        let ticker = EpochTicker::start(&engine, config.epoch_tick);
        Ok(Host {
            inner: Arc::new(HostInner {
                engine,
                linker,
                config,
                models: ModelRegistry::new(),
                metrics: Arc::new(Metrics::new()),
                ticker,
            }),
        })
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
