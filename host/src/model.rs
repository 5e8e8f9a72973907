//! The model registry: every model file is loaded once per host and shared by all
//! instances and plugins that use it.
//!
//! Models are keyed by the digest of their bytes (with the engine and any input
//! shapes set in the manifest), so the same file reached through two plugins, or two
//! copies of one file, are one model in memory.
//! Inference engines sit behind the small [`Backend`] trait: tract is built in,
//! onnxruntime is loaded at run time when a model asks for it.

use crate::tensor::{DType, Tensor};
use prometheus_client::metrics::counter::Counter;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The model file could not be read.
    #[error("cannot read model file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The backend rejected the model.
    #[error("{backend} cannot load model {path}: {message}")]
    Load {
        /// Backend name.
        backend: &'static str,
        /// The file.
        path: PathBuf,
        /// What the backend said.
        message: String,
    },
    /// The inputs do not fit the model.
    #[error("{0}")]
    Input(String),
    /// A file pattern matches no file (or is malformed).
    #[error("{0}")]
    Pattern(String),
    /// A remote model could not be fetched (boxed: it is large and rare).
    #[error(transparent)]
    Fetch(Box<store::StoreError>),
    /// The model's bytes are not the pinned ones.
    #[error("{path} has SHA-256 {actual}, not the pinned {expected}: refused")]
    Digest {
        /// The file.
        path: PathBuf,
        /// The pin.
        expected: String,
        /// The file's digest.
        actual: String,
    },
    /// The backend failed while running.
    #[error("{backend} failed to run the model: {message}")]
    Run {
        /// Backend name.
        backend: &'static str,
        /// What the backend said.
        message: String,
    },
}

/// Name, element type and shape of a model input or output.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TensorInfo {
    /// Name in the model.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Dimensions; `None` where the model leaves one free (typically the batch).
    pub shape: Vec<Option<u64>>,
}

impl From<store::StoreError> for ModelError {
    fn from(error: store::StoreError) -> Self {
        ModelError::Fetch(Box::new(error))
    }
}

/// An inference engine's loaded model. Object safe, so engines can be chosen per model.
pub trait Backend: Send + Sync {
    /// The model's inputs, in the order [`Backend::run`] takes them.
    fn inputs(&self) -> &[TensorInfo];
    /// The model's outputs, in the order [`Backend::run`] returns them.
    fn outputs(&self) -> &[TensorInfo];
    /// Runs the model on one tensor per input.
    fn run(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, ModelError>;
}

/// A model granted to a plugin, loaded in the host: a `[models]` name bound to a file.
pub struct GrantedModel {
    /// Name in the manifest.
    pub name: String,
    /// File, relative to the plugin directory, or the remote object's URL.
    pub path: PathBuf,
    /// The remote object's revision (ETag, or time and size): what model refresh
    /// compares. `None` for a file of the plugin.
    pub revision: Option<String>,
    /// `<path>@<digest prefix>`: attached to every prediction it makes.
    pub id: String,
    /// The shared model.
    pub model: Arc<LoadedModel>,
}

/// The guest's handle on a granted model (the WIT `model` resource).
#[doc(hidden)]
pub struct ModelHandle {
    pub(crate) granted: Arc<GrantedModel>,
}

/// A model loaded in the host.
pub struct LoadedModel {
    digest: String,
    bytes: u64,
    load_time: Duration,
    kind: BackendKind,
    backend: Box<dyn Backend>,
}

impl LoadedModel {
    /// Hex digest (BLAKE3) of the model file.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Size of the model file in bytes.
    pub fn byte_size(&self) -> u64 {
        self.bytes
    }

    /// The engine that runs it.
    pub fn backend(&self) -> BackendKind {
        self.kind
    }

    /// How long loading and optimising the model took.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// The model's inputs.
    pub fn inputs(&self) -> &[TensorInfo] {
        self.backend.inputs()
    }

    /// The model's outputs.
    pub fn outputs(&self) -> &[TensorInfo] {
        self.backend.outputs()
    }

