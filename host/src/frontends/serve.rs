//! `runinfer serve`: the Open Inference Protocol v2 (KServe v2, as spoken by Triton,
//! KServe and MLServer) over HTTP, on the plugins of a watched plugin root.
//!
//! Every request's rows go to the plugin's dispatcher one by one, so requests from
//! many clients are batched together. A full queue is refused at once (503), and a
//! request waits at most its timeout.

use crate::contract::{FieldKind, TensorPart, TensorSpec, ValueKind};
use crate::error::{ErrorCode, InferenceError};
use crate::frontends::watch::{LivePlugin, PluginRoot};
use crate::host::Host;
use crate::tensor::Tensor;
use crate::value::{Field, Value};
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value as JsonValue, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

pub mod grpc;
mod triton;

/// How the server behaves.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServeConfig {
    /// Longest a request waits for its results; a request's `timeout` parameter
    /// (microseconds, as in Triton) may shorten it.
    pub request_timeout: Duration,
    /// Largest request body (HTTP) or message (gRPC) accepted.
    pub max_request_bytes: usize,
    /// Per-tenant quotas (`--tenants FILE`); shared by HTTP and gRPC.
    pub quotas: Arc<crate::frontends::quota::Quotas>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            request_timeout: Duration::from_secs(30),
            max_request_bytes: 64 << 20,
            quotas: Arc::default(),
        }
    }
}

struct AppState {
    root: Arc<PluginRoot>,
    host: Host,
    config: ServeConfig,
}

/// The HTTP routes of the server.
pub fn router(root: Arc<PluginRoot>, host: Host, config: ServeConfig) -> Router {
    let body_limit = axum::extract::DefaultBodyLimit::max(config.max_request_bytes);
    let state = Arc::new(AppState { root, host, config });
    Router::new()
        .route(
            "/v2/health/live",
            get(|| async { Json(json!({"live": true})) }),
        )
        .route("/v2/health/ready", get(ready))
        .route("/v2", get(server_metadata))
        .route("/v2/models/{name}", get(model_metadata))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(model_metadata_version),
        )
        .route("/v2/models/stats", get(all_stats))
        .route("/v2/models/{name}/stats", get(model_stats))
        .route(
            "/v2/models/{name}/versions/{version}/stats",
            get(model_stats_version),
        )
        .route("/v2/models/{name}/config", get(model_config))
        .route(
            "/v2/models/{name}/versions/{version}/config",
            get(model_config_version),
        )
        .route("/v2/models/{name}/ready", get(model_ready))
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(model_ready_version),
        )
        .route("/v2/models/{name}/infer", post(infer))
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(infer_version),
        )
        .route("/v2/repository/index", post(repository_index))
        .route("/v2/repository/models/{name}/load", post(repository_load))
        .route(
            "/v2/repository/models/{name}/unload",
            post(repository_unload),
        )
        .route("/metrics", get(metrics))
        .route("/v2/tenants", get(tenants))
        .fallback(|uri: axum::http::Uri| async move {
            ApiError(StatusCode::NOT_FOUND, format!("no such route: {uri}"))
        })
        .method_not_allowed_fallback(|method: axum::http::Method| async move {
            ApiError(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed here"),
            )
        })
        .layer(body_limit)
        .with_state(state)
}

/// An error response `{"error": "..."}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

type ApiResult = Result<Response, ApiError>;

/// The only version of a model: runinfer serves one version, `1`; the exact file is
/// in the response's `model_id` parameter.
const VERSION: &str = "1";

fn live(state: &AppState, name: &str, version: Option<&str>) -> Result<Arc<LivePlugin>, ApiError> {
    let live = state
        .root
        .get(name)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("unknown model: '{name}'")))?;
    match version {
        Some(v) if v != VERSION => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("unknown version '{v}' of model '{name}' (serving version {VERSION})"),
        )),
        _ => Ok(live),
    }
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if state
        .root
        .status()
        .values()
        .any(|s| matches!(s, crate::frontends::watch::PluginStatus::Live { .. }))
    {
        Json(json!({"ready": true})).into_response()
    } else {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, "no plugin is live".into()).into_response()
    }
}

/// Triton's protocol extensions served, over HTTP and gRPC.
const EXTENSIONS: [&str; 5] = [
    "binary_tensor_data",
    "parameters",
    "model_configuration",
    "statistics",
    "model_repository",
];

async fn server_metadata() -> Json<JsonValue> {
    Json(json!({
        "name": "runinfer",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": EXTENSIONS,
    }))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        // prometheus-client writes OpenMetrics text (counters' samples end in
        // `_total`, `# EOF` at the end); Prometheus scrapes it under this type.
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.host.metrics().encode(),
    )
        .into_response()
}

