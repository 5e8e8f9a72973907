//! What a handler declares through the contract, as the host holds it: `init`'s
//! handler info (namespace, Beam's batching kwargs, resource hints) and the typed
//! signature that `signature` returns after each `load-model`. Every stage reads it:
//! decoding by the input kind, the sandbox checking each inference against the output
//! kind, serving describing both. It depends only on the manifest's batching type and
//! on tensors, so the first stage (decoding) depends on it, not on the sandbox.

use crate::manifest::BatchingConfig;
use crate::tensor::{DType, MAX_RANK, Tensor};
use crate::untrusted::{self, Refused};
use crate::value::{Field, Value};

/// The contract version this host implements (`package runinfer:handler@...`).
pub const CONTRACT_VERSION: &str = "0.2.0";

/// Most named fields an example or an inference may declare.
pub const MAX_FIELDS: usize = 256;

/// Longest field name, in bytes.
pub const MAX_FIELD_NAME: usize = 128;

/// Beam's handler description, as the handler's `init` returned it, with the
/// signature of its last `load-model`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct HandlerInfo {
    /// The handler's metrics namespace, if it names one.
    pub metrics_namespace: Option<String>,
    /// The handler's batching kwargs.
    pub batching: BatchingConfig,
    /// Minimum memory, in MiB, the handler asks for.
    pub min_ram_mb: Option<u64>,
    /// Accelerator the handler asks for.
    pub accelerator: Option<String>,
    /// What each example and each inference is.
    pub signature: Signature,
}

/// A handler's typed signature.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Signature {
    /// What one example is; the host decodes by it.
    pub inputs: ValueKind,
    /// What one inference is; the host checks every inference against it.
    pub outputs: ValueKind,
}

/// What one example or one inference is.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum ValueKind {
    /// One tensor (a nested JSON array).
    Tensor(TensorSpec),
    /// Named fields (a JSON object with one member per field).
    Fields {
        /// The fields, in declared order.
        fields: Vec<FieldSpec>,
    },
    /// Any JSON value.
    Json,
    /// A string.
    Text,
    /// Raw bytes (base64 in JSON).
    Bytes,
}

/// Dtype and shape of a tensor.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TensorSpec {
    /// Element type.
    pub dtype: DType,
    /// Shape of one example (`None` = free dimension); `None` = any rank.
    pub shape: Option<Vec<Option<u64>>>,
}

/// One named field of an example or an inference.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FieldSpec {
    /// The field's name (a model input or output name).
    pub name: String,
    /// What it holds.
    #[serde(flatten)]
    pub kind: FieldKind,
}

/// What a named field holds.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum FieldKind {
    /// A tensor.
    Tensor(TensorSpec),
    /// A string.
    Text,
}

impl TensorSpec {
    /// Checks a tensor against the spec (`None` dimensions are free).
    pub fn check(&self, tensor: &Tensor) -> Result<(), String> {
        if tensor.dtype() != self.dtype {
            return Err(format!(
                "expected dtype {}, got {}",
                self.dtype.name(),
                tensor.dtype().name()
            ));
        }
        self.check_shape(tensor.shape())
    }

    /// Checks a shape against the spec.
    pub fn check_shape(&self, shape: &[usize]) -> Result<(), String> {
        let Some(want) = &self.shape else {
            return Ok(());
        };
        let fits = want.len() == shape.len()
            && want
                .iter()
                .zip(shape)
                .all(|(w, &g)| w.is_none_or(|w| w == g as u64));
        if fits {
            return Ok(());
        }
        Err(format!(
            "expected a tensor of shape {}, got {shape:?}",
            shape_text(want)
        ))
    }

    fn validate(&self, what: &str) -> Result<(), Refused> {
        match &self.shape {
            Some(shape) if shape.len() > MAX_RANK => Err(Refused(format!(
                "{what} has {} dimensions, more than {MAX_RANK}",
                shape.len()
            ))),
            _ => Ok(()),
        }
    }
}

/// `[4, ?]`: a declared shape as people read it.
pub fn shape_text(shape: &[Option<u64>]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|d| d.map_or("?".into(), |d| d.to_string()))
        .collect();
    format!("[{}]", dims.join(", "))
}

impl FieldKind {
    fn check(&self, field: &Field) -> Result<(), String> {
        match (self, field) {
            (FieldKind::Tensor(spec), Field::Tensor(t)) => spec.check(t),
            (FieldKind::Text, Field::Text(_)) => Ok(()),
            (FieldKind::Tensor(_), Field::Text(_)) => Err("expected a tensor, got text".into()),
            (FieldKind::Text, Field::Tensor(_)) => Err("expected text, got a tensor".into()),
        }
    }
}

/// What one tensor of a request or a response holds (see [`ValueKind::tensors`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TensorPart<'a> {
    /// A numeric tensor.
    Tensor(&'a TensorSpec),
    /// One string per example (a text field, or a text value).
    Text,
    /// One JSON document per example.
    Json,
    /// One byte string per example.
    Bytes,
}

