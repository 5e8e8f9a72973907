//! Decoding one input line into an optional key and an example value, natively in the
//! host, according to the inputs of the handler's signature.

use crate::contract::{FieldKind, TensorSpec, ValueKind};
use crate::error::{ErrorCode, InferenceError};
use crate::tensor::{Tensor, json_kind};
use crate::value::{Field, Value};
use base64::Engine as _;
use serde_json::value::RawValue;
use std::ops::Range;

/// A decoded input line. The key and the example are kept as where they lie in the
/// line, so that a prediction echoes them as they were written.
#[derive(Debug)]
pub struct Decoded {
    /// The key of a `{"key": ..., "example": ...}` line: where it is, and its value
    /// (which chooses the model set).
    pub key: Option<(Range<usize>, serde_json::Value)>,
    /// Where the example is in the line.
    pub example: Range<usize>,
    /// The example as the handler receives it.
    pub value: Value,
}

/// A line that could not be decoded; the key is kept when it was readable.
#[derive(Debug)]
pub struct DecodeError {
    /// Where the key is in the line, if the line was keyed.
    pub key: Option<Range<usize>>,
    /// Why.
    pub error: InferenceError,
}

fn invalid(key: Option<Range<usize>>, message: String) -> DecodeError {
    DecodeError {
        key,
        error: InferenceError::new(ErrorCode::InvalidInput, message),
    }
}

/// Decodes one JSONL line. A line is keyed when it is an object with exactly the two
/// fields `key` and `example`; anything else is an example.
pub fn decode_line(line: &str, input: &ValueKind) -> Result<Decoded, DecodeError> {
    if line.trim().is_empty() {
        return Err(invalid(None, "empty line".into()));
    }
    let whole: &RawValue =
        serde_json::from_str(line).map_err(|e| invalid(None, format!("not JSON: {e}")))?;
    // Where a part of the line is (`RawValue`s borrow from it).
    let place = |part: &RawValue| {
        let start = part.get().as_ptr() as usize - line.as_ptr() as usize;
        start..start + part.get().len()
    };
    let (key, example) = match keyed(whole) {
        Some((key, example)) => (Some(key), example),
        None => (None, whole),
    };
    let key_place = key.map(place);
    let value = decode_example_text(example.get(), input)
        .map_err(|message| invalid(key_place.clone(), message))?;
    let key = match (key, key_place) {
        (Some(key), Some(at)) => Some((
            at,
            serde_json::from_str(key.get()).map_err(|e| invalid(None, format!("not JSON: {e}")))?,
        )),
        _ => None,
    };
    Ok(Decoded {
        key,
        example: place(example),
        value,
    })
}

/// The key and the example of a keyed line: an object with exactly those two fields.
fn keyed(line: &RawValue) -> Option<(&RawValue, &RawValue)> {
    if !line.get().starts_with('{') {
        return None;
    }
    let members: std::collections::BTreeMap<std::borrow::Cow<'_, str>, &RawValue> =
        serde_json::from_str(line.get()).ok()?;
    if members.len() != 2 {
        return None;
    }
    Some((*members.get("key")?, *members.get("example")?))
}

/// Decodes one example from its JSON text: a tensor straight from the text when it
/// is a plain nested array (the common case), anything else through a JSON value.
fn decode_example_text(text: &str, input: &ValueKind) -> Result<Value, String> {
    if let ValueKind::Tensor(spec) = input
        && let Some(tensor) = Tensor::from_json_text(text, spec.dtype)
    {
        spec.check_shape(tensor.shape())?;
        return Ok(Value::Tensor(tensor));
    }
    let example: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    decode_example(&example, input)
}

/// Decodes one example that came as raw bytes (an element of an Open Inference
/// Protocol `BYTES` tensor) for a handler that takes bytes, text or JSON: the same
/// kinds as [`decode_example`], from the raw form instead of a JSON value.
pub(crate) fn decode_element(element: Vec<u8>, input: &ValueKind) -> Result<Value, String> {
    match input {
        ValueKind::Bytes => Ok(Value::Bytes(element)),
        ValueKind::Text => utf8(element).map(Value::Text),
        ValueKind::Json => RawValue::from_string(utf8(element)?)
            .map(Value::Json)
            .map_err(|e| format!("not JSON: {e}")),
        ValueKind::Tensor(_) | ValueKind::Fields { .. } => {
            Err(format!("a {} input takes numbers, not BYTES", input.name()))
        }
    }
}

