//! `runinfer serve`: the Open Inference Protocol v2 (KServe v2, as spoken by Triton,
//! KServe and MLServer) over HTTP, on the plugins of a watched plugin root.
//!
//! Every request's rows go to the plugin's dispatcher one by one, so requests from
//! many clients are batched together. A full queue is refused at once (503), and a
//! request waits at most its timeout.

use crate::host::Host;
use crate::instance::InputKind;
use crate::tensor::{DType, Tensor};
use crate::value::Value;
use crate::watch::{LivePlugin, PluginRoot};
use axum::extract::{Path, State};
use axum::http::StatusCode;
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
        .any(|s| matches!(s, crate::watch::PluginStatus::Live { .. }))
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
        "extensions": [],
    }))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        state.host.metrics().encode(),
    )
        .into_response()
}

/// The OIP datatype of a dtype.
fn datatype(dtype: DType) -> &'static str {
    match dtype {
        DType::Boolean => "BOOL",
        DType::U8 => "UINT8",
        DType::U16 => "UINT16",
        DType::U32 => "UINT32",
        DType::U64 => "UINT64",
        DType::I8 => "INT8",
        DType::I16 => "INT16",
        DType::I32 => "INT32",
        DType::I64 => "INT64",
        DType::F32 => "FP32",
        DType::F64 => "FP64",
    }
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
            json!({"name": "input", "datatype": datatype(*dtype), "shape": dims})
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
                json!({"name": o.name, "datatype": datatype(o.dtype), "shape": dims})
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
            "model_id": plugin.models().map(|m| m.id.clone()).collect::<Vec<_>>().join(","),
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
}

#[derive(Deserialize)]
struct RequestTensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    data: JsonValue,
}

async fn infer(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    run_infer(&state, &name, None, &body).await
}

