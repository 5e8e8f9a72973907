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
    /// Named fields: the inputs of a multi-input model, the outputs of a handler
    /// that returns several.
    Fields(Vec<(String, Field)>),
    /// Valid JSON text.
    Json(Box<RawValue>),
    /// Text.
    Text(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
}

/// One named part of an example or an inference.
#[derive(Debug)]
pub enum Field {
    /// A tensor.
    Tensor(Tensor),
    /// A string.
    Text(String),
}

impl Field {
    /// Size of the payload in bytes.
    pub fn byte_size(&self) -> usize {
        match self {
            Field::Tensor(t) => t.bytes().len(),
            Field::Text(text) => text.len(),
        }
    }

    /// What the field costs the host to hold (see [`Value::footprint`]).
    pub fn footprint(&self) -> usize {
        match self {
            Field::Tensor(t) => t.footprint(),
            Field::Text(text) => text.len(),
        }
    }
}

impl Serialize for Field {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Field::Tensor(t) => t.serialize(serializer),
            Field::Text(text) => text.serialize(serializer),
        }
    }
}

/// Inferences are written as: a tensor as a nested array, named fields as an object
/// of nested arrays and strings, JSON as itself, text as a string, bytes as `{"base64": "..."}`.
impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Tensor(t) => t.serialize(serializer),
            Value::Fields(named) => {
                let mut map = serializer.serialize_map(Some(named.len()))?;
                for (name, field) in named {
                    map.serialize_entry(name, field)?;
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
    /// The kind's name, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Tensor(_) => "tensor",
            Value::Fields(_) => "fields",
            Value::Json(_) => "json",
            Value::Text(_) => "text",
            Value::Bytes(_) => "bytes",
        }
    }

    /// The shapes of the value's tensors, in field order (empty for other kinds):
    /// examples with equal shapes can be stacked into one batch.
    pub fn shapes(&self) -> Vec<&[usize]> {
        match self {
            Value::Tensor(t) => vec![t.shape()],
            Value::Fields(named) => named
                .iter()
                .filter_map(|(_, f)| match f {
                    Field::Tensor(t) => Some(t.shape()),
                    Field::Text(_) => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// True when both values' tensors have the same shapes, field by field: the
    /// common case of a batch, checked without allocating.
    pub fn same_shapes(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Tensor(a), Value::Tensor(b)) => a.shape() == b.shape(),
            (Value::Fields(a), Value::Fields(b)) => {
                a.len() == b.len()
                    && a.iter().zip(b).all(|((_, x), (_, y))| match (x, y) {
                        (Field::Tensor(x), Field::Tensor(y)) => x.shape() == y.shape(),
                        (Field::Text(_), Field::Text(_)) => true,
                        _ => false,
                    })
            }
            (a, b) => a.shapes() == b.shapes(),
        }
    }

    /// Size of the value's payload in bytes (Beam's `get_num_bytes`).
    pub fn byte_size(&self) -> usize {
        match self {
            Value::Tensor(t) => t.bytes().len(),
            Value::Fields(named) => named.iter().map(|(_, f)| f.byte_size()).sum(),
            Value::Json(raw) => raw.get().len(),
            Value::Text(text) => text.len(),
            Value::Bytes(bytes) => bytes.len(),
        }
    }

    /// What the value costs the host to hold and write out, for the sandbox's caps:
    /// like [`Value::byte_size`], but a tensor counts its [`Tensor::footprint`] and
    /// named fields their names too.
    pub fn footprint(&self) -> usize {
        match self {
            Value::Tensor(t) => t.footprint(),
            Value::Fields(named) => named.iter().fold(0usize, |sum, (name, f)| {
                sum.saturating_add(name.len()).saturating_add(f.footprint())
            }),
            other => other.byte_size(),
        }
    }
}
