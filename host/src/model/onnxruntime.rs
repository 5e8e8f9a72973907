//! onnxruntime, through the `ort` crate with the shared library loaded at run time
//! (the one the `onnxruntime` PyPI wheel ships: `scripts/install-onnxruntime.sh`).
//! Nothing is linked at build time, so a host without the library still builds and
//! runs every tract model; only models that ask for onnxruntime need it.

use super::initializers::{self, MIN_SHARED_BYTES};
use super::{Backend, InputShapes, ModelError, OnnxruntimeConfig, TensorInfo};
use crate::tensor::{DType, Tensor};
use bytes::Bytes;
use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, PrepackedWeights};
use ort::value::{DynValue, TensorElementType, ValueType};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, OnceLock};

const NAME: &str = "onnxruntime";

/// The library file name the system loader is asked for when no path is configured.
const LIBRARY: &str = "libonnxruntime.so";

/// A process loads the onnxruntime library once; the first path asked for wins.
static RUNTIME: OnceLock<(PathBuf, Result<Environment, String>)> = OnceLock::new();

/// Where the library is looked for: the configured path (`--onnxruntime-lib` or
/// `RUNINFER_ONNXRUNTIME_LIB`), ort's own `ORT_DYLIB_PATH`, `onnxruntime/` in the
/// cargo target directory that holds the running executable (where the install
/// script puts it), then the system loader's search path.
fn library_path(config: &OnnxruntimeConfig) -> PathBuf {
    if let Some(path) = &config.library {
        return path.clone();
    }
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH") {
        return path.into();
    }
    let installed = std::env::current_exe().ok().and_then(|exe| {
        exe.ancestors()
            .skip(1)
            .take(3)
            .map(|dir| dir.join("onnxruntime").join(LIBRARY))
            .find(|candidate| candidate.is_file())
    });
    installed.unwrap_or_else(|| PathBuf::from(LIBRARY))
}

fn environment(config: &OnnxruntimeConfig) -> Result<&'static Environment, String> {
    let (path, env) = RUNTIME.get_or_init(|| {
        let path = library_path(config);
        let env = ort::init_from(&path)
            .map_err(|e| e.to_string())
            .and_then(|builder| {
                builder
                    .with_name("runinfer")
                    .build()
                    .map_err(|e| e.to_string())
            });
        match &env {
            Ok(_) => tracing::info!(library = %path.display(), "onnxruntime loaded"),
            Err(e) => tracing::warn!(library = %path.display(), "onnxruntime not loaded: {e}"),
        }
        (path, env)
    });
    if let Some(wanted) = &config.library
        && wanted != path
    {
        tracing::warn!(
            wanted = %wanted.display(),
            loaded = %path.display(),
            "a process loads one onnxruntime library; keeping the first"
        );
    }
    env.as_ref().map_err(|e| {
        format!(
            "the onnxruntime library is not available ({e}); install it with \
             scripts/install-onnxruntime.sh, or give its path with --onnxruntime-lib or \
             RUNINFER_ONNXRUNTIME_LIB"
        )
    })
}

/// A model run by onnxruntime.
///
/// `ort` runs a session through `&mut` (some execution providers are not thread
/// safe), so instances running at once each take a session of their own from a
/// pool; it grows on demand up to `max_sessions` (more sessions than cores buy no
/// speed), then callers wait for one. The sessions share the model's weights (see
/// [`SharedWeights`]), so one more costs its own working memory, not another copy of
/// the model. The model bytes are kept to open more.
pub struct OrtModel {
    // Declared before `weights`: sessions are dropped before what they borrow.
    pool: Mutex<Pool>,
    returned: Condvar,
    /// Held while a session opens: opening parses the whole model, weights included,
    /// and sessions opened at once each held a parse (4 MiniLM sessions: 667 MB peak
    /// against 455 MB one at a time).
    opening: Mutex<()>,
    bytes: Bytes,
    weights: SharedWeights,
    threads: usize,
    max_sessions: usize,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
}

/// What the sessions of one model share. onnxruntime copies every weight into each
/// session it opens, and packs the matrices of some kernels (MatMul, Gemm, Conv) into
/// yet another copy; given a tensor for a weight (`AddInitializer`) a session uses it
/// as it is, and given a pre-packed weights container, the first session's packed
/// copies serve the others. MiniLM (90 MB), every session running: 135-143 MB more
/// per session without, 18 MB (its working memory) with (bench/RESULTS.md, P6).
struct SharedWeights {
    initializers: Vec<(String, Arc<DynValue>)>,
    prepacked: PrepackedWeights,
}

