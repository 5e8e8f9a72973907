//! The Open Inference Protocol over gRPC: Triton's `inference.GRPCInferenceService`
//! (KServe's `grpc_predict_v2.proto` plus Triton's configuration, statistics and
//! repository calls), so `tritonclient.grpc`, KServe's gRPC predictors and Triton's
//! tools connect as they do to Triton.
//!
//! Same semantics as HTTP: the same plugin root, queues and batchers, the same
//! request decoding (typed `contents` are turned into the bytes of
//! `raw_input_contents`), the same errors mapped to gRPC codes. Outputs are sent in
//! `raw_output_contents`, as Triton does. A call whose client cancels it, or whose
//! deadline (`grpc-timeout`) passes, is dropped, and with it its queued examples.

use super::{
    ApiError, AppState, EXTENSIONS, OutputTensor, RequestTensor, UNNAMED, VERSION, examples,
    infer_examples, live, metadata_tensors, repository_entries, triton,
};
use crate::frontends::watch::PluginRoot;
use crate::host::Host;
use axum::http::StatusCode;
use serde_json::Value as JsonValue;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

#[allow(missing_docs, clippy::all, clippy::pedantic)]
#[rustfmt::skip]
mod inference;

pub use inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use inference::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use inference::infer_parameter::ParameterChoice;
pub use inference::*;

/// The gRPC service of a plugin root, sharing the HTTP server's queues.
pub struct Service {
    state: Arc<AppState>,
}

/// The gRPC service, ready to be added to a tonic server. Messages up to
/// `config.max_request_bytes` are accepted, as over HTTP.
pub fn service(
    root: Arc<PluginRoot>,
    host: Host,
    config: super::ServeConfig,
) -> GrpcInferenceServiceServer<Service> {
    let limit = config.max_request_bytes;
    GrpcInferenceServiceServer::new(Service {
        state: Arc::new(AppState { root, host, config }),
    })
    .max_decoding_message_size(limit)
    .max_encoding_message_size(usize::MAX)
}

/// Serves the gRPC service on `listener` until `shutdown` resolves; calls in flight
/// finish first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: GrpcInferenceServiceServer<Service>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(
            // Small answers go out at once: without TCP_NODELAY, Nagle's algorithm
            // holds a response's last frame for the client's ACK.
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}

impl From<ApiError> for Status {
    fn from(ApiError(status, message): ApiError) -> Status {
        match status {
            StatusCode::BAD_REQUEST => Status::invalid_argument(message),
            StatusCode::NOT_FOUND => Status::not_found(message),
            StatusCode::SERVICE_UNAVAILABLE => Status::unavailable(message),
            StatusCode::TOO_MANY_REQUESTS => Status::resource_exhausted(message),
            StatusCode::INTERNAL_SERVER_ERROR => Status::internal(message),
            _ => Status::unknown(message),
        }
    }
}

/// `None` for the empty version (any), as the protocol says.
fn version(version: &str) -> Option<&str> {
    (!version.is_empty()).then_some(version)
}

/// A request parameter as the JSON value HTTP would have carried.
fn parameter_json(parameter: &InferParameter) -> JsonValue {
    match &parameter.parameter_choice {
        Some(ParameterChoice::BoolParam(b)) => JsonValue::from(*b),
        Some(ParameterChoice::Int64Param(i)) => JsonValue::from(*i),
        Some(ParameterChoice::Uint64Param(u)) => JsonValue::from(*u),
        Some(ParameterChoice::DoubleParam(d)) => JsonValue::from(*d),
        Some(ParameterChoice::StringParam(s)) => JsonValue::from(s.as_str()),
        None => JsonValue::Null,
    }
}

fn string_parameter(value: impl Into<String>) -> InferParameter {
    InferParameter {
        parameter_choice: Some(ParameterChoice::StringParam(value.into())),
    }
}

/// An error about one input.
fn input_error(name: &str, message: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("input '{name}': {message}"))
}

