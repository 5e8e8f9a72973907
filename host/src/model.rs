//! The model registry: every model file is loaded once per host and shared by all
//! instances and plugins that use it.
//!
//! Models are keyed by the digest of their bytes (and the backend), so the same file
//! reached through two plugins, or two copies of one file, are one model in memory.
//! Inference engines sit behind the small [`Backend`] trait; tract is built in.

use crate::tensor::{DType, Tensor};
use prometheus_client::metrics::counter::Counter;
use std::collections::HashMap;
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

/// An inference engine's loaded model. Object safe, so engines can be chosen per model.
pub trait Backend: Send + Sync {
    /// The model's inputs, in the order [`Backend::run`] takes them.
    fn inputs(&self) -> &[TensorInfo];
    /// The model's outputs, in the order [`Backend::run`] returns them.
    fn outputs(&self) -> &[TensorInfo];
    /// Runs the model on one tensor per input.
    fn run(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, ModelError>;
}

/// A model loaded in the host.
pub struct LoadedModel {
    digest: String,
    bytes: u64,
    load_time: Duration,
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
        let outputs = self.backend.run(&ordered)?;
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

/// Which engine runs a model.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// tract-onnx, pure Rust, built in.
    #[default]
    Tract,
}

impl BackendKind {
    fn name(self) -> &'static str {
        match self {
            BackendKind::Tract => "tract",
        }
    }
}

/// Loads each model file once and hands out shared references.
///
/// The registry holds models weakly: a model stays loaded while a plugin (or a
/// per-key model set) holds it, and is freed when the last holder lets it go.
#[derive(Default)]
pub struct ModelRegistry {
    models: Mutex<HashMap<(String, BackendKind), Weak<LoadedModel>>>,
    loads: Counter,
}

impl ModelRegistry {
    /// An empty registry that counts its loads in `loads`.
    pub fn new(loads: Counter) -> Self {
        ModelRegistry {
            models: Mutex::default(),
            loads,
        }
    }

    /// The model in `path`, loaded now unless a file with the same bytes already is.
    pub fn load(&self, path: &Path, backend: BackendKind) -> Result<Arc<LoadedModel>, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let digest = blake3::hash(&bytes).to_hex().to_string();
        // Loads are rare and short next to a host's life: one lock keeps two plugins
        // asking for the same file at once from loading it twice.
        let mut models = self.models.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(model) = models
            .get(&(digest.clone(), backend))
            .and_then(Weak::upgrade)
        {
            return Ok(model);
        }
        models.retain(|_, m| m.strong_count() > 0);
        let start = Instant::now();
        let engine: Box<dyn Backend> = match backend {
            BackendKind::Tract => {
                Box::new(
                    tract::TractModel::load(&bytes).map_err(|message| ModelError::Load {
                        backend: backend.name(),
                        path: path.to_path_buf(),
                        message,
                    })?,
                )
            }
        };
        let model = Arc::new(LoadedModel {
            digest: digest.clone(),
            bytes: bytes.len() as u64,
            load_time: start.elapsed(),
            backend: engine,
        });
        self.loads.inc();
        tracing::info!(
            path = %path.display(),
            backend = backend.name(),
            millis = model.load_time.as_millis() as u64,
            "model loaded"
        );
        models.insert((digest, backend), Arc::downgrade(&model));
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

mod tract {
    use super::{Backend, ModelError, TensorInfo};
    use crate::tensor::{DType, Tensor};
    use std::sync::Arc;
    use tract_onnx::prelude::{
        DatumType, Framework, InferenceModel, InferenceModelExt, IntoRunnable, IntoTValue, TDim,
        TVec, Tensor as TractTensor, TractResult, TypedFact, TypedRunnableModel,
    };
    use tract_onnx::tract_hir::infer::GenericFactoid;

    pub struct TractModel {
        plan: Arc<TypedRunnableModel>,
        inputs: Vec<TensorInfo>,
        outputs: Vec<TensorInfo>,
    }

    fn dtype_of(dt: DatumType) -> Option<DType> {
        Some(match dt {
            DatumType::F32 => DType::F32,
            DatumType::F64 => DType::F64,
            DatumType::I8 => DType::I8,
            DatumType::I16 => DType::I16,
            DatumType::I32 => DType::I32,
            DatumType::I64 => DType::I64,
            DatumType::U8 => DType::U8,
            DatumType::U16 => DType::U16,
            DatumType::U32 => DType::U32,
            DatumType::U64 => DType::U64,
            DatumType::Bool => DType::Boolean,
            // tract folds some integer computations (e.g. ONNX-ML class lookups) into
            // symbolic dimensions; they are plain i64 values by the time they are
            // returned.
            DatumType::TDim => DType::I64,
            _ => return None,
        })
    }

