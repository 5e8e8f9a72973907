//! One sandboxed handler instance: its store, the host side of its imports (tensors,
//! models, metrics, log) and the calls into its exports.

use crate::bindings::{self, Handler, HandlerPre, api, inference, types};
use crate::error::{ErrorCode, InferenceError};
use crate::manifest::{BatchingConfig, Limits};
use crate::metrics::Metrics;
use crate::model::{LoadedModel, TensorInfo};
use crate::tensor::{DType, Tensor, TensorError};
use crate::value::Value;
use serde_json::value::RawValue;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// A model granted to a plugin, loaded in the host.
pub struct GrantedModel {
    /// Name in the manifest.
    pub name: String,
    /// File, relative to the plugin directory.
    pub path: PathBuf,
    /// `<path>@<digest prefix>`: attached to every prediction it makes.
    pub id: String,
    /// The shared model.
    pub model: Arc<LoadedModel>,
}

/// The guest's handle on a model (the WIT `model` resource).
pub struct ModelHandle {
    granted: Arc<GrantedModel>,
}

/// What every instance of one plugin shares.
pub(crate) struct PluginEnv {
    pub plugin: String,
    pub models: BTreeMap<String, Arc<GrantedModel>>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    pub epoch_tick: Duration,
}

/// Beam's handler description, as the handler's `init` returned it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct HandlerInfo {
    /// The handler's metrics namespace, if it names one.
    pub metrics_namespace: Option<String>,
    /// The handler's batching kwargs.
    pub batching: BatchingConfig,
    /// Minimum memory, in MiB, the handler asks for.
    pub min_ram_mb: Option<u64>,
    /// Accelerator the handler asks for.
    pub accelerator: Option<String>,
    /// Beam's `share_model_across_processes`.
    pub share_model: bool,
    /// How examples are decoded for it.
    pub input: InputKind,
}

/// How the host decodes each example for a handler.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum InputKind {
    /// A nested JSON array (or tensor object) decoded into a tensor.
    Tensor {
        /// Element type.
        dtype: DType,
        /// Expected shape of one example (`None` = free dimension), if fixed.
        shape: Option<Vec<Option<u64>>>,
    },
    /// Any JSON value, as JSON text.
    Json,
    /// A JSON string.
    Text,
    /// A base64 JSON string.
    Bytes,
}

/// The handler's results for one batch.
#[derive(Debug)]
pub struct Inferences {
    /// One inference per example, in order.
    pub values: Vec<Value>,
    /// Ids of the models the handler ran for this batch (empty if none).
    pub model_ids: Vec<String>,
}

/// The store data of one instance.
pub(crate) struct InstanceState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    env: Arc<PluginEnv>,
    namespace: String,
    models_used: BTreeSet<String>,
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A live handler instance. Not shared: one batch at a time.
pub struct HandlerInstance {
    store: Store<InstanceState>,
    handler: Handler,
    info: HandlerInfo,
}

fn trap_error(error: wasmtime::Error) -> InferenceError {
    if let Some(trap) = error.downcast_ref::<Trap>() {
        if *trap == Trap::Interrupt {
            return InferenceError::new(
                ErrorCode::Timeout,
                "the handler ran past its time limit and was stopped",
            );
        }
        return InferenceError::new(ErrorCode::Trap, format!("the handler trapped: {trap}"));
    }
    InferenceError::new(ErrorCode::Trap, format!("the handler failed: {error:#}"))
}

fn from_guest_error(e: types::Error) -> InferenceError {
    let code = match e.code {
        types::ErrorCode::InvalidInput => ErrorCode::InvalidInput,
        types::ErrorCode::Model => ErrorCode::Model,
        types::ErrorCode::NotGranted => ErrorCode::NotGranted,
        types::ErrorCode::Unsupported => ErrorCode::Unsupported,
        types::ErrorCode::ResourceExhausted => ErrorCode::ResourceExhausted,
        types::ErrorCode::Internal => ErrorCode::Internal,
    };
    InferenceError::new(code, e.message)
}