impl ValueKind {
    /// The protocol tensors a value travels as (Open Inference Protocol, Triton):
    /// one per field, or one named `unnamed` for every other kind.
    pub fn tensors<'a>(&'a self, unnamed: &'a str) -> Vec<(&'a str, TensorPart<'a>)> {
        match self {
            ValueKind::Tensor(spec) => vec![(unnamed, TensorPart::Tensor(spec))],
            ValueKind::Fields { fields } => fields
                .iter()
                .map(|f| match &f.kind {
                    FieldKind::Tensor(spec) => (f.name.as_str(), TensorPart::Tensor(spec)),
                    FieldKind::Text => (f.name.as_str(), TensorPart::Text),
                })
                .collect(),
            ValueKind::Json => vec![(unnamed, TensorPart::Json)],
            ValueKind::Text => vec![(unnamed, TensorPart::Text)],
            ValueKind::Bytes => vec![(unnamed, TensorPart::Bytes)],
        }
    }

    /// The kind's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            ValueKind::Tensor(_) => "tensor",
            ValueKind::Fields { .. } => "fields",
            ValueKind::Json => "json",
            ValueKind::Text => "text",
            ValueKind::Bytes => "bytes",
        }
    }

    /// Checks a value against the kind: the same variant, every declared field
    /// present once with its dtype and shape, no other field. The message names the
    /// field and the difference.
    pub fn check(&self, value: &Value) -> Result<(), String> {
        match (self, value) {
            (ValueKind::Tensor(spec), Value::Tensor(t)) => spec.check(t),
            (ValueKind::Fields { fields }, Value::Fields(got)) => {
                for spec in fields {
                    let field = got
                        .iter()
                        .find(|(name, _)| *name == spec.name)
                        .ok_or_else(|| format!("field `{}` is missing", spec.name))?;
                    spec.kind
                        .check(&field.1)
                        .map_err(|e| format!("field `{}`: {e}", spec.name))?;
                }
                if let Some((name, _)) = got
                    .iter()
                    .find(|(name, _)| !fields.iter().any(|f| f.name == *name))
                {
                    return Err(format!(
                        "field `{}` is not declared (declared: {})",
                        untrusted::guest_text(name),
                        fields
                            .iter()
                            .map(|f| f.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                Ok(())
            }
            (ValueKind::Json, Value::Json(_))
            | (ValueKind::Text, Value::Text(_))
            | (ValueKind::Bytes, Value::Bytes(_)) => Ok(()),
            (want, got) => Err(format!("expected {}, got {}", want.name(), got.kind())),
        }
    }

    /// Refuses what the host cannot act on: too many fields, empty, duplicate, overlong
    /// or unprintable names, shapes past the host's rank.
    fn validate(&self, what: &str) -> Result<(), Refused> {
        match self {
            ValueKind::Tensor(spec) => spec.validate(what),
            ValueKind::Fields { fields } => {
                if fields.is_empty() || fields.len() > MAX_FIELDS {
                    return Err(Refused(format!(
                        "{what} declares {} fields; 1 to {MAX_FIELDS} are allowed",
                        fields.len()
                    )));
                }
                let mut seen = std::collections::HashSet::new();
                for field in fields {
                    let name = &field.name;
                    if name.is_empty()
                        || name.len() > MAX_FIELD_NAME
                        || untrusted::escape_control(name) != name.as_str()
                    {
                        return Err(Refused(format!(
                            "{what}: field name \"{}\" must be 1 to {MAX_FIELD_NAME} printable bytes",
                            untrusted::guest_text(name)
                        )));
                    }
                    if !seen.insert(name.as_str()) {
                        return Err(Refused(format!("{what} declares field `{name}` twice")));
                    }
                    if let FieldKind::Tensor(spec) = &field.kind {
                        spec.validate(&format!("{what}: field `{name}`"))?;
                    }
                }
                Ok(())
            }
            ValueKind::Json | ValueKind::Text | ValueKind::Bytes => Ok(()),
        }
    }
}

impl Signature {
    /// Refuses a signature the host cannot act on (see [`ValueKind`]'s rules).
    pub fn validate(&self) -> Result<(), Refused> {
        self.inputs.validate("the handler's signature: inputs")?;
        self.outputs.validate("the handler's signature: outputs")
    }
}

impl std::fmt::Display for ValueKind {
    /// `fields(input_ids: i64 [?], attention_mask: i64 [?])`, `tensor(f32 [4])`, `json`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn spec(spec: &TensorSpec) -> String {
            match &spec.shape {
                Some(shape) => format!("{} {}", spec.dtype.name(), shape_text(shape)),
                None => format!("{} [any rank]", spec.dtype.name()),
            }
        }
        match self {
            ValueKind::Tensor(s) => write!(f, "tensor({})", spec(s)),
            ValueKind::Fields { fields } => {
                let parts: Vec<String> = fields
                    .iter()
                    .map(|field| match &field.kind {
                        FieldKind::Tensor(s) => format!("{}: {}", field.name, spec(s)),
                        FieldKind::Text => format!("{}: text", field.name),
                    })
                    .collect();
                write!(f, "fields({})", parts.join(", "))
            }
            other => f.write_str(other.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(list: &[(&str, FieldKind)]) -> ValueKind {
        ValueKind::Fields {
            fields: list
                .iter()
                .map(|(name, kind)| FieldSpec {
                    name: name.to_string(),
                    kind: kind.clone(),
                })
                .collect(),
        }
    }

    fn f32_spec(shape: &[Option<u64>]) -> FieldKind {
        FieldKind::Tensor(TensorSpec {
            dtype: DType::F32,
            shape: Some(shape.to_vec()),
        })
    }

    fn tensor(dtype: DType, shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor::from_bytes(dtype, shape.to_vec(), vec![0; n * dtype.size()]).unwrap()
    }

    #[test]
    fn inferences_are_checked_field_by_field() {
        let kind = fields(&[("label", FieldKind::Text), ("p", f32_spec(&[Some(3)]))]);
        let good = Value::Fields(vec![
            ("p".into(), Field::Tensor(tensor(DType::F32, &[3]))),
            ("label".into(), Field::Text("setosa".into())),
        ]);
        assert_eq!(kind.check(&good), Ok(()));
        let missing = Value::Fields(vec![("label".into(), Field::Text("x".into()))]);
        assert_eq!(kind.check(&missing).unwrap_err(), "field `p` is missing");
        let dtype = Value::Fields(vec![
            ("label".into(), Field::Text("x".into())),
            ("p".into(), Field::Tensor(tensor(DType::F64, &[3]))),
        ]);
        assert_eq!(
            kind.check(&dtype).unwrap_err(),
            "field `p`: expected dtype f32, got f64"
        );
        let shape = Value::Fields(vec![
            ("label".into(), Field::Text("x".into())),
            ("p".into(), Field::Tensor(tensor(DType::F32, &[4]))),
        ]);
        assert_eq!(
            kind.check(&shape).unwrap_err(),
            "field `p`: expected a tensor of shape [3], got [4]"
        );
        let extra = Value::Fields(vec![
            ("label".into(), Field::Text("x".into())),
            ("p".into(), Field::Tensor(tensor(DType::F32, &[3]))),
            ("q".into(), Field::Text("x".into())),
        ]);
        assert_eq!(
            kind.check(&extra).unwrap_err(),
            "field `q` is not declared (declared: label, p)"
        );
        let wrong_kind = Value::Fields(vec![
            ("label".into(), Field::Tensor(tensor(DType::F32, &[]))),
            ("p".into(), Field::Tensor(tensor(DType::F32, &[3]))),
        ]);
        assert_eq!(
            kind.check(&wrong_kind).unwrap_err(),
            "field `label`: expected text, got a tensor"
        );
        assert_eq!(
            kind.check(&Value::Text("x".into())).unwrap_err(),
            "expected fields, got text"
        );
    }

    #[test]
    fn free_dimensions_and_any_rank() {
        let spec = TensorSpec {
            dtype: DType::I64,
            shape: Some(vec![None, Some(2)]),
        };
        assert!(spec.check(&tensor(DType::I64, &[7, 2])).is_ok());
        assert_eq!(
            spec.check(&tensor(DType::I64, &[7, 3])).unwrap_err(),
            "expected a tensor of shape [?, 2], got [7, 3]"
        );
        let any = TensorSpec {
            dtype: DType::I64,
            shape: None,
        };
        assert!(any.check(&tensor(DType::I64, &[1, 2, 3])).is_ok());
    }

    #[test]
    fn declarations_the_host_cannot_act_on_are_refused() {
        let twice = fields(&[("a", FieldKind::Text), ("a", FieldKind::Text)]);
        assert!(twice.validate("x").unwrap_err().0.contains("`a` twice"));
        assert!(fields(&[]).validate("x").is_err());
        assert!(fields(&[("", FieldKind::Text)]).validate("x").is_err());
        assert!(
            fields(&[("a\u{1b}[2J", FieldKind::Text)])
                .validate("x")
                .is_err()
        );
        let long = "n".repeat(MAX_FIELD_NAME + 1);
        assert!(fields(&[(&long, FieldKind::Text)]).validate("x").is_err());
        let deep = f32_spec(&vec![None; MAX_RANK + 1]);
        assert!(fields(&[("a", deep)]).validate("x").is_err());
        let ok = fields(&[("input_ids", f32_spec(&[None]))]);
        assert_eq!(ok.to_string(), "fields(input_ids: f32 [?])");
        assert!(ok.validate("x").is_ok());
    }
}
