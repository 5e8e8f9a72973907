//! One sandboxed handler instance: its store, the host side of its imports (tensors,
//! models, metrics, log) and the calls into its exports.

pub use crate::contract::HandlerInfo;
use crate::contract::{FieldKind, FieldSpec, Signature, TensorSpec, ValueKind};
use crate::error::{ErrorCode, InferenceError};
use crate::manifest::{BatchingConfig, Grants, Limits};
use crate::metrics::Metrics;
use crate::model::{GrantedModel, ModelHandle, TensorInfo};
use crate::sandbox::bindings::{self, Handler, HandlerPre, HostError, api, inference, types};
use crate::sandbox::wasi::{self, BlockingIo, BlockingIoData, OutputTail};
use crate::schedule::Slot;
use crate::tensor::{DType, Tensor};
use crate::untrusted::{self, MAX_JSON_DEPTH, guest_text};
use crate::value::{Field, Value};
use serde_json::value::RawValue;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime::{Store, StoreContextMut, StoreLimits, StoreLimitsBuilder, Trap, UpdateDeadline};
use wasmtime_wasi::p2::bindings::sync::io::poll as sync_poll;
use wasmtime_wasi::p2::bindings::sync::io::streams as sync_streams;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// What every instance of one model set shares (one is built per model set: the
/// base set and each loaded per-key set of a plugin).
pub(crate) struct PluginEnv {
    pub plugin: String,
    pub tenant: Option<String>,
    pub dir: PathBuf,
    pub grants: Grants,
    pub models: BTreeMap<String, Arc<GrantedModel>>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
}

impl PluginEnv {
    /// Who owns the plugin's metrics namespace: its directory, which a tenant cannot
    /// choose (its manifest's name and tenant it can).
    pub fn owner(&self) -> String {
        self.dir.display().to_string()
    }

    /// The metrics namespace: `ns`, prefixed by the tenant if there is one.
    pub fn namespaced(&self, ns: &str) -> String {
        match &self.tenant {
            Some(tenant) => format!("{tenant}_{ns}"),
            None => ns.to_string(),
        }
    }
}

/// The handler's results for one batch.
#[derive(Debug)]
pub struct Inferences {
    /// One inference per example, in order, or the error the handler gave for that
    /// example alone.
    pub values: Vec<Result<Value, InferenceError>>,
    /// Ids of the models the handler ran for this batch (empty if none).
    pub model_ids: Vec<String>,
}

/// The store data of one instance.
pub(crate) struct InstanceState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    env: Arc<PluginEnv>,
    /// The metrics namespace, once `init` has declared it and the host granted it.
    namespace: Option<String>,
    models_used: BTreeSet<String>,
    output: OutputTail,
    /// Bytes of the tensors this instance holds in the host.
    tensor_bytes: usize,
    log: LogBudget,
    /// When the call running now must end (its time limit, plus any time it spent
    /// waiting for a core after giving its slot up).
    deadline: Instant,
    /// The core slot of the call running now, offered back at every epoch tick.
    slot: Option<Slot>,
}

/// The log messages an instance may still send this second, and how many it lost.
struct LogBudget {
    window: Instant,
    sent: u32,
    dropped: u64,
}

impl InstanceState {
    fn blocking_io(&mut self) -> BlockingIo<'_> {
        BlockingIo {
            table: &mut self.table,
            slot: self.slot.as_mut(),
            deadline: &mut self.deadline,
        }
    }
}