/// `GET /v2/tenants` (a runinfer extension): who used what — per tenant, its
/// plugins, weight and quota, what it holds and waits for now, and its counters
/// (the same as the `runinfer_tenant_*` metrics).
async fn tenants(State(state): State<Arc<AppState>>) -> Response {
    let quotas = &state.config.quotas;
    let scheduler = state.host.scheduler();
    let usage: BTreeMap<String, crate::schedule::TenantUsage> =
        scheduler.usage().into_iter().collect();
    let mut plugins: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for live in state.root.live_plugins() {
        plugins
            .entry(live.plugin.tenant().to_string())
            .or_default()
            .push(live.plugin.name().to_string());
    }
    // Every tenant with a counter: calls go through the scheduler, refusals need a
    // quota; and those with a plugin or a quota that have done nothing yet.
    let names: BTreeSet<&str> = usage
        .keys()
        .chain(plugins.keys())
        .map(String::as_str)
        .chain(quotas.tenants())
        .collect();
    let tenants: Vec<JsonValue> = names
        .into_iter()
        .map(|name| {
            let slots = usage.get(name).copied().unwrap_or_default();
            let quota = quotas.quota(name);
            let mut entry = json!({
                "name": name,
                "plugins": plugins.get(name).cloned().unwrap_or_default(),
                "weight": scheduler.weight(name),
                "quota": {
                    "requests_per_sec": quota.and_then(|q| q.requests_per_sec),
                    "max_in_flight": quota.and_then(|q| q.max_in_flight),
                },
                "in_flight": quotas.in_flight(name),
                "core_slots": {
                    "running": slots.running,
                    "waiting": slots.waiting,
                    "used_seconds": slots.used.as_secs_f64(),
                },
            });
            let counts = state.host.metrics().tenants().counts(name);
            if let (Some(entry), Ok(JsonValue::Object(counts))) =
                (entry.as_object_mut(), serde_json::to_value(counts))
            {
                entry.extend(counts);
            }
            entry
        })
        .collect();
    Json(json!({ "tenants": tenants })).into_response()
}

/// The name of the one input or output of a handler that does not take or return
/// named fields.
const UNNAMED: [&str; 2] = ["input", "output"];

/// One input or output in a model's metadata.
struct MetadataTensor {
    name: String,
    datatype: &'static str,
    /// With the batch dimension (-1) first.
    shape: Vec<i64>,
    /// What a BYTES tensor holds, as MLServer's metadata says it: strings (`str`),
    /// JSON text (`json`; bytes inferences are `{"base64": ...}` objects), raw bytes.
    content_type: Option<&'static str>,
}

/// The tensors a signature declares: one per field, or one named `unnamed`.
fn metadata_tensors(kind: &ValueKind, unnamed: &str) -> Vec<MetadataTensor> {
    let bytes = |name: &str, content: &'static str| MetadataTensor {
        name: name.to_string(),
        datatype: "BYTES",
        shape: vec![-1],
        content_type: Some(content),
    };
    kind.tensors(unnamed)
        .into_iter()
        .map(|(name, part)| match part {
            TensorPart::Tensor(spec) => {
                let mut shape = vec![-1];
                match &spec.shape {
                    Some(dims) => shape.extend(dims.iter().map(|d| d.map_or(-1, |d| d as i64))),
                    None => shape.push(-1),
                }
                MetadataTensor {
                    name: name.to_string(),
                    datatype: spec.dtype.oip_name(),
                    shape,
                    content_type: None,
                }
            }
            TensorPart::Text => bytes(name, "str"),
            TensorPart::Bytes if unnamed == UNNAMED[0] => bytes(name, "bytes"),
            TensorPart::Json | TensorPart::Bytes => bytes(name, "json"),
        })
        .collect()
}

/// `{"name", "datatype", "shape"}` entries (with `parameters.content_type` for BYTES).
fn tensor_metadata(kind: &ValueKind, unnamed: &str) -> Vec<JsonValue> {
    metadata_tensors(kind, unnamed)
        .into_iter()
        .map(|t| {
            let mut tensor = json!({"name": t.name, "datatype": t.datatype, "shape": t.shape});
            if let Some(content) = t.content_type {
                tensor["parameters"] = json!({"content_type": content});
            }
            tensor
        })
        .collect()
}

/// The handler's signature as OIP model metadata: exactly the inputs `infer` takes
/// and the outputs it returns.
fn model_metadata_json(live: &LivePlugin) -> JsonValue {
    let plugin = &live.plugin;
    let signature = &plugin.info().signature;
    json!({
        "name": plugin.name(),
        "versions": [VERSION],
        "platform": "runinfer",
        "inputs": tensor_metadata(&signature.inputs, UNNAMED[0]),
        "outputs": tensor_metadata(&signature.outputs, UNNAMED[1]),
        "parameters": {
            "model_id": plugin.model_id(),
            "namespace": plugin.namespace(),
        },
    })
}

