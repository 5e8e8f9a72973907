//! `plugin.toml`: parsed and validated in one place.
//!
//! Every error names the file, the key and what was expected; nothing here panics on
//! bad input.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// The file name of a plugin manifest inside a plugin directory.
pub const MANIFEST_FILE: &str = "plugin.toml";

/// A manifest that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The manifest file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed or a key has the wrong type (the message names the key,
    /// line and expected type).
    #[error("{path}: {message}")]
    Parse {
        /// The manifest file.
        path: PathBuf,
        /// What toml/serde said, with the position.
        message: String,
    },
    /// A value is well-typed but not acceptable.
    #[error("{path}: `{key}`: {message}")]
    Invalid {
        /// The manifest file.
        path: PathBuf,
        /// The dotted key.
        key: String,
        /// What was expected.
        message: String,
    },
}

/// A plugin's `plugin.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Plugin name: letters, digits, `-` and `_`.
    pub name: String,
    /// The component file, relative to the plugin directory.
    pub component: PathBuf,
    /// The tenant that owns the plugin; its name prefixes the metrics namespace.
    pub tenant: Option<String>,
    /// Overrides the handler's metrics namespace.
    pub metrics_namespace: Option<String>,
    /// Models the handler may open, by name.
    #[serde(default)]
    pub models: BTreeMap<String, ModelEntry>,
    /// Overrides the handler's batching kwargs.
    #[serde(default)]
    pub batching: BatchingConfig,
    /// Sandbox limits.
    #[serde(default)]
    pub limits: Limits,
    /// Handler constructor arguments, passed to `init`.
    #[serde(default)]
    pub args: BTreeMap<String, toml::Value>,
    /// What the sandbox grants besides models: nothing by default.
    #[serde(default)]
    pub grants: Grants,
    /// Per-key models (Beam's `KeyModelMapping`): examples with these keys run with
    /// these models bound to the granted names instead of `[models]`.
    #[serde(default)]
    pub key_models: Vec<KeyModelMapping>,
    /// Examples (a JSONL file, lines as `run` reads them) that the first instance runs
    /// before the plugin is served, so that no request meets a cold model (Triton's
    /// `model_warmup`). None by default.
    pub warmup: Option<PathBuf>,
}

/// `[grants]`: access to the outside world. Nothing is granted by default.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Environment variables the handler sees.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Directories of the plugin, read-only, at a guest path.
    #[serde(default)]
    pub dirs: Vec<GrantedDir>,
    /// Outgoing network (TCP/UDP and name lookups).
    #[serde(default)]
    pub network: bool,
}

/// A directory granted read-only: `{ path = "data", guest = "/data" }`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GrantedDir {
    /// Relative to the plugin directory.
    pub path: PathBuf,
    /// Where the handler sees it.
    pub guest: String,
}

/// One `[[key_models]]` table: Beam's `KeyModelMapping`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyModelMapping {
    /// Keys (JSON strings or numbers of the input lines) that use these models.
    pub keys: Vec<KeyName>,
    /// Model names (granted in `[models]`) bound to other files for these keys.
    pub models: BTreeMap<String, ModelEntry>,
}

/// A key as written in `plugin.toml`: a string or an integer.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(untagged, expecting = "a string or an integer key")]
pub enum KeyName {
    /// `"de"`
    Text(String),
    /// `42`
    Int(i64),
}

impl KeyName {
    /// The key of an input line, if it can name a key model.
    pub fn of(key: &serde_json::Value) -> Option<KeyName> {
        match key {
            serde_json::Value::String(s) => Some(KeyName::Text(s.clone())),
            serde_json::Value::Number(n) => n.as_i64().map(KeyName::Int),
            _ => None,
        }
    }
}

impl std::fmt::Display for KeyName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyName::Text(s) => write!(f, "{s:?}"),
            KeyName::Int(i) => write!(f, "{i}"),
        }
    }
}

/// A model granted to the plugin: a path, or a table with options.
#[derive(Clone, Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "a path string or a table like { path = \"models/m.onnx\" }"
)]
pub enum ModelEntry {
    /// `name = "models/m.onnx"`
    Path(PathBuf),
    /// `name = { path = "models/m.onnx", backend = "tract" }`
    Table {
        /// Relative to the plugin directory.
        path: PathBuf,
        /// Inference engine; the host's default (`--backend`) when absent.
        #[serde(default)]
        backend: Option<BackendKind>,
        /// Input shapes that replace the model's declared ones (`-1`: free), for
        /// exports that leave dimensions open that the graph needs fixed (tract
        /// plans a graph for known sizes; e.g. `x = [-1, 3, 48, 192]`).
        #[serde(default)]
        input_shapes: BTreeMap<String, Vec<i64>>,
        /// The SHA-256 the model's bytes must have (hex): anything else is refused
        /// and the model serving keeps serving.
        #[serde(default)]
        sha256: Option<String>,
    },
}

