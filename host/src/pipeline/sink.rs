//! Where results go: one JSONL prediction per successful example (Beam's
//! `PredictionResult`), one JSONL dead letter per failed line, with the reason.

use crate::error::InferenceError;
use crate::pipeline::dispatch::Output;
use crate::value::Value;
use serde::Serialize;
use std::io::Write;

/// One prediction line: `{"key"?, "example", "inference", "model_id"}`.
#[derive(Serialize)]
pub struct Prediction<'a> {
    /// The key of a keyed input line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<&'a serde_json::Value>,
    /// The example as it was given.
    pub example: &'a serde_json::Value,
    /// The handler's inference.
    pub inference: &'a Value,
    /// The model(s) that produced it (comma-separated), or `null` for handlers that
    /// ran no model.
    pub model_id: Option<&'a str>,
}

/// Which stage a line failed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The line could not be decoded into an example.
    Decode,
    /// The batch holding the example failed in the handler.
    Inference,
}

/// One dead-letter line.
#[derive(Serialize)]
pub struct DeadLetter<'a> {
    /// 1-based input line number.
    pub line: u64,
    /// The key, when the line was keyed and the key readable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<&'a serde_json::Value>,
    /// The input line as read (invalid UTF-8 replaced).
    pub input: &'a str,
    /// Where it failed.
    pub stage: Stage,
    /// Error code and message.
    pub error: &'a InferenceError,
    /// The model(s) involved, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_id: Option<&'a str>,
}

/// Writes one value as a JSON line.
pub fn write_line(out: &mut (impl Write + ?Sized), value: &impl Serialize) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")
}

/// One input line's end, paired back with its key and example: its prediction, or
/// its dead letter with the reason (stage `decode` when there is no example).
pub struct LineEnd<'a> {
    /// 1-based input line number.
    pub line: u64,
    /// The input line as read.
    pub input: &'a str,
    /// The key of a keyed line.
    pub key: Option<&'a serde_json::Value>,
    /// The example, if the line decoded.
    pub example: Option<&'a serde_json::Value>,
}

impl LineEnd<'_> {
    /// Writes the prediction or the dead letter; returns whether it was a prediction.
    pub fn write(
        &self,
        result: &Result<Output, (InferenceError, Option<String>)>,
        predictions: &mut (impl Write + ?Sized),
        dead_letters: &mut (impl Write + ?Sized),
    ) -> std::io::Result<bool> {
        match (result, self.example) {
            (Ok(output), Some(example)) => {
                write_line(
                    predictions,
                    &Prediction {
                        key: self.key,
                        example,
                        inference: &output.value,
                        model_id: output.model_id.as_deref(),
                    },
                )?;
                Ok(true)
            }
            (Ok(_), None) => unreachable!("only a decoded example has an output"),
            (Err((error, model_id)), example) => {
                write_line(
                    dead_letters,
                    &DeadLetter {
                        line: self.line,
                        key: self.key,
                        input: self.input,
                        stage: if example.is_some() {
                            Stage::Inference
                        } else {
                            Stage::Decode
                        },
                        error,
                        model_id: model_id.as_deref(),
                    },
                )?;
                Ok(false)
            }
        }
    }
}