async fn model_metadata(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> ApiResult {
    let live = live(&state, &name, None)?;
    Ok(Json(model_metadata_json(&live)).into_response())
}

async fn model_metadata_version(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult {
    let live = live(&state, &name, Some(&version))?;
    Ok(Json(model_metadata_json(&live)).into_response())
}

async fn all_stats(State(state): State<Arc<AppState>>) -> Json<JsonValue> {
    let stats: Vec<JsonValue> = state
        .root
        .live_plugins()
        .iter()
        .map(|live| triton::model_stats(live, VERSION))
        .collect();
    Json(json!({"model_stats": stats}))
}

async fn model_stats(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> ApiResult {
    let live = live(&state, &name, None)?;
    Ok(Json(json!({"model_stats": [triton::model_stats(&live, VERSION)]})).into_response())
}

async fn model_stats_version(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult {
    let live = live(&state, &name, Some(&version))?;
    Ok(Json(json!({"model_stats": [triton::model_stats(&live, VERSION)]})).into_response())
}

async fn model_config(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> ApiResult {
    let live = live(&state, &name, None)?;
    Ok(Json(triton::model_config(&live, UNNAMED)).into_response())
}

async fn model_config_version(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult {
    let live = live(&state, &name, Some(&version))?;
    Ok(Json(triton::model_config(&live, UNNAMED)).into_response())
}

async fn model_ready(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> ApiResult {
    live(&state, &name, None)?;
    Ok(Json(json!({"name": name, "ready": true})).into_response())
}

async fn model_ready_version(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult {
    live(&state, &name, Some(&version))?;
    Ok(Json(json!({"name": name, "ready": true})).into_response())
}

/// Triton's repository index: every plugin directory, `READY` or `UNAVAILABLE` with
/// the reason. With `{"ready": true}`, only the ready ones.
async fn repository_index(
    State(state): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> ApiResult {
    let ready_only = if body.iter().all(u8::is_ascii_whitespace) {
        false
    } else {
        let request: JsonValue = serde_json::from_slice(&body)
            .map_err(|e| bad_request(format!("malformed request: {e}")))?;
        request
            .get("ready")
            .and_then(JsonValue::as_bool)
            .unwrap_or(false)
    };
    let entries: Vec<JsonValue> = repository_entries(&state.root)
        .into_iter()
        .filter(|e| !ready_only || e.ready)
        .map(
            |e| json!({"name": e.name, "version": VERSION, "state": e.state(), "reason": e.reason}),
        )
        .collect();
    Ok(Json(entries).into_response())
}

/// One plugin directory in the repository index.
struct RepositoryEntry {
    name: String,
    ready: bool,
    reason: String,
}

impl RepositoryEntry {
    fn state(&self) -> &'static str {
        if self.ready { "READY" } else { "UNAVAILABLE" }
    }
}

fn repository_entries(root: &PluginRoot) -> Vec<RepositoryEntry> {
    use crate::frontends::watch::PluginStatus;
    root.index()
        .into_iter()
        .map(|(name, status)| {
            let (ready, reason) = match status {
                PluginStatus::Live { .. } => (true, String::new()),
                PluginStatus::Failed {
                    previous_live: true,
                    reason,
                } => (true, format!("a new version failed to load: {reason}")),
                PluginStatus::Failed { reason, .. } => (false, reason),
                PluginStatus::Unloaded => (false, "unloaded".into()),
            };
            RepositoryEntry {
                name,
                ready,
                reason,
            }
        })
        .collect()
}

fn repository_error(error: crate::frontends::watch::RepositoryError) -> ApiError {
    use crate::frontends::watch::RepositoryError;
    match error {
        RepositoryError::NotFound(m) => ApiError(StatusCode::NOT_FOUND, m),
        RepositoryError::Failed(m) => {
            ApiError(StatusCode::BAD_REQUEST, format!("failed to load: {m}"))
        }
    }
}

/// A repository call on a blocking thread: `load` compiles and loads models, and
/// both wait while a rescan changes the live set.
async fn repository_call<T: Send + 'static>(
    root: Arc<PluginRoot>,
    call: impl FnOnce(&PluginRoot) -> Result<T, crate::frontends::watch::RepositoryError>
    + Send
    + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(move || call(&root))
        .await
        .map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("repository call stopped: {e}"),
            )
        })?
        .map_err(repository_error)
}

/// Repository `load`; with the parameter `model_path` (and `model`, when the plugin
/// has several), Beam's `update_model_path`: serve that model from a file of the
/// plugin or a remote object, through model refresh.
async fn repository_load_with(
    root: Arc<PluginRoot>,
    name: String,
    model_path: Option<String>,
    model: Option<String>,
) -> Result<Option<String>, ApiError> {
    match model_path {
        None if model.is_some() => Err(ApiError(
            StatusCode::BAD_REQUEST,
            "parameter 'model' needs 'model_path'".into(),
        )),
        None => repository_call(root, move |root| root.load(&name).map(|()| None)).await,
        Some(path) => {
            repository_call(root, move |root| {
                root.update_model_path(&name, model.as_deref(), &path)
                    .map(Some)
            })
            .await
        }
    }
}

async fn repository_load(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    #[derive(Deserialize, Default)]
    struct LoadRequest {
        #[serde(default)]
        parameters: serde_json::Map<String, JsonValue>,
    }
    let request: LoadRequest = if body.iter().all(u8::is_ascii_whitespace) {
        LoadRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("bad load request: {e}")))?
    };
    let text = |key: &str| -> Result<Option<String>, ApiError> {
        match request.parameters.get(key) {
            None | Some(JsonValue::Null) => Ok(None),
            Some(JsonValue::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("parameter '{key}' must be a string"),
            )),
        }
    };
    let model_id = repository_load_with(
        state.root.clone(),
        name,
        text("model_path")?,
        text("model")?,
    )
    .await?;
    Ok(Json(match model_id {
        Some(id) => json!({ "model_id": id }),
        None => json!({}),
    })
    .into_response())
}

async fn repository_unload(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult {
    repository_call(state.root.clone(), move |root| root.unload(&name)).await?;
    Ok(Json(json!({})).into_response())
}

#[derive(Deserialize)]
struct InferRequest {
    id: Option<String>,
    #[serde(default)]
    parameters: serde_json::Map<String, JsonValue>,
    inputs: Vec<RequestTensor>,
    outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Deserialize)]
struct RequestTensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    data: Option<JsonValue>,
    #[serde(default)]
    parameters: serde_json::Map<String, JsonValue>,
}

