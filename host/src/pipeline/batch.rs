//! Dynamic batching: forming batches from a queue of examples.
//!
//! A batch is flushed when
//! 1. it reaches the target size (`max_batch_size`, or the adaptive size), or
//! 2. its oldest element has waited `max_batch_duration` **and** it holds at least
//!    `min_batch_size` elements, or
//! 3. the queue is closed (end of input, or the host is draining).
//!
//! So `min_batch_size` holds back a small batch past its wait only while more input
//! may come; at the end of the input every element is flushed.
//!
//! **Adaptive mode** (Beam's `BatchElements`, bounded by latency): the batcher records
//! `(size, latency)` of recent batches, fits `latency = a + b * size` by least squares,
//! and targets the largest size whose predicted latency is within the target batch
//! latency, clamped to `[min_batch_size, max_batch_size]`. To explore, a target is at
//! most twice the largest size measured so far, and sizes start at `min_batch_size`.
//! The wait rule (2) still applies, so a batch never waits longer than
//! `max_batch_duration` for elements that are not coming.

use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How batches are formed.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct BatchPolicy {
    /// Smallest batch flushed while more input may come.
    pub min_batch_size: usize,
    /// Largest batch.
    pub max_batch_size: usize,
    /// Longest wait of a batch's oldest element (once `min_batch_size` is reached).
    pub max_batch_duration: Duration,
    /// Size batches toward this latency per batch, from measurements.
    pub adaptive_target: Option<Duration>,
}

/// One queued element: the payload and when it was queued.
#[derive(Debug)]
pub struct Queued<T> {
    /// The payload.
    pub item: T,
    /// When it entered the queue.
    pub queued_at: Instant,
}

impl<T> Queued<T> {
    /// Queues `item` now.
    pub fn now(item: T) -> Self {
        Queued {
            item,
            queued_at: Instant::now(),
        }
    }
}

/// tokio's timer has a 1 ms resolution and rounds deadlines up, so a sleep ends 0-1.3 ms
/// late. Waking this much early keeps `max_batch_duration` an upper bound on the wait
/// (measured with bench/serve.sh: a 2 ms wait took 3.3 ms at p50 without it).
pub const TIMER_SLACK: Duration = Duration::from_millis(1);

fn wake_at(deadline: Instant) -> Instant {
    deadline.checked_sub(TIMER_SLACK).unwrap_or(deadline)
}

/// Waits for the next batch from `rx`; `None` once the queue is closed and empty.
pub async fn next_batch<T>(
    rx: &mut mpsc::Receiver<Queued<T>>,
    policy: &BatchPolicy,
    target: usize,
) -> Option<Vec<Queued<T>>> {
    let first = rx.recv().await?;
    let deadline = first.queued_at + policy.max_batch_duration;
    let target = target.clamp(1, policy.max_batch_size.max(1));
    let mut batch = Vec::with_capacity(target);
    batch.push(first);
    while batch.len() < target {
        // Take what is already queued without waiting.
        match rx.try_recv() {
            Ok(item) => {
                batch.push(item);
                continue;
            }
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {}
        }
        let may_flush = batch.len() >= policy.min_batch_size;
        // Checked here because tokio's timer fires on the next 1 ms tick even for a
        // deadline already past: a wait of 0 would cost a millisecond per batch.
        if may_flush && Instant::now() >= deadline {
            break;
        }
        tokio::select! {
            biased;
            item = rx.recv() => match item {
                Some(item) => batch.push(item),
                None => break,
            },
            _ = tokio::time::sleep_until(wake_at(deadline)), if may_flush => break,
        }
    }
    Some(batch)
}

/// Chooses batch sizes: fixed at `max_batch_size`, or adaptive.
#[derive(Debug)]
pub struct BatchSizer {
    policy: BatchPolicy,
    points: VecDeque<(f64, f64)>,
    largest_seen: usize,
}

/// Measurements kept for the adaptive fit.
const WINDOW: usize = 32;

impl BatchSizer {
    /// A sizer for `policy`.
    pub fn new(policy: BatchPolicy) -> Self {
        BatchSizer {
            policy,
            points: VecDeque::with_capacity(WINDOW),
            largest_seen: 0,
        }
    }

    /// The size the next batch aims for.
    pub fn target(&self) -> usize {
        let (min, max) = (
            self.policy.min_batch_size.max(1),
            self.policy.max_batch_size.max(1),
        );
        let Some(target) = self.policy.adaptive_target else {
            return max;
        };
        if self.largest_seen == 0 {
            return min.min(max);
        }
        let explore = (self.largest_seen * 2).max(min);
        let fitted = match self.fit() {
            Some((a, b)) if b > 0.0 => {
                let size = (target.as_secs_f64() - a) / b;
                if size.is_finite() && size >= 1.0 {
                    size as usize
                } else {
                    1
                }
            }
            // Latency does not grow with size (or one size seen so far): grow.
            _ => explore,
        };
        fitted.min(explore).clamp(min.min(max), max)
    }

    /// Records how long a batch of `size` took.
    pub fn record(&mut self, size: usize, latency: Duration) {
        if self.points.len() == WINDOW {
            self.points.pop_front();
        }
        self.points.push_back((size as f64, latency.as_secs_f64()));
        self.largest_seen = self.largest_seen.max(size);
    }

