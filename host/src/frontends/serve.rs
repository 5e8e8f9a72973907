//! `runinfer serve`: the Open Inference Protocol v2 (KServe v2, as spoken by Triton,
//! KServe and MLServer) over HTTP, on the plugins of a watched plugin root.
//!
//! Every request's rows go to the plugin's dispatcher one by one, so requests from
//! many clients are batched together. A full queue is refused at once (503), and a
//! request waits at most its timeout.

use crate::contract::InputKind;
use crate::error::{ErrorCode, InferenceError};
use crate::frontends::watch::{LivePlugin, PluginRoot};
use crate::host::Host;
use crate::tensor::{DType, Tensor};
use crate::value::Value;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value as JsonValue, json};
use std::sync::Arc;
use std::time::Duration;

/// How the server behaves.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Longest a request waits for its results; a request's `timeout` parameter
    /// (microseconds, as in Triton) may shorten it.
    pub request_timeout: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            request_timeout: Duration::from_secs(30),
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
        .route("/metrics", get(metrics))
        .fallback(|uri: axum::http::Uri| async move {
            ApiError(StatusCode::NOT_FOUND, format!("no such route: {uri}"))
        })
        .method_not_allowed_fallback(|method: axum::http::Method| async move {
            ApiError(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed here"),
            )
        })
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