    fn datum_of(dt: DType) -> DatumType {
        match dt {
            DType::F32 => DatumType::F32,
            DType::F64 => DatumType::F64,
            DType::I8 => DatumType::I8,
            DType::I16 => DatumType::I16,
            DType::I32 => DatumType::I32,
            DType::I64 => DatumType::I64,
            DType::U8 => DatumType::U8,
            DType::U16 => DatumType::U16,
            DType::U32 => DatumType::U32,
            DType::U64 => DatumType::U64,
            DType::Boolean => DatumType::Bool,
        }
    }

    fn info(name: String, fact: &TypedFact) -> Result<TensorInfo, String> {
        let dtype = dtype_of(fact.datum_type).ok_or_else(|| {
            format!(
                "`{name}` has unsupported element type {:?}",
                fact.datum_type
            )
        })?;
        let shape = fact
            .shape
            .iter()
            .map(|d| d.to_i64().ok().map(|d| d as u64))
            .collect();
        Ok(TensorInfo { name, dtype, shape })
    }

    /// Exporters such as skl2onnx declare a free batch dimension without a name,
    /// which tract cannot type; give each such dimension a symbol of its own.
    fn free_unknown_dims(model: &mut InferenceModel) -> TractResult<()> {
        for ix in 0..model.input_outlets()?.len() {
            let mut fact = model.input_fact(ix)?.clone();
            let unknown: Vec<usize> = fact
                .shape
                .dims()
                .enumerate()
                .filter(|(_, d)| matches!(d, GenericFactoid::Any))
                .map(|(i, _)| i)
                .collect();
            if fact.shape.is_open() || unknown.is_empty() {
                continue;
            }
            for i in unknown {
                let symbol = model.symbols.new_with_prefix("dim");
                fact.shape.set_dim(i, TDim::Sym(symbol));
            }
            model.set_input_fact(ix, fact)?;
        }
        Ok(())
    }

    impl TractModel {
        pub fn load(bytes: &[u8]) -> Result<Self, String> {
            let err = |e: tract_onnx::prelude::TractError| format!("{e:#}");
            let onnx = tract_onnx::onnx();
            let mut model = onnx.model_for_read(&mut &bytes[..]).map_err(err)?;
            free_unknown_dims(&mut model).map_err(err)?;
            // Names as the ONNX file has them: optimisation may rename nodes.
            let input_names = model
                .input_outlets()
                .map_err(err)?
                .iter()
                .map(|o| model.node(o.node).name.clone())
                .collect::<Vec<_>>();
            let output_names = model
                .output_outlets()
                .map_err(err)?
                .iter()
                .map(|&o| {
                    model
                        .outlet_label(o)
                        .map(str::to_string)
                        .unwrap_or_else(|| model.node(o.node).name.clone())
                })
                .collect::<Vec<_>>();
            let typed = model.into_optimized().map_err(err)?;
            let describe = |names: Vec<String>, outlets: &[tract_onnx::prelude::OutletId]| {
                names
                    .into_iter()
                    .zip(outlets)
                    .map(|(name, &o)| info(name, typed.outlet_fact(o).map_err(err)?))
                    .collect::<Result<Vec<_>, String>>()
            };
            let inputs = describe(input_names, typed.input_outlets().map_err(err)?)?;
            let outputs = describe(output_names, typed.output_outlets().map_err(err)?)?;
            let plan = typed.into_runnable().map_err(err)?;
            Ok(TractModel {
                plan,
                inputs,
                outputs,
            })
        }
    }

    impl Backend for TractModel {
        fn inputs(&self) -> &[TensorInfo] {
            &self.inputs
        }

        fn outputs(&self) -> &[TensorInfo] {
            &self.outputs
        }

        fn run(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, ModelError> {
            let run_err = |message: String| ModelError::Run {
                backend: "tract",
                message,
            };
            let values = inputs
                .iter()
                .map(|t| {
                    // Safety: the bytes hold exactly `shape` plain little-endian values
                    // of the dtype (checked when the host tensor was built), and every
                    // dtype here is plain old data.
                    unsafe { TractTensor::from_raw_dt(datum_of(t.dtype()), t.shape(), t.bytes()) }
                        .map(|t| t.into_tvalue())
                        .map_err(|e| run_err(format!("{e:#}")))
                })
                .collect::<Result<TVec<_>, _>>()?;
            let outputs = self
                .plan
                .run(values)
                .map_err(|e| run_err(format!("{e:#}")))?;
            outputs
                .into_iter()
                .map(|v| {
                    let dtype = dtype_of(v.datum_type()).ok_or_else(|| {
                        run_err(format!(
                            "unsupported output element type {:?}",
                            v.datum_type()
                        ))
                    })?;
                    let t = v
                        .cast_to_dt(datum_of(dtype))
                        .map_err(|e| run_err(format!("{e:#}")))?;
                    Tensor::from_bytes(dtype, t.shape().to_vec(), t.as_bytes().to_vec())
                        .map_err(|e| run_err(e.to_string()))
                })
                .collect()
        }
    }
}