#[derive(Deserialize)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: serde_json::Map<String, JsonValue>,
}

/// The header of the binary tensor data extension: the JSON part's length.
const HEADER_LENGTH: &str = "inference-header-content-length";

async fn infer(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult {
    run_infer(&state, &name, None, &headers, &body).await
}

async fn infer_version(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult {
    run_infer(&state, &name, Some(&version), &headers, &body).await
}

/// Splits a body into its JSON part and the binary data that follows it (the binary
/// tensor data extension, used by Triton's clients by default).
fn split_body<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), ApiError> {
    let Some(length) = headers.get(HEADER_LENGTH) else {
        return Ok((body, &[]));
    };
    let length: usize = length
        .to_str()
        .ok()
        .and_then(|l| l.trim().parse().ok())
        .filter(|&l| l <= body.len())
        .ok_or_else(|| {
            bad_request(format!(
                "Inference-Header-Content-Length must be a length within the body ({} bytes)",
                body.len()
            ))
        })?;
    Ok(body.split_at(length))
}

fn flatten(value: &JsonValue, out: &mut Vec<JsonValue>) {
    match value {
        JsonValue::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        other => out.push(other.clone()),
    }
}

/// Splits BYTES elements in the binary form: each is a 4-byte little-endian length
/// followed by that many bytes.
fn split_bytes_elements(mut raw: &[u8], name: &str) -> Result<Vec<Vec<u8>>, ApiError> {
    let mut elements = Vec::new();
    while !raw.is_empty() {
        let truncated = || bad_request(format!("input '{name}': truncated BYTES element"));
        let (length, rest) = raw.split_first_chunk::<4>().ok_or_else(truncated)?;
        let length = u32::from_le_bytes(*length) as usize;
        if rest.len() < length {
            return Err(truncated());
        }
        elements.push(rest[..length].to_vec());
        raw = &rest[length..];
    }
    Ok(elements)
}

impl RequestTensor {
    /// An error about this input.
    fn error(&self, message: impl std::fmt::Display) -> ApiError {
        bad_request(format!("input '{}': {message}", self.name))
    }

    /// An error for a shape whose size does not fit a `usize`. Every size is computed
    /// from the client's shape: checked, never wrapped.
    fn too_large(&self) -> ApiError {
        self.error(format!("shape {:?} is too large", self.shape))
    }

    /// The JSON `data`, flattened.
    fn json_values(&self) -> Result<Vec<JsonValue>, ApiError> {
        let data = self
            .data
            .as_ref()
            .ok_or_else(|| self.error("has neither data nor binary_data_size"))?;
        let mut flat = Vec::new();
        flatten(data, &mut flat);
        Ok(flat)
    }

    /// The shape as sizes, with the row count (first dimension) checked against
    /// `max_rows` before anything is decoded, since rows are allocated one by one.
    fn rows_shape(&self, max_rows: usize, model: &str) -> Result<Vec<usize>, ApiError> {
        let shape: Vec<usize> = self
            .shape
            .iter()
            .map(|&d| {
                usize::try_from(d).map_err(|_| self.error(format!("bad shape {:?}", self.shape)))
            })
            .collect::<Result<_, _>>()?;
        let Some(&rows) = shape.first() else {
            return Err(self.error("the shape needs a batch dimension"));
        };
        if rows > max_rows {
            // Waiting cannot help: this request never fits.
            return Err(bad_request(format!(
                "{rows} rows are more than model '{model}' queues at once ({max_rows}, `[limits] queue_size`); split the request"
            )));
        }
        Ok(shape)
    }

    /// The rows of a tensor input, each checked against the declared spec.
    fn tensor_rows(
        &self,
        binary: Option<&[u8]>,
        spec: &TensorSpec,
        shape: Vec<usize>,
    ) -> Result<Vec<Tensor>, ApiError> {
        let dtype = spec.dtype;
        if self.datatype != dtype.oip_name() {
            return Err(self.error(format!(
                "expected datatype {}, got {}",
                dtype.oip_name(),
                self.datatype
            )));
        }
        let batch = match binary {
            Some(raw) => Tensor::from_bytes(dtype, shape, raw.to_vec()),
            None => {
                let needed = crate::tensor::volume(&shape).ok_or_else(|| self.too_large())?;
                let data = self.json_values()?;
                if data.len() != needed {
                    return Err(self.error(format!(
                        "shape {:?} needs {needed} values, got {}",
                        self.shape,
                        data.len()
                    )));
                }
                Tensor::from_json(&json!({"shape": shape, "data": data}), dtype)
            }
        }
        .map_err(|e| self.error(e))?;
        let rows = batch.unstack().map_err(|e| self.error(e))?;
        for row in &rows {
            spec.check_shape(row.shape()).map_err(|e| self.error(e))?;
        }
        Ok(rows)
    }

    /// The elements of a `BYTES` input, one per row.
    fn bytes_rows(&self, binary: Option<&[u8]>, shape: &[usize]) -> Result<Vec<Vec<u8>>, ApiError> {
        if self.datatype != "BYTES" {
            return Err(self.error(format!(
                "expected datatype BYTES (strings), got {}",
                self.datatype
            )));
        }
        let elements: Vec<Vec<u8>> = match binary {
            Some(raw) => split_bytes_elements(raw, &self.name)?,
            None => self
                .json_values()?
                .into_iter()
                .map(|element| match element {
                    JsonValue::String(text) => Ok(text.into_bytes()),
                    _ => Err(self.error("BYTES elements must be strings")),
                })
                .collect::<Result<_, _>>()?,
        };
        let rows = shape[0];
        let row_len = crate::tensor::volume(&shape[1..]).ok_or_else(|| self.too_large())?;
        if elements.len() != rows.saturating_mul(row_len) || row_len != 1 {
            return Err(self.error(format!(
                "BYTES examples need shape [N] (or [N, 1]) with N elements; shape {:?} with {} elements",
                self.shape,
                elements.len()
            )));
        }
        Ok(elements)
    }
}

/// Splits a request's inputs into examples, one per row of their first dimension:
/// the one input of an unnamed kind, or one input per declared field (rows zipped by
/// index). `binary` holds each input's bytes when it came in the binary form.
fn examples(
    inputs: &[RequestTensor],
    binary: &[Option<&[u8]>],
    kind: &ValueKind,
    max_rows: usize,
    model: &str,
) -> Result<Vec<Value>, ApiError> {
    let ValueKind::Fields { fields } = kind else {
        let ([input], [raw]) = (inputs, binary) else {
            return Err(bad_request(format!(
                "model '{model}' takes one input, got {}",
                inputs.len()
            )));
        };
        let shape = input.rows_shape(max_rows, model)?;
        return match kind {
            ValueKind::Tensor(spec) => Ok(input
                .tensor_rows(*raw, spec, shape)?
                .into_iter()
                .map(Value::Tensor)
                .collect()),
            _ => input
                .bytes_rows(*raw, &shape)?
                .into_iter()
                .map(|element| {
                    crate::pipeline::decode::decode_element(element, kind)
                        .map_err(|e| input.error(e))
                })
                .collect(),
        };
    };
    if let Some(unknown) = inputs
        .iter()
        .find(|i| !fields.iter().any(|f| f.name == i.name))
    {
        return Err(bad_request(format!(
            "model '{model}' has no input '{}' (its inputs: {})",
            crate::untrusted::guest_text(&unknown.name),
            fields
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let mut rows: Option<usize> = None;
    let mut columns = Vec::with_capacity(fields.len());
    for field in fields {
        let mut matching = inputs
            .iter()
            .enumerate()
            .filter(|(_, i)| i.name == field.name);
        let (index, input) = matching
            .next()
            .ok_or_else(|| bad_request(format!("input '{}' is missing", field.name)))?;
        if matching.next().is_some() {
            return Err(input.error("is given twice"));
        }
        let shape = input.rows_shape(max_rows, model)?;
        match rows {
            Some(n) if n != shape[0] => {
                return Err(input.error(format!(
                    "has {} rows, the other inputs {n}; every input needs one row per example",
                    shape[0]
                )));
            }
            _ => rows = Some(shape[0]),
        }
        let column: Vec<Field> = match &field.kind {
            FieldKind::Tensor(spec) => input
                .tensor_rows(binary[index], spec, shape)?
                .into_iter()
                .map(Field::Tensor)
                .collect(),
            FieldKind::Text => input
                .bytes_rows(binary[index], &shape)?
                .into_iter()
                .map(|e| {
                    crate::pipeline::decode::utf8(e)
                        .map(Field::Text)
                        .map_err(|e| input.error(e))
                })
                .collect::<Result<_, _>>()?,
        };
        columns.push((field.name.clone(), column.into_iter()));
    }
    Ok((0..rows.unwrap_or(0))
        .map(|_| {
            Value::Fields(
                columns
                    .iter_mut()
                    .map(|(name, column)| (name.clone(), column.next().expect("rows checked")))
                    .collect(),
            )
        })
        .collect())
}

/// One output tensor of a response.
struct OutputTensor {
    name: String,
    shape: Vec<usize>,
    data: OutputData,
}

enum OutputData {
    Tensor(Tensor),
    /// BYTES elements (UTF-8 text or JSON).
    Strings(Vec<String>),
}

impl OutputTensor {
    fn datatype(&self) -> &'static str {
        match &self.data {
            OutputData::Tensor(t) => t.dtype().oip_name(),
            OutputData::Strings(_) => "BYTES",
        }
    }

    fn json_data(&self) -> JsonValue {
        match &self.data {
            OutputData::Tensor(t) => {
                let mut flat = Vec::with_capacity(t.len());
                flatten(&serde_json::to_value(t).unwrap_or_default(), &mut flat);
                JsonValue::Array(flat)
            }
            OutputData::Strings(s) => json!(s),
        }
    }

    fn binary_data(&self) -> Vec<u8> {
        match &self.data {
            OutputData::Tensor(t) => t.bytes().to_vec(),
            OutputData::Strings(strings) => {
                let mut out = Vec::new();
                for s in strings {
                    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                    out.extend_from_slice(s.as_bytes());
                }
                out
            }
        }
    }
}

/// Output tensors for the inferences of one request, by the declared outputs: a
/// tensor output stacks into one tensor (named `output`), named fields into one
/// tensor (or BYTES column) per name, anything else is one BYTES string per row.
/// Inferences were checked against the declaration; only free dimensions that differ
/// between rows can still keep them from stacking.
fn outputs(values: Vec<Value>, kind: &ValueKind) -> Result<Vec<OutputTensor>, ApiError> {
    let rows = values.len();
    let stack = |name: &str, tensors: Vec<&Tensor>| {
        let batch = Tensor::stack(tensors).map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("output '{name}': the rows of this request do not form one tensor: {e}"),
            )
        })?;
        Ok(OutputTensor {
            name: name.to_string(),
            shape: batch.shape().to_vec(),
            data: OutputData::Tensor(batch),
        })
    };
    match kind {
        ValueKind::Tensor(_) => {
            let tensors = values
                .iter()
                .filter_map(|v| match v {
                    Value::Tensor(t) => Some(t),
                    _ => None,
                })
                .collect();
            Ok(vec![stack(UNNAMED[1], tensors)?])
        }
        ValueKind::Fields { fields } => fields
            .iter()
            .map(|spec| {
                let column = values.iter().filter_map(|v| match v {
                    Value::Fields(named) => {
                        named.iter().find(|(n, _)| *n == spec.name).map(|(_, f)| f)
                    }
                    _ => None,
                });
                match spec.kind {
                    FieldKind::Tensor(_) => stack(
                        &spec.name,
                        column
                            .filter_map(|f| match f {
                                Field::Tensor(t) => Some(t),
                                Field::Text(_) => None,
                            })
                            .collect(),
                    ),
                    FieldKind::Text => Ok(OutputTensor {
                        name: spec.name.clone(),
                        shape: vec![rows],
                        data: OutputData::Strings(
                            column
                                .map(|f| match f {
                                    Field::Text(t) => t.clone(),
                                    Field::Tensor(_) => String::new(),
                                })
                                .collect(),
                        ),
                    }),
                }
            })
            .collect(),
        ValueKind::Json | ValueKind::Text | ValueKind::Bytes => {
            let strings = values
                .iter()
                .map(|v| match v {
                    Value::Text(text) => text.clone(),
                    other => serde_json::to_string(other).unwrap_or_default(),
                })
                .collect();
            Ok(vec![OutputTensor {
                name: UNNAMED[1].into(),
                shape: vec![rows],
                data: OutputData::Strings(strings),
            }])
        }
    }
}

fn flag(parameters: &serde_json::Map<String, JsonValue>, name: &str) -> bool {
    parameters
        .get(name)
        .and_then(JsonValue::as_bool)
        .unwrap_or(false)
}

/// The response: plain JSON, or JSON followed by the binary data of the outputs that
/// asked for it.
fn respond(
    request: &InferRequest,
    name: &str,
    model_id: Option<String>,
    outputs: Vec<OutputTensor>,
) -> ApiResult {
    let all_binary = flag(&request.parameters, "binary_data_output");
    let selected: Vec<(OutputTensor, bool)> = match &request.outputs {
        Some(requested) if !requested.is_empty() => {
            let mut outputs: Vec<Option<OutputTensor>> = outputs.into_iter().map(Some).collect();
            requested
                .iter()
                .map(|r| {
                    let found = outputs
                        .iter_mut()
                        .find(|o| o.as_ref().is_some_and(|o| o.name == r.name))
                        .and_then(Option::take)
                        .ok_or_else(|| {
                            bad_request(format!("unknown output '{}' of model '{name}'", r.name))
                        })?;
                    Ok((found, all_binary || flag(&r.parameters, "binary_data")))
                })
                .collect::<Result<_, ApiError>>()?
        }
        _ => outputs.into_iter().map(|o| (o, all_binary)).collect(),
    };
    let mut binary = Vec::new();
    let outputs: Vec<JsonValue> = selected
        .iter()
        .map(|(output, as_binary)| {
            let mut out =
                json!({"name": output.name, "datatype": output.datatype(), "shape": output.shape});
            if *as_binary {
                let data = output.binary_data();
                out["parameters"] = json!({"binary_data_size": data.len()});
                binary.extend_from_slice(&data);
            } else {
                out["data"] = output.json_data();
            }
            out
        })
        .collect();
    let header = json!({
        "model_name": name,
        "model_version": VERSION,
        "id": request.id,
        "parameters": {"model_id": model_id},
        "outputs": outputs,
    });
    if binary.is_empty() {
        return Ok(Json(header).into_response());
    }
    let mut body = serde_json::to_vec(&header).unwrap_or_default();
    let header_length = body.len();
    body.extend_from_slice(&binary);
    Ok((
        [
            (CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                HeaderName::from_static(HEADER_LENGTH),
                header_length.to_string(),
            ),
        ],
        body,
    )
        .into_response())
}

/// Decodes an inference request (its JSON part and, with the binary tensor data
/// extension, the bytes after it) into the request and its examples, one per row,
/// refusing more than `max_rows` rows before any is decoded. Everything here is the
/// client's: sizes and shapes are checked, never trusted.
fn decode_request(
    headers: &HeaderMap,
    body: &[u8],
    kind: &ValueKind,
    max_rows: usize,
    name: &str,
) -> Result<(InferRequest, Vec<Value>), ApiError> {
    let (json_part, mut binary) = split_body(headers, body)?;
    let request: InferRequest = serde_json::from_slice(json_part)
        .map_err(|e| bad_request(format!("malformed request: {e}")))?;
    // Binary data follows the JSON in the order of the inputs that claim it.
    let mut raws = Vec::with_capacity(request.inputs.len());
    for input in &request.inputs {
        raws.push(match input.parameters.get("binary_data_size") {
            None => None,
            Some(size) => {
                let size = size
                    .as_u64()
                    .and_then(|s| usize::try_from(s).ok())
                    .filter(|&s| s <= binary.len())
                    .ok_or_else(|| {
                        input.error(format!(
                            "binary_data_size {size} does not fit the {} binary bytes left",
                            binary.len()
                        ))
                    })?;
                let (raw, rest) = binary.split_at(size);
                binary = rest;
                Some(raw)
            }
        });
    }
    if !binary.is_empty() {
        return Err(bad_request(format!(
            "{} bytes of binary data are not claimed by any input",
            binary.len()
        )));
    }
    let examples = examples(&request.inputs, &raws, kind, max_rows, name)?;
    Ok((request, examples))
}

/// [`decode_request`] for the fuzz targets: `header_length` is the
/// `Inference-Header-Content-Length` header, if sent.
#[doc(hidden)]
pub fn fuzz_decode_request(
    header_length: Option<&str>,
    body: &[u8],
    kind: &ValueKind,
    max_rows: usize,
) -> Result<Vec<Value>, String> {
    let mut headers = HeaderMap::new();
    if let Some(length) = header_length.and_then(|l| l.parse().ok()) {
        headers.insert(HEADER_LENGTH, length);
    }
    decode_request(&headers, body, kind, max_rows, "fuzz")
        .map(|(_, examples)| examples)
        .map_err(|e| e.1)
}

async fn run_infer(
    state: &AppState,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult {
    let live = live(state, name, version)?;
    let capacity = live.dispatcher.options().queue_capacity;
    let (request, examples) = decode_request(
        headers,
        body,
        &live.plugin.info().signature.inputs,
        capacity,
        name,
    )?;
    let key = request_key(request.parameters.get("key"))?;
    let timeout = request
        .parameters
        .get("timeout")
        .and_then(JsonValue::as_u64)
        .map(Duration::from_micros);
    let (outputs, model_id) = infer_examples(state, &live, key.as_ref(), timeout, examples).await?;
    respond(&request, name, model_id, outputs)
}

/// A request's `key` parameter, which chooses the model set (`[[key_models]]`) as a
/// keyed JSONL line's key does: a string or an integer.
fn request_key(key: Option<&JsonValue>) -> Result<Option<JsonValue>, ApiError> {
    match key {
        None | Some(JsonValue::Null) => Ok(None),
        Some(key @ JsonValue::String(_)) => Ok(Some(key.clone())),
        Some(key @ JsonValue::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(key.clone())),
        Some(_) => Err(bad_request(
            "parameter 'key' must be a string or an integer",
        )),
    }
}

/// Runs a request's examples through the plugin's queue and batcher (shared with
/// every other request) and gathers the outputs the signature declares, with the ids
/// of the models that served them. The request waits at most the plugin's (or the
/// server's) timeout, or the client's `timeout` if shorter; past it, or when the
/// caller stops waiting, its examples still queued are dropped.
async fn infer_examples(
    state: &AppState,
    live: &LivePlugin,
    key: Option<&JsonValue>,
    client_timeout: Option<Duration>,
    examples: Vec<Value>,
) -> Result<(Vec<OutputTensor>, Option<String>), ApiError> {
    let name = live.plugin.name();
    let limit = live
        .plugin
        .manifest()
        .limits
        .request_timeout_ms
        .map_or(state.config.request_timeout, Duration::from_millis);
    let timeout = client_timeout.map_or(limit, |t| t.min(limit));
    let tenant = live.plugin.tenant();
    let _admitted = state
        .config
        .quotas
        .admit(tenant, examples.len(), state.host.inner().metrics.tenants())
        .map_err(|reason| ApiError(StatusCode::TOO_MANY_REQUESTS, reason))?;
    let _pending = live.plugin.metrics().request_pending();
    let replies = live.dispatcher.try_submit_all(key, examples).map_err(|full| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "model '{name}' is overloaded: its queue ({} examples) has no room for this request; retry later",
                full.capacity
            ),
        )
    })?;
    let gathered = tokio::time::timeout(timeout, async {
        let mut values = Vec::with_capacity(replies.len());
        let mut model_id = None;
        for reply in replies {
            let output = crate::pipeline::dispatch::settle(reply)
                .await
                .map_err(|f| f.error)?;
            model_id = model_id.or(output.model_id.as_deref().map(str::to_string));
            values.push(output.value);
        }
        Ok::<_, InferenceError>((values, model_id))
    })
    .await;
    match gathered {
        Err(_) => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("request timed out after {} ms", timeout.as_millis()),
        )),
        Ok(Err(error)) => {
            let status = match error.code {
                ErrorCode::InvalidInput => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            Err(ApiError(status, error.to_string()))
        }
        Ok(Ok((values, model_id))) => Ok((
            outputs(values, &live.plugin.info().signature.outputs)?,
            model_id,
        )),
    }
}

