//! The `run` job: JSONL examples in, JSONL predictions and dead letters out.
//!
//! A reader thread reads lines; each is decoded and submitted to the plugin's
//! [`Dispatcher`] (dynamic batching, parallel instances); results are written in
//! input order. Every input line ends as exactly one prediction or one dead letter,
//! unless the run is stopped by `max_failure_ratio`.

use crate::error::{ErrorCode, InferenceError};
use crate::frontends::watch::PluginRoot;
use crate::manifest::BatchingConfig;
use crate::pipeline::batch::BatchPolicy;
use crate::pipeline::decode::decode_line;
use crate::pipeline::dispatch::{DispatchOptions, Dispatcher, Reply, settle};
use crate::pipeline::sink::LineEnd;
use crate::plugin::Plugin;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Options of a run.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct RunOptions {
    /// Overrides of the plugin's batching.
    pub batching: BatchingConfig,
    /// Adaptive batch sizing toward this latency per batch.
    pub adaptive_batch_latency: Option<Duration>,
    /// Batches run at once (default: the plugin's `[limits] instances`).
    pub instances: Option<usize>,
    /// Beam's `inference_args`, passed to every `run-inference` call.
    pub inference_args: Vec<(String, String)>,
    /// Stop when more than this fraction of the lines failed (checked from the
    /// 100th line on, and at the end).
    pub max_failure_ratio: Option<f64>,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct RunSummary {
    /// Input lines read and accounted for.
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
    /// Why the run stopped early (`max_failure_ratio`), if it did.
    pub stopped: Option<String>,
}

/// Lines checked before `max_failure_ratio` may stop a run.
pub const FAILURE_RATIO_MIN_LINES: u64 = 100;

enum Outcome {
    Decoded {
        key: Option<serde_json::Value>,
        example: serde_json::Value,
        reply: Reply,
    },
    Undecodable {
        key: Option<serde_json::Value>,
        error: InferenceError,
    },
    ReadError(std::io::Error),
}

struct Pending {
    line: u64,
    input: String,
    outcome: Outcome,
}

/// The dispatcher options a run uses for `plugin`.
pub fn dispatch_options(plugin: &Plugin, options: &RunOptions) -> DispatchOptions {
    let batching = plugin.batching(&options.batching);
    let instances = options
        .instances
        .unwrap_or_else(|| plugin.max_instances())
        .max(1);
    DispatchOptions {
        policy: BatchPolicy {
            min_batch_size: batching.min_batch_size,
            max_batch_size: batching.max_batch_size,
            max_batch_duration: batching.max_batch_duration,
            adaptive_target: options.adaptive_batch_latency,
        },
        instances,
        queue_capacity: plugin.manifest().limits.queue_size.map_or(
            batching
                .max_batch_size
                .saturating_mul(instances)
                .saturating_mul(2)
                .clamp(1024, crate::manifest::MAX_QUEUE_SIZE as usize),
            |q| q as usize,
        ),
        inference_args: options.inference_args.clone(),
    }
}

/// Runs every line of `input` through `plugin`, blocking (it starts its own tokio
/// runtime; from async code use [`run_async`]).
pub fn run_jsonl(
    plugin: &Arc<Plugin>,
    input: impl Read + Send + 'static,
    predictions: &mut (impl Write + Send),
    dead_letters: &mut (impl Write + Send),
    options: &RunOptions,
) -> std::io::Result<RunSummary> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let dispatcher = Dispatcher::new(plugin.clone(), dispatch_options(plugin, options))?;
        run_async(
            &dispatcher,
            Box::new(input),
            predictions,
            dead_letters,
            options,
        )
        .await
    })
}