/// A `BYTES` element as text.
pub(crate) fn utf8(element: Vec<u8>) -> Result<String, String> {
    String::from_utf8(element).map_err(|_| "a BYTES element is not UTF-8".to_string())
}

/// Decodes one example for a handler that takes `input`.
pub fn decode_example(example: &serde_json::Value, input: &ValueKind) -> Result<Value, String> {
    match input {
        ValueKind::Tensor(spec) => decode_tensor(example, spec).map(Value::Tensor),
        ValueKind::Fields { fields } => {
            let serde_json::Value::Object(members) = example else {
                return Err(format!(
                    "expected an object with the fields {}, got {}",
                    field_names(input),
                    json_kind(example)
                ));
            };
            if let Some(unknown) = members
                .keys()
                .find(|name| !fields.iter().any(|f| f.name == **name))
            {
                return Err(format!(
                    "unknown field `{}` (the handler takes {})",
                    crate::untrusted::guest_text(unknown),
                    field_names(input)
                ));
            }
            let named = fields
                .iter()
                .map(|spec| {
                    let member = members
                        .get(&spec.name)
                        .ok_or_else(|| format!("field `{}` is missing", spec.name))?;
                    let field = match &spec.kind {
                        FieldKind::Tensor(t) => decode_tensor(member, t).map(Field::Tensor),
                        FieldKind::Text => match member {
                            serde_json::Value::String(s) => Ok(Field::Text(s.clone())),
                            other => {
                                Err(format!("expected a JSON string, got {}", json_kind(other)))
                            }
                        },
                    };
                    field
                        .map(|f| (spec.name.clone(), f))
                        .map_err(|e| format!("field `{}`: {e}", spec.name))
                })
                .collect::<Result<_, String>>()?;
            Ok(Value::Fields(named))
        }
        ValueKind::Json => RawValue::from_string(example.to_string())
            .map(Value::Json)
            .map_err(|e| e.to_string()),
        ValueKind::Text => match example {
            serde_json::Value::String(s) => Ok(Value::Text(s.clone())),
            other => Err(format!("expected a JSON string, got {}", json_kind(other))),
        },
        ValueKind::Bytes => match example {
            serde_json::Value::String(s) => base64::engine::general_purpose::STANDARD
                .decode(s)
                .map(Value::Bytes)
                .map_err(|e| format!("expected a base64 string: {e}")),
            other => Err(format!(
                "expected a base64 JSON string, got {}",
                json_kind(other)
            )),
        },
    }
}

/// A nested JSON array (or tensor object) as a tensor of the spec's dtype and shape.
pub(crate) fn decode_tensor(
    example: &serde_json::Value,
    spec: &TensorSpec,
) -> Result<Tensor, String> {
    let tensor = Tensor::from_json(example, spec.dtype).map_err(|e| e.to_string())?;
    spec.check_shape(tensor.shape())?;
    Ok(tensor)
}