/// Adds WASI (preview 2, synchronous) to `linker`, with `wasi:io`'s waits made
/// to give the core slot up and to end at the call's time limit ([`BlockingIo`]).
pub(crate) fn add_wasi_to_linker(linker: &mut Linker<InstanceState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    linker.allow_shadowing(true);
    sync_poll::add_to_linker::<InstanceState, BlockingIoData>(linker, InstanceState::blocking_io)?;
    sync_streams::add_to_linker::<InstanceState, BlockingIoData>(
        linker,
        InstanceState::blocking_io,
    )?;
    linker.allow_shadowing(false);
    Ok(())
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

fn trap_error(error: wasmtime::Error, output: &OutputTail) -> InferenceError {
    let mut e = match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => InferenceError::new(
            ErrorCode::Timeout,
            "the handler ran past its time limit and was stopped",
        ),
        Some(trap) => InferenceError::new(ErrorCode::Trap, format!("the handler trapped: {trap}")),
        // Host-side refusals (a forged or stale resource handle, ...) arrive as
        // errors: the root cause says what.
        None => InferenceError::new(
            ErrorCode::Trap,
            format!("the handler was stopped: {}", error.root_cause()),
        ),
    };
    if let Some(printed) = output.last_lines(600) {
        e.message.push_str(&format!("; it printed: {printed}"));
    }
    e
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
    // Guest text ends up in logs and `runinfer list`: bounded and escaped here, once.
    InferenceError::new(code, guest_text(&e.message))
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
        // Only what the manifest grants (nothing by default); stdout and stderr are
        // kept in a small buffer for error messages.
        let output = OutputTail::default();
        let wasi = wasi::wasi_context(&env.grants, &env.dir, &output).map_err(|e| {
            (
                "instantiate",
                InferenceError::new(ErrorCode::Internal, format!("cannot grant [grants]: {e:#}")),
            )
        })?;
        let mut store = Store::new(
            pre.engine(),
            InstanceState {
                wasi,
                table: ResourceTable::new(),
                limits,
                env,
                namespace: None,
                models_used: BTreeSet::new(),
                output: output.clone(),
                tensor_bytes: 0,
                log: LogBudget {
                    window: Instant::now(),
                    sent: 0,
                    dropped: 0,
                },
                deadline: Instant::now(),
                slot: None,
            },
        );
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_callback(on_epoch_tick);
        set_deadline(&mut store);
        let handler = pre
            .instantiate(&mut store)
            .map_err(|e| ("instantiate", trap_error(e, &output)))?;

        set_deadline(&mut store);
        let info = handler
            .runinfer_handler_handler_api()
            .call_init(&mut store, args)
            .map_err(|e| ("init", trap_error(e, &output)))?
            .map_err(|e| ("init", from_guest_error(e)))?;
        let info = convert_info(info);
        let refused = |message: String| {
            (
                "init",
                InferenceError::new(ErrorCode::InvalidInput, message),
            )
        };
        check_info(&info, &store.data().env.limits).map_err(|e| refused(e.0))?;
        let state = store.data_mut();
        let namespace = state.env.namespaced(
            namespace_override
                .or(info.metrics_namespace.as_deref())
                .unwrap_or(&state.env.plugin),
        );
        state
            .env
            .metrics
            .plugin(&namespace, &state.env.owner())
            .map_err(|e| refused(e.0))?;
        state.namespace = Some(namespace);
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
        self.store
            .data()
            .namespace
            .as_deref()
            .expect("set when the instance started")
    }

    /// Beam's `load_model`, then `signature`: the model just loaded may change what
    /// a generic handler declares.
    pub fn load_model(&mut self) -> Result<(), InferenceError> {
        set_deadline(&mut self.store);
        let api = self.handler.runinfer_handler_handler_api();
        api.call_load_model(&mut self.store)
            .map_err(|e| trap_error(e, &self.store.data().output))?
            .map_err(from_guest_error)?;
        set_deadline(&mut self.store);
        let signature = api
            .call_get_signature(&mut self.store)
            .map_err(|e| trap_error(e, &self.store.data().output))?
            .map_err(from_guest_error)?;
        let signature = Signature {
            inputs: convert_kind(signature.inputs),
            outputs: convert_kind(signature.outputs),
        };
        signature
            .validate()
            .map_err(|e| InferenceError::new(ErrorCode::InvalidInput, e.0))?;
        self.info.signature = signature;
        Ok(())
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
            .map_err(|e| trap_error(e, &self.store.data().output))?
            .map_err(from_guest_error)?;
        self.load_model()
    }

    /// Hands the instance the core slot its next call runs on (it gives it up for a
    /// while when others wait); returns the slot it held.
    pub fn set_slot(&mut self, slot: Option<Slot>) -> Option<Slot> {
        std::mem::replace(&mut self.store.data_mut().slot, slot)
    }

    /// Beam's `run_inference` on one batch. An error of code `trap` or `timeout` means
    /// the instance must be dropped.
    ///
    /// When the handler refuses the batch as invalid input and every example can be
    /// handed over again (bytes, text, JSON: a tensor moves into the guest), each
    /// example is asked alone, so that one bad image or text fails itself and not the
    /// examples batched with it.
    pub fn run_inference(
        &mut self,
        batch: Vec<Value>,
        args: &[(String, String)],
    ) -> Result<Inferences, InferenceError> {
        let state = self.store.data_mut();
        state.models_used.clear();
        let guest_batch = batch
            .into_iter()
            .map(|value| state.value_to_guest(value))
            .collect::<Result<Vec<_>, _>>()?;
        let values = match self.call_run_inference(&guest_batch, args) {
            Ok(values) => values.into_iter().map(Ok).collect(),
            Err(e)
                if e.code == ErrorCode::InvalidInput
                    && guest_batch.len() > 1
                    && guest_batch.iter().all(can_resend) =>
            {
                let mut values = Vec::with_capacity(guest_batch.len());
                for one in &guest_batch {
                    match self.call_run_inference(std::slice::from_ref(one), args) {
                        Ok(mut value) => values.push(Ok(value.remove(0))),
                        // A trap or timeout leaves the instance unusable: the whole call
                        // fails, so that the caller drops it.
                        Err(e) if e.instance_lost() => return Err(e),
                        Err(e) => values.push(Err(e)),
                    }
                }
                values
            }
            Err(e) => return Err(e),
        };
        let state = self.store.data_mut();
        Ok(Inferences {
            values,
            model_ids: std::mem::take(&mut state.models_used).into_iter().collect(),
        })
    }

    /// One `run-inference` call: the inferences, checked against the declared outputs
    /// and the output cap.
    fn call_run_inference(
        &mut self,
        guest_batch: &[types::Value],
        args: &[(String, String)],
    ) -> Result<Vec<Value>, InferenceError> {
        let expected = guest_batch.len();
        set_deadline(&mut self.store);
        let results = self
            .handler
            .runinfer_handler_handler_api()
            .call_run_inference(&mut self.store, guest_batch, args)
            .map_err(|e| trap_error(e, &self.store.data().output))?
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
            .map(|(i, value)| state.value_from_guest(value, i))
            .collect::<Result<Vec<_>, _>>()?;
        state.log_summary();
        // Nothing that contradicts the declared outputs is ever written.
        for (i, value) in values.iter().enumerate() {
            self.info.signature.outputs.check(value).map_err(|e| {
                InferenceError::new(
                    ErrorCode::Signature,
                    format!("inference {i} does not match the handler's declared outputs: {e}"),
                )
            })?;
        }
        let state = self.store.data_mut();
        let bytes = values
            .iter()
            .fold(0usize, |sum, v| sum.saturating_add(v.footprint()));
        let cap = state.env.limits.max_output_mb as usize * 1024 * 1024;
        if bytes > cap {
            return Err(InferenceError::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "the handler returned {} MiB, more than limits.max_output_mb ({})",
                    bytes >> 20,
                    state.env.limits.max_output_mb
                ),
            ));
        }
        Ok(values)
    }
}

