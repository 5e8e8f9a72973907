//! Triton's model configuration extension (`GET /v2/models/{m}/config`), from what the
//! server really does with the plugin: the handler's signature, the batching and
//! instance count in force. Tools that read the configuration before anything else
//! (Triton's perf_analyzer and Model Analyzer, client generators) then see the truth.

use super::grpc as proto;
use crate::contract::{TensorPart, ValueKind};
use crate::frontends::watch::LivePlugin;
use serde_json::{Value as JsonValue, json};

/// Triton's name of a tensor's data type (`TYPE_FP32`, ...; strings are `TYPE_STRING`).
fn data_type(oip: &str) -> String {
    match oip {
        "BYTES" => "TYPE_STRING".into(),
        other => format!("TYPE_{other}"),
    }
}

/// One input or output of a model configuration.
pub(super) struct ConfigTensor {
    pub name: String,
    /// Triton's data type name (`TYPE_FP32`, `TYPE_STRING`, ...).
    pub data_type: String,
    /// Without the batch dimension.
    pub dims: Vec<i64>,
    /// A per-example string, declared as dims `[1]` reshaped to `[]`.
    pub scalar: bool,
}

/// The tensors of the configuration. Dims exclude the batch dimension, as Triton's do
/// when `max_batch_size > 0`; `-1` is a free dimension, and a tensor of any rank is
/// `[-1]`. A per-example string is declared the way Triton configurations do: dims
/// `[1]` reshaped to `[]`.
pub(super) fn config_tensors(kind: &ValueKind, unnamed: &str) -> Vec<ConfigTensor> {
    kind.tensors(unnamed)
        .into_iter()
        .map(|(name, part)| match part {
            TensorPart::Tensor(spec) => ConfigTensor {
                name: name.to_string(),
                data_type: data_type(spec.dtype.oip_name()),
                dims: match &spec.shape {
                    Some(shape) => shape.iter().map(|d| d.map_or(-1, |d| d as i64)).collect(),
                    None => vec![-1],
                },
                scalar: false,
            },
            TensorPart::Text | TensorPart::Json | TensorPart::Bytes => ConfigTensor {
                name: name.to_string(),
                data_type: data_type("BYTES"),
                dims: vec![1],
                scalar: true,
            },
        })
        .collect()
}

fn tensors(kind: &ValueKind, unnamed: &str) -> Vec<JsonValue> {
    config_tensors(kind, unnamed)
        .into_iter()
        .map(|t| {
            let mut tensor = json!({"name": t.name, "data_type": t.data_type, "dims": t.dims});
            if t.scalar {
                tensor["reshape"] = json!({"shape": []});
            }
            tensor
        })
        .collect()
}

/// The model configuration of a live plugin, in Triton's JSON form.
pub(super) fn model_config(live: &LivePlugin, unnamed: [&str; 2]) -> JsonValue {
    let plugin = &live.plugin;
    let options = live.dispatcher.options();
    let signature = &plugin.info().signature;
    let delay_us = u64::try_from(options.policy.max_batch_duration.as_micros()).unwrap_or(u64::MAX);
    json!({
        "name": plugin.name(),
        "platform": "runinfer",
        "backend": "runinfer",
        "max_batch_size": options.policy.max_batch_size,
        "input": tensors(&signature.inputs, unnamed[0]),
        "output": tensors(&signature.outputs, unnamed[1]),
        "dynamic_batching": {
            "max_queue_delay_microseconds": delay_us,
            "preserve_ordering": true,
        },
        "instance_group": [{
            "name": plugin.name(),
            "kind": "KIND_CPU",
            "count": options.instances,
        }],
        "parameters": {
            "model_id": {"string_value": plugin.model_id()},
            "namespace": {"string_value": plugin.namespace()},
        },
    })
}

