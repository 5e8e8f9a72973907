//! The `run` job: JSONL examples in, JSONL predictions and dead letters out.
//!
//! A reader thread reads the input in chunks of lines, decodes them and queues their
//! examples on the plugin's [`Dispatcher`] (dynamic batching, parallel instances);
//! the results of a batch come back in one message, and the writer puts them in
//! input order. Every input line ends as exactly one prediction or one dead letter,
//! unless the run is stopped by `max_failure_ratio`.

use crate::error::{ErrorCode, InferenceError};
use crate::frontends::quota::{Pacer, TenantQuota};
use crate::frontends::watch::PluginRoot;
use crate::manifest::BatchingConfig;
use crate::pipeline::batch::BatchPolicy;
use crate::pipeline::decode::{Decoded, decode_line};
use crate::pipeline::dispatch::{Answers, DispatchOptions, Dispatcher};
use crate::pipeline::sink::{LineEnd, Outcome};
use crate::plugin::Plugin;
use crate::value::Value;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc};

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
    /// The plugin's tenant's quota (`--tenants`): a line is a request; the run waits
    /// for its rate and keeps at most `max_in_flight` lines in flight.
    pub tenant_quota: Option<TenantQuota>,
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

/// One input line between the reader and the writer.
struct Line {
    /// 1-based line number.
    number: u64,
    /// The line as read (invalid UTF-8 replaced, the line end removed).
    text: String,
    /// Where the key of a keyed line is in `text`.
    key: Option<Range<usize>>,
    /// Where the example is in `text`, if the line decoded.
    example: Option<Range<usize>>,
    /// How it ended; `None` while its example is queued or running.
    end: Option<Outcome>,
}

/// What the reader hands the writer.
enum Chunk {
    /// The next lines, in order; their examples are queued after this is sent.
    Lines(Vec<Line>),
    /// Reading failed: the run ends with this error once the lines before are written.
    Failed(std::io::Error),
}

/// Batches a run forms ahead per instance. Its queue is always full, so a batch
/// formed early is as large as one formed late; with one ahead (serving's choice) the
/// batcher and the worker woke each other once a batch: at batch size 1, iris ran
/// 35-39 k lines/s with 1, 63-67 k with 4 or 16 (`runinfer run iris`, 200 000
/// lines, 1 instance; batch 32 unchanged at ~505 k). With 16, the batcher forms 8
/// at a time (`DispatchOptions::batches_ahead`): see bench/RESULTS.md, "Fewer
/// wake-ups in `run`".
const RUN_BATCHES_AHEAD: usize = 16;

/// The dispatcher options for `plugin` with `options`' overrides, as serving uses
/// them (see [`run_dispatch_options`]).
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
        batches_ahead: 1,
    }
}

