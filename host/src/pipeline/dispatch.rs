//! The runtime of one plugin: examples are queued per model set, formed into batches
//! (by a [`BatchPolicy`]) and run in parallel on warm instances. Serving gets each
//! example's result on its own channel; `run` gets the results of a whole batch in
//! one message on its stream. Both feed the same dispatcher.
//!
//! Batches run on `instances` dedicated worker threads (wasm calls are synchronous).
//! Batches are formed ahead (serving one per worker, `run` more), so a worker finds its
//! next batch waiting instead of being woken for it. A bulk job also wakes its threads
//! once per several batches: the reader waits for room for a whole chunk, a batcher
//! with a full queue forms several batches in one go, and a worker holds a stream's
//! answers while it has more batches to run.

use crate::error::{ErrorCode, InferenceError};
pub use crate::pipeline::batch::BatchPolicy;
use crate::pipeline::batch::{BatchSizer, Queued, next_batch};
use crate::plugin::{Plugin, Route};
use crate::value::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::TryRecvError;
use std::sync::{Arc, Mutex, TryLockError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;

/// A successful inference.
#[derive(Debug)]
pub struct Output {
    /// The handler's inference.
    pub value: Value,
    /// The models the handler ran for the batch (comma-separated); `None` if none.
    /// Shared by the batch's examples.
    pub model_id: Option<Arc<str>>,
}

/// A failed inference: the error and the model set that was to serve it.
#[derive(Clone, Debug)]
pub struct Failure {
    /// What went wrong.
    pub error: InferenceError,
    /// The ids of the models bound for the batch, if known.
    pub model_id: Option<Arc<str>>,
}

/// What an example's submitter receives.
pub type Reply = oneshot::Receiver<Result<Output, Failure>>;

/// Waits for an example's result; a reply dropped unanswered (its worker gone) is an
/// internal failure, so every example ends as an output or a failure.
pub async fn settle(reply: Reply) -> Result<Output, Failure> {
    reply.await.unwrap_or_else(|_| Err(lost_failure()))
}

/// The results of a stream's examples, one message per batch: each example's index
/// (its `run` line number) with its result.
pub type Answers = Vec<(u64, Result<Output, Failure>)>;

struct Job {
    value: Value,
    answer: Answer,
}

/// Where an example's result goes.
enum Answer {
    /// Its own channel (serving).
    One(oneshot::Sender<Result<Output, Failure>>),
    /// A stream shared by many examples (`run`).
    Stream(Ticket),
}

/// An example's place on a stream. Dropped unanswered (a bug, or a worker gone), it
/// still answers, with an internal failure, so that the stream's reader never waits
/// for a line forever.
struct Ticket {
    to: Option<mpsc::UnboundedSender<Answers>>,
    index: u64,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(to) = self.to.take() {
            let _ = to.send(vec![(self.index, Err(lost_failure()))]);
        }
    }
}

fn lost_failure() -> Failure {
    Failure {
        error: InferenceError::new(ErrorCode::Internal, "the example's result was lost"),
        model_id: None,
    }
}

impl Answer {
    /// True when nobody waits for the result any more.
    fn is_closed(&self) -> bool {
        match self {
            Answer::One(reply) => reply.is_closed(),
            Answer::Stream(ticket) => ticket.to.as_ref().is_none_or(|to| to.is_closed()),
        }
    }
}

/// Sends the results of a batch at once: each serving example on its own channel, a
/// stream's examples in one message per stream.
fn answer_all(answers: impl IntoIterator<Item = (Answer, Result<Output, Failure>)>) {
    let mut held = HeldAnswers::default();
    held.answer(answers);
    held.send();
}

/// A worker's answers to streams (`run`), held while it has more batches to run, so
/// that the stream's writer wakes once for several batches instead of once for each.
/// Serving answers are never held.
#[derive(Default)]
struct HeldAnswers {
    streams: Vec<(mpsc::UnboundedSender<Answers>, Answers)>,
}

/// Stream answers a worker holds at most before it sends them.
const MAX_HELD_ANSWERS: usize = 256;