/// Triton's statistics of one live plugin (`GET /v2/models[/{m}]/stats`).
///
/// Per example: `success` and `fail` are queued-to-answered times, `queue` the wait
/// for a batch, `compute_infer` the handler call of its batch (models included).
/// `compute_input` and `compute_output` stay at 0: requests are decoded and encoded
/// outside the queue, by the HTTP front, and not timed separately.
pub(super) fn model_stats(live: &LivePlugin, version: &str) -> JsonValue {
    let stats = live.dispatcher.serving_stats();
    let timed = |t: crate::dispatch::Timed| json!({"count": t.count, "ns": t.ns});
    let zero = json!({"count": 0, "ns": 0});
    let batch_stats: Vec<JsonValue> = stats
        .batches
        .iter()
        .map(|(size, t)| {
            json!({
                "batch_size": size,
                "compute_input": zero,
                "compute_infer": timed(*t),
                "compute_output": zero,
            })
        })
        .collect();
    json!({
        "name": live.plugin.name(),
        "version": version,
        "last_inference": stats.last_inference_ms,
        "inference_count": stats.inference_count,
        "execution_count": stats.execution_count,
        "inference_stats": {
            "success": timed(stats.success),
            "fail": timed(stats.fail),
            "queue": timed(stats.queue),
            "compute_input": zero,
            "compute_infer": timed(stats.compute_infer),
            "compute_output": zero,
        },
        "batch_stats": batch_stats,
    })
}

/// [`model_config`] as the gRPC message.
pub(super) fn model_config_proto(live: &LivePlugin, unnamed: [&str; 2]) -> proto::ModelConfig {
    let plugin = &live.plugin;
    let options = live.dispatcher.options();
    let signature = &plugin.info().signature;
    let data_type = |name: &str| {
        proto::DataType::from_str_name(name)
            .map_or(proto::DataType::TypeInvalid as i32, |t| t as i32)
    };
    let reshape = |t: &ConfigTensor| {
        t.scalar
            .then(|| proto::ModelTensorReshape { shape: vec![] })
    };
    let inputs = config_tensors(&signature.inputs, unnamed[0])
        .into_iter()
        .map(|t| proto::ModelInput {
            data_type: data_type(&t.data_type),
            reshape: reshape(&t),
            name: t.name,
            dims: t.dims,
            ..Default::default()
        })
        .collect();
    let outputs = config_tensors(&signature.outputs, unnamed[1])
        .into_iter()
        .map(|t| proto::ModelOutput {
            data_type: data_type(&t.data_type),
            reshape: reshape(&t),
            name: t.name,
            dims: t.dims,
            ..Default::default()
        })
        .collect();
    let string = |value: String| proto::ModelParameter {
        string_value: value,
    };
    proto::ModelConfig {
        name: plugin.name().into(),
        platform: "runinfer".into(),
        backend: "runinfer".into(),
        max_batch_size: i32::try_from(options.policy.max_batch_size).unwrap_or(i32::MAX),
        input: inputs,
        output: outputs,
        instance_group: vec![proto::ModelInstanceGroup {
            name: plugin.name().into(),
            kind: proto::model_instance_group::Kind::Cpu as i32,
            count: i32::try_from(options.instances).unwrap_or(i32::MAX),
            ..Default::default()
        }],
        parameters: [
            ("model_id".to_string(), string(plugin.model_id())),
            (
                "namespace".to_string(),
                string(plugin.namespace().to_string()),
            ),
        ]
        .into(),
        scheduling_choice: Some(proto::model_config::SchedulingChoice::DynamicBatching(
            proto::ModelDynamicBatching {
                max_queue_delay_microseconds: u64::try_from(
                    options.policy.max_batch_duration.as_micros(),
                )
                .unwrap_or(u64::MAX),
                preserve_ordering: true,
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

/// [`model_stats`] as the gRPC message.
pub(super) fn model_stats_proto(live: &LivePlugin, version: &str) -> proto::ModelStatistics {
    let stats = live.dispatcher.serving_stats();
    let timed = |t: crate::dispatch::Timed| {
        Some(proto::StatisticDuration {
            count: t.count,
            ns: t.ns,
        })
    };
    let zero = || Some(proto::StatisticDuration::default());
    proto::ModelStatistics {
        name: live.plugin.name().into(),
        version: version.into(),
        last_inference: stats.last_inference_ms,
        inference_count: stats.inference_count,
        execution_count: stats.execution_count,
        inference_stats: Some(proto::InferStatistics {
            success: timed(stats.success),
            fail: timed(stats.fail),
            queue: timed(stats.queue),
            compute_input: zero(),
            compute_infer: timed(stats.compute_infer),
            compute_output: zero(),
            cache_hit: zero(),
            cache_miss: zero(),
        }),
        batch_stats: stats
            .batches
            .iter()
            .map(|(size, t)| proto::InferBatchStatistics {
                batch_size: *size as u64,
                compute_input: zero(),
                compute_infer: timed(*t),
                compute_output: zero(),
            })
            .collect(),
        ..Default::default()
    }
}