/// [`dispatch_options`] for a bulk job: 16 batches formed ahead per instance.
/// (Serving keeps one: a batch formed when a worker frees up takes in the requests
/// that arrived meanwhile.)
pub fn run_dispatch_options(plugin: &Plugin, options: &RunOptions) -> DispatchOptions {
    DispatchOptions {
        batches_ahead: RUN_BATCHES_AHEAD,
        ..dispatch_options(plugin, options)
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
        let dispatcher = Dispatcher::new(plugin.clone(), run_dispatch_options(plugin, options))?;
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
    let quota = options.tenant_quota.clone().unwrap_or_default();
    let ahead = source()
        .map_or(1024, |d| d.options().queue_capacity.max(1024))
        .min(quota.max_in_flight.map_or(usize::MAX, |max| max as usize));
    let pacer = quota.requests_per_sec.map(Pacer::new);
    // A chunk takes its permits and its turn at once.
    let chunk_lines = CHUNK_LINES
        .min(ahead)
        .min(pacer.as_ref().map_or(usize::MAX, Pacer::burst));
    // Lines read and not yet written: bounds what a run holds while one slow batch
    // keeps the lines after it waiting.
    let in_flight = Arc::new(Semaphore::new(ahead));
    let (lines_tx, mut lines_rx) = mpsc::channel(ahead.div_ceil(CHUNK_LINES).max(2));
    let (answers_tx, mut answers_rx) = mpsc::unbounded_channel::<Answers>();
    let reader = {
        let (source, in_flight) = (source.clone(), in_flight.clone());
        let runtime = tokio::runtime::Handle::current();
        let mut reader = Reader {
            source,
            lines: lines_tx,
            answers: answers_tx,
            in_flight,
            runtime,
            chunk_lines,
            pacer,
        };
        tokio::task::spawn_blocking(move || reader.read_lines(input))
    };

    let progress = progress_bar(options.progress);
    let mut summary = RunSummary::default();
    let mut read_error = None;
    let mut reading = true;
    let mut waiting: VecDeque<Line> = VecDeque::new();
    // The number of the line at the front of `waiting`.
    let mut front = 1u64;
    'run: loop {
        let mut written = 0;
        while let Some(line) = waiting.pop_front_if(|line| line.end.is_some()) {
            front += 1;
            written += 1;
            let outcome = line.end.as_ref().expect("popped because it ended");
            if matches!(outcome, Outcome::Undecodable(_)) {
                summary.decode_failures += 1;
            }
            let end = LineEnd {
                line: line.number,
                input: &line.text,
                key: line.key.clone().map(|at| &line.text[at]),
                example: line.example.clone().map(|at| &line.text[at]),
            };
            if end.write(outcome, predictions, dead_letters)? {
                summary.predictions += 1;
            } else {
                summary.dead_letters += 1;
            }
            summary.lines += 1;
            progress.inc(1);
            if summary.lines >= FAILURE_RATIO_MIN_LINES
                && let Some(reason) = ratio_exceeded(&summary, options.max_failure_ratio)
            {
                summary.stopped = Some(reason);
                break 'run;
            }
        }
        in_flight.add_permits(written);
        if !reading && waiting.is_empty() {
            break;
        }
        // Streaming input (`tail -F events.jsonl | runinfer run`): results reach the
        // reader as soon as nothing else is ready, not when a buffer fills.
        if written > 0 && lines_rx.is_empty() && answers_rx.is_empty() {
            predictions.flush()?;
            dead_letters.flush()?;
        }
        tokio::select! {
            chunk = lines_rx.recv(), if reading => match chunk {
                Some(Chunk::Lines(lines)) => waiting.extend(lines),
                Some(Chunk::Failed(e)) => {
                    read_error = Some(e);
                    reading = false;
                }
                None => reading = false,
            },
            Some(answers) = answers_rx.recv() => {
                for (number, result) in answers {
                    // A line goes to the writer before its example is queued: one
                    // answered and not here yet is in the channel.
                    while number >= front + waiting.len() as u64 {
                        match lines_rx.recv().await {
                            Some(Chunk::Lines(lines)) => waiting.extend(lines),
                            _ => break,
                        }
                    }
                    if let Some(line) = number
                        .checked_sub(front)
                        .and_then(|i| waiting.get_mut(i as usize))
                    {
                        line.end = Some(Outcome::Answered(result));
                    }
                }
            }
            // Nothing more can come: every queued example holds a sender until
            // it is answered, so this is only reached with nothing waiting.
            else => break,
        }
    }
    progress.finish_and_clear();
    // Stops the reader if the run stopped early.
    in_flight.close();
    drop(lines_rx);
    drop(answers_rx);
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

/// Lines read, decoded and queued together, at most.
const CHUNK_LINES: usize = 256;

/// The reader thread's ends of the run.
struct Reader {
    source: Source,
    /// To the writer.
    lines: mpsc::Sender<Chunk>,
    /// Where the examples queued are answered.
    answers: mpsc::UnboundedSender<Answers>,
    /// Lines read and not yet written.
    in_flight: Arc<Semaphore>,
    runtime: tokio::runtime::Handle,
    /// Lines in a chunk, at most.
    chunk_lines: usize,
    /// The tenant's request rate, if it has one.
    pacer: Option<Pacer>,
}

impl Reader {
    /// The reader thread: reads lines in chunks, decodes them, hands them to the writer
    /// and queues their examples (answered on `answers`). A chunk grows while further
    /// complete lines are already buffered (a file) and goes at once when the next read
    /// would wait (an interactive pipe), so batching never waits on the reader.
    fn read_lines(&mut self, input: Box<dyn Read + Send>) {
        let Reader {
            source,
            lines,
            answers,
            in_flight,
            runtime,
            chunk_lines,
            pacer,
        } = self;
        let mut input = BufReader::with_capacity(256 * 1024, input);
        let mut number = 0;
        loop {
            let mut chunk = Vec::with_capacity(*chunk_lines);
            let (mut ended, mut failed) = (false, None);
            loop {
                let mut buf = Vec::new();
                match input.read_until(b'\n', &mut buf) {
                    Ok(0) => ended = true,
                    Ok(_) => chunk.push(buf),
                    Err(e) => failed = Some(e),
                }
                if ended
                    || failed.is_some()
                    || chunk.len() >= *chunk_lines
                    || !input.buffer().contains(&b'\n')
                {
                    break;
                }
            }
            if !chunk.is_empty() {
                if let Some(pacer) = pacer {
                    pacer.wait(chunk.len());
                }
                // Waits while the writer holds `ahead` lines; fails once it stopped.
                let count = u32::try_from(chunk.len()).expect("at most CHUNK_LINES");
                match runtime.block_on(in_flight.acquire_many(count)) {
                    Ok(permits) => permits.forget(),
                    Err(_) => return,
                }
                // The version of the plugin in force for this chunk.
                let current = source();
                let (decoded, queued) = decode_chunk(chunk, &mut number, current.as_ref());
                if lines.blocking_send(Chunk::Lines(decoded)).is_err() {
                    return;
                }
                if let Ok(dispatcher) = &current {
                    dispatcher.submit_blocking(runtime, queued, answers);
                }
            }
            if let Some(e) = failed {
                let _ = lines.blocking_send(Chunk::Failed(e));
                return;
            }
            if ended {
                break;
            }
        }
        // End of input: flush what is queued without waiting for batch timers.
        if let Ok(dispatcher) = source() {
            dispatcher.close();
        }
    }
}

/// Decodes a chunk of lines: the lines for the writer, and the examples to queue,
/// each with its key (which chooses its model set) and its line number.
#[allow(clippy::type_complexity)]
fn decode_chunk(
    chunk: Vec<Vec<u8>>,
    number: &mut u64,
    current: Result<&Arc<Dispatcher>, &InferenceError>,
) -> (Vec<Line>, Vec<(Option<serde_json::Value>, Value, u64)>) {
    let mut lines = Vec::with_capacity(chunk.len());
    let mut queued = Vec::with_capacity(chunk.len());
    for buf in chunk {
        *number += 1;
        // A line that is not UTF-8 is dead-lettered, not a reason to stop.
        let mut text = String::from_utf8(buf)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        text.truncate(text.trim_end_matches(['\n', '\r']).len());
        let mut line = Line {
            number: *number,
            text,
            key: None,
            example: None,
            end: None,
        };
        match current {
            Err(error) => line.end = Some(Outcome::Undecodable(error.clone())),
            Ok(dispatcher) => {
                match decode_line(&line.text, &dispatcher.plugin().info().signature.inputs) {
                    Ok(Decoded {
                        key,
                        example,
                        value,
                    }) => {
                        line.example = Some(example);
                        let key = key.map(|(at, key)| {
                            line.key = Some(at);
                            key
                        });
                        queued.push((key, value, *number));
                    }
                    Err(failure) => {
                        line.key = failure.key;
                        line.end = Some(Outcome::Undecodable(failure.error));
                    }
                }
            }
        }
        lines.push(line);
    }
    (lines, queued)
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