/// Runs every line of `input` through `dispatcher`, and closes it at the end of the
/// input (so the last batches flush at once).
pub async fn run_async(
    dispatcher: &Arc<Dispatcher>,
    input: Box<dyn Read + Send>,
    predictions: &mut (impl Write + Send + ?Sized),
    dead_letters: &mut (impl Write + Send + ?Sized),
    options: &RunOptions,
) -> std::io::Result<RunSummary> {
    let fixed = dispatcher.clone();
    let source: Source = Arc::new(move || Ok(fixed.clone()));
    let summary = run_from(source, input, predictions, dead_letters, options).await?;
    dispatcher.close();
    Ok(RunSummary {
        batches: dispatcher.batch_counts().0,
        failed_batches: dispatcher.batch_counts().1,
        ..summary
    })
}

/// Runs every line of `input` through the plugin `name` of a watched plugin root:
/// each chunk of lines goes to the version live at that moment, so a plugin or model
/// swapped in while the input streams is used from then on, and lines already
/// submitted finish on the old one. Lines that arrive while the plugin is not live
/// are dead letters.
pub async fn run_watched(
    root: &Arc<PluginRoot>,
    name: &str,
    input: Box<dyn Read + Send>,
    predictions: &mut (impl Write + Send + ?Sized),
    dead_letters: &mut (impl Write + Send + ?Sized),
    options: &RunOptions,
) -> std::io::Result<RunSummary> {
    let (root, name) = (root.clone(), name.to_string());
    let source: Source = Arc::new(move || {
        root.get(&name)
            .map(|live| live.dispatcher.clone())
            .ok_or_else(|| {
                InferenceError::new(ErrorCode::Internal, format!("plugin `{name}` is not live"))
            })
    });
    run_from(source, input, predictions, dead_letters, options).await
}

/// Where lines are submitted: the dispatcher in force now.
type Source = Arc<dyn Fn() -> Result<Arc<Dispatcher>, InferenceError> + Send + Sync>;

async fn run_from(
    source: Source,
    input: Box<dyn Read + Send>,
    predictions: &mut (impl Write + Send + ?Sized),
    dead_letters: &mut (impl Write + Send + ?Sized),
    options: &RunOptions,
) -> std::io::Result<RunSummary> {
    let start = Instant::now();
    let ahead = source().map_or(1024, |d| d.options().queue_capacity.max(1024));
    let (line_tx, line_rx) = mpsc::channel(256);
    let reader = tokio::task::spawn_blocking(move || read_lines(input, line_tx));
    let (pending_tx, mut pending_rx) = mpsc::channel(ahead);
    let submitter = tokio::spawn(submit_lines(source, line_rx, pending_tx));

    let progress = progress_bar(options.progress);
    let mut summary = RunSummary::default();
    let mut read_error = None;
    while let Some(pending) = pending_rx.recv().await {
        let Pending {
            line,
            input,
            outcome,
        } = pending;
        let (key, example, result) = match outcome {
            Outcome::ReadError(e) => {
                read_error = Some(e);
                break;
            }
            Outcome::Undecodable { key, error } => {
                summary.decode_failures += 1;
                (key, None, Err((error, None)))
            }
            Outcome::Decoded {
                key,
                example,
                reply,
            } => {
                let result = settle(reply)
                    .await
                    .map_err(|failure| (failure.error, failure.model_id));
                (key, Some(example), result)
            }
        };
        summary.lines += 1;
        let end = LineEnd {
            line,
            input: &input,
            key: key.as_ref(),
            example: example.as_ref(),
        };
        if end.write(&result, predictions, dead_letters)? {
            summary.predictions += 1;
        } else {
            summary.dead_letters += 1;
        }
        progress.inc(1);
        // Streaming input (`tail -F events.jsonl | runinfer run`): results reach the
        // reader as soon as nothing else is ready, not when a buffer fills.
        if pending_rx.is_empty() {
            predictions.flush()?;
            dead_letters.flush()?;
        }
        if summary.lines >= FAILURE_RATIO_MIN_LINES
            && let Some(reason) = ratio_exceeded(&summary, options.max_failure_ratio)
        {
            summary.stopped = Some(reason);
            break;
        }
    }
    progress.finish_and_clear();
    // Stops the submitter and the reader if the run stopped early.
    drop(pending_rx);
    let _ = submitter.await;
    let _ = reader.await;
    if let Some(e) = read_error {
        return Err(e);
    }
    if summary.stopped.is_none() {
        summary.stopped = ratio_exceeded(&summary, options.max_failure_ratio);
    }
    predictions.flush()?;
    dead_letters.flush()?;
    summary.elapsed = start.elapsed();
    Ok(summary)
}