/// `input_ids, attention_mask`: the declared field names, for messages.
fn field_names(kind: &ValueKind) -> String {
    match kind {
        ValueKind::Fields { fields } => fields
            .iter()
            .map(|f| format!("`{}`", f.name))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.name().to_string(),
    }
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

    fn bert() -> ValueKind {
        let ids = |name: &str| crate::contract::FieldSpec {
            name: name.into(),
            kind: FieldKind::Tensor(TensorSpec {
                dtype: DType::I64,
                shape: Some(vec![None]),
            }),
        };
        ValueKind::Fields {
            fields: vec![ids("input_ids"), ids("attention_mask")],
        }
    }

    #[test]
    fn named_fields_are_decoded_by_the_signature() {
        let line = r#"{"input_ids": [101, 7592, 102], "attention_mask": [1, 1, 1]}"#;
        let Value::Fields(named) = decode_line(line, &bert()).unwrap().value else {
            panic!("fields expected");
        };
        let names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["input_ids", "attention_mask"]);
        let Field::Tensor(ids) = &named[0].1 else {
            panic!("a tensor expected")
        };
        assert_eq!((ids.dtype(), ids.shape()), (DType::I64, &[3usize][..]));
        assert_eq!(ids.to_i64().unwrap(), [101, 7592, 102]);
        // The keyed form wraps the same object.
        let keyed = format!(r#"{{"key": "doc-1", "example": {line}}}"#);
        let decoded = decode_line(&keyed, &bert()).unwrap();
        assert_eq!(decoded.key, Some((8..15, serde_json::json!("doc-1"))));
        assert_eq!(&keyed[decoded.example], line);
        let missing = decode_line(r#"{"input_ids": [1]}"#, &bert()).unwrap_err();
        assert_eq!(missing.error.message, "field `attention_mask` is missing");
        let unknown = decode_line(
            r#"{"input_ids": [1], "attention_mask": [1], "token_type_ids": [0]}"#,
            &bert(),
        )
        .unwrap_err();
        assert_eq!(
            unknown.error.message,
            "unknown field `token_type_ids` (the handler takes `input_ids`, `attention_mask`)"
        );
        let bad =
            decode_line(r#"{"input_ids": [[1]], "attention_mask": [1]}"#, &bert()).unwrap_err();
        assert_eq!(
            bad.error.message,
            "field `input_ids`: expected a tensor of shape [?], got [1, 1]"
        );
        assert!(
            decode_line("[1, 2]", &bert())
                .unwrap_err()
                .error
                .message
                .starts_with(
                    "expected an object with the fields `input_ids`, `attention_mask`, got"
                )
        );
    }

    #[test]
    fn plain_and_keyed_lines() {
        let d = decode_line("[5.1, 3.5, 1.4, 0.2]", &iris()).unwrap();
        assert!(d.key.is_none());
        assert!(matches!(&d.value, Value::Tensor(t) if t.shape() == [4]));
        let line = r#"{"key": "a", "example": [5.1, 3.5, 1.4, 0.2]}"#;
        let d = decode_line(line, &iris()).unwrap();
        assert_eq!(d.key, Some((8..11, serde_json::json!("a"))));
        // The example is echoed as it was written, spaces and all.
        assert_eq!(&line[d.example], "[5.1, 3.5, 1.4, 0.2]");
        let Value::Tensor(t) = d.value else {
            panic!("a tensor expected")
        };
        assert_eq!(t.to_f32(), [5.1, 3.5, 1.4, 0.2]);
    }

    #[test]
    fn bad_lines_say_why_and_keep_their_key() {
        let e = decode_line("[1, 2, 3]", &iris()).unwrap_err();
        assert_eq!(e.error.message, "expected a tensor of shape [4], got [3]");
        let e = decode_line(r#"{"key": 7, "example": [1, "x", 3, 4]}"#, &iris()).unwrap_err();
        assert_eq!(e.key, Some(8..9));
        assert!(e.error.message.contains("at [1]"), "{}", e.error.message);
        let e = decode_line("{oops", &iris()).unwrap_err();
        assert!(
            e.error.message.starts_with("not JSON"),
            "{}",
            e.error.message
        );
        assert_eq!(
            decode_line("  ", &iris()).unwrap_err().error.message,
            "empty line"
        );
        assert_eq!(e.error.code, ErrorCode::InvalidInput);
    }

    #[test]
    fn text_json_and_bytes_examples() {
        assert!(
            matches!(decode_line("\"hi\"", &ValueKind::Text).unwrap().value, Value::Text(t) if t == "hi")
        );
        assert!(decode_line("3", &ValueKind::Text).is_err());
        assert!(matches!(
            decode_line(r#"{"a": 1}"#, &ValueKind::Json).unwrap().value,
            Value::Json(raw) if raw.get() == r#"{"a":1}"#
        ));
        assert!(
            matches!(decode_line("\"aGk=\"", &ValueKind::Bytes).unwrap().value, Value::Bytes(b) if b == b"hi")
        );
        assert!(decode_line("\"***\"", &ValueKind::Bytes).is_err());
    }
}
