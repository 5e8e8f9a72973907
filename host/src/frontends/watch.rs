//! The drop-in plugin directory: the live set of plugins of a plugin root, kept in
//! step with the files.
//!
//! A rescan (after file events have been quiet for the settle time) compares each
//! plugin directory with what is live:
//! * a new directory with a `plugin.toml` is loaded and becomes live;
//! * a changed `plugin.toml` or component is loaded anew and swapped in *only if it
//!   loads*; the old version's dispatcher is closed, so its queued and running batches
//!   finish (nothing is dropped);
//! * a removed directory is unloaded the same way (drained);
//! * a `[models]` file pattern whose newest file changed is refreshed
//!   ([`Plugin::refresh_models`]): the old models keep serving until the new ones
//!   loaded and an instance accepted them;
//! * remote `[models]` (object stores, HTTP) are polled at a set interval and
//!   refreshed the same way when their object (or a pattern's newest object)
//!   changed; a store that cannot be reached leaves the current model serving.
//!
//! A plugin that fails to load (bad manifest, invalid wasm, wrong world, missing or
//! corrupt model) is reported in [`PluginRoot::status`], logged and counted in
//! `runinfer_plugin_load_failures_total`; the others keep serving.

use crate::host::{Host, plugin_dirs};
use crate::manifest::{MANIFEST_FILE, Manifest};
use crate::pipeline::dispatch::{DispatchOptions, Dispatcher};
use crate::plugin::Plugin;
use notify::Watcher;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

/// A plugin that is serving, with its dispatcher.
pub struct LivePlugin {
    /// The plugin.
    pub plugin: Arc<Plugin>,
    /// Its runtime.
    pub dispatcher: Arc<Dispatcher>,
    fingerprint: Fingerprint,
}

/// What identifies a version of a plugin directory's code and manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Fingerprint(Vec<(PathBuf, u64, Option<SystemTime>)>);

fn fingerprint(dir: &Path) -> Fingerprint {
    let mut files = vec![dir.join(MANIFEST_FILE)];
    if let Ok(manifest) = Manifest::load(dir) {
        files.push(dir.join(&manifest.component));
        for entry in manifest.models.values().filter(|e| !e.is_dynamic()) {
            files.push(dir.join(entry.path()));
        }
    }
    Fingerprint(
        files
            .into_iter()
            .map(|f| {
                let meta = std::fs::metadata(&f).ok();
                let len = meta.as_ref().map_or(0, |m| m.len());
                let modified = meta.and_then(|m| m.modified().ok());
                (f, len, modified)
            })
            .collect(),
    )
}

/// The status of one plugin directory.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum PluginStatus {
    /// Serving.
    Live {
        /// Ids of the bound `[models]`.
        model_id: String,
    },
    /// Could not be loaded; if an older version was live it still is.
    Failed {
        /// Why.
        reason: String,
        /// Whether an older version keeps serving.
        previous_live: bool,
    },
    /// Unloaded on request ([`PluginRoot::unload`]) until loaded again.
    Unloaded,
}

/// The plugins of a plugin root.
pub struct PluginRoot {
    host: Host,
    root: PathBuf,
    options: Box<dyn Fn(&Plugin) -> DispatchOptions + Send + Sync>,
    live: RwLock<BTreeMap<String, Arc<LivePlugin>>>,
    failed: Mutex<BTreeMap<String, (String, Fingerprint)>>,
    /// Directories unloaded on request: rescans leave them alone until loaded again.
    unloaded: Mutex<std::collections::BTreeSet<String>>,
    /// Held while the live set changes, so a rescan and a repository call never
    /// load the same directory at once.
    changing: Mutex<()>,
    failures: prometheus_client::metrics::counter::Counter,
    refresh_failures: prometheus_client::metrics::counter::Counter,
}

impl PluginRoot {
    /// Loads every plugin of `root`; `options` gives each plugin's dispatcher options.
    pub fn open(
        host: Host,
        root: impl Into<PathBuf>,
        options: impl Fn(&Plugin) -> DispatchOptions + Send + Sync + 'static,
    ) -> Arc<PluginRoot> {
        let (failures, refresh_failures) = host.metrics().watch_counters();
        let root = Arc::new(PluginRoot {
            host,
            root: root.into(),
            options: Box::new(options),
            live: RwLock::new(BTreeMap::new()),
            failed: Mutex::new(BTreeMap::new()),
            unloaded: Mutex::new(Default::default()),
            changing: Mutex::new(()),
            failures,
            refresh_failures,
        });
        root.rescan();
        root
    }