/// URL schemes of the model stores (`object_store`'s names for them).
pub const REMOTE_SCHEMES: [&str; 9] = [
    "s3", "s3a", "gs", "az", "azure", "abfs", "abfss", "http", "https",
];

impl ModelEntry {
    /// The model file or file pattern, relative to the plugin directory.
    pub fn path(&self) -> &Path {
        match self {
            ModelEntry::Path(path) | ModelEntry::Table { path, .. } => path,
        }
    }

    /// The remote location (`s3://…`, `gs://…`, `az://…`, `http(s)://…`) when the
    /// entry names one instead of a file of the plugin.
    pub fn remote(&self) -> Option<url::Url> {
        let text = self.path().to_str()?;
        text.contains("://")
            .then(|| url::Url::parse(text).ok())
            .flatten()
    }

    /// True when the path is a file or object pattern (`*`, `?` or `[...]`, like
    /// Beam's `WatchFilePattern`): the newest match is the model. An HTTP URL is
    /// never one (`?` starts its query, and HTTP cannot list).
    pub fn is_pattern(&self) -> bool {
        if self
            .remote()
            .is_some_and(|u| matches!(u.scheme(), "http" | "https"))
        {
            return false;
        }
        self.path().to_string_lossy().contains(['*', '?', '['])
    }

    /// True when what the entry names can change without the manifest changing: a
    /// pattern, or a remote object (both are polled by model refresh).
    pub fn is_dynamic(&self) -> bool {
        self.is_pattern() || self.remote().is_some()
    }

    /// The same entry (engine, input shapes) for another file or object, unpinned:
    /// a pin names the manifest's object, not the new one.
    pub fn with_path(&self, path: PathBuf) -> ModelEntry {
        match self {
            ModelEntry::Path(_) => ModelEntry::Path(path),
            ModelEntry::Table {
                backend,
                input_shapes,
                ..
            } => ModelEntry::Table {
                path,
                backend: *backend,
                input_shapes: input_shapes.clone(),
                sha256: None,
            },
        }
    }

    /// The pinned SHA-256, if any.
    pub fn sha256(&self) -> Option<&str> {
        match self {
            ModelEntry::Path(_) => None,
            ModelEntry::Table { sha256, .. } => sha256.as_deref(),
        }
    }

    /// The model file, relative to `dir`: the path itself, or the newest file that
    /// matches the pattern (latest modification time, then name). Hidden files
    /// (`.name`, e.g. a copy being written before a rename) never match.
    pub fn resolve(&self, dir: &Path) -> Result<PathBuf, String> {
        if !self.is_pattern() {
            return Ok(self.path().to_path_buf());
        }
        let pattern = format!(
            "{}/{}",
            glob::Pattern::escape(&dir.to_string_lossy()),
            self.path().to_string_lossy()
        );
        let matches = glob::glob(&pattern).map_err(|e| format!("bad file pattern: {e}"))?;
        let newest = matches
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
            .max();
        match newest {
            Some((_, path)) => Ok(path
                .strip_prefix(dir)
                .map(Path::to_path_buf)
                .unwrap_or(path)),
            None => Err(format!("no file matches {}", self.path().display())),
        }
    }

    /// Input shapes set in the manifest (`-1`: free), by input name.
    pub fn input_shapes(&self) -> &BTreeMap<String, Vec<i64>> {
        static NONE: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        match self {
            ModelEntry::Path(_) => &NONE,
            ModelEntry::Table { input_shapes, .. } => input_shapes,
        }
    }

    /// The engine the manifest asks for, if it names one.
    pub fn backend(&self) -> Option<BackendKind> {
        match self {
            ModelEntry::Path(_) => None,
            ModelEntry::Table { backend, .. } => *backend,
        }
    }
}

/// `[batching]`: Beam's `batch_elements_kwargs`, overriding the handler's own.
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BatchingConfig {
    /// Smallest batch the host forms while examples keep coming.
    pub min_batch_size: Option<u32>,
    /// Largest batch.
    pub max_batch_size: Option<u32>,
    /// Longest time the oldest example of a batch waits.
    pub max_batch_duration_ms: Option<u32>,
}

