//! Visibility: every message, from its receipt to its delete or release, stays hidden from
//! other consumers while work on it can still finish, and no longer.
//!
//! One task extends all messages in flight in batched calls, grouped by the timeout each
//! needs: a message due (less than half its visibility and a beat left) is extended to the visibility
//! timeout, or to its deadline plus a beat if that comes first, and never past SQS's
//! 12 hours from the receive. A message past its deadline is no longer extended: its batch
//! is being abandoned. A failed extension is counted and logged, never fatal: the worst
//! case is a redelivery, which the idempotent insert absorbs.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::adapters::postgres::Sink;
use crate::adapters::sqs::{MAX_VISIBILITY, Queue};
use crate::retry::{Classify, ErrorClass, RetryPolicy, Stage, retry};
use crate::telemetry::events::{CallFailed, MessagesLetGo, MessagesReleased, VisibilityExtended};

use super::{Context, InFlight, Tally};

/// The shortest beat, whatever the visibility timeout.
const MIN_BEAT: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy)]
struct Tracked {
    received: Instant,
    deadline: Instant,
    hidden_until: Instant,
}

/// The messages in flight, by receipt handle.
#[derive(Debug)]
pub struct Heartbeat {
    visibility: Duration,
    tracked: Mutex<HashMap<String, Tracked>>,
}

impl Heartbeat {
    pub fn new(visibility: Duration) -> Self {
        Self {
            visibility,
            tracked: Mutex::new(HashMap::new()),
        }
    }

    /// How often due messages are looked for: a quarter of the visibility timeout, so each
    /// is extended with at least a quarter of it to spare.
    pub fn beat(&self) -> Duration {
        (self.visibility / 4).clamp(MIN_BEAT, Duration::from_secs(60))
    }

    /// Starts keeping a received message hidden until `deadline`.
    pub fn track(&self, receipt_handle: &str, deadline: Instant) {
        let now = Instant::now();
        self.tracked.lock().expect("not poisoned").insert(
            receipt_handle.to_owned(),
            Tracked {
                received: now,
                deadline,
                hidden_until: now + self.visibility,
            },
        );
    }

    /// Keeps these messages hidden until `deadline` instead of their own: the probe's
    /// messages between its attempts, dead letters while their record is written. One
    /// dropped at its old deadline is tracked again, due for an extension at once (its
    /// 12-hour cap then counts from now: SQS refuses an extension past the real one, which
    /// is logged and harmless).
    pub fn renew<'a>(&self, receipt_handles: impl IntoIterator<Item = &'a str>, deadline: Instant) {
        let now = Instant::now();
        let mut tracked = self.tracked.lock().expect("not poisoned");
        for handle in receipt_handles {
            tracked
                .entry(handle.to_owned())
                .and_modify(|entry| entry.deadline = deadline)
                .or_insert(Tracked {
                    received: now,
                    deadline,
                    hidden_until: now,
                });
        }
    }

    /// Stops extending these messages (they are being deleted or released).
    pub fn forget<'a>(&self, receipt_handles: impl IntoIterator<Item = &'a str>) {
        let mut tracked = self.tracked.lock().expect("not poisoned");
        for handle in receipt_handles {
            tracked.remove(handle);
        }
    }

    /// Stops extending every message, and returns their receipt handles.
    fn forget_all(&self) -> Vec<String> {
        let mut tracked = self.tracked.lock().expect("not poisoned");
        tracked.drain().map(|(handle, _)| handle).collect()
    }

    pub fn tracked(&self) -> usize {
        self.tracked.lock().expect("not poisoned").len()
    }

    /// The messages due for an extension now, grouped by the timeout (whole seconds) each
    /// gets. Messages past their deadline are dropped from tracking.
    fn due(&self, now: Instant) -> BTreeMap<u64, Vec<String>> {
        let beat = self.beat();
        let mut due: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        let mut tracked = self.tracked.lock().expect("not poisoned");
        tracked.retain(|handle, entry| {
            if now >= entry.deadline {
                return false;
            }
            // Due with half the visibility and a beat left, so the call goes out with at
            // least half of it to spare, however the beats fall.
            if entry.hidden_until.saturating_duration_since(now) > self.visibility / 2 + beat {
                return true;
            }
            let until_deadline = entry.deadline - now;
            let timeout = self
                .visibility
                .min(until_deadline + beat)
                .min(MAX_VISIBILITY.saturating_sub(now - entry.received));
            if timeout < Duration::from_secs(1) {
                // The 12-hour cap: nothing more can be asked for.
                return false;
            }
            due.entry(timeout.as_secs())
                .or_default()
                .push(handle.clone());
            true
        });
        due
    }

    fn extended(&self, handles: &[String], until: Instant) {
        let mut tracked = self.tracked.lock().expect("not poisoned");
        for handle in handles {
            if let Some(entry) = tracked.get_mut(handle) {
                entry.hidden_until = until;
            }
        }
    }
}