    /// Runs the model on named inputs (every input, any order) and returns each output
    /// by name.
    pub fn run_named(
        &self,
        inputs: Vec<(String, &Tensor)>,
    ) -> Result<Vec<(String, Tensor)>, ModelError> {
        let expected = self.backend.inputs();
        let mut slots: Vec<Option<&Tensor>> = vec![None; expected.len()];
        for (name, tensor) in inputs {
            let index = expected
                .iter()
                .position(|i| i.name == name)
                .ok_or_else(|| {
                    ModelError::Input(format!(
                        "the model has no input `{name}` (inputs: {})",
                        names(expected)
                    ))
                })?;
            let info = &expected[index];
            check_fits(info, tensor)?;
            if slots[index].replace(tensor).is_some() {
                return Err(ModelError::Input(format!("input `{name}` given twice")));
            }
        }
        let ordered = slots
            .into_iter()
            .zip(expected)
            .map(|(slot, info)| {
                slot.ok_or_else(|| ModelError::Input(format!("input `{}` is missing", info.name)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let outputs = crate::metrics::engine_call(|| self.backend.run(&ordered))?;
        Ok(self
            .backend
            .outputs()
            .iter()
            .map(|o| o.name.clone())
            .zip(outputs)
            .collect())
    }
}

fn names(infos: &[TensorInfo]) -> String {
    infos
        .iter()
        .map(|i| format!("`{}`", i.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks dtype and fixed dimensions before the engine sees the tensor, so that a
/// wrong input gets a message in the model's own terms.
fn check_fits(info: &TensorInfo, tensor: &Tensor) -> Result<(), ModelError> {
    let shape_ok = info.shape.len() == tensor.shape().len()
        && info
            .shape
            .iter()
            .zip(tensor.shape())
            .all(|(want, &got)| want.is_none_or(|w| w == got as u64));
    if info.dtype != tensor.dtype() || !shape_ok {
        let want: Vec<String> = info
            .shape
            .iter()
            .map(|d| d.map_or("?".to_string(), |d| d.to_string()))
            .collect();
        return Err(ModelError::Input(format!(
            "input `{}` expects {} [{}], got {} {:?}",
            info.name,
            info.dtype,
            want.join(", "),
            tensor.dtype(),
            tensor.shape()
        )));
    }
    Ok(())
}

pub use crate::manifest::BackendKind;

/// How the onnxruntime backend finds its library and runs sessions.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct OnnxruntimeConfig {
    /// The shared library; `None` looks in the usual places (see the README).
    pub library: Option<PathBuf>,
    /// Threads a session uses inside one call. runinfer runs instances in
    /// parallel, so one each by default, like tract.
    pub threads: usize,
    /// Sessions per model at most (instances running the model at once share
    /// them); each holds a copy of the weights. Default: the number of cores.
    pub max_sessions: usize,
}

impl Default for OnnxruntimeConfig {
    fn default() -> Self {
        OnnxruntimeConfig {
            library: std::env::var_os("RUNINFER_ONNXRUNTIME_LIB").map(PathBuf::from),
            threads: 1,
            max_sessions: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// Input shapes by input name (`-1`: a free dimension).
pub type InputShapes = BTreeMap<String, Vec<i64>>;

/// One loaded model: the file's digest, the engine and the shapes it was planned for.
type ModelKey = (String, BackendKind, InputShapes);

/// Loads each model file once and hands out shared references.
///
/// The registry holds models weakly: a model stays loaded while a plugin (or a
/// per-key model set) holds it, and is freed when the last holder lets it go.
#[derive(Default)]
pub struct ModelRegistry {
    models: Mutex<HashMap<ModelKey, Weak<LoadedModel>>>,
    loads: Counter,
    onnxruntime: OnnxruntimeConfig,
}

impl ModelRegistry {
    /// An empty registry that counts its loads in `loads`.
    pub fn new(loads: Counter, onnxruntime: OnnxruntimeConfig) -> Self {
        ModelRegistry {
            models: Mutex::default(),
            loads,
            onnxruntime,
        }
    }

    /// The model in `path`, loaded now unless a file with the same bytes already is.
    pub fn load(
        &self,
        path: &Path,
        backend: BackendKind,
        input_shapes: &InputShapes,
    ) -> Result<Arc<LoadedModel>, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let digest = blake3::hash(&bytes).to_hex().to_string();
        // Loads are rare and short next to a host's life: one lock keeps two plugins
        // asking for the same file at once from loading it twice.
        let mut models = self.models.lock().unwrap_or_else(|e| e.into_inner());
        let key = (digest.clone(), backend, input_shapes.clone());
        if let Some(model) = models.get(&key).and_then(Weak::upgrade) {
            return Ok(model);
        }
        models.retain(|_, m| m.strong_count() > 0);
        let start = Instant::now();
        let load_error = |message: String| ModelError::Load {
            backend: backend.name(),
            path: path.to_path_buf(),
            message,
        };
        let size = bytes.len() as u64;
        external_data::check(&bytes).map_err(load_error)?;
        let engine: Box<dyn Backend> = match backend {
            BackendKind::Tract => Box::new(tract::TractModel::load(&bytes, input_shapes).map_err(
                |message| {
                    load_error(format!(
                        "{message}\n(tract lacks some ONNX operators and plans graphs for known \
                         sizes: fix open input dimensions with input_shapes = {{ name = [...] }}, \
                         or run this model with backend = \"onnxruntime\" in its [models] \
                         entry or --backend onnxruntime)"
                    ))
                },
            )?),
            BackendKind::Onnxruntime => Box::new(
                onnxruntime::OrtModel::load(bytes, input_shapes, &self.onnxruntime)
                    .map_err(load_error)?,
            ),
        };
        let model = Arc::new(LoadedModel {
            digest: digest.clone(),
            bytes: size,
            load_time: start.elapsed(),
            kind: backend,
            backend: engine,
        });
        self.loads.inc();
        tracing::info!(
            path = %path.display(),
            backend = backend.name(),
            millis = model.load_time.as_millis() as u64,
            "model loaded"
        );
        models.insert(key, Arc::downgrade(&model));
        Ok(model)
    }

    /// How many model files were really loaded (not found in the registry).
    pub fn load_count(&self) -> u64 {
        self.loads.get()
    }

    /// How many distinct models are loaded now.
    pub fn len(&self) -> usize {
        let models = self.models.lock().unwrap_or_else(|e| e.into_inner());
        models.values().filter(|m| m.strong_count() > 0).count()
    }

    /// True when no model is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

mod external_data;
mod initializers;
mod onnxruntime;
pub mod store;
mod tract;