/// Most instances (worker threads) one plugin may ask for.
pub const MAX_INSTANCES: u32 = 256;

/// Most examples one plugin may queue.
pub const MAX_QUEUE_SIZE: u32 = 1 << 20;

/// `[limits]`: what one handler instance may use.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Linear memory cap per instance, in MiB.
    pub memory_mb: u32,
    /// Time limit for one call into the handler, in milliseconds.
    pub timeout_ms: u64,
    /// Handler instances kept warm, and batches run at once.
    pub instances: Option<u32>,
    /// Host memory an instance may hold in tensors at once, in MiB (wasmtime's store
    /// limits only count guest memory, so the host counts these).
    pub max_tensor_mb: u32,
    /// Bytes one `run-inference` call may return, in MiB.
    pub max_output_mb: u32,
    /// Examples waiting for a batch, per plugin; beyond it `serve` answers 503 at once
    /// (default: max batch size × instances × 2, at least 1024).
    pub queue_size: Option<u32>,
    /// Longest a `serve` request waits for its results, in ms (default: the server's
    /// `--request-timeout-ms`); a request may shorten it.
    pub request_timeout_ms: Option<u64>,
    /// Distinct handler metrics (counters, gauges, distributions) the plugin may
    /// create; past it a new name is refused.
    pub max_custom_metrics: u32,
    /// Log messages one instance may send per second; the rest are dropped and
    /// counted in a summary line.
    pub log_messages_per_sec: u32,
}

impl Limits {
    fn check(&self) -> Result<(), Invalid> {
        // Instances are threads and queued examples are memory of the whole process.
        if self.instances.is_some_and(|n| n > MAX_INSTANCES) {
            return Err(invalid(
                "limits.instances",
                format!("expected at most {MAX_INSTANCES}"),
            ));
        }
        if self.queue_size.is_some_and(|n| n > MAX_QUEUE_SIZE) {
            return Err(invalid(
                "limits.queue_size",
                format!("expected at most {MAX_QUEUE_SIZE}"),
            ));
        }
        for (key, zero) in [
            ("limits.memory_mb", self.memory_mb == 0),
            ("limits.queue_size", self.queue_size == Some(0)),
            (
                "limits.request_timeout_ms",
                self.request_timeout_ms == Some(0),
            ),
            ("limits.timeout_ms", self.timeout_ms == 0),
            ("limits.instances", self.instances == Some(0)),
        ] {
            if zero {
                return Err(invalid(key, "expected at least 1"));
            }
        }
        if self.max_tensor_mb == 0 || self.max_output_mb == 0 {
            return Err(invalid(
                "limits",
                "max_tensor_mb and max_output_mb must be at least 1",
            ));
        }
        Ok(())
    }
}

/// A key of the manifest and what is wrong with its value.
struct Invalid(String, String);

fn invalid(key: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid(key.into(), message.into())
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: 256,
            timeout_ms: 10_000,
            instances: None,
            max_tensor_mb: 256,
            max_output_mb: 64,
            queue_size: None,
            request_timeout_ms: None,
            max_custom_metrics: 64,
            log_messages_per_sec: 100,
        }
    }
}