impl SharedWeights {
    fn of(model: &Bytes) -> Result<Self, String> {
        let initializers = initializers::large_initializers(model, MIN_SHARED_BYTES)?
            .into_iter()
            .map(|init| {
                let value = value_of(init.dtype, &init.dims, &init.data)
                    .map_err(|e| format!("initializer `{}`: {e}", init.name))?;
                Ok((init.name, Arc::new(value)))
            })
            .collect::<Result<_, String>>()?;
        Ok(SharedWeights {
            initializers,
            prepacked: PrepackedWeights::new(),
        })
    }
}

struct Pool {
    idle: Vec<Session>,
    open: usize,
}

impl OrtModel {
    pub fn load(
        bytes: Vec<u8>,
        input_shapes: &InputShapes,
        config: &OnnxruntimeConfig,
    ) -> Result<Self, String> {
        let env = environment(config)?;
        let bytes = Bytes::from(bytes);
        let weights = SharedWeights::of(&bytes)?;
        let session = open(env, &bytes, &weights, config.threads)?;
        let describe = |outlets: &[ort::value::Outlet]| {
            outlets
                .iter()
                .map(|o| info(o.name(), o.dtype()))
                .collect::<Result<Vec<_>, String>>()
        };
        let mut inputs = describe(session.inputs())?;
        let outputs = describe(session.outputs())?;
        // onnxruntime plans for any size; fixed shapes from the manifest are still
        // checked, so a wrong example fails before the engine sees it.
        for (name, dims) in input_shapes {
            let input = inputs
                .iter_mut()
                .find(|i| &i.name == name)
                .ok_or_else(|| format!("input_shapes: the model has no input `{name}`"))?;
            input.shape = dims.iter().map(|&d| u64::try_from(d).ok()).collect();
        }
        Ok(OrtModel {
            bytes,
            weights,
            threads: config.threads,
            max_sessions: config.max_sessions.max(1),
            pool: Mutex::new(Pool {
                idle: vec![session],
                open: 1,
            }),
            returned: Condvar::new(),
            opening: Mutex::new(()),
            inputs,
            outputs,
        })
    }

    fn take_session(&self) -> Result<Session, ModelError> {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(session) = pool.idle.pop() {
                return Ok(session);
            }
            if pool.open < self.max_sessions {
                pool.open += 1;
                break;
            }
            pool = self.returned.wait(pool).unwrap_or_else(|e| e.into_inner());
        }
        drop(pool);
        let env = RUNTIME
            .get()
            .and_then(|(_, env)| env.as_ref().ok())
            .expect("a loaded model implies a loaded runtime");
        let _one_at_a_time = self.opening.lock().unwrap_or_else(|e| e.into_inner());
        open(env, &self.bytes, &self.weights, self.threads).map_err(|e| {
            self.pool.lock().unwrap_or_else(|e| e.into_inner()).open -= 1;
            self.returned.notify_one();
            run_error(e)
        })
    }

    fn return_session(&self, session: Session) {
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .idle
            .push(session);
        self.returned.notify_one();
    }
}

fn open(
    env: &Environment,
    bytes: &[u8],
    weights: &SharedWeights,
    threads: usize,
) -> Result<Session, String> {
    let err = |e: ort::Error<_>| e.to_string();
    let mut builder = Session::builder(env)
        .map_err(|e| e.to_string())?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(err)?
        .with_intra_threads(threads)
        .map_err(err)?
        .with_inter_threads(1)
        .map_err(err)?
        .with_prepacked_weights(&weights.prepacked)
        .map_err(err)?;
    for (name, value) in &weights.initializers {
        builder = builder
            .with_initializer(name, Arc::clone(value))
            .map_err(err)?;
    }
    let session = builder.commit_from_memory(bytes).map_err(|e| e.to_string());
    release_freed_memory();
    session
}

/// onnxruntime allocates with the C library's malloc (the host's own allocator is
/// mimalloc), and opening a session parses the whole model — weights included —
/// then frees the parse. glibc keeps such freed memory in its heap unless asked to
/// give it back, which made each session look ~20 MB bigger than it is.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of glibc's heap to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn run_error(message: String) -> ModelError {
    ModelError::Run {
        backend: NAME,
        message,
    }
}

fn dtype_of(ty: TensorElementType) -> Option<DType> {
    Some(match ty {
        TensorElementType::Float32 => DType::F32,
        TensorElementType::Float64 => DType::F64,
        TensorElementType::Int8 => DType::I8,
        TensorElementType::Int16 => DType::I16,
        TensorElementType::Int32 => DType::I32,
        TensorElementType::Int64 => DType::I64,
        TensorElementType::Uint8 => DType::U8,
        TensorElementType::Uint16 => DType::U16,
        TensorElementType::Uint32 => DType::U32,
        TensorElementType::Uint64 => DType::U64,
        TensorElementType::Bool => DType::Boolean,
        _ => return None,
    })
}