/// The little-endian bytes of typed `contents`, in the layout of
/// `raw_input_contents`, for the input's datatype. Narrow integer types come in the
/// 32-bit fields; a value outside the type's range is refused, not truncated.
fn contents_bytes(
    name: &str,
    datatype: &str,
    contents: &InferTensorContents,
) -> Result<Vec<u8>, Status> {
    fn narrow<T: TryFrom<i64> + Copy>(
        name: &str,
        values: impl Iterator<Item = i64>,
        to_le: impl Fn(T) -> Vec<u8>,
    ) -> Result<Vec<u8>, Status> {
        let mut out = Vec::new();
        for v in values {
            let v = T::try_from(v)
                .map_err(|_| input_error(name, format!("value {v} is out of range")))?;
            out.extend(to_le(v));
        }
        Ok(out)
    }
    let c = contents;
    Ok(match datatype {
        "FP32" => c
            .fp32_contents
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        "FP64" => c
            .fp64_contents
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        "INT64" => c
            .int64_contents
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        "UINT64" => c
            .uint64_contents
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        "INT32" => c
            .int_contents
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        "UINT32" => c
            .uint_contents
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        "INT16" => narrow::<i16>(name, c.int_contents.iter().map(|&v| v.into()), |v| {
            v.to_le_bytes().to_vec()
        })?,
        "INT8" => narrow::<i8>(name, c.int_contents.iter().map(|&v| v.into()), |v| {
            v.to_le_bytes().to_vec()
        })?,
        "UINT16" => narrow::<u16>(name, c.uint_contents.iter().map(|&v| v.into()), |v| {
            v.to_le_bytes().to_vec()
        })?,
        "UINT8" => narrow::<u8>(name, c.uint_contents.iter().map(|&v| v.into()), |v| {
            v.to_le_bytes().to_vec()
        })?,
        "BOOL" => c.bool_contents.iter().map(|&b| u8::from(b)).collect(),
        "BYTES" => {
            let mut out = Vec::new();
            for element in &c.bytes_contents {
                let length = u32::try_from(element.len())
                    .map_err(|_| input_error(name, "a BYTES element is too large"))?;
                out.extend_from_slice(&length.to_le_bytes());
                out.extend_from_slice(element);
            }
            out
        }
        other => {
            return Err(input_error(
                name,
                format!("{other} has no typed contents; send it in raw_input_contents"),
            ));
        }
    })
}

/// The inputs of a request as the HTTP decoder takes them, each with its bytes:
/// `raw_input_contents` (one per input, in order) or its typed `contents`.
fn decode_inputs(
    request: &mut ModelInferRequest,
) -> Result<(Vec<RequestTensor>, Vec<Vec<u8>>), Status> {
    let raw = std::mem::take(&mut request.raw_input_contents);
    if !raw.is_empty() && raw.len() != request.inputs.len() {
        return Err(Status::invalid_argument(format!(
            "raw_input_contents has {} entries for {} inputs; send one per input, or none",
            raw.len(),
            request.inputs.len()
        )));
    }
    let mut raw = raw.into_iter();
    let mut tensors = Vec::with_capacity(request.inputs.len());
    let mut bytes = Vec::with_capacity(request.inputs.len());
    for input in &request.inputs {
        let data = match (raw.next(), &input.contents) {
            (Some(_), Some(_)) => {
                return Err(input_error(
                    &input.name,
                    "has both contents and raw_input_contents",
                ));
            }
            (Some(raw), None) => raw,
            (None, Some(contents)) => contents_bytes(&input.name, &input.datatype, contents)?,
            (None, None) => Vec::new(),
        };
        tensors.push(RequestTensor {
            name: input.name.clone(),
            shape: input.shape.clone(),
            datatype: input.datatype.clone(),
            data: None,
            parameters: serde_json::Map::new(),
        });
        bytes.push(data);
    }
    Ok((tensors, bytes))
}

/// The outputs a request asked for (all when it names none), as response tensors.
fn response_outputs(
    requested: &[model_infer_request::InferRequestedOutputTensor],
    outputs: Vec<OutputTensor>,
    model: &str,
) -> Result<(Vec<model_infer_response::InferOutputTensor>, Vec<Vec<u8>>), Status> {
    let selected: Vec<OutputTensor> = if requested.is_empty() {
        outputs
    } else {
        let mut outputs: Vec<Option<OutputTensor>> = outputs.into_iter().map(Some).collect();
        requested
            .iter()
            .map(|r| {
                outputs
                    .iter_mut()
                    .find(|o| o.as_ref().is_some_and(|o| o.name == r.name))
                    .and_then(Option::take)
                    .ok_or_else(|| {
                        Status::invalid_argument(format!(
                            "unknown output '{}' of model '{model}'",
                            crate::untrusted::guest_text(&r.name)
                        ))
                    })
            })
            .collect::<Result<_, _>>()?
    };
    Ok(selected
        .into_iter()
        .map(|output| {
            let tensor = model_infer_response::InferOutputTensor {
                name: output.name.clone(),
                datatype: output.datatype().to_string(),
                shape: output.shape.iter().map(|&d| d as i64).collect(),
                parameters: HashMap::new(),
                contents: None,
            };
            (tensor, output.binary_data())
        })
        .unzip())
}