impl HandlerInstance {
    /// Instantiates the component, calls `init` with the manifest's args, then
    /// `load-model`.
    pub(crate) fn start(
        pre: &HandlerPre<InstanceState>,
        env: Arc<PluginEnv>,
        namespace_override: Option<&str>,
        args: &[(String, String)],
    ) -> Result<HandlerInstance, (&'static str, InferenceError)> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(env.limits.memory_mb as usize * 1024 * 1024)
            .instances(64)
            .build();
        // Nothing is granted: no directories, environment, arguments or network; stdio
        // goes nowhere.
        let wasi = WasiCtxBuilder::new().build();
        let namespace = namespace_override.unwrap_or(&env.plugin).to_string();
        let mut store = Store::new(
            pre.engine(),
            InstanceState {
                wasi,
                table: ResourceTable::new(),
                limits,
                env,
                namespace,
                models_used: BTreeSet::new(),
            },
        );
        store.limiter(|state| &mut state.limits);
        set_deadline(&mut store);
        let handler = pre
            .instantiate(&mut store)
            .map_err(|e| ("instantiate", trap_error(e)))?;

        set_deadline(&mut store);
        let info = handler
            .runinfer_handler_handler_api()
            .call_init(&mut store, args)
            .map_err(|e| ("init", trap_error(e)))?
            .map_err(|e| ("init", from_guest_error(e)))?;
        let info = convert_info(info);
        if namespace_override.is_none()
            && let Some(ns) = &info.metrics_namespace
        {
            store.data_mut().namespace = ns.clone();
        }
        let mut instance = HandlerInstance {
            store,
            handler,
            info,
        };
        instance.load_model().map_err(|e| ("load-model", e))?;
        Ok(instance)
    }

    /// What the handler's `init` returned.
    pub fn info(&self) -> &HandlerInfo {
        &self.info
    }

    /// The metrics namespace in force for this instance.
    pub fn namespace(&self) -> &str {
        &self.store.data().namespace
    }

    /// Beam's `load_model`.
    pub fn load_model(&mut self) -> Result<(), InferenceError> {
        set_deadline(&mut self.store);
        self.handler
            .runinfer_handler_handler_api()
            .call_load_model(&mut self.store)
            .map_err(trap_error)?
            .map_err(from_guest_error)
    }

    /// Beam's `update_model_path`, followed by `load_model`.
    pub fn update_model_path(
        &mut self,
        model: &str,
        path: Option<&str>,
    ) -> Result<(), InferenceError> {
        set_deadline(&mut self.store);
        self.handler
            .runinfer_handler_handler_api()
            .call_update_model_path(&mut self.store, model, path)
            .map_err(trap_error)?
            .map_err(from_guest_error)?;
        self.load_model()
    }

    /// Beam's `run_inference` on one batch. An error of code `trap` or `timeout` means
    /// the instance must be dropped.
    pub fn run_inference(
        &mut self,
        batch: Vec<Value>,
        args: &[(String, String)],
    ) -> Result<Inferences, InferenceError> {
        let expected = batch.len();
        let state = self.store.data_mut();
        state.models_used.clear();
        let guest_batch = batch
            .into_iter()
            .map(|value| to_guest(&mut state.table, value))
            .collect::<Result<Vec<_>, _>>()?;
        set_deadline(&mut self.store);
        let results = self
            .handler
            .runinfer_handler_handler_api()
            .call_run_inference(&mut self.store, &guest_batch, args)
            .map_err(trap_error)?
            .map_err(from_guest_error)?;
        if results.len() != expected {
            return Err(InferenceError::new(
                ErrorCode::Internal,
                format!(
                    "the handler returned {} inferences for a batch of {expected}",
                    results.len()
                ),
            ));
        }
        let state = self.store.data_mut();
        let values = results
            .into_iter()
            .enumerate()
            .map(|(i, value)| from_guest(&mut state.table, value, i))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Inferences {
            values,
            model_ids: std::mem::take(&mut state.models_used).into_iter().collect(),
        })
    }
}

fn set_deadline(store: &mut Store<InstanceState>) {
    let env = &store.data().env;
    let ticks = env
        .limits
        .timeout_ms
        .div_ceil(env.epoch_tick.as_millis().max(1) as u64)
        + 1;
    store.set_epoch_deadline(ticks);
}