fn info(name: &str, ty: &ValueType) -> Result<TensorInfo, String> {
    let ValueType::Tensor { ty, shape, .. } = ty else {
        return Err(format!(
            "`{name}` is not a tensor but {ty} (for a ZipMap output, convert with zipmap=False)"
        ));
    };
    let dtype =
        dtype_of(*ty).ok_or_else(|| format!("`{name}` has unsupported element type {ty}"))?;
    let shape = shape
        .iter()
        .map(|&d| u64::try_from(d).ok())
        .collect::<Vec<_>>();
    Ok(TensorInfo {
        name: name.to_string(),
        dtype,
        shape,
    })
}

/// Copies a host tensor into an onnxruntime value.
fn to_value(tensor: &Tensor) -> Result<DynValue, String> {
    value_of(tensor.dtype(), tensor.shape(), tensor.bytes())
}

/// An onnxruntime value of little-endian `bytes` (decoded rather than borrowed: they
/// carry no alignment guarantee). The caller has checked that they fit the shape.
fn value_of(dtype: DType, shape: &[usize], bytes: &[u8]) -> Result<DynValue, String> {
    let shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    macro_rules! typed {
        ($ty:ty) => {{
            let values: Vec<$ty> = bytes
                .chunks_exact(size_of::<$ty>())
                .map(|c| <$ty>::from_le_bytes(c.try_into().expect("chunk of the type's size")))
                .collect();
            ort::value::Tensor::from_array((shape, values)).map(|t| t.into_dyn())
        }};
    }
    match dtype {
        DType::F32 => typed!(f32),
        DType::F64 => typed!(f64),
        DType::I8 => typed!(i8),
        DType::I16 => typed!(i16),
        DType::I32 => typed!(i32),
        DType::I64 => typed!(i64),
        DType::U8 => typed!(u8),
        DType::U16 => typed!(u16),
        DType::U32 => typed!(u32),
        DType::U64 => typed!(u64),
        DType::Boolean => {
            let values: Vec<bool> = bytes.iter().map(|&b| b != 0).collect();
            ort::value::Tensor::from_array((shape, values)).map(|t| t.into_dyn())
        }
    }
    .map_err(|e| e.to_string())
}

fn from_value(value: &DynValue) -> Result<Tensor, String> {
    let ty = value
        .dtype()
        .tensor_type()
        .ok_or_else(|| format!("output is not a tensor but {}", value.dtype()))?;
    let dtype = dtype_of(ty).ok_or_else(|| format!("unsupported output element type {ty}"))?;
    macro_rules! typed {
        ($ty:ty) => {{
            let (shape, values) = value
                .try_extract_tensor::<$ty>()
                .map_err(|e| e.to_string())?;
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (shape, bytes)
        }};
    }
    let (shape, bytes): (&ort::value::Shape, Vec<u8>) = match dtype {
        DType::F32 => typed!(f32),
        DType::F64 => typed!(f64),
        DType::I8 => typed!(i8),
        DType::I16 => typed!(i16),
        DType::I32 => typed!(i32),
        DType::I64 => typed!(i64),
        DType::U8 => typed!(u8),
        DType::U16 => typed!(u16),
        DType::U32 => typed!(u32),
        DType::U64 => typed!(u64),
        DType::Boolean => {
            let (shape, values) = value
                .try_extract_tensor::<bool>()
                .map_err(|e| e.to_string())?;
            (shape, values.iter().map(|&b| u8::from(b)).collect())
        }
    };
    let shape = shape.iter().map(|&d| d as usize).collect();
    Tensor::from_bytes(dtype, shape, bytes).map_err(|e| e.to_string())
}

impl Backend for OrtModel {
    fn inputs(&self) -> &[TensorInfo] {
        &self.inputs
    }

    fn outputs(&self) -> &[TensorInfo] {
        &self.outputs
    }

    fn run(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, ModelError> {
        let values = inputs
            .iter()
            .map(|t| to_value(t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(run_error)?;
        let named: Vec<(&str, DynValue)> = self
            .inputs
            .iter()
            .map(|i| i.name.as_str())
            .zip(values)
            .collect();
        let mut session = self.take_session()?;
        let result = session
            .run(named)
            .map_err(|e| e.to_string())
            .and_then(|outputs| {
                self.outputs
                    .iter()
                    .map(|o| from_value(&outputs[o.name.as_str()]))
                    .collect::<Result<Vec<_>, _>>()
            });
        self.return_session(session);
        result.map_err(run_error)
    }
}