impl Service {
    async fn infer(&self, mut request: ModelInferRequest) -> Result<ModelInferResponse, Status> {
        let name = request.model_name.clone();
        let live = live(&self.state, &name, version(&request.model_version))?;
        let (inputs, bytes) = decode_inputs(&mut request)?;
        let raws: Vec<Option<&[u8]>> = bytes.iter().map(|b| Some(b.as_slice())).collect();
        let values = examples(
            &inputs,
            &raws,
            &live.plugin.info().signature.inputs,
            live.dispatcher.options().queue_capacity,
            &name,
        )?;
        drop(bytes);
        let key = super::request_key(request.parameters.get("key").map(parameter_json).as_ref())?;
        let timeout = request
            .parameters
            .get("timeout")
            .and_then(|p| parameter_json(p).as_u64())
            .map(Duration::from_micros);
        let (outputs, model_id) =
            infer_examples(&self.state, &live, key.as_ref(), timeout, values).await?;
        let (outputs, raw_output_contents) = response_outputs(&request.outputs, outputs, &name)?;
        let mut parameters = HashMap::new();
        if let Some(model_id) = model_id {
            parameters.insert("model_id".to_string(), string_parameter(model_id));
        }
        Ok(ModelInferResponse {
            model_name: name,
            model_version: VERSION.into(),
            id: request.id,
            parameters,
            outputs,
            raw_output_contents,
        })
    }
}

/// Stream responses: each request of a stream is answered as soon as it is done
/// (possibly out of order, matched by `id`), as Triton's streaming does.
type ResponseStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<ModelStreamInferResponse, Status>> + Send>,
>;

/// Requests of one stream in flight at once.
const STREAM_IN_FLIGHT: usize = 64;

