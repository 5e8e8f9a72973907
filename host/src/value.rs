//! Examples and inferences as the host holds them, and their JSON form.

use crate::tensor::Tensor;
use base64::Engine as _;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;

/// One example given to, or one inference returned by, a handler.
#[derive(Debug)]
pub enum Value {
    /// A tensor in host memory.
    Tensor(Tensor),
    /// Named tensors (e.g. one row of each output of a model).
    Tensors(Vec<(String, Tensor)>),
    /// Valid JSON text.
    Json(Box<RawValue>),
    /// Text.
    Text(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
}

/// Inferences are written as: a tensor as a nested array, named tensors as an object
/// of nested arrays, JSON as itself, text as a string, bytes as `{"base64": "..."}`.
impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Tensor(t) => t.serialize(serializer),
            Value::Tensors(named) => {
                let mut map = serializer.serialize_map(Some(named.len()))?;
                for (name, t) in named {
                    map.serialize_entry(name, t)?;
                }
                map.end()
            }
            Value::Json(raw) => raw.serialize(serializer),
            Value::Text(text) => text.serialize(serializer),
            Value::Bytes(bytes) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry(
                    "base64",
                    &base64::engine::general_purpose::STANDARD.encode(bytes),
                )?;
                map.end()
            }
        }
    }
}

impl Value {
    /// Size of the value's payload in bytes (Beam's `get_num_bytes`).
    pub fn byte_size(&self) -> usize {
        match self {
            Value::Tensor(t) => t.bytes().len(),
            Value::Tensors(named) => named.iter().map(|(_, t)| t.bytes().len()).sum(),
            Value::Json(raw) => raw.get().len(),
            Value::Text(text) => text.len(),
            Value::Bytes(bytes) => bytes.len(),
        }
    }

    /// What the value costs the host to hold and write out, for the sandbox's caps:
    /// like [`Value::byte_size`], but a tensor counts its [`Tensor::footprint`] and
    /// named tensors their names too.
    pub fn footprint(&self) -> usize {
        match self {
            Value::Tensor(t) => t.footprint(),
            Value::Tensors(named) => named.iter().fold(0usize, |sum, (name, t)| {
                sum.saturating_add(name.len()).saturating_add(t.footprint())
            }),
            other => other.byte_size(),
        }
    }
}