async fn server_metadata() -> Json<JsonValue> {
    Json(json!({
        "name": "runinfer",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
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

fn model_metadata_json(live: &LivePlugin) -> JsonValue {
    let plugin = &live.plugin;
    let input = match &plugin.info().input {
        InputKind::Tensor { dtype, shape } => {
            let mut dims = vec![json!(-1)];
            match shape {
                Some(shape) => dims.extend(shape.iter().map(|d| d.map_or(json!(-1), |d| json!(d)))),
                None => dims.push(json!(-1)),
            }
            json!({"name": "input", "datatype": dtype.oip_name(), "shape": dims})
        }
        _ => json!({"name": "input", "datatype": "BYTES", "shape": [-1]}),
    };
    let outputs: Vec<JsonValue> = match plugin.models().next() {
        Some(model) if plugin.models().len() == 1 => model
            .model
            .outputs()
            .iter()
            .map(|o| {
                let dims: Vec<JsonValue> = o
                    .shape
                    .iter()
                    .map(|d| d.map_or(json!(-1), |d| json!(d)))
                    .collect();
                json!({"name": o.name, "datatype": o.dtype.oip_name(), "shape": dims})
            })
            .collect(),
        _ => vec![json!({"name": "output", "datatype": "BYTES", "shape": [-1]})],
    };
    json!({
        "name": plugin.name(),
        "versions": [VERSION],
        "platform": "runinfer",
        "inputs": [input],
        "outputs": outputs,
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

/// Splits the request's one input into examples, one per row of its first dimension.
/// `binary` is the input's bytes when it came in the binary form.
fn examples(
    input: &RequestTensor,
    binary: Option<&[u8]>,
    kind: &InputKind,
    max_rows: usize,
    model: &str,
) -> Result<Vec<Value>, ApiError> {
    let name = &input.name;
    let shape: Vec<usize> = input
        .shape
        .iter()
        .map(|&d| {
            usize::try_from(d)
                .map_err(|_| bad_request(format!("input '{name}': bad shape {:?}", input.shape)))
        })
        .collect::<Result<_, _>>()?;
    let Some(&rows) = shape.first() else {
        return Err(bad_request(format!(
            "input '{name}': the shape needs a batch dimension"
        )));
    };
    if rows > max_rows {
        // Waiting cannot help: this request never fits. Checked before anything is
        // decoded, since rows are allocated one by one.
        return Err(bad_request(format!(
            "{rows} rows are more than model '{model}' queues at once ({max_rows}, `[limits] queue_size`); split the request"
        )));
    }
    match kind {
        InputKind::Tensor { dtype, shape: want } => {
            tensor_examples(input, binary, *dtype, want.as_deref(), shape)
        }
        _ => bytes_examples(input, binary, kind, &shape),
    }
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
}

/// The rows of a tensor input, each checked against the handler's declared shape.
fn tensor_examples(
    input: &RequestTensor,
    binary: Option<&[u8]>,
    dtype: DType,
    want: Option<&[Option<u64>]>,
    shape: Vec<usize>,
) -> Result<Vec<Value>, ApiError> {
    if input.datatype != dtype.oip_name() {
        return Err(input.error(format!(
            "expected datatype {}, got {}",
            dtype.oip_name(),
            input.datatype
        )));
    }
    let batch = match binary {
        Some(raw) => Tensor::from_bytes(dtype, shape, raw.to_vec()),
        None => {
            let needed = crate::tensor::volume(&shape).ok_or_else(|| input.too_large())?;
            let data = input.json_values()?;
            if data.len() != needed {
                return Err(input.error(format!(
                    "shape {:?} needs {needed} values, got {}",
                    input.shape,
                    data.len()
                )));
            }
            Tensor::from_json(&json!({"shape": shape, "data": data}), dtype)
        }
    }
    .map_err(|e| input.error(e))?;
    batch
        .unstack()
        .map_err(|e| input.error(e))?
        .into_iter()
        .map(|row| {
            crate::pipeline::decode::check_shape(&row, want)
                .map(|()| Value::Tensor(row))
                .map_err(|e| input.error(e))
        })
        .collect()
}

/// The elements of a `BYTES` input, one example each (text, JSON or bytes).
fn bytes_examples(
    input: &RequestTensor,
    binary: Option<&[u8]>,
    kind: &InputKind,
    shape: &[usize],
) -> Result<Vec<Value>, ApiError> {
    if input.datatype != "BYTES" {
        return Err(input.error(format!(
            "this model takes BYTES (text or JSON strings), got {}",
            input.datatype
        )));
    }
    let elements: Vec<Vec<u8>> = match binary {
        Some(raw) => split_bytes_elements(raw, &input.name)?,
        None => input
            .json_values()?
            .into_iter()
            .map(|element| match element {
                JsonValue::String(text) => Ok(text.into_bytes()),
                _ => Err(input.error("BYTES elements must be strings")),
            })
            .collect::<Result<_, _>>()?,
    };
    let rows = shape[0];
    let row_len = crate::tensor::volume(&shape[1..]).ok_or_else(|| input.too_large())?;
    if elements.len() != rows.saturating_mul(row_len) || row_len != 1 {
        return Err(input.error(format!(
            "BYTES examples need shape [N] (or [N, 1]) with N elements; shape {:?} with {} elements",
            input.shape,
            elements.len()
        )));
    }
    elements
        .into_iter()
        .map(|element| {
            crate::pipeline::decode::decode_element(element, kind).map_err(|e| input.error(e))
        })
        .collect()
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

/// Output tensors for the inferences of one request: tensor inferences of one dtype and
/// shape stack into one tensor; named tensors into one tensor per name; anything else is
/// a BYTES output of one JSON (or text) string per row.
fn outputs(values: Vec<Value>) -> Vec<OutputTensor> {
    let rows = values.len();
    let stacked = |tensors: Vec<&Tensor>| {
        (tensors.len() == rows)
            .then(|| Tensor::stack(tensors).ok())
            .flatten()
    };
    if let Some(Value::Tensor(_)) = values.first() {
        let tensors = values
            .iter()
            .filter_map(|v| match v {
                Value::Tensor(t) => Some(t),
                _ => None,
            })
            .collect();
        if let Some(batch) = stacked(tensors) {
            return vec![OutputTensor {
                name: "output".into(),
                shape: batch.shape().to_vec(),
                data: OutputData::Tensor(batch),
            }];
        }
    }
    if let Some(Value::Tensors(first)) = values.first() {
        let columns: Option<Vec<OutputTensor>> = first
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                let column = values
                    .iter()
                    .filter_map(|v| match v {
                        Value::Tensors(named) => {
                            named.get(i).filter(|(n, _)| n == name).map(|(_, t)| t)
                        }
                        _ => None,
                    })
                    .collect();
                stacked(column).map(|batch| OutputTensor {
                    name: name.clone(),
                    shape: batch.shape().to_vec(),
                    data: OutputData::Tensor(batch),
                })
            })
            .collect();
        if let Some(columns) = columns.filter(|c| !c.is_empty()) {
            return columns;
        }
    }
    let strings = values
        .iter()
        .map(|v| match v {
            Value::Text(text) => text.clone(),
            other => serde_json::to_string(other).unwrap_or_default(),
        })
        .collect();
    vec![OutputTensor {
        name: "output".into(),
        shape: vec![rows],
        data: OutputData::Strings(strings),
    }]
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
    kind: &InputKind,
    max_rows: usize,
    name: &str,
) -> Result<(InferRequest, Vec<Value>), ApiError> {
    let (json_part, mut binary) = split_body(headers, body)?;
    let request: InferRequest = serde_json::from_slice(json_part)
        .map_err(|e| bad_request(format!("malformed request: {e}")))?;
    let [input] = request.inputs.as_slice() else {
        return Err(bad_request(format!(
            "runinfer models take exactly one input, got {}",
            request.inputs.len()
        )));
    };
    let raw = match input.parameters.get("binary_data_size") {
        None => None,
        Some(size) => {
            let size = size
                .as_u64()
                .map(|s| s as usize)
                .filter(|&s| s <= binary.len())
                .ok_or_else(|| {
                    bad_request(format!(
                        "input '{}': binary_data_size {size} does not fit the {} binary bytes sent",
                        input.name,
                        binary.len()
                    ))
                })?;
            let (raw, rest) = binary.split_at(size);
            binary = rest;
            Some(raw)
        }
    };
    if !binary.is_empty() {
        return Err(bad_request(format!(
            "{} bytes of binary data are not claimed by any input",
            binary.len()
        )));
    }
    let examples = examples(input, raw, kind, max_rows, name)?;
    Ok((request, examples))
}

/// [`decode_request`] for the fuzz targets: `header_length` is the
/// `Inference-Header-Content-Length` header, if sent.
#[doc(hidden)]
pub fn fuzz_decode_request(
    header_length: Option<&str>,
    body: &[u8],
    kind: &InputKind,
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
    let (request, examples) =
        decode_request(headers, body, &live.plugin.info().input, capacity, name)?;
    let limit = live
        .plugin
        .manifest()
        .limits
        .request_timeout_ms
        .map_or(state.config.request_timeout, Duration::from_millis);
    let timeout = match request
        .parameters
        .get("timeout")
        .and_then(JsonValue::as_u64)
    {
        Some(micros) => limit.min(Duration::from_micros(micros)),
        None => limit,
    };
    let replies = live.dispatcher.try_submit_all(examples).map_err(|full| {
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
            model_id = model_id.or(output.model_id);
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
        Ok(Ok((values, model_id))) => respond(&request, name, model_id, outputs(values)),
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

    fn iris() -> InputKind {
        InputKind::Tensor {
            dtype: DType::F32,
            shape: Some(vec![Some(4)]),
        }
    }

    fn decode(body: JsonValue, kind: &InputKind) -> Result<Vec<Value>, String> {
        fuzz_decode_request(None, body.to_string().as_bytes(), kind, 1024)
    }

    #[test]
    fn shapes_from_clients_are_checked_not_wrapped() {
        let free = InputKind::Tensor {
            dtype: DType::F32,
            shape: Some(vec![None, None]),
        };
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
            decode(body, &InputKind::Text)
                .unwrap_err()
                .contains("is too large")
        );
    }

    #[test]
    fn rows_of_a_request_become_examples() {
        let body = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4], "data": [1, 2, 3, 4, 5, 6, 7, 8]}]});
        assert_eq!(decode(body, &iris()).unwrap().len(), 2);
        // Rows without data are still one example each.
        let free = InputKind::Tensor {
            dtype: DType::F32,
            shape: Some(vec![None]),
        };
        let body =
            json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 0], "data": []}]});
        assert_eq!(decode(body, &free).unwrap().len(), 3);
    }
}