impl HeldAnswers {
    /// Sends each serving answer, holds each stream answer.
    fn answer(&mut self, answers: impl IntoIterator<Item = (Answer, Result<Output, Failure>)>) {
        for (answer, result) in answers {
            match answer {
                Answer::One(reply) => {
                    let _ = reply.send(result);
                }
                Answer::Stream(mut ticket) => {
                    let Some(to) = ticket.to.take() else { continue };
                    match self
                        .streams
                        .iter_mut()
                        .find(|(stream, _)| stream.same_channel(&to))
                    {
                        Some((_, answers)) => answers.push((ticket.index, result)),
                        None => self.streams.push((to, vec![(ticket.index, result)])),
                    }
                }
            }
        }
    }

    /// True when enough is held that it should go now.
    fn full(&self) -> bool {
        self.streams
            .iter()
            .map(|(_, held)| held.len())
            .sum::<usize>()
            >= MAX_HELD_ANSWERS
    }

    fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Sends what is held, one message per stream.
    fn send(&mut self) {
        for (to, answers) in self.streams.drain(..) {
            let _ = to.send(answers);
        }
    }
}

impl Drop for HeldAnswers {
    /// A worker that ends (or unwinds) still sends what it held: no line is lost.
    fn drop(&mut self) {
        self.send();
    }
}

/// Drops the examples whose submitter stopped waiting (an HTTP client that went away,
/// a cancelled gRPC call, a request past its timeout, a `run` stopped early: each
/// drops its receiver), so they never reach a handler. Returns how many were dropped.
fn drop_abandoned(batch: &mut Vec<Queued<Job>>) -> usize {
    let before = batch.len();
    batch.retain(|queued| !queued.item.answer.is_closed());
    before - batch.len()
}

/// Options of a dispatcher.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DispatchOptions {
    /// How batches are formed.
    pub policy: BatchPolicy,
    /// Most batches run at once (and warm instances kept per model set).
    pub instances: usize,
    /// Examples queued per model set before `submit` waits.
    pub queue_capacity: usize,
    /// Beam's `inference_args`, passed to every `run-inference` call.
    pub inference_args: Vec<(String, String)>,
    /// Batches formed ahead per instance, waiting for a worker while it runs one.
    /// Serving keeps 1: a batch formed when a worker frees up takes in what arrived
    /// meanwhile. A bulk job, whose queue is always full, forms more, so that the
    /// batcher wakes once for several batches instead of once for each.
    pub batches_ahead: usize,
}

impl DispatchOptions {
    /// Most batches formed at once: running, and waiting for a worker.
    fn batches_formed(&self) -> usize {
        self.instances.max(1) * (1 + self.batches_ahead.max(1))
    }

    /// Batches a batcher with a full queue forms in one go: half of those formed
    /// ahead (serving's one: a batch at a time).
    fn batch_group(&self) -> usize {
        self.batches_ahead.div_ceil(2).max(1)
    }

    /// Options with no inference args: batches formed by `policy`, at most
    /// `instances` at once, `queue_capacity` examples queued per model set.
    pub fn new(policy: BatchPolicy, instances: usize, queue_capacity: usize) -> Self {
        DispatchOptions {
            policy,
            instances,
            queue_capacity,
            inference_args: Vec::new(),
            batches_ahead: 1,
        }
    }
}

/// Routes, batches and runs the examples of one plugin.
pub struct Dispatcher {
    plugin: Arc<Plugin>,
    options: DispatchOptions,
    permits: Arc<Semaphore>,
    queues: Mutex<HashMap<Route, mpsc::Sender<Queued<Job>>>>,
    work: std::sync::mpsc::Sender<Work>,
    stats: Arc<Stats>,
}

#[derive(Default)]
struct Stats {
    batches: AtomicU64,
    failed_batches: AtomicU64,
    /// Triton's statistics, updated once per batch.
    serving: Mutex<ServingStats>,
}

/// A count of events and their cumulative duration.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Timed {
    /// How many.
    pub count: u64,
    /// Their total duration, in nanoseconds.
    pub ns: u64,
}

impl Timed {
    fn add(&mut self, count: u64, total: std::time::Duration) {
        self.count += count;
        self.ns = self
            .ns
            .saturating_add(u64::try_from(total.as_nanos()).unwrap_or(u64::MAX));
    }
}

