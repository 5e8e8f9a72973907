//! Where results go: one JSONL prediction per successful example (Beam's
//! `PredictionResult`), one JSONL dead letter per failed line, with the reason.

use crate::error::InferenceError;
use crate::pipeline::dispatch::{Failure, Output};
use crate::value::Value;
use serde::Serialize;
use serde_json::value::RawValue;
use std::io::Write;

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
    pub key: Option<&'a RawValue>,
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

/// How an input line ended, before it is written.
#[derive(Debug)]
pub enum Outcome {
    /// It could not be decoded into an example.
    Undecodable(InferenceError),
    /// Its example was answered: an inference or a failure.
    Answered(Result<Output, Failure>),
}

/// One input line's end, paired back with its key and example: its prediction, or
/// its dead letter with the reason (stage `decode` when there is no example).
pub struct LineEnd<'a> {
    /// 1-based input line number.
    pub line: u64,
    /// The input line as read.
    pub input: &'a str,
    /// The key of a keyed line, as written in it.
    pub key: Option<&'a str>,
    /// The example as written in the line, if the line decoded.
    pub example: Option<&'a str>,
}

impl LineEnd<'_> {
    /// Writes the prediction or the dead letter; returns whether it was a prediction.
    pub fn write(
        &self,
        outcome: &Outcome,
        predictions: &mut (impl Write + ?Sized),
        dead_letters: &mut (impl Write + ?Sized),
    ) -> std::io::Result<bool> {
        let (error, model_id) = match (outcome, self.example) {
            (Outcome::Answered(Ok(output)), Some(example)) => {
                write_prediction(
                    predictions,
                    self.key,
                    example,
                    &output.value,
                    output.model_id.as_deref(),
                )?;
                return Ok(true);
            }
            (Outcome::Answered(Ok(_)), None) => {
                unreachable!("only a decoded example has an output")
            }
            (Outcome::Answered(Err(failure)), _) => (&failure.error, failure.model_id.as_deref()),
            (Outcome::Undecodable(error), _) => (error, None),
        };
        write_line(
            dead_letters,
            &DeadLetter {
                line: self.line,
                // A key is a JSON value of the line: it parses again.
                key: self.key.and_then(|key| serde_json::from_str(key).ok()),
                input: self.input,
                stage: match outcome {
                    Outcome::Undecodable(_) => Stage::Decode,
                    Outcome::Answered(_) => Stage::Inference,
                },
                error,
                model_id,
            },
        )?;
        Ok(false)
    }
}

/// One prediction line, Beam's `PredictionResult`: `{"key"?, "example", "inference",
/// "model_id"}`. The key and the example are JSON values cut from the input line,
/// written back as they were read (never re-serialised).
fn write_prediction(
    out: &mut (impl Write + ?Sized),
    key: Option<&str>,
    example: &str,
    inference: &Value,
    model_id: Option<&str>,
) -> std::io::Result<()> {
    out.write_all(b"{")?;
    if let Some(key) = key {
        out.write_all(b"\"key\":")?;
        out.write_all(key.as_bytes())?;
        out.write_all(b",")?;
    }
    out.write_all(b"\"example\":")?;
    out.write_all(example.as_bytes())?;
    out.write_all(b",\"inference\":")?;
    serde_json::to_writer(&mut *out, inference)?;
    out.write_all(b",\"model_id\":")?;
    serde_json::to_writer(&mut *out, &model_id)?;
    out.write_all(b"}\n")
}