fn convert_info(info: api::HandlerInfo) -> HandlerInfo {
    HandlerInfo {
        metrics_namespace: info.metrics_namespace,
        batching: BatchingConfig {
            min_batch_size: info.batching.min_batch_size,
            max_batch_size: info.batching.max_batch_size,
            max_batch_duration_ms: info.batching.max_batch_duration_ms,
        },
        min_ram_mb: info.resource_hints.min_ram_mb,
        accelerator: info.resource_hints.accelerator,
        share_model: info.share_model,
        input: match info.input {
            api::InputKind::Tensor(spec) => InputKind::Tensor {
                dtype: dtype_from_wit(spec.dtype),
                shape: spec.shape,
            },
            api::InputKind::Json => InputKind::Json,
            api::InputKind::Text => InputKind::Text,
            api::InputKind::Bytes => InputKind::Bytes,
        },
    }
}

fn to_guest(table: &mut ResourceTable, value: Value) -> Result<types::Value, InferenceError> {
    let push = |table: &mut ResourceTable, t: Tensor| {
        table
            .push(t)
            .map_err(|e| InferenceError::new(ErrorCode::ResourceExhausted, e.to_string()))
    };
    Ok(match value {
        Value::Tensor(t) => types::Value::Tensor(push(table, t)?),
        Value::Tensors(named) => types::Value::Tensors(
            named
                .into_iter()
                .map(|(name, t)| Ok((name, push(table, t)?)))
                .collect::<Result<_, InferenceError>>()?,
        ),
        Value::Json(raw) => types::Value::Json(raw.get().to_string()),
        Value::Text(text) => types::Value::Text(text),
        Value::Bytes(bytes) => types::Value::Bytes(bytes),
    })
}

fn from_guest(
    table: &mut ResourceTable,
    value: types::Value,
    index: usize,
) -> Result<Value, InferenceError> {
    let take = |table: &mut ResourceTable, r: Resource<Tensor>| {
        table.delete(r).map_err(|e| {
            InferenceError::new(
                ErrorCode::Internal,
                format!("inference {index}: bad tensor handle: {e}"),
            )
        })
    };
    Ok(match value {
        types::Value::Tensor(r) => Value::Tensor(take(table, r)?),
        types::Value::Tensors(named) => Value::Tensors(
            named
                .into_iter()
                .map(|(name, r)| Ok((name, take(table, r)?)))
                .collect::<Result<_, InferenceError>>()?,
        ),
        types::Value::Json(text) => Value::Json(RawValue::from_string(text).map_err(|e| {
            InferenceError::new(
                ErrorCode::Internal,
                format!("inference {index}: the handler returned invalid JSON: {e}"),
            )
        })?),
        types::Value::Text(text) => Value::Text(text),
        types::Value::Bytes(bytes) => Value::Bytes(bytes),
    })
}

pub(crate) fn dtype_from_wit(d: types::Dtype) -> DType {
    match d {
        types::Dtype::F32 => DType::F32,
        types::Dtype::F64 => DType::F64,
        types::Dtype::I8 => DType::I8,
        types::Dtype::I16 => DType::I16,
        types::Dtype::I32 => DType::I32,
        types::Dtype::I64 => DType::I64,
        types::Dtype::U8 => DType::U8,
        types::Dtype::U16 => DType::U16,
        types::Dtype::U32 => DType::U32,
        types::Dtype::U64 => DType::U64,
        types::Dtype::Boolean => DType::Boolean,
    }
}

fn dtype_to_wit(d: DType) -> types::Dtype {
    match d {
        DType::F32 => types::Dtype::F32,
        DType::F64 => types::Dtype::F64,
        DType::I8 => types::Dtype::I8,
        DType::I16 => types::Dtype::I16,
        DType::I32 => types::Dtype::I32,
        DType::I64 => types::Dtype::I64,
        DType::U8 => types::Dtype::U8,
        DType::U16 => types::Dtype::U16,
        DType::U32 => types::Dtype::U32,
        DType::U64 => types::Dtype::U64,
        DType::Boolean => types::Dtype::Boolean,
    }
}