/// What the dispatcher did, in the shape of Triton's model statistics: per example
/// (success, failure, time queued, time in its batch's `run-inference`), and per
/// batch size.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct ServingStats {
    /// Examples answered (successes and failures).
    pub inference_count: u64,
    /// Batches run.
    pub execution_count: u64,
    /// When the last batch ended, in milliseconds since the Unix epoch (0: none yet).
    pub last_inference_ms: u64,
    /// Examples that got an inference: queued to answered.
    pub success: Timed,
    /// Examples whose batch failed: queued to answered.
    pub fail: Timed,
    /// Time examples waited in the queue.
    pub queue: Timed,
    /// Time examples spent in their batch's handler call (models included).
    pub compute_infer: Timed,
    /// Per batch size: batches run and their handler time.
    pub batches: std::collections::BTreeMap<usize, Timed>,
}

impl ServingStats {
    fn record(
        &mut self,
        queued: &[Instant],
        started: Instant,
        latency: std::time::Duration,
        ok: bool,
    ) {
        let done = started + latency;
        let n = queued.len() as u64;
        self.inference_count += n;
        self.execution_count += 1;
        self.last_inference_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let waited: std::time::Duration = queued.iter().map(|&q| started - q).sum();
        let answered: std::time::Duration = queued.iter().map(|&q| done - q).sum();
        self.queue.add(n, waited);
        self.compute_infer.add(n, latency * queued.len() as u32);
        if ok {
            self.success.add(n, answered);
        } else {
            self.fail.add(n, answered);
        }
        self.batches
            .entry(queued.len())
            .or_default()
            .add(1, latency);
    }
}

/// A formed batch on its way to a worker thread.
struct Work {
    route: Route,
    batch: Vec<Queued<Job>>,
    sizer: Arc<Mutex<BatchSizer>>,
    /// Released when the batch is done, letting the batcher form another.
    _permit: OwnedSemaphorePermit,
}

/// What the worker threads share.
struct WorkerContext {
    plugin: Arc<Plugin>,
    args: Vec<(String, String)>,
    stats: Arc<Stats>,
}

impl Dispatcher {
    /// A dispatcher for `plugin`, with its worker threads. Must be created inside a
    /// tokio runtime. Fails (instead of panicking) when a thread cannot start; the
    /// workers already started then end.
    pub fn new(plugin: Arc<Plugin>, options: DispatchOptions) -> std::io::Result<Arc<Dispatcher>> {
        let instances = options.instances.max(1);
        let stats = Arc::new(Stats::default());
        let (work, inbox) = std::sync::mpsc::channel::<Work>();
        let inbox = Arc::new(Mutex::new(inbox));
        let context = Arc::new(WorkerContext {
            plugin: plugin.clone(),
            args: options.inference_args.clone(),
            stats: stats.clone(),
        });
        for i in 0..instances {
            let inbox = inbox.clone();
            let context = context.clone();
            let priority = plugin.handler_priority();
            std::thread::Builder::new()
                .name(format!("runinfer-{}-{i}", plugin.name()))
                .spawn(move || {
                    priority.enter();
                    let mut held = HeldAnswers::default();
                    // Ends when the dispatcher and its batchers are gone.
                    loop {
                        let next = if held.is_empty() {
                            let inbox = inbox.lock().unwrap_or_else(|e| e.into_inner());
                            inbox.recv().map_err(|_| TryRecvError::Disconnected)
                        } else {
                            // Never wait for the inbox while holding answers: another
                            // worker may be waiting in it for work that only comes
                            // once those answers are written.
                            match inbox.try_lock() {
                                Ok(inbox) => inbox.try_recv(),
                                Err(TryLockError::Poisoned(e)) => e.into_inner().try_recv(),
                                Err(TryLockError::WouldBlock) => Err(TryRecvError::Empty),
                            }
                        };
                        match next {
                            Ok(work) => {
                                context.execute(work, &mut held);
                                if held.full() {
                                    held.send();
                                }
                            }
                            // Nothing more to run now: what is held goes.
                            Err(TryRecvError::Empty) => held.send(),
                            Err(TryRecvError::Disconnected) => {
                                held.send();
                                return;
                            }
                        }
                    }
                })?;
        }
        Ok(Arc::new(Dispatcher {
            permits: Arc::new(Semaphore::new(options.batches_formed())),
            plugin,
            options,
            queues: Mutex::new(HashMap::new()),
            work,
            stats,
        }))
    }