/// The heartbeat task: until `done`, extends what is due at every beat.
pub(super) async fn run<Q: Queue, S: Sink>(context: Arc<Context<Q, S>>, done: CancellationToken) {
    let beat = context.heartbeat.beat();
    loop {
        tokio::select! {
            () = done.cancelled() => return,
            () = tokio::time::sleep(beat) => {}
        }
        extend_due(&context).await;
    }
}

/// One beat: extends every due message, a call per distinct timeout (the adapter splits
/// each into batches of ten, sent concurrently).
pub(super) async fn extend_due<Q: Queue, S: Sink>(context: &Context<Q, S>) {
    let now = Instant::now();
    for (seconds, handles) in context.heartbeat.due(now) {
        let timeout = Duration::from_secs(seconds);
        let refs: Vec<&str> = handles.iter().map(String::as_str).collect();
        match context.queue.change_visibility(&refs, timeout).await {
            Ok(failures) => {
                let failed: std::collections::HashSet<usize> =
                    failures.iter().map(|failure| failure.index).collect();
                let extended: Vec<String> = handles
                    .iter()
                    .enumerate()
                    .filter(|(index, _)| !failed.contains(index))
                    .map(|(_, handle)| handle.clone())
                    .collect();
                context.heartbeat.extended(&extended, now + timeout);
                context.metrics.emit(VisibilityExtended {
                    extended: extended.len(),
                    failed: failures.len(),
                    error: None,
                    class: ErrorClass::Transient,
                });
            }
            Err(error) => context.metrics.emit(VisibilityExtended {
                extended: 0,
                failed: refs.len(),
                error: Some(&error),
                class: error.class(),
            }),
        }
    }
}

/// Hands messages back by letting them go: no longer extended, they return to the queue
/// when their visibility runs out (at most one visibility timeout after the last
/// extension). While the writes are paused this is how messages go back, not [`release`]:
/// made visible at once, they would be taken by the polls still in flight, handed back,
/// taken again, each time costing them a receive towards SQS's maxReceiveCount (measured in
/// the pipeline's tests: five receives of one message within a second, with a few polls in
/// flight). Let go, an outage of any length costs each message at most two receives.
pub(super) fn let_go<Q: Queue, S: Sink>(
    context: &Context<Q, S>,
    messages: Vec<InFlight>,
    why: &'static str,
) {
    if messages.is_empty() {
        return;
    }
    context
        .heartbeat
        .forget(messages.iter().map(|m| m.message.receipt_handle.as_str()));
    Tally::add(&context.tally.released, messages.len());
    context.metrics.emit(MessagesLetGo {
        count: messages.len(),
        why,
    });
}