fn ratio_exceeded(summary: &RunSummary, max: Option<f64>) -> Option<String> {
    let max = max?;
    let ratio = summary.dead_letters as f64 / summary.lines.max(1) as f64;
    (ratio > max).then(|| {
        format!(
            "{} of {} lines failed ({:.1}%), more than the allowed {:.1}%",
            summary.dead_letters,
            summary.lines,
            ratio * 100.0,
            max * 100.0
        )
    })
}

/// Lines sent to the decoder in one message, at most.
const CHUNK_LINES: usize = 256;

/// Reads lines and sends them in chunks: a chunk grows while further complete lines
/// are already buffered (a file), and goes out at once when the next read would wait
/// (an interactive pipe), so batching never waits on the reader.
fn read_lines(input: Box<dyn Read + Send>, tx: mpsc::Sender<std::io::Result<Vec<Vec<u8>>>>) {
    let mut input = BufReader::with_capacity(256 * 1024, input);
    let mut chunk = Vec::with_capacity(CHUNK_LINES);
    loop {
        let mut buf = Vec::new();
        match input.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => chunk.push(buf),
            Err(e) => {
                let _ = tx.blocking_send(Ok(std::mem::take(&mut chunk)));
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
        if chunk.len() >= CHUNK_LINES || !input.buffer().contains(&b'\n') {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_LINES));
            if tx.blocking_send(Ok(full)).is_err() {
                return;
            }
        }
    }
    if !chunk.is_empty() {
        let _ = tx.blocking_send(Ok(chunk));
    }
}

async fn submit_lines(
    source: Source,
    mut chunks: mpsc::Receiver<std::io::Result<Vec<Vec<u8>>>>,
    pending: mpsc::Sender<Pending>,
) {
    let mut number = 0;
    while let Some(chunk) = chunks.recv().await {
        // The version of the plugin in force for this chunk.
        let current = source().map(|d| {
            let kind = d.plugin().info().signature.inputs.clone();
            (d, kind)
        });
        let lines = match chunk {
            Ok(lines) => lines,
            Err(e) => {
                let _ = pending
                    .send(Pending {
                        line: number,
                        input: String::new(),
                        outcome: Outcome::ReadError(e),
                    })
                    .await;
                return;
            }
        };
        for buf in lines {
            number += 1;
            // A line that is not UTF-8 is dead-lettered, not a reason to stop.
            let input = String::from_utf8_lossy(&buf)
                .trim_end_matches(['\n', '\r'])
                .to_string();
            let outcome = match &current {
                Err(error) => Outcome::Undecodable {
                    key: None,
                    error: error.clone(),
                },
                Ok((dispatcher, kind)) => match decode_line(&input, kind) {
                    Ok(decoded) => {
                        let reply = dispatcher.submit(decoded.key.as_ref(), decoded.value).await;
                        Outcome::Decoded {
                            key: decoded.key,
                            example: decoded.example,
                            reply,
                        }
                    }
                    Err(failure) => Outcome::Undecodable {
                        key: failure.key,
                        error: failure.error,
                    },
                },
            };
            let pending_line = Pending {
                line: number,
                input,
                outcome,
            };
            if pending.send(pending_line).await.is_err() {
                return;
            }
        }
    }
    // End of input: flush what is queued without waiting for batch timers.
    if let Ok(dispatcher) = source() {
        dispatcher.close();
    }
}

fn progress_bar(show: bool) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {human_pos} lines  {per_sec}  {elapsed}",
        )
        .expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