    /// The plugin served.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// The options in force.
    pub fn options(&self) -> &DispatchOptions {
        &self.options
    }

    /// What the dispatcher did so far, as Triton's statistics count it.
    pub fn serving_stats(&self) -> ServingStats {
        self.stats
            .serving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Batches run so far, and how many of them failed.
    pub fn batch_counts(&self) -> (u64, u64) {
        (
            self.stats.batches.load(Ordering::Relaxed),
            self.stats.failed_batches.load(Ordering::Relaxed),
        )
    }

    /// What is waiting and running now: examples in the queues, and batches formed
    /// (running on a worker or waiting for one).
    pub fn load(&self) -> Load {
        let queued = self
            .queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|q| q.max_capacity() - q.capacity())
            .sum();
        Load {
            queued,
            batches: self.options.batches_formed() - self.permits.available_permits(),
        }
    }

    /// Queues one example (waiting while its queue is full) and returns where its
    /// result will arrive. The key only chooses the model set; it never reaches the
    /// handler.
    pub async fn submit(self: &Arc<Self>, key: Option<&serde_json::Value>, value: Value) -> Reply {
        let route = self.plugin.route(key);
        let (reply, receiver) = oneshot::channel();
        let job = Job {
            value,
            answer: Answer::One(reply),
        };
        if let Err(mpsc::error::SendError(job)) = self.queue(route).send(Queued::now(job)).await {
            answer_all([(job.item.answer, Err(queue_closed()))]);
        }
        receiver
    }

    /// Queues the examples of a stream (the `run` job) from a thread outside the
    /// async runtime, waiting while their queue is full. Each is `(key, example,
    /// index)`; its result is sent to `answers` under its index, together with its
    /// batch-mates' results.
    ///
    /// `runtime` is the dispatcher's: this thread waits on it for room in the queue,
    /// once for each run of examples of one model set (not once per example, which
    /// would wake it for every example a batch takes out).
    pub fn submit_blocking(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        examples: Vec<(Option<serde_json::Value>, Value, u64)>,
        answers: &mpsc::UnboundedSender<Answers>,
    ) {
        // One clock read for the chunk: they were read together.
        let queued_at = Instant::now();
        let mut examples = examples.into_iter().peekable();
        while let Some((key, value, index)) = examples.next() {
            let route = self.plugin.route(key.as_ref());
            let mut run = vec![(value, index)];
            let sender = self.queue(route);
            while run.len() < sender.max_capacity()
                && let Some((_, value, index)) =
                    examples.next_if(|(key, _, _)| self.plugin.route(key.as_ref()) == route)
            {
                run.push((value, index));
            }
            let jobs = run.into_iter().map(|(value, index)| Queued {
                item: Job {
                    value,
                    answer: Answer::Stream(Ticket {
                        to: Some(answers.clone()),
                        index,
                    }),
                },
                queued_at,
            });
            match runtime.block_on(sender.reserve_many(jobs.len())) {
                Ok(permits) => {
                    for (permit, job) in permits.zip(jobs) {
                        permit.send(job);
                    }
                }
                Err(_) => answer_all(jobs.map(|job| (job.item.answer, Err(queue_closed())))),
            }
        }
    }

    /// Queues examples (of one key, which chooses their model set) only if their queue
    /// has room for all of them: a full queue is refused at once, with nothing queued
    /// (backpressure for serving).
    pub fn try_submit_all(
        self: &Arc<Self>,
        key: Option<&serde_json::Value>,
        values: Vec<Value>,
    ) -> Result<Vec<Reply>, QueueFull> {
        let sender = self.queue(self.plugin.route(key));
        let permits = sender
            .try_reserve_many(values.len())
            .map_err(|_| QueueFull {
                capacity: self.options.queue_capacity,
            })?;
        Ok(values
            .into_iter()
            .zip(permits)
            .map(|(value, permit)| {
                let (reply, receiver) = oneshot::channel();
                permit.send(Queued::now(Job {
                    value,
                    answer: Answer::One(reply),
                }));
                receiver
            })
            .collect())
    }

