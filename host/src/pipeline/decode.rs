//! Decoding one input line into an optional key and an example value, natively in the
//! host, according to the handler's declared input kind.

use crate::contract::InputKind;
use crate::error::{ErrorCode, InferenceError};
use crate::tensor::{Tensor, json_kind};
use crate::value::Value;
use base64::Engine as _;
use serde_json::value::RawValue;

/// A decoded input line.
#[derive(Debug)]
pub struct Decoded {
    /// The key, for `{"key": ..., "example": ...}` lines.
    pub key: Option<serde_json::Value>,
    /// The example as it was written (echoed in the prediction).
    pub example: serde_json::Value,
    /// The example as the handler receives it.
    pub value: Value,
}

/// A line that could not be decoded; the key is kept when it was readable.
#[derive(Debug)]
pub struct DecodeError {
    /// The key, if the line was keyed.
    pub key: Option<serde_json::Value>,
    /// Why.
    pub error: InferenceError,
}

fn invalid(key: Option<serde_json::Value>, message: String) -> DecodeError {
    DecodeError {
        key,
        error: InferenceError::new(ErrorCode::InvalidInput, message),
    }
}

/// Decodes one JSONL line. A line is keyed when it is an object with exactly the two
/// fields `key` and `example`; anything else is an example.
pub fn decode_line(line: &str, input: &InputKind) -> Result<Decoded, DecodeError> {
    if line.trim().is_empty() {
        return Err(invalid(None, "empty line".into()));
    }
    let parsed: serde_json::Value =
        serde_json::from_str(line).map_err(|e| invalid(None, format!("not JSON: {e}")))?;
    let (key, example) = match parsed {
        serde_json::Value::Object(mut map)
            if map.len() == 2 && map.contains_key("key") && map.contains_key("example") =>
        {
            let example = map.remove("example").expect("checked");
            (map.remove("key"), example)
        }
        other => (None, other),
    };
    match decode_example(&example, input) {
        Ok(value) => Ok(Decoded {
            key,
            example,
            value,
        }),
        Err(message) => Err(invalid(key, message)),
    }
}

/// Checks an example tensor against the handler's declared shape (`None` dims are free).
pub fn check_shape(tensor: &Tensor, want: Option<&[Option<u64>]>) -> Result<(), String> {
    let Some(want) = want else {
        return Ok(());
    };
    let fits = want.len() == tensor.shape().len()
        && want
            .iter()
            .zip(tensor.shape())
            .all(|(w, &g)| w.is_none_or(|w| w == g as u64));
    if fits {
        return Ok(());
    }
    let want: Vec<String> = want
        .iter()
        .map(|d| d.map_or("?".into(), |d| d.to_string()))
        .collect();
    Err(format!(
        "expected a tensor of shape [{}], got {:?}",
        want.join(", "),
        tensor.shape()
    ))
}

/// Decodes one example that came as raw bytes (an element of an Open Inference
/// Protocol `BYTES` tensor) for a handler that takes bytes, text or JSON: the same
/// kinds as [`decode_example`], from the raw form instead of a JSON value.
pub fn decode_element(element: Vec<u8>, input: &InputKind) -> Result<Value, String> {
    match input {
        InputKind::Bytes => Ok(Value::Bytes(element)),
        InputKind::Text | InputKind::Json => {
            let text = String::from_utf8(element)
                .map_err(|_| "a BYTES element is not UTF-8".to_string())?;
            if matches!(input, InputKind::Text) {
                Ok(Value::Text(text))
            } else {
                RawValue::from_string(text)
                    .map(Value::Json)
                    .map_err(|e| format!("not JSON: {e}"))
            }
        }
        InputKind::Tensor { .. } => Err("a tensor input takes numbers, not BYTES".into()),
    }
}

/// Decodes one example for a handler that takes `input`.
pub fn decode_example(example: &serde_json::Value, input: &InputKind) -> Result<Value, String> {
    match input {
        InputKind::Tensor { dtype, shape } => {
            let tensor = Tensor::from_json(example, *dtype).map_err(|e| e.to_string())?;
            check_shape(&tensor, shape.as_deref())?;
            Ok(Value::Tensor(tensor))
        }
        InputKind::Json => RawValue::from_string(example.to_string())
            .map(Value::Json)
            .map_err(|e| e.to_string()),
        InputKind::Text => match example {
            serde_json::Value::String(s) => Ok(Value::Text(s.clone())),
            other => Err(format!("expected a JSON string, got {}", json_kind(other))),
        },
        InputKind::Bytes => match example {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::DType;

    fn iris() -> InputKind {
        InputKind::Tensor {
            dtype: DType::F32,
            shape: Some(vec![Some(4)]),
        }
    }

    #[test]
    fn plain_and_keyed_lines() {
        let d = decode_line("[5.1, 3.5, 1.4, 0.2]", &iris()).unwrap();
        assert!(d.key.is_none());
        assert!(matches!(&d.value, Value::Tensor(t) if t.shape() == [4]));
        let d = decode_line(r#"{"key": "a", "example": [5.1, 3.5, 1.4, 0.2]}"#, &iris()).unwrap();
        assert_eq!(d.key, Some(serde_json::json!("a")));
        assert_eq!(d.example, serde_json::json!([5.1, 3.5, 1.4, 0.2]));
    }

    #[test]
    fn bad_lines_say_why_and_keep_their_key() {
        let e = decode_line("[1, 2, 3]", &iris()).unwrap_err();
        assert_eq!(e.error.message, "expected a tensor of shape [4], got [3]");
        let e = decode_line(r#"{"key": 7, "example": [1, "x", 3, 4]}"#, &iris()).unwrap_err();
        assert_eq!(e.key, Some(serde_json::json!(7)));
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
            matches!(decode_line("\"hi\"", &InputKind::Text).unwrap().value, Value::Text(t) if t == "hi")
        );
        assert!(decode_line("3", &InputKind::Text).is_err());
        assert!(matches!(
            decode_line(r#"{"a": 1}"#, &InputKind::Json).unwrap().value,
            Value::Json(raw) if raw.get() == r#"{"a":1}"#
        ));
        assert!(
            matches!(decode_line("\"aGk=\"", &InputKind::Bytes).unwrap().value, Value::Bytes(b) if b == b"hi")
        );
        assert!(decode_line("\"***\"", &InputKind::Bytes).is_err());
    }
}
