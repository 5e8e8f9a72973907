//! The `run` job: JSONL examples in, JSONL predictions and dead letters out.
//!
//! Every input line ends as exactly one prediction or one dead letter. Predictions
//! are written in input order.

use crate::decode::{Decoded, decode_line};
use crate::error::InferenceError;
use crate::manifest::BatchingConfig;
use crate::plugin::Plugin;
use crate::sink::{DeadLetter, Prediction, Stage, write_line};
use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

/// Options of a run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Overrides of the plugin's batching.
    pub batching: BatchingConfig,
    /// Beam's `inference_args`, passed to every `run-inference` call.
    pub inference_args: Vec<(String, String)>,
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct RunSummary {
    /// Input lines read.
    pub lines: u64,
    /// Predictions written.
    pub predictions: u64,
    /// Dead letters written (decode + inference).
    pub dead_letters: u64,
    /// Lines that could not be decoded.
    pub decode_failures: u64,
    /// Batches run.
    pub batches: u64,
    /// Batches that failed.
    pub failed_batches: u64,
    /// Wall time.
    pub elapsed: Duration,
}

struct Pending {
    line: u64,
    input: String,
    decoded: Decoded,
}

/// Runs every line of `input` through `plugin`.
pub fn run_jsonl(
    plugin: &Plugin,
    mut input: impl BufRead,
    predictions: &mut impl Write,
    dead_letters: &mut impl Write,
    options: &RunOptions,
) -> std::io::Result<RunSummary> {
    let start = Instant::now();
    let batching = plugin.batching(&options.batching);
    let input_kind = plugin.info().input.clone();
    let mut summary = RunSummary::default();
    let mut batch: Vec<Pending> = Vec::with_capacity(batching.max_batch_size);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        summary.lines += 1;
        // A line that is not UTF-8 is dead-lettered, not a reason to stop.
        let line = String::from_utf8_lossy(&buf)
            .trim_end_matches(['\n', '\r'])
            .to_string();
        match decode_line(&line, &input_kind) {
            Ok(decoded) => {
                batch.push(Pending {
                    line: summary.lines,
                    input: line,
                    decoded,
                });
                if batch.len() >= batching.max_batch_size {
                    flush(
                        plugin,
                        &mut batch,
                        predictions,
                        dead_letters,
                        options,
                        &mut summary,
                    )?;
                }
            }
            Err(failure) => {
                summary.decode_failures += 1;
                summary.dead_letters += 1;
                write_line(
                    dead_letters,
                    &DeadLetter {
                        line: summary.lines,
                        key: failure.key.as_ref(),
                        input: &line,
                        stage: Stage::Decode,
                        error: &failure.error,
                        model_id: None,
                    },
                )?;
            }
        }
    }
    flush(
        plugin,
        &mut batch,
        predictions,
        dead_letters,
        options,
        &mut summary,
    )?;
    predictions.flush()?;
    dead_letters.flush()?;
    summary.elapsed = start.elapsed();
    Ok(summary)
}

fn flush(
    plugin: &Plugin,
    batch: &mut Vec<Pending>,
    predictions: &mut impl Write,
    dead_letters: &mut impl Write,
    options: &RunOptions,
    summary: &mut RunSummary,
) -> std::io::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let mut pending = std::mem::take(batch);
    let values = pending
        .iter_mut()
        .map(|p| {
            std::mem::replace(
                &mut p.decoded.value,
                crate::value::Value::Text(String::new()),
            )
        })
        .collect();
    summary.batches += 1;
    match plugin.run_batch(values, &options.inference_args) {
        Ok(inferences) => {
            let model_id =
                (!inferences.model_ids.is_empty()).then(|| inferences.model_ids.join(","));
            for (p, inference) in pending.iter().zip(&inferences.values) {
                write_line(
                    predictions,
                    &Prediction {
                        key: p.decoded.key.as_ref(),
                        example: &p.decoded.example,
                        inference,
                        model_id: model_id.as_deref(),
                    },
                )?;
            }
            summary.predictions += pending.len() as u64;
        }
        Err(error) => {
            summary.failed_batches += 1;
            // The call failed, so which model it ran is unknown: name the granted ones.
            let ids: Vec<&str> = plugin.models().map(|m| m.id.as_str()).collect();
            let model_id = (!ids.is_empty()).then(|| ids.join(","));
            write_failed_batch(&pending, &error, model_id.as_deref(), dead_letters, summary)?;
        }
    }
    Ok(())
}

fn write_failed_batch(
    pending: &[Pending],
    error: &InferenceError,
    model_id: Option<&str>,
    dead_letters: &mut impl Write,
    summary: &mut RunSummary,
) -> std::io::Result<()> {
    for p in pending {
        write_line(
            dead_letters,
            &DeadLetter {
                line: p.line,
                key: p.decoded.key.as_ref(),
                input: &p.input,
                stage: Stage::Inference,
                error,
                model_id,
            },
        )?;
    }
    summary.dead_letters += pending.len() as u64;
    Ok(())
}