    /// Stops accepting examples; queued ones still run. Replies already handed out
    /// will all arrive.
    pub fn close(&self) {
        self.queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn queue(self: &Arc<Self>, route: Route) -> mpsc::Sender<Queued<Job>> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues
            .entry(route)
            .or_insert_with(|| {
                let (tx, rx) = mpsc::channel(self.options.queue_capacity.max(1));
                tokio::spawn(batcher(
                    route,
                    rx,
                    self.options.policy,
                    self.permits.clone(),
                    self.options.batch_group(),
                    self.work.clone(),
                    self.plugin.clone(),
                ));
                tx
            })
            .clone()
    }
}

/// A dispatcher's load at one moment (see [`Dispatcher::load`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Examples waiting in the queues.
    pub queued: usize,
    /// Batches formed: running on a worker or waiting for one.
    pub batches: usize,
}

/// A queue had no room (or was closed).
#[derive(Debug, Clone, Copy)]
pub struct QueueFull {
    /// Examples the queue holds.
    pub capacity: usize,
}

/// Forms batches for one model set and hands each to the worker threads; a batch is
/// formed when a worker slot frees up, so examples that arrive meanwhile make the
/// next batch larger.
async fn batcher(
    route: Route,
    mut rx: mpsc::Receiver<Queued<Job>>,
    policy: BatchPolicy,
    permits: Arc<Semaphore>,
    batch_group: usize,
    work: std::sync::mpsc::Sender<Work>,
    plugin: Arc<Plugin>,
) {
    let sizer = Arc::new(Mutex::new(BatchSizer::new(policy)));
    // Permits taken together and not used yet.
    let mut spare: Option<OwnedSemaphorePermit> = None;
    loop {
        let permit = match spare.take() {
            Some(mut several) if several.num_permits() > 1 => {
                let one = several.split(1).expect("more than one permit");
                spare = Some(several);
                one
            }
            Some(last) => last,
            None => {
                // A full queue (a bulk job) waits until several batches can be
                // formed, so that it wakes once for them instead of once each;
                // otherwise a batch is formed as soon as a worker frees up.
                let target = sizer.lock().unwrap_or_else(|e| e.into_inner()).target();
                let group = if rx.len() >= target.saturating_mul(batch_group) {
                    batch_group
                } else {
                    1
                };
                let Ok(permit) = permits.clone().acquire_many_owned(group as u32).await else {
                    return;
                };
                spare = Some(permit);
                continue;
            }
        };
        let batch = loop {
            let target = sizer.lock().unwrap_or_else(|e| e.into_inner()).target();
            let Some(mut batch) = next_batch(&mut rx, &policy, target).await else {
                return;
            };
            let dropped = drop_abandoned(&mut batch);
            if dropped > 0 {
                plugin.metrics().examples_cancelled(dropped);
            }
            if !batch.is_empty() {
                break batch;
            }
        };
        let item = Work {
            route,
            batch,
            sizer: sizer.clone(),
            _permit: permit,
        };
        if let Err(std::sync::mpsc::SendError(item)) = work.send(item) {
            fail_all(item.batch, &closed_failure());
            return;
        }
    }
}

fn queue_closed() -> Failure {
    Failure {
        error: InferenceError::new(ErrorCode::Internal, "the plugin's queue is closed"),
        model_id: None,
    }
}

fn closed_failure() -> Failure {
    Failure {
        error: InferenceError::new(ErrorCode::Internal, "the plugin's workers stopped"),
        model_id: None,
    }
}

fn fail_all(batch: Vec<Queued<Job>>, failure: &Failure) {
    answer_all(
        batch
            .into_iter()
            .map(|queued| (queued.item.answer, Err(failure.clone()))),
    );
}