async fn infer_version(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult {
    run_infer(&state, &name, Some(&version), &body).await
}

fn flatten(value: &JsonValue, out: &mut Vec<JsonValue>) {
    match value {
        JsonValue::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        other => out.push(other.clone()),
    }
}

/// Splits the request's one input into examples, one per row.
fn examples(input: &RequestTensor, kind: &InputKind) -> Result<Vec<Value>, ApiError> {
    let shape: Vec<usize> = input
        .shape
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| {
                bad_request(format!(
                    "input '{}': bad shape {:?}",
                    input.name, input.shape
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    let Some((&rows, row_shape)) = shape.split_first() else {
        return Err(bad_request(format!(
            "input '{}': the shape needs a batch dimension",
            input.name
        )));
    };
    let mut flat = Vec::new();
    flatten(&input.data, &mut flat);
    let row_len: usize = row_shape.iter().product();
    if flat.len() != rows * row_len {
        return Err(bad_request(format!(
            "input '{}': shape {:?} needs {} values, got {}",
            input.name,
            input.shape,
            rows * row_len,
            flat.len()
        )));
    }
    match kind {
        InputKind::Tensor { dtype, .. } => {
            if input.datatype != datatype(*dtype) {
                return Err(bad_request(format!(
                    "input '{}': expected datatype {}, got {}",
                    input.name,
                    datatype(*dtype),
                    input.datatype
                )));
            }
            flat.chunks(row_len.max(1))
                .take(rows)
                .map(|row| {
                    // The explicit tensor form: decoded and shape-checked like a line.
                    let object = json!({"shape": row_shape, "data": row});
                    crate::decode::decode_example(&object, kind)
                        .map_err(|e| bad_request(format!("input '{}': {e}", input.name)))
                })
                .collect()
        }
        _ => {
            if input.datatype != "BYTES" {
                return Err(bad_request(format!(
                    "input '{}': this model takes BYTES (text or JSON strings), got {}",
                    input.name, input.datatype
                )));
            }
            flat.iter()
                .map(|element| {
                    let JsonValue::String(text) = element else {
                        return Err(bad_request(format!(
                            "input '{}': BYTES elements must be strings",
                            input.name
                        )));
                    };
                    match kind {
                        InputKind::Text => Ok(Value::Text(text.clone())),
                        InputKind::Bytes => Ok(Value::Bytes(text.clone().into_bytes())),
                        _ => serde_json::value::RawValue::from_string(text.clone())
                            .map(Value::Json)
                            .map_err(|e| {
                                bad_request(format!("input '{}': not JSON: {e}", input.name))
                            }),
                    }
                })
                .collect()
        }
    }
}

/// Output tensors for the inferences of one request.
fn outputs(values: Vec<Value>) -> Vec<JsonValue> {
    let flat = |t: &Tensor| {
        let mut out = Vec::new();
        flatten(&serde_json::to_value(t).unwrap_or_default(), &mut out);
        out
    };
    let rows = values.len();
    if let Some(Value::Tensor(first)) = values.first() {
        let (dtype, shape) = (first.dtype(), first.shape().to_vec());
        let tensors: Vec<&Tensor> = values
            .iter()
            .filter_map(|v| match v {
                Value::Tensor(t) if t.dtype() == dtype && t.shape() == shape => Some(t),
                _ => None,
            })
            .collect();
        if tensors.len() == rows {
            let data: Vec<JsonValue> = tensors.iter().flat_map(|t| flat(t)).collect();
            let mut dims = vec![rows];
            dims.extend(shape);
            return vec![
                json!({"name": "output", "datatype": datatype(dtype), "shape": dims, "data": data}),
            ];
        }
    }
    if let Some(Value::Tensors(first)) = values.first() {
        let names: Vec<String> = first.iter().map(|(n, _)| n.clone()).collect();
        let mut outs = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let column: Vec<&Tensor> = values
                .iter()
                .filter_map(|v| match v {
                    Value::Tensors(named) => {
                        named.get(i).filter(|(n, _)| n == name).map(|(_, t)| t)
                    }
                    _ => None,
                })
                .collect();
            if column.len() != rows {
                outs.clear();
                break;
            }
            let mut dims = vec![rows];
            dims.extend(column[0].shape());
            let data: Vec<JsonValue> = column.iter().flat_map(|t| flat(t)).collect();
            outs.push(json!({"name": name, "datatype": datatype(column[0].dtype()), "shape": dims, "data": data}));
        }
        if !outs.is_empty() {
            return outs;
        }
    }
    // Anything else: one JSON (or text) string per row.
    let data: Vec<JsonValue> = values
        .iter()
        .map(|v| match v {
            Value::Text(text) => json!(text),
            other => json!(serde_json::to_string(other).unwrap_or_default()),
        })
        .collect();
    vec![json!({"name": "output", "datatype": "BYTES", "shape": [rows], "data": data})]
}

async fn run_infer(state: &AppState, name: &str, version: Option<&str>, body: &[u8]) -> ApiResult {
    let live = live(state, name, version)?;
    let request: InferRequest =
        serde_json::from_slice(body).map_err(|e| bad_request(format!("malformed request: {e}")))?;
    let [input] = request.inputs.as_slice() else {
        return Err(bad_request(format!(
            "runinfer models take exactly one input, got {}",
            request.inputs.len()
        )));
    };
    let examples = examples(input, &live.plugin.info().input)?;
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
            match reply.await {
                Ok(Ok(output)) => {
                    model_id = model_id.or(output.model_id);
                    values.push(output.value);
                }
                Ok(Err(failure)) => return Err(failure.error),
                Err(_) => {
                    return Err(crate::error::InferenceError::new(
                        crate::error::ErrorCode::Internal,
                        "the result was lost",
                    ));
                }
            }
        }
        Ok((values, model_id))
    })
    .await;
    let (values, model_id) = match gathered {
        Err(_) => {
            return Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("request timed out after {} ms", timeout.as_millis()),
            ));
        }
        Ok(Err(error)) => {
            let status = match error.code {
                crate::error::ErrorCode::InvalidInput => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            return Err(ApiError(status, error.to_string()));
        }
        Ok(Ok(done)) => done,
    };
    Ok(Json(json!({
        "model_name": name,
        "model_version": VERSION,
        "id": request.id,
        "parameters": {"model_id": model_id},
        "outputs": outputs(values),
    }))
    .into_response())
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