/// Serves until `shutdown` resolves, then stops accepting, lets the requests in
/// flight finish (their queued examples run) and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::DType;

    fn iris() -> ValueKind {
        ValueKind::Tensor(TensorSpec {
            dtype: DType::F32,
            shape: Some(vec![Some(4)]),
        })
    }

    fn decode(body: JsonValue, kind: &ValueKind) -> Result<Vec<Value>, String> {
        fuzz_decode_request(None, body.to_string().as_bytes(), kind, 1024)
    }

    #[test]
    fn shapes_from_clients_are_checked_not_wrapped() {
        let free = ValueKind::Tensor(TensorSpec {
            dtype: DType::F32,
            shape: Some(vec![None, None]),
        });
        for (shape, why) in [
            (
                json!([4611686018427387904u64, 4]),
                "more than model 'fuzz' queues at once",
            ),
            (
                json!([1, 4611686018427387904u64, 4611686018427387904u64]),
                "is too large",
            ),
            (
                json!([1, 1099511627776u64, 0]),
                "describes more than 65536 empty arrays",
            ),
            (json!([-1, 4]), "bad shape"),
        ] {
            let body = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": shape, "data": []}]});
            let error = decode(body, &free).unwrap_err();
            assert!(error.contains(why), "{shape}: {error}");
        }
        let body = json!({"inputs": [{"name": "input", "datatype": "BYTES", "shape": [1, 4611686018427387904u64, 4], "data": []}]});
        assert!(
            decode(body, &ValueKind::Text)
                .unwrap_err()
                .contains("is too large")
        );
    }

    #[test]
    fn rows_of_a_request_become_examples() {
        let body = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4], "data": [1, 2, 3, 4, 5, 6, 7, 8]}]});
        assert_eq!(decode(body, &iris()).unwrap().len(), 2);
        // Rows without data are still one example each.
        let free = ValueKind::Tensor(TensorSpec {
            dtype: DType::F32,
            shape: Some(vec![None]),
        });
        let body =
            json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 0], "data": []}]});
        assert_eq!(decode(body, &free).unwrap().len(), 3);
    }
}