impl Manifest {
    /// Reads and validates `dir/plugin.toml`.
    pub fn load(dir: &Path) -> Result<Manifest, ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| ManifestError::Read {
            path: path.clone(),
            source,
        })?;
        Self::parse(&text, &path)
    }

    /// Parses and validates manifest text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, ManifestError> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| ManifestError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        manifest.validate(path)?;
        Ok(manifest)
    }

    fn validate(&self, path: &Path) -> Result<(), ManifestError> {
        self.check_names_and_paths()
            .and_then(|()| self.check_batching())
            .and_then(|()| self.limits.check())
            .and_then(|()| {
                self.args.iter().try_for_each(|(key, value)| {
                    arg_string(value)
                        .map(drop)
                        .map_err(|m| invalid(format!("args.{key}"), m))
                })
            })
            .and_then(|()| self.check_key_models())
            .map_err(|Invalid(key, message)| ManifestError::Invalid {
                path: path.to_path_buf(),
                key,
                message,
            })
    }

    fn check_names_and_paths(&self) -> Result<(), Invalid> {
        check_name(&self.name).map_err(|m| invalid("name", m))?;
        if let Some(tenant) = &self.tenant {
            check_name(tenant).map_err(|m| invalid("tenant", m))?;
        }
        for (i, dir) in self.grants.dirs.iter().enumerate() {
            check_relative(&dir.path).map_err(|m| invalid(format!("grants.dirs[{i}].path"), m))?;
            if !dir.guest.starts_with('/') {
                return Err(invalid(
                    format!("grants.dirs[{i}].guest"),
                    format!(
                        "expected an absolute guest path like \"/data\", got {:?}",
                        dir.guest
                    ),
                ));
            }
        }
        if let Some(ns) = &self.metrics_namespace {
            check_name(ns).map_err(|m| invalid("metrics_namespace", m))?;
        }
        check_relative(&self.component).map_err(|m| invalid("component", m))?;
        if let Some(warmup) = &self.warmup {
            check_relative(warmup).map_err(|m| invalid("warmup", m))?;
        }
        for (name, entry) in &self.models {
            check_name(name).map_err(|m| invalid(format!("models.{name}"), m))?;
            check_model_entry(entry).map_err(|m| invalid(format!("models.{name}"), m))?;
        }
        Ok(())
    }

    fn check_batching(&self) -> Result<(), Invalid> {
        let b = &self.batching;
        for (key, value) in [
            ("min_batch_size", b.min_batch_size),
            ("max_batch_size", b.max_batch_size),
            ("max_batch_duration_ms", b.max_batch_duration_ms),
        ] {
            crate::untrusted::check_batching_value(key, value)
                .map_err(|e| invalid(format!("batching.{key}"), e.0))?;
        }
        if let (Some(min), Some(max)) = (b.min_batch_size, b.max_batch_size)
            && min > max
        {
            return Err(invalid(
                "batching.min_batch_size",
                format!("expected at most max_batch_size ({max}), got {min}"),
            ));
        }
        Ok(())
    }

    fn check_key_models(&self) -> Result<(), Invalid> {
        let mut seen = std::collections::HashSet::new();
        for (i, mapping) in self.key_models.iter().enumerate() {
            let at = |k: &str| format!("key_models[{i}].{k}");
            if mapping.keys.is_empty() {
                return Err(invalid(at("keys"), "expected at least one key"));
            }
            for key in &mapping.keys {
                if !seen.insert(key.clone()) {
                    return Err(invalid(at("keys"), format!("key {key} is mapped twice")));
                }
            }
            if mapping.models.is_empty() {
                return Err(invalid(at("models"), "expected at least one model"));
            }
            for (name, entry) in &mapping.models {
                if !self.models.contains_key(name) {
                    return Err(invalid(
                        at(&format!("models.{name}")),
                        format!("`{name}` is not a model of [models]"),
                    ));
                }
                check_model_entry(entry).map_err(|m| invalid(at(&format!("models.{name}")), m))?;
            }
        }
        Ok(())
    }

    /// The `[args]` as the `(name, value)` strings the handler's `init` receives:
    /// strings as they are, other values as TOML literals, arrays and tables as JSON.
    pub fn handler_args(&self) -> Vec<(String, String)> {
        self.args
            .iter()
            .map(|(k, v)| (k.clone(), arg_string(v).unwrap_or_default()))
            .collect()
    }
}

fn arg_string(value: &toml::Value) -> Result<String, String> {
    Ok(match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        array_or_table => serde_json::to_string(array_or_table)
            .map_err(|e| format!("cannot pass this value to the handler: {e}"))?,
    })
}

/// Names that end up in metric names, file names and logs.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "expected 1-64 letters, digits, `-` or `_`, starting with a letter or digit, got {name:?}"
        ))
    }
}

/// A model entry names a file of the plugin, or a remote object of a known store;
/// a pin is a SHA-256 and names one object, not a pattern.
pub(crate) fn check_model_entry(entry: &ModelEntry) -> Result<(), String> {
    let text = entry.path().to_string_lossy();
    if text.contains("://") {
        let url = url::Url::parse(&text).map_err(|e| format!("bad URL {text:?}: {e}"))?;
        if !REMOTE_SCHEMES.contains(&url.scheme()) {
            return Err(format!(
                "unknown model store `{}://` (known: {})",
                url.scheme(),
                REMOTE_SCHEMES.map(|s| format!("{s}://")).join(", ")
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("expected a bucket or host in {text:?}"));
        }
        if url.path().trim_start_matches('/').is_empty() {
            return Err(format!("expected an object key in {text:?}"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "a model URL names an object, without `?` or `#` (credentials and \
                 signatures come from the store's environment): {text:?}"
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            // Credentials come from the store's environment, never from a manifest
            // a tenant wrote (and that ends up in model ids and logs).
            return Err("credentials may not be written in a model URL".into());
        }
    } else {
        check_relative(entry.path())?;
    }
    if let Some(pin) = entry.sha256() {
        if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("sha256 must be 64 hex digits, got {pin:?}"));
        }
        if entry.is_pattern() {
            return Err("sha256 pins one object; a pattern names many".into());
        }
    }
    Ok(())
}

/// Paths in a manifest stay inside the plugin directory.
fn check_relative(path: &Path) -> Result<(), String> {
    if path.as_os_str().is_empty() {
        return Err("expected a file path, got an empty string".into());
    }
    for component in path.components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            _ => {
                return Err(format!(
                    "expected a path inside the plugin directory, got {:?}",
                    path.display().to_string()
                ));
            }
        }
    }
    Ok(())
}