    /// The live plugin with this name (its directory name), if any.
    pub fn get(&self, name: &str) -> Option<Arc<LivePlugin>> {
        self.live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// The live plugins, by name.
    pub fn live_plugins(&self) -> Vec<Arc<LivePlugin>> {
        self.live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Every plugin directory seen, with its state.
    pub fn status(&self) -> BTreeMap<String, PluginStatus> {
        let mut status: BTreeMap<String, PluginStatus> = self
            .live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, live)| {
                let model_id = live.plugin.model_id();
                (name.clone(), PluginStatus::Live { model_id })
            })
            .collect();
        for name in self
            .unloaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            status.insert(name.clone(), PluginStatus::Unloaded);
        }
        for (name, (reason, _)) in self.failed.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let previous_live = status.contains_key(name);
            status.insert(
                name.clone(),
                PluginStatus::Failed {
                    reason: reason.clone(),
                    previous_live,
                },
            );
        }
        status
    }

    /// Brings the live set in step with the files (see the module docs).
    pub fn rescan(&self) {
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let dirs = plugin_dirs(&self.root);
        let names: Vec<String> = dirs
            .iter()
            .filter_map(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        // Removed directories drain and go.
        let removed: Vec<Arc<LivePlugin>> = {
            let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
            let gone: Vec<String> = live
                .keys()
                .filter(|n| !names.contains(n))
                .cloned()
                .collect();
            gone.iter().filter_map(|n| live.remove(n)).collect()
        };
        for old in removed {
            tracing::info!(plugin = %old.plugin.name(), "plugin removed; draining");
            old.dispatcher.close();
        }
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|n, _| names.contains(n));

        for (dir, name) in dirs.iter().zip(&names) {
            if self.is_unloaded(name) {
                continue;
            }
            let print = fingerprint(dir);
            let current = self.get(name);
            let unchanged = current.as_ref().is_some_and(|l| l.fingerprint == print);
            if unchanged {
                if let Some(live) = current {
                    self.refresh(name, &live);
                }
                continue;
            }
            let known_failure = self
                .failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(name)
                .is_some_and(|(_, f)| *f == print);
            if !known_failure {
                let _ = self.start(dir, name, print);
            }
        }
    }

    fn is_unloaded(&self, name: &str) -> bool {
        self.unloaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
    }

    /// Loads the directory `name` of the root, warms it up and swaps it in; on failure
    /// records (and returns) the reason, and what was live stays live.
    fn start(&self, dir: &Path, name: &str, print: Fingerprint) -> Result<(), String> {
        let started = self
            .host
            .load_plugin(dir)
            .and_then(|plugin| {
                let options = (self.options)(&plugin);
                let warmed = plugin.warm_up(&options.inference_args)?;
                if warmed > 0 {
                    tracing::info!(plugin = %name, examples = warmed, "warm-up done");
                }
                Ok((plugin, options))
            })
            // Engines' errors quote names from the tenant's model file.
            .map_err(|e| crate::untrusted::escape_control(&e.to_string()).into_owned())
            .and_then(|(plugin, options)| {
                let plugin = Arc::new(plugin);
                Dispatcher::new(plugin.clone(), options)
                    .map(|dispatcher| (plugin, dispatcher))
                    .map_err(|e| format!("plugin `{name}`: cannot start its worker threads: {e}"))
            });
        match started {
            Ok((plugin, dispatcher)) => {
                let new = Arc::new(LivePlugin {
                    plugin,
                    dispatcher,
                    fingerprint: print,
                });
                let old = self
                    .live
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name.to_string(), new);
                self.failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(name);
                match old {
                    Some(old) => {
                        tracing::info!(plugin = %name, "plugin replaced; draining the old version");
                        old.dispatcher.close();
                    }
                    None => tracing::info!(plugin = %name, "plugin loaded"),
                }
                Ok(())
            }
            Err(reason) => {
                self.failures.inc();
                tracing::error!(plugin = %name, error = %reason, "plugin failed to load; skipped");
                self.failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name.to_string(), (reason.clone(), print));
                Err(reason)
            }
        }
    }

    /// The plugin directory `name` of the root, if there is one.
    fn dir_of(&self, name: &str) -> Result<PathBuf, RepositoryError> {
        plugin_dirs(&self.root)
            .into_iter()
            .find(|d| d.file_name().is_some_and(|n| n == name))
            .ok_or_else(|| {
                RepositoryError::NotFound(format!(
                    "no plugin directory '{}' in the plugin root",
                    crate::untrusted::guest_text(name)
                ))
            })
    }

    /// Loads (or reloads) the plugin directory `name` now, as Triton's repository
    /// `load` does: a new version is swapped in only if it loads and warms up, and a
    /// plugin unloaded on request is watched again. Blocking (compiles, loads models).
    pub fn load(&self, name: &str) -> Result<(), RepositoryError> {
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let dir = self.dir_of(name)?;
        self.unloaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        self.start(&dir, name, fingerprint(&dir))
            .map_err(RepositoryError::Failed)
    }

    /// Triton's repository `load` with a model path (Beam's `update_model_path`):
    /// loads the plugin `name` if it is not live, then serves its model `model`
    /// from `path` through model refresh ([`Plugin::update_model_path`]). Returns
    /// the model id now serving. Blocking (may download and load a model).
    pub fn update_model_path(
        &self,
        name: &str,
        model: Option<&str>,
        path: &str,
    ) -> Result<String, RepositoryError> {
        let live = self
            .live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned();
        let live = match live {
            Some(live) => live,
            None => {
                self.load(name)?;
                self.live
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(name)
                    .cloned()
                    .ok_or_else(|| {
                        RepositoryError::Failed(format!("plugin '{name}' did not go live"))
                    })?
            }
        };
        live.plugin.update_model_path(model, path).map_err(|e| {
            self.refresh_failures.inc();
            RepositoryError::Failed(crate::untrusted::escape_control(&e.to_string()).into_owned())
        })
    }

    /// Unloads the plugin `name` as Triton's repository `unload` does: it stops taking
    /// requests, its queued and running examples finish (as when its directory is
    /// removed), and rescans leave it unloaded until [`PluginRoot::load`].
    pub fn unload(&self, name: &str) -> Result<(), RepositoryError> {
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let old = self
            .live
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        if old.is_none() {
            self.dir_of(name)?;
        }
        self.unloaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string());
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        if let Some(old) = old {
            tracing::info!(plugin = %name, "plugin unloaded on request; draining");
            old.dispatcher.close();
        }
        Ok(())
    }

    /// Every plugin directory of the root with its state (Triton's repository index).
    pub fn index(&self) -> Vec<(String, PluginStatus)> {
        let mut status = self.status();
        plugin_dirs(&self.root)
            .iter()
            .filter_map(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .map(|name| {
                let state = status.remove(&name).unwrap_or(PluginStatus::Failed {
                    reason: "not loaded yet".into(),
                    previous_live: false,
                });
                (name, state)
            })
            .collect()
    }

    fn refresh(&self, name: &str, live: &LivePlugin) {
        if let Err(e) = live.plugin.refresh_models() {
            self.refresh_failures.inc();
            let error = crate::untrusted::escape_control(&e.to_string()).into_owned();
            tracing::error!(plugin = %name, %error, "model refresh failed; the old model keeps serving");
        }
    }

    /// Refreshes the live plugins that have remote models (see the module docs).
    /// Each plugin refreshes under its own lock, not the root's: a slow store delays
    /// its plugin's refresh, never a rescan or a repository call.
    pub fn poll_remote_models(&self) {
        for live in self.live_plugins() {
            if live.plugin.has_remote_models() {
                self.refresh(live.plugin.name(), &live);
            }
        }
    }

    /// Watches the plugin root and rescans once file events have been quiet for
    /// `settle` (so a file being written is not read half-way; see the README), and
    /// polls remote models every `poll`. The watch stops when the returned handle is
    /// dropped.
    pub fn watch(
        self: &Arc<Self>,
        settle: Duration,
        poll: Duration,
    ) -> notify::Result<WatchHandle> {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok() {
                    let _ = tx.send(());
                }
            })?;
        watcher.watch(&self.root, notify::RecursiveMode::Recursive)?;
        let root = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("runinfer-watch".into())
            .spawn(move || {
                // Ends when the watcher (and with it the sender) is dropped.
                while rx.recv().is_ok() {
                    // Wait for quiet: every further event restarts the settle time.
                    while rx.recv_timeout(settle).is_ok() {}
                    match root.upgrade() {
                        Some(root) => root.rescan(),
                        None => return,
                    }
                }
            })
            .expect("cannot start the watch thread");
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, root) = (stop.clone(), Arc::downgrade(self));
        std::thread::Builder::new()
            .name("runinfer-poll".into())
            .spawn(move || {
                let step = poll.min(Duration::from_millis(100));
                loop {
                    let started = std::time::Instant::now();
                    while started.elapsed() < poll {
                        if flag.load(Ordering::Relaxed) {
                            return;
                        }
                        std::thread::sleep(step);
                    }
                    match root.upgrade() {
                        Some(root) => root.poll_remote_models(),
                        None => return,
                    }
                }
            })
            .expect("cannot start the poll thread");
        Ok(WatchHandle {
            _watcher: watcher,
            stop,
        })
    }
}

/// A repository call that could not be done.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    /// No such plugin directory.
    #[error("{0}")]
    NotFound(String),
    /// The plugin failed to load; the reason.
    #[error("{0}")]
    Failed(String),
}

/// Keeps a [`PluginRoot::watch`] running.
pub struct WatchHandle {
    _watcher: notify::RecommendedWatcher,
    stop: Arc<AtomicBool>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
