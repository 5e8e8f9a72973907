//! Triton's model configuration extension (`GET /v2/models/{m}/config`), from what the
//! server really does with the plugin: the handler's signature, the batching and
//! instance count in force. Tools that read the configuration before anything else
//! (Triton's perf_analyzer and Model Analyzer, client generators) then see the truth.

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

/// The tensors of the configuration. Dims exclude the batch dimension, as Triton's do
/// when `max_batch_size > 0`; `-1` is a free dimension, and a tensor of any rank is
/// `[-1]`. A per-example string is declared the way Triton configurations do: dims
/// `[1]` reshaped to `[]`.
fn tensors(kind: &ValueKind, unnamed: &str) -> Vec<JsonValue> {
    kind.tensors(unnamed)
        .into_iter()
        .map(|(name, part)| match part {
            TensorPart::Tensor(spec) => {
                let dims: Vec<i64> = match &spec.shape {
                    Some(shape) => shape.iter().map(|d| d.map_or(-1, |d| d as i64)).collect(),
                    None => vec![-1],
                };
                json!({"name": name, "data_type": data_type(spec.dtype.oip_name()), "dims": dims})
            }
            TensorPart::Text | TensorPart::Json | TensorPart::Bytes => json!({
                "name": name,
                "data_type": "TYPE_STRING",
                "dims": [1],
                "reshape": {"shape": []},
            }),
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