fn guest_error(code: types::ErrorCode, message: impl Into<String>) -> types::Error {
    types::Error {
        code,
        message: message.into(),
    }
}

fn tensor_error(e: TensorError) -> types::Error {
    guest_error(types::ErrorCode::InvalidInput, e.to_string())
}

fn shape_from_wit(shape: &[u64]) -> Result<Vec<usize>, types::Error> {
    shape
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<_, _>>()
        .map_err(|_| {
            guest_error(
                types::ErrorCode::InvalidInput,
                format!("shape {shape:?} is too large"),
            )
        })
}

fn info_to_wit(info: &TensorInfo) -> inference::TensorInfo {
    inference::TensorInfo {
        name: info.name.clone(),
        dtype: dtype_to_wit(info.dtype),
        shape: info.shape.clone(),
    }
}

type Guest<T> = wasmtime::Result<Result<T, types::Error>>;

impl InstanceState {
    fn push_tensor(&mut self, tensor: Tensor) -> wasmtime::Result<Resource<Tensor>> {
        Ok(self.table.push(tensor)?)
    }
}

impl types::Host for InstanceState {}

impl types::HostTensor for InstanceState {
    fn from_bytes(
        &mut self,
        dtype: types::Dtype,
        shape: Vec<u64>,
        data: Vec<u8>,
    ) -> Guest<Resource<Tensor>> {
        let tensor = match shape_from_wit(&shape).and_then(|shape| {
            Tensor::from_bytes(dtype_from_wit(dtype), shape, data).map_err(tensor_error)
        }) {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        Ok(Ok(self.push_tensor(tensor)?))
    }

    fn from_f32(&mut self, shape: Vec<u64>, data: Vec<f32>) -> Guest<Resource<Tensor>> {
        let tensor = match shape_from_wit(&shape)
            .and_then(|shape| Tensor::from_f32(shape, &data).map_err(tensor_error))
        {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        Ok(Ok(self.push_tensor(tensor)?))
    }

    fn dtype(&mut self, this: Resource<Tensor>) -> wasmtime::Result<types::Dtype> {
        Ok(dtype_to_wit(self.table.get(&this)?.dtype()))
    }

    fn shape(&mut self, this: Resource<Tensor>) -> wasmtime::Result<Vec<u64>> {
        Ok(self
            .table
            .get(&this)?
            .shape()
            .iter()
            .map(|&d| d as u64)
            .collect())
    }

    fn data(&mut self, this: Resource<Tensor>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.table.get(&this)?.bytes().to_vec())
    }

    fn to_f32(&mut self, this: Resource<Tensor>) -> Guest<Vec<f32>> {
        Ok(Ok(self.table.get(&this)?.to_f32()))
    }

    fn to_i64(&mut self, this: Resource<Tensor>) -> Guest<Vec<i64>> {
        Ok(self.table.get(&this)?.to_i64().map_err(tensor_error))
    }

    fn stack(&mut self, items: Vec<Resource<Tensor>>) -> Guest<Resource<Tensor>> {
        let tensors = items
            .iter()
            .map(|r| self.table.get(r))
            .collect::<Result<Vec<_>, _>>()?;
        match Tensor::stack(tensors) {
            Ok(t) => Ok(Ok(self.push_tensor(t)?)),
            Err(e) => Ok(Err(tensor_error(e))),
        }
    }

    fn unstack(&mut self, this: Resource<Tensor>) -> Guest<Vec<Resource<Tensor>>> {
        let rows = match self.table.get(&this)?.unstack() {
            Ok(rows) => rows,
            Err(e) => return Ok(Err(tensor_error(e))),
        };
        Ok(Ok(rows
            .into_iter()
            .map(|t| self.push_tensor(t))
            .collect::<wasmtime::Result<_>>()?))
    }

    fn drop(&mut self, this: Resource<Tensor>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl inference::Host for InstanceState {}

impl inference::HostModel for InstanceState {
    fn open(&mut self, name: String) -> Guest<Resource<ModelHandle>> {
        let Some(granted) = self.env.models.get(&name) else {
            let granted: Vec<&str> = self.env.models.keys().map(String::as_str).collect();
            return Ok(Err(guest_error(
                types::ErrorCode::NotGranted,
                format!(
                    "model `{name}` is not granted to plugin `{}` (granted: {})",
                    self.env.plugin,
                    if granted.is_empty() {
                        "none".to_string()
                    } else {
                        granted.join(", ")
                    }
                ),
            )));
        };
        let handle = ModelHandle {
            granted: granted.clone(),
        };
        Ok(Ok(self.table.push(handle)?))
    }

    fn id(&mut self, this: Resource<ModelHandle>) -> wasmtime::Result<String> {
        Ok(self.table.get(&this)?.granted.id.clone())
    }

    fn inputs(
        &mut self,
        this: Resource<ModelHandle>,
    ) -> wasmtime::Result<Vec<inference::TensorInfo>> {
        Ok(self
            .table
            .get(&this)?
            .granted
            .model
            .inputs()
            .iter()
            .map(info_to_wit)
            .collect())
    }

    fn outputs(
        &mut self,
        this: Resource<ModelHandle>,
    ) -> wasmtime::Result<Vec<inference::TensorInfo>> {
        Ok(self
            .table
            .get(&this)?
            .granted
            .model
            .outputs()
            .iter()
            .map(info_to_wit)
            .collect())
    }

    fn run(
        &mut self,
        this: Resource<ModelHandle>,
        inputs: Vec<(String, Resource<Tensor>)>,
    ) -> Guest<Vec<(String, Resource<Tensor>)>> {
        let granted = self.table.get(&this)?.granted.clone();
        let named = inputs
            .iter()
            .map(|(name, r)| Ok((name.clone(), self.table.get(r)?)))
            .collect::<wasmtime::Result<Vec<_>>>()?;
        let outputs = match granted.model.run_named(named) {
            Ok(outputs) => outputs,
            Err(e) => {
                return Ok(Err(guest_error(
                    types::ErrorCode::Model,
                    format!("model `{}`: {e}", granted.name),
                )));
            }
        };
        self.models_used.insert(granted.id.clone());
        Ok(Ok(outputs
            .into_iter()
            .map(|(name, t)| Ok((name, self.push_tensor(t)?)))
            .collect::<wasmtime::Result<_>>()?))
    }

    fn drop(&mut self, this: Resource<ModelHandle>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl bindings::metrics::Host for InstanceState {
    fn counter_add(&mut self, name: String, delta: u64) -> Guest<()> {
        let r = self.env.metrics.counter_add(&self.namespace, &name, delta);
        Ok(r.map_err(|m| guest_error(types::ErrorCode::InvalidInput, m)))
    }

    fn gauge_set(&mut self, name: String, value: f64) -> Guest<()> {
        let r = self.env.metrics.gauge_set(&self.namespace, &name, value);
        Ok(r.map_err(|m| guest_error(types::ErrorCode::InvalidInput, m)))
    }

    fn observe(&mut self, name: String, value: f64) -> Guest<()> {
        let r = self.env.metrics.observe(&self.namespace, &name, value);
        Ok(r.map_err(|m| guest_error(types::ErrorCode::InvalidInput, m)))
    }
}

/// Longest log message kept from a handler; the rest is cut.
const MAX_LOG_MESSAGE: usize = 4096;

impl bindings::log::Host for InstanceState {
    fn log(&mut self, level: bindings::log::Level, message: String) -> wasmtime::Result<()> {
        use bindings::log::Level;
        let mut message = message;
        if message.len() > MAX_LOG_MESSAGE {
            let mut cut = MAX_LOG_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str("...");
        }
        let plugin = self.env.plugin.as_str();
        match level {
            Level::Trace => tracing::trace!(target: "runinfer::handler", plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "runinfer::handler", plugin, "{message}"),
            Level::Info => tracing::info!(target: "runinfer::handler", plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "runinfer::handler", plugin, "{message}"),
            Level::Error => tracing::error!(target: "runinfer::handler", plugin, "{message}"),
        }
        Ok(())
    }
}
