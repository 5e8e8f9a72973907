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
//!   loaded and an instance accepted them.
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
        for entry in manifest.models.values().filter(|e| !e.is_pattern()) {
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
}

/// The plugins of a plugin root.
pub struct PluginRoot {
    host: Host,
    root: PathBuf,
    options: Box<dyn Fn(&Plugin) -> DispatchOptions + Send + Sync>,
    live: RwLock<BTreeMap<String, Arc<LivePlugin>>>,
    failed: Mutex<BTreeMap<String, (String, Fingerprint)>>,
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
            if known_failure {
                continue;
            }
            let started = self
                .host
                .load_plugin(dir)
                // Engines' errors quote names from the tenant's model file.
                .map_err(|e| crate::untrusted::escape_control(&e.to_string()).into_owned())
                .and_then(|plugin| {
                    let plugin = Arc::new(plugin);
                    Dispatcher::new(plugin.clone(), (self.options)(&plugin))
                        .map(|dispatcher| (plugin, dispatcher))
                        .map_err(|e| {
                            format!("plugin `{name}`: cannot start its worker threads: {e}")
                        })
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
                        .insert(name.clone(), new);
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
                }
                Err(reason) => {
                    self.failures.inc();
                    tracing::error!(plugin = %name, error = %reason, "plugin failed to load; skipped");
                    self.failed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(name.clone(), (reason, print));
                }
            }
        }
    }

    fn refresh(&self, name: &str, live: &LivePlugin) {
        if let Err(e) = live.plugin.refresh_models() {
            self.refresh_failures.inc();
            let error = crate::untrusted::escape_control(&e.to_string()).into_owned();
            tracing::error!(plugin = %name, %error, "model refresh failed; the old model keeps serving");
        }
    }

    /// Watches the plugin root and rescans once file events have been quiet for
    /// `settle` (so a file being written is not read half-way; see the README). The
    /// watch stops when the returned handle is dropped.
    pub fn watch(self: &Arc<Self>, settle: Duration) -> notify::Result<WatchHandle> {
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
        Ok(WatchHandle { _watcher: watcher })
    }
}

/// Keeps a [`PluginRoot::watch`] running.
pub struct WatchHandle {
    _watcher: notify::RecommendedWatcher,
}