/// Whether a guest value can be handed to the handler again after a call: plain data
/// is copied into the guest, a tensor moves into it.
fn can_resend(value: &types::Value) -> bool {
    match value {
        types::Value::Tensor(_) => false,
        types::Value::Fields(fields) => fields
            .iter()
            .all(|(_, field)| matches!(field, types::Field::Text(_))),
        types::Value::Json(_) | types::Value::Text(_) | types::Value::Bytes(_) => true,
    }
}

/// Arms the time limit for the next call, and forgets what the guest printed before.
fn set_deadline(store: &mut Store<InstanceState>) {
    let state = store.data_mut();
    state.output.clear();
    state.deadline = Instant::now() + Duration::from_millis(state.env.limits.timeout_ms);
    store.set_epoch_deadline(1);
}

/// Runs at every epoch tick while the guest runs: stops a call past its time limit,
/// and offers the call's core slot to whoever waits for one (the time it then waits
/// does not count against its limit).
fn on_epoch_tick(
    mut store: StoreContextMut<'_, InstanceState>,
) -> wasmtime::Result<UpdateDeadline> {
    let state = store.data_mut();
    if Instant::now() >= state.deadline {
        return Ok(UpdateDeadline::Interrupt);
    }
    if let Some(slot) = state.slot.as_mut() {
        state.deadline += slot.rotate();
    }
    Ok(UpdateDeadline::Continue(1))
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
        // Until `load-model` has run and `signature` answered.
        signature: Signature {
            inputs: ValueKind::Json,
            outputs: ValueKind::Json,
        },
    }
}