    /// Least-squares `latency = a + b * size`; `None` without two distinct sizes.
    fn fit(&self) -> Option<(f64, f64)> {
        let n = self.points.len() as f64;
        let (sx, sy) = self
            .points
            .iter()
            .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
        let (mx, my) = (sx / n, sy / n);
        let (sxx, sxy) = self.points.iter().fold((0.0, 0.0), |(sxx, sxy), (x, y)| {
            (sxx + (x - mx) * (x - mx), sxy + (x - mx) * (y - my))
        });
        if sxx <= f64::EPSILON {
            return None;
        }
        let b = sxy / sxx;
        Some((my - b * mx, b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(min: usize, max: usize, wait_ms: u64) -> BatchPolicy {
        BatchPolicy {
            min_batch_size: min,
            max_batch_size: max,
            max_batch_duration: Duration::from_millis(wait_ms),
            adaptive_target: None,
        }
    }

    fn sizes(batches: &[Vec<Queued<u32>>]) -> Vec<usize> {
        batches.iter().map(Vec::len).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn flushes_on_size() {
        let (tx, mut rx) = mpsc::channel(100);
        for i in 0..10 {
            tx.send(Queued::now(i)).await.unwrap();
        }
        let p = policy(1, 4, 1000);
        let start = Instant::now();
        let mut batches = vec![];
        for _ in 0..2 {
            batches.push(next_batch(&mut rx, &p, 4).await.unwrap());
        }
        assert_eq!(sizes(&batches), vec![4, 4]);
        // Full batches do not wait for the timer.
        assert_eq!(start.elapsed(), Duration::ZERO);
        let items: Vec<u32> = batches.iter().flatten().map(|q| q.item).collect();
        assert_eq!(items, (0..8).collect::<Vec<_>>());
    }

    #[tokio::test(start_paused = true)]
    async fn flushes_on_time_measured_from_the_oldest_element() {
        let (tx, mut rx) = mpsc::channel(100);
        let p = policy(1, 32, 50);
        let start = Instant::now();
        tx.send(Queued::now(1)).await.unwrap();
        let producer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            tx.send(Queued::now(2)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            tx.send(Queued::now(3)).await.unwrap();
            // The input stays open: the last batch must flush on time.
            tokio::time::sleep(Duration::from_millis(1000)).await;
        });
        let batch = next_batch(&mut rx, &p, 32).await.unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(start.elapsed(), Duration::from_millis(50) - TIMER_SLACK);
        let batch = next_batch(&mut rx, &p, 32).await.unwrap();
        assert_eq!(batch.len(), 1);
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(130 + 50) - TIMER_SLACK
        );
        producer.await.unwrap();
        assert!(next_batch(&mut rx, &p, 32).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn min_size_holds_a_small_batch_until_more_comes_or_input_ends() {
        let (tx, mut rx) = mpsc::channel(100);
        let p = policy(3, 8, 10);
        let start = Instant::now();
        tx.send(Queued::now(1)).await.unwrap();
        let producer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(40)).await;
            tx.send(Queued::now(2)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(40)).await;
            tx.send(Queued::now(3)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(40)).await;
            tx.send(Queued::now(4)).await.unwrap();
            // dropping tx ends the input
        });
        let batch = next_batch(&mut rx, &p, 8).await.unwrap();
        // Waited past 10 ms for the third element, then flushed at once.
        assert_eq!(batch.len(), 3);
        assert_eq!(start.elapsed(), Duration::from_millis(80));
        // The last element is below the minimum but the input ends: flushed.
        let batch = next_batch(&mut rx, &p, 8).await.unwrap();
        assert_eq!(batch.len(), 1);
        assert_eq!(start.elapsed(), Duration::from_millis(120));
        producer.await.unwrap();
    }

    #[test]
    fn fixed_sizer_targets_the_max() {
        let s = BatchSizer::new(policy(1, 64, 10));
        assert_eq!(s.target(), 64);
    }

    #[test]
    fn adaptive_sizer_explores_then_fits_the_latency_target() {
        let mut p = policy(2, 1000, 10);
        p.adaptive_target = Some(Duration::from_millis(10));
        let mut s = BatchSizer::new(p);
        assert_eq!(s.target(), 2);
        // latency = 1 ms + 0.1 ms per element: 90 elements fit in 10 ms.
        let latency = |n: usize| Duration::from_micros(1000 + 100 * n as u64);
        let mut targets = vec![];
        for _ in 0..10 {
            let t = s.target();
            targets.push(t);
            s.record(t, latency(t));
        }
        assert_eq!(&targets[..5], &[2, 4, 8, 16, 32]);
        let last = *targets.last().unwrap();
        assert!((89..=90).contains(&last), "{targets:?}");
        // Never above the max, never below the min.
        let mut p = policy(5, 20, 10);
        p.adaptive_target = Some(Duration::from_millis(10));
        let mut s = BatchSizer::new(p);
        for _ in 0..10 {
            let t = s.target();
            assert!((5..=20).contains(&t), "{t}");
            s.record(t, latency(t));
        }
        assert_eq!(s.target(), 20);
        // A slow model shrinks the target.
        for _ in 0..32 {
            s.record(10, Duration::from_millis(20));
            s.record(20, Duration::from_millis(40));
        }
        assert_eq!(s.target(), 5);
    }
}