/// Which engine runs a model.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// tract-onnx, pure Rust, built in.
    #[default]
    Tract,
    /// onnxruntime, its shared library loaded at run time.
    #[serde(alias = "ort")]
    Onnxruntime,
}

impl BackendKind {
    /// The name used in `plugin.toml` and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Tract => "tract",
            BackendKind::Onnxruntime => "onnxruntime",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tract" => Ok(BackendKind::Tract),
            "onnxruntime" | "ort" => Ok(BackendKind::Onnxruntime),
            _ => Err(format!("unknown backend `{s}` (tract or onnxruntime)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, String> {
        Manifest::parse(text, Path::new("plugins/x/plugin.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn full_manifest_parses() {
        let m = parse(
            r#"
            name = "iris"
            component = "iris.wasm"
            tenant = "team-a"
            metrics_namespace = "iris_ns"
            [models]
            iris = "models/iris.onnx"
            other = { path = "models/other.onnx", backend = "tract" }
            [batching]
            min_batch_size = 2
            max_batch_size = 32
            max_batch_duration_ms = 5
            [limits]
            memory_mb = 64
            timeout_ms = 500
            instances = 2
            [args]
            labels = "a,b,c"
            threshold = 0.5
            sizes = [1, 2]
            "#,
        )
        .unwrap();
        assert_eq!(m.models["iris"].path(), Path::new("models/iris.onnx"));
        assert_eq!(m.models["other"].backend(), Some(BackendKind::Tract));
        assert_eq!(m.models["iris"].backend(), None);
        assert_eq!(m.batching.max_batch_size, Some(32));
        assert_eq!(m.limits.instances, Some(2));
        assert_eq!(
            m.handler_args(),
            vec![
                ("labels".into(), "a,b,c".into()),
                ("sizes".into(), "[1,2]".into()),
                ("threshold".into(), "0.5".into()),
            ]
        );
    }

    #[test]
    fn defaults_apply() {
        let m = parse("name = \"t\"\ncomponent = \"t.wasm\"\n").unwrap();
        assert_eq!(m.tenant, None);
        assert_eq!(m.grants, Grants::default());
        assert_eq!(m.limits, Limits::default());
        assert!(m.models.is_empty());
    }

    #[test]
    fn remote_models_name_a_known_store_an_object_and_no_credentials() {
        let models = |entry: &str| {
            parse(&format!(
                "name = \"t\"\ncomponent = \"t.wasm\"\n[models]\nm = {entry}\n"
            ))
        };
        let pin = "ab".repeat(32);
        let m = models(r#"{ path = "s3://bucket/dir/m-*.onnx" }"#).unwrap();
        let entry = &m.models["m"];
        assert_eq!(entry.remote().unwrap().host_str(), Some("bucket"));
        assert!(entry.is_pattern() && entry.is_dynamic());
        let m = models(&format!(
            r#"{{ path = "https://h/m.onnx", sha256 = "{pin}" }}"#
        ))
        .unwrap();
        assert!(!m.models["m"].is_pattern() && m.models["m"].is_dynamic());
        assert_eq!(m.models["m"].sha256(), Some(pin.as_str()));
        assert!(!models(r#""m.onnx""#).unwrap().models["m"].is_dynamic());

        let pinned_pattern = format!(r#"{{ path = "s3://b/m-*.onnx", sha256 = "{pin}" }}"#);
        for (entry, expected) in [
            (r#""ftp://h/m.onnx""#, "unknown model store `ftp://`"),
            (r#""s3:///m.onnx""#, "expected a bucket or host"),
            (r#""gs://bucket/""#, "expected an object key"),
            (
                r#""https://u:secret@h/m.onnx""#,
                "credentials may not be written",
            ),
            (
                r#""https://h/m.onnx?X-Amz-Signature=1""#,
                "without `?` or `#`",
            ),
            (r#"{ path = "m.onnx", sha256 = "abc" }"#, "64 hex digits"),
            (&pinned_pattern, "a pattern names many"),
        ] {
            let err = models(entry).unwrap_err();
            assert!(
                err.contains("`models.m`") && err.contains(expected),
                "{entry}: {err}"
            );
        }
    }

    #[test]
    fn errors_name_the_file_the_key_and_the_expectation() {
        let err =
            parse("name = \"t\"\ncomponent = \"t.wasm\"\n[batching]\nmax_batch_size = \"big\"\n")
                .unwrap_err();
        assert!(err.starts_with("plugins/x/plugin.toml: "), "{err}");
        assert!(
            err.contains("max_batch_size") && err.contains("expected u32"),
            "{err}"
        );
        assert!(err.contains("line 4"), "{err}");

        let err = parse("name = \"t\"\ncomponent = \"t.wasm\"\nmodel = {}\n").unwrap_err();
        assert!(err.contains("unknown field `model`"), "{err}");

        let err = parse("name = \"t\"\n").unwrap_err();
        assert!(err.contains("missing field `component`"), "{err}");

        let err =
            parse("name = \"t\"\ncomponent = \"t.wasm\"\n[models]\nm = \"../../etc/passwd\"\n")
                .unwrap_err();
        assert_eq!(
            err,
            "plugins/x/plugin.toml: `models.m`: expected a path inside the plugin directory, got \"../../etc/passwd\""
        );

        let err = parse("name = \"t\"\ncomponent = \"/abs.wasm\"\n").unwrap_err();
        assert!(err.contains("`component`: expected a path inside"), "{err}");

        let err =
            parse("name = \"t\"\ncomponent = \"t.wasm\"\nwarmup = \"../w.jsonl\"\n").unwrap_err();
        assert!(err.contains("`warmup`: expected a path inside"), "{err}");

        let err = parse("name = \"a b\"\ncomponent = \"t.wasm\"\n").unwrap_err();
        assert!(err.contains("`name`: expected 1-64 letters"), "{err}");

        let err = parse(
            "name = \"t\"\ncomponent = \"t.wasm\"\n[batching]\nmin_batch_size = 8\nmax_batch_size = 4\n",
        )
        .unwrap_err();
        assert!(
            err.contains("`batching.min_batch_size`: expected at most max_batch_size (4), got 8"),
            "{err}"
        );

        let err = parse("name = \"t\"\ncomponent = \"t.wasm\"\n[models]\nm = 3\n").unwrap_err();
        assert!(err.contains("a path string or a table"), "{err}");

        let err =
            parse("name = \"t\"\ncomponent = \"t.wasm\"\n[limits]\nmemory_mb = 0\n").unwrap_err();
        assert!(
            err.contains("`limits.memory_mb`: expected at least 1"),
            "{err}"
        );
    }

    #[test]
    fn key_models_are_validated() {
        let base = "name = \"t\"\ncomponent = \"t.wasm\"\n[models]\nm = \"a.onnx\"\n";
        let m = parse(&format!(
            "{base}[[key_models]]\nkeys = [\"de\", 7]\nmodels = {{ m = \"b.onnx\" }}\n"
        ))
        .unwrap();
        assert_eq!(
            m.key_models[0].keys,
            vec![KeyName::Text("de".into()), KeyName::Int(7)]
        );
        let err = parse(&format!(
            "{base}[[key_models]]\nkeys = [\"de\"]\nmodels = {{ other = \"b.onnx\" }}\n"
        ))
        .unwrap_err();
        assert!(
            err.contains("`key_models[0].models.other`: `other` is not a model of [models]"),
            "{err}"
        );
        let err = parse(&format!(
            "{base}[[key_models]]\nkeys = [\"de\"]\nmodels = {{ m = \"b.onnx\" }}\n[[key_models]]\nkeys = [\"de\"]\nmodels = {{ m = \"c.onnx\" }}\n"
        ))
        .unwrap_err();
        assert!(
            err.contains("`key_models[1].keys`: key \"de\" is mapped twice"),
            "{err}"
        );
    }

    #[test]
    fn malformed_toml_is_an_error_not_a_panic() {
        let err = parse("name = \"t\ncomponent = \n").unwrap_err();
        assert!(err.starts_with("plugins/x/plugin.toml: "), "{err}");
    }
}