/// Hands messages back to the queue at once (visibility 0): those received after shutdown
/// began, and those of an abandoned batch. `why` says which, in the log. Released or not,
/// they are settled here: one that could not be released returns after its timeout.
pub(super) async fn release<Q: Queue, S: Sink>(
    context: &Context<Q, S>,
    messages: Vec<InFlight>,
    why: &'static str,
) {
    let handles: Vec<&str> = messages
        .iter()
        .map(|m| m.message.receipt_handle.as_str())
        .collect();
    context.heartbeat.forget(handles.iter().copied());
    release_handles(context, &handles, why).await;
}

/// Hands back every message still held, wherever it is in the pipeline: for a shutdown
/// that cannot wait for its work any longer. One whose batch commits meanwhile comes back
/// as a duplicate, skipped by the insert.
pub(super) async fn release_held<Q: Queue, S: Sink>(context: &Context<Q, S>, why: &'static str) {
    let handles = context.heartbeat.forget_all();
    let handles: Vec<&str> = handles.iter().map(String::as_str).collect();
    release_handles(context, &handles, why).await;
}

async fn release_handles<Q: Queue, S: Sink>(
    context: &Context<Q, S>,
    handles: &[&str],
    why: &'static str,
) {
    if handles.is_empty() {
        return;
    }
    let reporter = context.metrics.retry_reporter();
    match retry(RetryPolicy::BRIEF, Stage::Release, &reporter, || {
        context.queue.change_visibility(handles, Duration::ZERO)
    })
    .await
    {
        Ok(failures) => {
            let count = handles.len() - failures.len();
            Tally::add(&context.tally.released, count);
            context.metrics.emit(MessagesReleased { count, why });
        }
        Err(error) => context.metrics.emit(CallFailed {
            stage: Stage::Release,
            class: error.class(),
            error: &error,
            consequence: "Could not release messages; they return after their visibility timeout.",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_message_is_due_with_half_its_visibility_and_a_beat_left_and_extended_by_all_of_it() {
        let heartbeat = Heartbeat::new(Duration::from_secs(30));
        let start = Instant::now();
        heartbeat.track("a", start + Duration::from_secs(120));
        // A beat is 7.5 s: due once 22.5 s or less are left.
        assert!(heartbeat.due(start + Duration::from_secs(7)).is_empty());
        let due = heartbeat.due(start + Duration::from_secs(8));
        assert_eq!(due.get(&30).map(Vec::len), Some(1), "{due:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn no_extension_reaches_past_the_deadline_by_more_than_a_beat() {
        let heartbeat = Heartbeat::new(Duration::from_secs(30));
        let start = Instant::now();
        heartbeat.track("a", start + Duration::from_secs(20));
        let due = heartbeat.due(start + Duration::from_secs(16));
        // 4 s to the deadline, plus a beat of 7.5 s: 11 s, not 30.
        assert_eq!(due.keys().copied().collect::<Vec<_>>(), [11]);
        // Past the deadline, the message is dropped and never extended again.
        assert!(heartbeat.due(start + Duration::from_secs(21)).is_empty());
        assert_eq!(heartbeat.tracked(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn forgotten_messages_are_not_extended() {
        let heartbeat = Heartbeat::new(Duration::from_secs(30));
        let start = Instant::now();
        heartbeat.track("a", start + Duration::from_secs(120));
        heartbeat.track("b", start + Duration::from_secs(120));
        heartbeat.forget(["a"]);
        let due = heartbeat.due(start + Duration::from_secs(20));
        assert_eq!(due.get(&30), Some(&vec!["b".to_owned()]));
    }

    #[tokio::test(start_paused = true)]
    async fn extensions_stop_at_the_twelve_hour_cap() {
        let heartbeat = Heartbeat::new(Duration::from_secs(30));
        let start = Instant::now();
        let long_ago = start + MAX_VISIBILITY + Duration::from_secs(3600);
        heartbeat.track("a", long_ago);
        let near_cap = start + MAX_VISIBILITY - Duration::from_millis(500);
        assert!(heartbeat.due(near_cap).is_empty());
        assert_eq!(heartbeat.tracked(), 0);
    }
}