#[tonic::async_trait]
impl GrpcInferenceService for Service {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        let ready = !self.state.root.live_plugins().is_empty();
        Ok(Response::new(ServerReadyResponse { ready }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let request = request.into_inner();
        let ready = live(&self.state, &request.name, version(&request.version)).is_ok();
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: "runinfer".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let request = request.into_inner();
        let live = live(&self.state, &request.name, version(&request.version))?;
        let signature = &live.plugin.info().signature;
        let tensors = |kind, unnamed| {
            metadata_tensors(kind, unnamed)
                .into_iter()
                .map(|t| model_metadata_response::TensorMetadata {
                    name: t.name,
                    datatype: t.datatype.into(),
                    shape: t.shape,
                })
                .collect()
        };
        Ok(Response::new(ModelMetadataResponse {
            name: live.plugin.name().into(),
            versions: vec![VERSION.into()],
            platform: "runinfer".into(),
            inputs: tensors(&signature.inputs, UNNAMED[0]),
            outputs: tensors(&signature.outputs, UNNAMED[1]),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        self.infer(request.into_inner()).await.map(Response::new)
    }

    type ModelStreamInferStream = ResponseStream;

    async fn model_stream_infer(
        &self,
        request: Request<tonic::Streaming<ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_IN_FLIGHT);
        let service = Service {
            state: self.state.clone(),
        };
        let service = Arc::new(service);
        tokio::spawn(async move {
            let mut running = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    // The client went away: what is still running is dropped with
                    // the set, and with it the examples still queued.
                    _ = tx.closed() => return,
                    message = inbound.message(), if running.len() < STREAM_IN_FLIGHT => match message {
                        Ok(Some(request)) => {
                            let service = service.clone();
                            let tx = tx.clone();
                            running.spawn(async move {
                                let id = request.id.clone();
                                let response = match service.infer(request).await {
                                    Ok(response) => ModelStreamInferResponse {
                                        error_message: String::new(),
                                        infer_response: Some(response),
                                    },
                                    Err(status) => ModelStreamInferResponse {
                                        error_message: status.message().to_string(),
                                        infer_response: Some(ModelInferResponse {
                                            id,
                                            ..Default::default()
                                        }),
                                    },
                                };
                                let _ = tx.send(Ok(response)).await;
                            });
                        }
                        Ok(None) => break,
                        Err(status) => {
                            let _ = tx.send(Err(status)).await;
                            break;
                        }
                    },
                    Some(_) = running.join_next(), if !running.is_empty() => {}
                }
            }
            // The client finished sending: answer what is running.
            while running.join_next().await.is_some() {}
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn model_config(
        &self,
        request: Request<ModelConfigRequest>,
    ) -> Result<Response<ModelConfigResponse>, Status> {
        let request = request.into_inner();
        let live = live(&self.state, &request.name, version(&request.version))?;
        Ok(Response::new(ModelConfigResponse {
            config: Some(triton::model_config_proto(&live, UNNAMED)),
        }))
    }

    async fn model_statistics(
        &self,
        request: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        let request = request.into_inner();
        let plugins = if request.name.is_empty() {
            self.state.root.live_plugins()
        } else {
            vec![live(&self.state, &request.name, version(&request.version))?]
        };
        Ok(Response::new(ModelStatisticsResponse {
            model_stats: plugins
                .iter()
                .map(|live| triton::model_stats_proto(live, VERSION))
                .collect(),
        }))
    }

    async fn repository_index(
        &self,
        request: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        let ready_only = request.into_inner().ready;
        let models = repository_entries(&self.state.root)
            .into_iter()
            .filter(|e| !ready_only || e.ready)
            .map(|e| repository_index_response::ModelIndex {
                state: e.state().into(),
                name: e.name,
                version: VERSION.into(),
                reason: e.reason,
            })
            .collect();
        Ok(Response::new(RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        request: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        use model_repository_parameter::ParameterChoice as Choice;
        let request = request.into_inner();
        let text = |key: &str| match request.parameters.get(key) {
            None => Ok(None),
            Some(ModelRepositoryParameter {
                parameter_choice: Some(Choice::StringParam(s)),
            }) => Ok(Some(s.clone())),
            Some(_) => Err(Status::invalid_argument(format!(
                "parameter '{key}' must be a string"
            ))),
        };
        let (path, model) = (text("model_path")?, text("model")?);
        super::repository_load_with(self.state.root.clone(), request.model_name, path, model)
            .await?;
        Ok(Response::new(RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        let name = request.into_inner().model_name;
        super::repository_call(self.state.root.clone(), move |root| root.unload(&name)).await?;
        Ok(Response::new(RepositoryModelUnloadResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_code_is_up_to_date_with_the_protos() {
        let mut digest = blake3::Hasher::new();
        digest.update(include_bytes!("../../../proto/grpc_service.proto"));
        digest.update(include_bytes!("../../../proto/model_config.proto"));
        let expected = format!("// protos blake3: {}", digest.finalize().to_hex());
        let generated = include_str!("grpc/inference.rs");
        assert_eq!(
            generated.lines().nth(1),
            Some(expected.as_str()),
            "host/proto changed: run scripts/grpc-codegen"
        );
    }

    #[test]
    fn typed_contents_become_raw_bytes_and_narrow_types_are_range_checked() {
        let contents = InferTensorContents {
            int_contents: vec![1, -2, 127],
            ..Default::default()
        };
        assert_eq!(
            contents_bytes("x", "INT8", &contents).unwrap(),
            [1u8, 0xfe, 127]
        );
        assert_eq!(contents_bytes("x", "INT32", &contents).unwrap().len(), 12);
        let too_big = InferTensorContents {
            int_contents: vec![128],
            ..Default::default()
        };
        let error = contents_bytes("x", "INT8", &too_big).unwrap_err();
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
        assert!(
            error.message().contains("value 128 is out of range"),
            "{error}"
        );
        let strings = InferTensorContents {
            bytes_contents: vec![b"ab".to_vec(), vec![]],
            ..Default::default()
        };
        assert_eq!(
            contents_bytes("x", "BYTES", &strings).unwrap(),
            [2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0]
        );
        let error = contents_bytes("x", "FP16", &strings).unwrap_err();
        assert!(error.message().contains("raw_input_contents"), "{error}");
    }

    #[test]
    fn raw_contents_need_one_entry_per_input() {
        let input = |name: &str| model_infer_request::InferInputTensor {
            name: name.into(),
            datatype: "FP32".into(),
            shape: vec![1, 4],
            ..Default::default()
        };
        let mut request = ModelInferRequest {
            inputs: vec![input("a"), input("b")],
            raw_input_contents: vec![vec![0; 16]],
            ..Default::default()
        };
        let Err(error) = decode_inputs(&mut request) else {
            panic!("one raw entry for two inputs was accepted");
        };
        assert!(
            error.message().contains("1 entries for 2 inputs"),
            "{error}"
        );
    }
}