impl WorkerContext {
    /// Runs one batch on this thread and answers every example of it (a stream's
    /// answers go to `held`).
    fn execute(&self, work: Work, held: &mut HeldAnswers) {
        let Work {
            route,
            mut batch,
            sizer,
            _permit,
        } = work;
        let metrics = self.plugin.metrics();
        // Formed batches may wait for a worker: drop again what was given up meanwhile.
        let dropped = drop_abandoned(&mut batch);
        if dropped > 0 {
            metrics.examples_cancelled(dropped);
            if batch.is_empty() {
                return;
            }
        }
        let started = Instant::now();
        let size = batch.len();
        let mut values = Vec::with_capacity(size);
        let mut waiting = Vec::with_capacity(size);
        for queued in batch {
            values.push(queued.item.value);
            waiting.push((queued.queued_at, queued.item.answer));
        }
        let bytes = values.iter().map(Value::byte_size).sum();
        let outcome = match self.plugin.model_set(route) {
            Ok(set) => self
                .plugin
                .run_batch(&set, values, &self.args)
                .map(|inferences| (inferences, set.model_id().to_string()))
                .map_err(|e| (e, set.model_id().to_string())),
            Err(e) => Err((
                InferenceError::new(ErrorCode::Model, e.to_string()),
                String::new(),
            )),
        };
        let latency = started.elapsed();
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        let queued: Vec<Instant> = waiting.iter().map(|(queued_at, _)| *queued_at).collect();
        self.stats
            .serving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(&queued, started, latency, outcome.is_ok());
        match outcome {
            Ok((inferences, set_model_id)) => {
                metrics.batch_done(&set_model_id, size, bytes, latency);
                sizer
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .record(size, latency);
                let model_id: Option<Arc<str>> = (!inferences.model_ids.is_empty())
                    .then(|| inferences.model_ids.join(",").into());
                let done = Instant::now();
                let timers = metrics.element_timers(&set_model_id);
                held.answer(waiting.into_iter().zip(inferences.values).map(
                    |((queued_at, answer), value)| {
                        timers.record(started - queued_at, done - queued_at);
                        let result = match value {
                            Ok(value) => Ok(Output {
                                value,
                                model_id: model_id.clone(),
                            }),
                            // Refused by the handler on its own (its batch-mates were not).
                            Err(error) => Err(Failure {
                                error,
                                model_id: model_id.clone(),
                            }),
                        };
                        (answer, result)
                    },
                ));
            }
            Err((error, set_model_id)) => {
                metrics.batch_failed(&set_model_id);
                self.stats.failed_batches.fetch_add(1, Ordering::Relaxed);
                let failure = Failure {
                    error,
                    model_id: (!set_model_id.is_empty()).then(|| set_model_id.into()),
                };
                held.answer(
                    waiting
                        .into_iter()
                        .map(|(_, answer)| (answer, Err(failure.clone()))),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_answer(to: &mpsc::UnboundedSender<Answers>, index: u64) -> Answer {
        Answer::Stream(Ticket {
            to: Some(to.clone()),
            index,
        })
    }

    fn output() -> Result<Output, Failure> {
        Ok(Output {
            value: Value::Text("done".into()),
            model_id: None,
        })
    }

    #[test]
    fn stream_answers_are_held_and_serving_answers_are_not() {
        let (to, mut stream) = mpsc::unbounded_channel();
        let (reply, mut one) = oneshot::channel();
        let mut held = HeldAnswers::default();
        held.answer([
            (stream_answer(&to, 1), output()),
            (Answer::One(reply), output()),
            (stream_answer(&to, 2), output()),
        ]);
        assert!(one.try_recv().is_ok(), "a serving answer goes at once");
        assert!(stream.try_recv().is_err(), "a stream's answers are held");
        held.answer([(stream_answer(&to, 3), output())]);
        held.send();
        let sent: Vec<u64> = stream.try_recv().unwrap().iter().map(|a| a.0).collect();
        assert_eq!(sent, [1, 2, 3], "one message for the stream, in order");
        assert!(held.is_empty());
    }

    #[test]
    fn held_answers_are_sent_when_their_worker_ends() {
        let (to, mut stream) = mpsc::unbounded_channel();
        let mut held = HeldAnswers::default();
        held.answer((0..MAX_HELD_ANSWERS as u64).map(|i| (stream_answer(&to, i), output())));
        assert!(held.full());
        drop(held);
        assert_eq!(stream.try_recv().unwrap().len(), MAX_HELD_ANSWERS);
    }
}