fn convert_spec(spec: types::TensorSpec) -> TensorSpec {
    TensorSpec {
        dtype: dtype_from_wit(spec.dtype),
        shape: spec.shape,
    }
}

fn convert_kind(kind: types::ValueKind) -> ValueKind {
    match kind {
        types::ValueKind::Tensor(spec) => ValueKind::Tensor(convert_spec(spec)),
        types::ValueKind::Fields(fields) => ValueKind::Fields {
            fields: fields
                .into_iter()
                .map(|f| FieldSpec {
                    name: f.name,
                    kind: match f.kind {
                        types::FieldKind::Tensor(spec) => FieldKind::Tensor(convert_spec(spec)),
                        types::FieldKind::Text => FieldKind::Text,
                    },
                })
                .collect(),
        },
        types::ValueKind::Json => ValueKind::Json,
        types::ValueKind::Text => ValueKind::Text,
        types::ValueKind::Bytes => ValueKind::Bytes,
    }
}

/// What `init` declared, checked before the host acts on any of it: batching values
/// size allocations and queues of the whole process; resource hints are honoured by
/// refusing an instance that cannot meet them, at load rather than mid-batch.
fn check_info(info: &HandlerInfo, limits: &Limits) -> Result<(), untrusted::Refused> {
    let b = &info.batching;
    for (key, value) in [
        ("min_batch_size", b.min_batch_size),
        ("max_batch_size", b.max_batch_size),
        ("max_batch_duration_ms", b.max_batch_duration_ms),
    ] {
        untrusted::check_batching_value(key, value).map_err(|e| {
            untrusted::Refused(format!(
                "the handler's batch_elements_kwargs: {}; override it in [batching] of plugin.toml",
                e.0
            ))
        })?;
    }
    if let (Some(min), Some(max)) = (b.min_batch_size, b.max_batch_size)
        && min > max
    {
        return Err(untrusted::Refused(format!(
            "the handler's batch_elements_kwargs: min_batch_size {min} is more than max_batch_size {max}; override it in [batching] of plugin.toml"
        )));
    }
    if let Some(need) = info.min_ram_mb
        && need > u64::from(limits.memory_mb)
    {
        return Err(untrusted::Refused(format!(
            "the handler's resource hint min_ram_mb ({need}) is more than its instance may use: [limits] memory_mb = {}",
            limits.memory_mb
        )));
    }
    if let Some(accelerator) = &info.accelerator {
        return Err(untrusted::Refused(format!(
            "the handler's resource hint asks for accelerator \"{}\"; this host runs models on the CPU only",
            guest_text(accelerator)
        )));
    }
    Ok(())
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

type Guest<T> = Result<T, HostError>;

impl InstanceState {
    /// Counts `bytes` more of host tensor memory against `limits.max_tensor_mb`.
    fn admit(&mut self, bytes: usize) -> Result<(), types::Error> {
        let cap = self.env.limits.max_tensor_mb as usize * 1024 * 1024;
        if self.tensor_bytes.saturating_add(bytes) > cap {
            return Err(guest_error(
                types::ErrorCode::ResourceExhausted,
                format!(
                    "the instance would hold {} MiB of tensors, more than limits.max_tensor_mb ({})",
                    (self.tensor_bytes + bytes) >> 20,
                    self.env.limits.max_tensor_mb
                ),
            ));
        }
        self.tensor_bytes += bytes;
        Ok(())
    }

    /// Admits and stores one tensor.
    fn push_one(&mut self, tensor: Tensor) -> Guest<Resource<Tensor>> {
        self.admit(tensor.footprint())?;
        Ok(self.push_tensor(tensor)?)
    }

    /// Stores an admitted tensor in the table.
    fn push_tensor(&mut self, tensor: Tensor) -> wasmtime::Result<Resource<Tensor>> {
        Ok(self.table.push(tensor)?)
    }

    /// Admits and stores tensors, all or none.
    fn push_tensors<K>(&mut self, items: Vec<(K, Tensor)>) -> Guest<Vec<(K, Resource<Tensor>)>> {
        let bytes = items
            .iter()
            .fold(0usize, |sum, (_, t)| sum.saturating_add(t.footprint()));
        self.admit(bytes)?;
        Ok(items
            .into_iter()
            .map(|(k, t)| Ok((k, self.push_tensor(t)?)))
            .collect::<wasmtime::Result<_>>()?)
    }

    /// Takes a tensor out of the table, releasing its bytes.
    fn take_tensor(
        &mut self,
        r: Resource<Tensor>,
    ) -> Result<Tensor, wasmtime::component::ResourceTableError> {
        let tensor = self.table.delete(r)?;
        self.tensor_bytes = self.tensor_bytes.saturating_sub(tensor.footprint());
        Ok(tensor)
    }

    fn value_to_guest(&mut self, value: Value) -> Result<types::Value, InferenceError> {
        // The batch's own tensors past the instance's cap: the batch cannot start.
        let exhausted = |e: HostError| {
            let message = match e {
                HostError::Guest(e) => e.message,
                HostError::Trap(e) => e.to_string(),
            };
            InferenceError::new(ErrorCode::ResourceExhausted, message)
        };
        Ok(match value {
            Value::Tensor(t) => {
                let mut pushed = self.push_tensors(vec![((), t)]).map_err(exhausted)?;
                types::Value::Tensor(pushed.remove(0).1)
            }
            Value::Fields(named) => {
                let bytes = named
                    .iter()
                    .fold(0usize, |sum, (_, f)| sum.saturating_add(f.footprint()));
                self.admit(bytes).map_err(|e| exhausted(e.into()))?;
                types::Value::Fields(
                    named
                        .into_iter()
                        .map(|(name, field)| {
                            Ok((
                                name,
                                match field {
                                    Field::Tensor(t) => types::Field::Tensor(
                                        self.push_tensor(t).map_err(|e| exhausted(e.into()))?,
                                    ),
                                    Field::Text(text) => types::Field::Text(text),
                                },
                            ))
                        })
                        .collect::<Result<_, InferenceError>>()?,
                )
            }
            Value::Json(raw) => types::Value::Json(raw.get().to_string()),
            Value::Text(text) => types::Value::Text(text),
            Value::Bytes(bytes) => types::Value::Bytes(bytes),
        })
    }

    fn value_from_guest(
        &mut self,
        value: types::Value,
        index: usize,
    ) -> Result<Value, InferenceError> {
        let bad = |e: wasmtime::component::ResourceTableError| {
            InferenceError::new(
                ErrorCode::Internal,
                format!("inference {index}: bad tensor handle: {e}"),
            )
        };
        Ok(match value {
            types::Value::Tensor(r) => Value::Tensor(self.take_tensor(r).map_err(bad)?),
            types::Value::Fields(named) => {
                let mut seen = std::collections::HashSet::with_capacity(named.len());
                if let Some((name, _)) = named.iter().find(|(name, _)| !seen.insert(name.as_str()))
                {
                    return Err(InferenceError::new(
                        ErrorCode::Signature,
                        format!(
                            "inference {index}: the handler named two fields \"{}\"",
                            guest_text(name)
                        ),
                    ));
                }
                Value::Fields(
                    named
                        .into_iter()
                        .map(|(name, field)| {
                            Ok((
                                name,
                                match field {
                                    types::Field::Tensor(r) => {
                                        Field::Tensor(self.take_tensor(r).map_err(bad)?)
                                    }
                                    types::Field::Text(text) => Field::Text(text),
                                },
                            ))
                        })
                        .collect::<Result<_, InferenceError>>()?,
                )
            }
            types::Value::Json(text) => {
                let invalid = |e: &dyn std::fmt::Display| {
                    InferenceError::new(
                        ErrorCode::Internal,
                        format!("inference {index}: the handler returned invalid JSON: {e}"),
                    )
                };
                // serde_json validates raw values without its depth limit; a deeper
                // document would be written out where common parsers fail on it.
                untrusted::check_json_depth(&text, MAX_JSON_DEPTH).map_err(|e| invalid(&e))?;
                Value::Json(RawValue::from_string(text).map_err(|e| invalid(&e))?)
            }
            types::Value::Text(text) => Value::Text(text),
            types::Value::Bytes(bytes) => Value::Bytes(bytes),
        })
    }
}

impl types::Host for InstanceState {
    fn convert_error(&mut self, err: HostError) -> wasmtime::Result<types::Error> {
        match err {
            HostError::Guest(e) => Ok(e),
            HostError::Trap(e) => Err(e),
        }
    }
}

impl types::HostTensor for InstanceState {
    fn from_bytes(
        &mut self,
        dtype: types::Dtype,
        shape: Vec<u64>,
        data: Vec<u8>,
    ) -> Guest<Resource<Tensor>> {
        let tensor = Tensor::from_bytes(dtype_from_wit(dtype), shape_from_wit(&shape)?, data)?;
        self.push_one(tensor)
    }

    fn from_f32(&mut self, shape: Vec<u64>, data: Vec<f32>) -> Guest<Resource<Tensor>> {
        let tensor = Tensor::from_f32(shape_from_wit(&shape)?, &data)?;
        self.push_one(tensor)
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
        Ok(self.table.get(&this)?.to_f32())
    }

    fn to_i64(&mut self, this: Resource<Tensor>) -> Guest<Vec<i64>> {
        Ok(self.table.get(&this)?.to_i64()?)
    }

    fn stack(&mut self, items: Vec<Resource<Tensor>>) -> Guest<Resource<Tensor>> {
        let tensors = items
            .iter()
            .map(|r| self.table.get(r))
            .collect::<Result<Vec<_>, _>>()?;
        let stacked = Tensor::stack(tensors)?;
        self.push_one(stacked)
    }

    fn unstack(&mut self, this: Resource<Tensor>) -> Guest<Vec<Resource<Tensor>>> {
        // Rows are admitted before they are built: a tensor of many empty rows is
        // small, its rows are not.
        let tensor = self.table.get(&this)?;
        let footprint = tensor.unstacked_footprint();
        self.admit(footprint)?;
        self.tensor_bytes -= footprint;
        let rows = self.table.get(&this)?.unstack()?;
        let pushed = self.push_tensors(rows.into_iter().map(|t| ((), t)).collect())?;
        Ok(pushed.into_iter().map(|(_, r)| r).collect())
    }

    fn drop(&mut self, this: Resource<Tensor>) -> wasmtime::Result<()> {
        self.take_tensor(this)?;
        Ok(())
    }
}

impl inference::Host for InstanceState {}

impl inference::HostModel for InstanceState {
    fn open(&mut self, name: String) -> Guest<Resource<ModelHandle>> {
        let Some(granted) = self.env.models.get(&name) else {
            let granted: Vec<&str> = self.env.models.keys().map(String::as_str).collect();
            return Err(guest_error(
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
            )
            .into());
        };
        let handle = ModelHandle {
            granted: granted.clone(),
        };
        Ok(self.table.push(handle)?)
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
        let outputs = granted.model.run_named(named).map_err(|e| {
            guest_error(
                types::ErrorCode::Model,
                format!("model `{}`: {e}", granted.name),
            )
        })?;
        self.models_used.insert(granted.id.clone());
        self.push_tensors(outputs)
    }

    fn drop(&mut self, this: Resource<ModelHandle>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl InstanceState {
    /// Records a handler metric through `record`, under the granted namespace and
    /// within the plugin's cap on distinct names.
    fn record(
        &self,
        record: impl FnOnce(&Metrics, &str, usize) -> Result<(), untrusted::Refused>,
    ) -> Guest<()> {
        let Some(namespace) = &self.namespace else {
            return Err(guest_error(
                types::ErrorCode::Unsupported,
                "metrics can be recorded once init has returned",
            )
            .into());
        };
        let cap = self.env.limits.max_custom_metrics as usize;
        Ok(record(&self.env.metrics, namespace, cap)
            .map_err(|e| guest_error(types::ErrorCode::InvalidInput, e.0))?)
    }
}

impl InstanceState {
    /// Says how many log messages the rate limit dropped, if any, and starts counting
    /// again.
    fn log_summary(&mut self) {
        if self.log.dropped > 0 {
            tracing::warn!(
                target: "runinfer::guest",
                plugin = self.env.plugin.as_str(),
                dropped = self.log.dropped,
                "guest log messages dropped (limits.log_messages_per_sec = {})",
                self.env.limits.log_messages_per_sec
            );
            self.log.dropped = 0;
        }
    }
}

impl bindings::metrics::Host for InstanceState {
    fn counter_add(&mut self, name: String, delta: u64) -> Guest<()> {
        self.record(|m, ns, cap| m.counter_add(ns, &name, delta, cap))
    }

    fn gauge_set(&mut self, name: String, value: f64) -> Guest<()> {
        self.record(|m, ns, cap| m.gauge_set(ns, &name, value, cap))
    }

    fn observe(&mut self, name: String, value: f64) -> Guest<()> {
        self.record(|m, ns, cap| m.observe(ns, &name, value, cap))
    }
}

impl bindings::log::Host for InstanceState {
    /// A guest's log line: at most `limits.log_messages_per_sec` a second per instance
    /// (the rest dropped and counted in a summary), cut to a bounded length, control
    /// characters escaped, and always under the `runinfer::guest` target with the
    /// plugin named, so it can never pass for a line of the host's (or a dead letter).
    fn log(&mut self, level: bindings::log::Level, message: String) -> wasmtime::Result<()> {
        use bindings::log::Level;
        if self.log.window.elapsed() >= Duration::from_secs(1) {
            self.log_summary();
            self.log.window = Instant::now();
            self.log.sent = 0;
        }
        let budget = &mut self.log;
        if budget.sent >= self.env.limits.log_messages_per_sec {
            budget.dropped += 1;
            return Ok(());
        }
        budget.sent += 1;
        let plugin = self.env.plugin.as_str();
        let message = guest_text(&message);
        match level {
            Level::Trace => tracing::trace!(target: "runinfer::guest", plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "runinfer::guest", plugin, "{message}"),
            Level::Info => tracing::info!(target: "runinfer::guest", plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "runinfer::guest", plugin, "{message}"),
            Level::Error => tracing::error!(target: "runinfer::guest", plugin, "{message}"),
        }
        Ok(())
    }
}
