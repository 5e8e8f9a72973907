//! The large weights of an ONNX model, found in its bytes without copying them.
//!
//! onnxruntime copies every weight into each session it opens; a session can instead
//! be handed a tensor for a weight (`AddInitializer`), so the sessions of one model
//! can share one copy (see `onnxruntime.rs`). This module finds what is worth
//! sharing: the main graph's initializers that keep their data in `raw_data` (what
//! exporters write for any tensor of size) and whose bytes agree with their type and
//! shape. Anything else — small tensors, typed-field data, element types a host
//! tensor cannot hold (float16…), a declared shape that does not match the bytes —
//! stays in the model for the engine to read and judge as usual.

use crate::tensor::DType;
use bytes::Bytes;
use prost::Message;

#[derive(Clone, PartialEq, Message)]
struct Model {
    #[prost(message, optional, tag = "7")]
    graph: Option<Graph>,
}

#[derive(Clone, PartialEq, Message)]
struct Graph {
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<TensorProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    data_type: i32,
    #[prost(string, tag = "8")]
    name: String,
    #[prost(bytes = "bytes", tag = "9")]
    raw_data: Bytes,
    #[prost(int32, optional, tag = "14")]
    data_location: Option<i32>,
}

/// Smaller weights are not worth a shared tensor of their own.
pub(crate) const MIN_SHARED_BYTES: usize = 16 * 1024;

/// The element types of ONNX's `TensorProto.DataType` that a host tensor can hold.
fn dtype_of(code: i32) -> Option<DType> {
    Some(match code {
        1 => DType::F32,
        2 => DType::U8,
        3 => DType::I8,
        4 => DType::U16,
        5 => DType::I16,
        6 => DType::I32,
        7 => DType::I64,
        9 => DType::Boolean,
        11 => DType::F64,
        12 => DType::U32,
        13 => DType::U64,
        _ => return None,
    })
}

/// One weight: its name, element type, shape and bytes (a slice of the model's).
#[derive(Debug)]
pub(crate) struct Initializer {
    pub name: String,
    pub dtype: DType,
    pub dims: Vec<usize>,
    pub data: Bytes,
}

/// The main graph's initializers of at least `min_bytes` whose data can be shared.
/// `model` is the file's bytes: the data returned are slices of it, not copies.
pub(crate) fn large_initializers(
    model: &Bytes,
    min_bytes: usize,
) -> Result<Vec<Initializer>, String> {
    let model =
        Model::decode(model.clone()).map_err(|e| format!("not a readable ONNX model: {e}"))?;
    let tensors = model.graph.map(|g| g.initializer).unwrap_or_default();
    Ok(tensors
        .into_iter()
        .filter_map(|t| {
            let dtype = dtype_of(t.data_type)?;
            let external = t.data_location.is_some_and(|l| l != 0);
            let dims = t
                .dims
                .iter()
                .map(|&d| usize::try_from(d).ok())
                .collect::<Option<Vec<_>>>()?;
            let elements = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d))?;
            let consistent = elements.checked_mul(dtype.size()) == Some(t.raw_data.len());
            (!external && !t.name.is_empty() && consistent && t.raw_data.len() >= min_bytes).then(
                || Initializer {
                    name: t.name,
                    dtype,
                    dims,
                    data: t.raw_data,
                },
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, data_type: i32, dims: &[i64], raw: usize) -> TensorProto {
        TensorProto {
            dims: dims.to_vec(),
            data_type,
            name: name.into(),
            raw_data: Bytes::from(vec![7u8; raw]),
            data_location: None,
        }
    }

    fn model(initializer: Vec<TensorProto>) -> Bytes {
        Model {
            graph: Some(Graph { initializer }),
        }
        .encode_to_vec()
        .into()
    }

    #[test]
    fn only_large_consistent_raw_tensors_are_shared_and_their_bytes_are_not_copied() {
        let mut external = tensor("external", 1, &[64, 64], 0);
        external.data_location = Some(1);
        let bytes = model(vec![
            tensor("weight", 1, &[64, 64], 64 * 64 * 4),
            tensor("small", 1, &[4], 16),
            tensor("strings", 8, &[8192], 8192 * 4),
            tensor("lying", 1, &[64, 64], 100_000),
            tensor("negative", 1, &[-1, 64], 64 * 4),
            tensor("overflow", 7, &[i64::MAX, i64::MAX], 16_384),
            tensor("", 1, &[64, 64], 64 * 64 * 4),
            tensor("int64", 7, &[2048], 2048 * 8),
            external,
        ]);
        let found = large_initializers(&bytes, 1024).unwrap();
        let names: Vec<&str> = found.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["weight", "int64"]);
        assert_eq!(found[0].dtype, DType::F32);
        assert_eq!(found[0].dims, [64, 64]);
        assert_eq!(found[1].dtype, DType::I64);
        let inside = bytes.as_ptr_range();
        assert!(
            inside.contains(&found[0].data.as_ptr()),
            "the data is a slice of the model"
        );
        assert!(found[0].data.iter().all(|&b| b == 7));
    }

    #[test]
    fn a_model_that_is_not_onnx_is_an_error() {
        assert!(large_initializers(&Bytes::from_static(b"\xff\xff\xff"), 1).is_err());
        assert!(large_initializers(&model(vec![]), 1).unwrap().is_empty());
    }
}
