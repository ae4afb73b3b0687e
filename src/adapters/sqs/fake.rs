//! An in-memory queue with SQS's semantics that matter to the pipeline: a received message
//! is hidden for its visibility timeout and comes back after it unless deleted; receipt
//! handles change with each receive; a long poll whose caller went away stays open and
//! takes what arrives, as SQS's does; batch calls can refuse entries. Time is tokio's, so
//! tests run under a paused clock.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;

use crate::domain::dead_letter::DeadLetter;
use crate::retry::ErrorClass;

use super::{EntryFailure, Queue, QueueDepth, QueueError, ReceivedMessage};

#[derive(Debug)]
struct Stored {
    id: String,
    body: String,
    sent_at: chrono::DateTime<Utc>,
    hidden_until: Option<Instant>,
    receives: u32,
    /// The receipt handle of the latest receive: only it can delete or change visibility.
    handle: Option<String>,
}

/// What every fake receive takes before it looks for messages.
pub const FAKE_ROUND_TRIP: Duration = Duration::from_millis(20);

/// A long poll dropped by its caller. SQS keeps it open until its wait ends and hands it
/// the first messages to arrive, which stay hidden for its visibility timeout with no one
/// to process them (aws-sdk-js#2350, aws-sdk-java-v2#1395; LocalStack does the same).
#[derive(Debug)]
struct AbandonedPoll {
    until: Instant,
    max: usize,
    visibility: Duration,
}

/// Faults a test turns on.
#[derive(Debug, Default)]
pub struct FakeFaults {
    /// Delete entries refused transiently, one per entry, until this many are used up.
    pub transient_delete_refusals: AtomicUsize,
    /// Delete entries refused as the sender's fault (a stale handle), one per entry.
    pub permanent_delete_refusals: AtomicUsize,
    /// Whole receive calls that fail transiently before one succeeds.
    pub failing_receives: AtomicUsize,
}

#[derive(Debug, Default)]
pub struct FakeQueue {
    messages: Mutex<BTreeMap<u64, Stored>>,
    next: AtomicUsize,
    pub dead_letters: Mutex<Vec<DeadLetter>>,
    pub faults: FakeFaults,
    /// Receives in flight now, and the most seen at once.
    receiving: AtomicUsize,
    pub most_concurrent_receives: AtomicUsize,
    pub receive_calls: AtomicUsize,
    /// Each `change_visibility` call: the handles and the timeout asked for, and when.
    pub visibility_changes: Mutex<Vec<(Instant, Vec<String>, Duration)>>,
    pub deleted: AtomicUsize,
    /// The most times any one message was received: what SQS's maxReceiveCount counts.
    pub most_receives_of_one: AtomicUsize,
    /// Acts as a FIFO queue would: [`Queue::keeps_group_order`].
    pub fifo: bool,
    abandoned_polls: Mutex<Vec<AbandonedPoll>>,
}

impl FakeQueue {
    /// An empty queue that acts as a FIFO queue would.
    pub fn fifo() -> Self {
        Self {
            fifo: true,
            ..Self::default()
        }
    }

    pub fn with_bodies<S: Into<String>>(bodies: impl IntoIterator<Item = S>) -> Self {
        let queue = Self::default();
        queue.send(bodies);
        queue
    }

    pub fn send<S: Into<String>>(&self, bodies: impl IntoIterator<Item = S>) {
        self.store(bodies);
        self.feed_abandoned_polls();
    }

    fn store<S: Into<String>>(&self, bodies: impl IntoIterator<Item = S>) {
        let mut messages = self.messages.lock().unwrap();
        for body in bodies {
            let n = self.next.fetch_add(1, Ordering::SeqCst) as u64;
            messages.insert(
                n,
                Stored {
                    id: format!("00000000-0000-4000-8000-{n:012}"),
                    body: body.into(),
                    sent_at: Utc::now(),
                    hidden_until: None,
                    receives: 0,
                    handle: None,
                },
            );
        }
    }

    /// Messages still in the queue (visible or not).
    pub fn remaining(&self) -> usize {
        self.messages.lock().unwrap().len()
    }

    fn visible(stored: &Stored, now: Instant) -> bool {
        stored.hidden_until.is_none_or(|until| until <= now)
    }

    fn take_visible(&self, max: usize, visibility: Duration) -> Vec<ReceivedMessage> {
        let now = Instant::now();
        let mut messages = self.messages.lock().unwrap();
        messages
            .values_mut()
            .filter(|stored| Self::visible(stored, now))
            .take(max)
            .map(|stored| {
                stored.receives += 1;
                self.most_receives_of_one
                    .fetch_max(stored.receives as usize, Ordering::SeqCst);
                stored.hidden_until = Some(now + visibility);
                let handle = format!("{}#{}", stored.id, stored.receives);
                stored.handle = Some(handle.clone());
                ReceivedMessage {
                    sqs_message_id: stored.id.clone(),
                    key: stored.id.clone(),
                    receipt_handle: handle,
                    body: stored.body.clone(),
                    sent_at: stored.sent_at,
                    first_received_at: Utc::now(),
                    receive_count: stored.receives,
                    group_id: None,
                    untrusted_attributes: None,
                }
            })
            .collect()
    }

    /// Abandoned polls still waiting take what is visible now (sent, or released), each
    /// returning (to no one) once it has taken something.
    fn feed_abandoned_polls(&self) {
        let now = Instant::now();
        let mut polls = self.abandoned_polls.lock().unwrap();
        polls.retain(|poll| {
            poll.until > now && self.take_visible(poll.max, poll.visibility).is_empty()
        });
    }

    fn refuse(counter: &AtomicUsize) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

fn error(operation: &'static str) -> QueueError {
    QueueError {
        operation,
        class: ErrorClass::Transient,
        detail: "injected by the fake".into(),
    }
}

impl Queue for FakeQueue {
    fn keeps_group_order(&self) -> bool {
        self.fifo
    }

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        self.receive_calls.fetch_add(1, Ordering::SeqCst);
        if Self::refuse(&self.faults.failing_receives) {
            return Err(error("ReceiveMessage"));
        }
        let now_receiving = self.receiving.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_concurrent_receives
            .fetch_max(now_receiving, Ordering::SeqCst);
        let mut open = OpenPoll {
            queue: self,
            poll: Some(AbandonedPoll {
                until: Instant::now() + FAKE_ROUND_TRIP + wait,
                max,
                visibility,
            }),
        };
        // A round trip, so concurrent receives overlap as they do on a real queue.
        tokio::time::sleep(FAKE_ROUND_TRIP).await;
        let deadline = Instant::now() + wait;
        let received = loop {
            let received = self.take_visible(max, visibility);
            if !received.is_empty() || Instant::now() >= deadline {
                break received;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        open.poll = None;
        Ok(received)
    }

    async fn delete(&self, receipt_handles: &[&str]) -> Result<Vec<EntryFailure>, QueueError> {
        let mut failures = Vec::new();
        let mut messages = self.messages.lock().unwrap();
        for (index, handle) in receipt_handles.iter().enumerate() {
            if Self::refuse(&self.faults.transient_delete_refusals) {
                failures.push(EntryFailure {
                    index,
                    code: "InternalError".into(),
                    sender_fault: false,
                });
                continue;
            }
            if Self::refuse(&self.faults.permanent_delete_refusals) {
                failures.push(EntryFailure {
                    index,
                    code: "ReceiptHandleIsInvalid".into(),
                    sender_fault: true,
                });
                continue;
            }
            let found = messages
                .iter()
                .find(|(_, stored)| stored.handle.as_deref() == Some(handle))
                .map(|(n, _)| *n);
            if let Some(n) = found {
                messages.remove(&n);
                self.deleted.fetch_add(1, Ordering::SeqCst);
            }
        }
        Ok(failures)
    }

    async fn change_visibility(
        &self,
        receipt_handles: &[&str],
        timeout: Duration,
    ) -> Result<Vec<EntryFailure>, QueueError> {
        let now = Instant::now();
        self.visibility_changes.lock().unwrap().push((
            now,
            receipt_handles.iter().map(|h| (*h).to_owned()).collect(),
            timeout,
        ));
        let mut messages = self.messages.lock().unwrap();
        for stored in messages.values_mut() {
            if stored
                .handle
                .as_deref()
                .is_some_and(|handle| receipt_handles.contains(&handle))
            {
                stored.hidden_until = Some(now + timeout);
            }
        }
        drop(messages);
        self.feed_abandoned_polls();
        Ok(Vec::new())
    }

    async fn dead_letter(&self, letters: &[DeadLetter]) -> Result<Vec<EntryFailure>, QueueError> {
        self.dead_letters
            .lock()
            .unwrap()
            .extend(letters.iter().cloned());
        Ok(Vec::new())
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        let now = Instant::now();
        let messages = self.messages.lock().unwrap();
        let visible = messages
            .values()
            .filter(|stored| Self::visible(stored, now))
            .count() as u64;
        Ok(QueueDepth {
            visible,
            in_flight: messages.len() as u64 - visible,
            delayed: 0,
        })
    }

    async fn dead_letter_depth(&self) -> Result<QueueDepth, QueueError> {
        Ok(QueueDepth {
            visible: self.dead_letters.lock().unwrap().len() as u64,
            ..QueueDepth::default()
        })
    }
}

/// A receive in progress: if its caller drops it, the poll goes on at the "server".
struct OpenPoll<'a> {
    queue: &'a FakeQueue,
    /// `None` once the poll has returned to its caller.
    poll: Option<AbandonedPoll>,
}

impl Drop for OpenPoll<'_> {
    fn drop(&mut self) {
        self.queue.receiving.fetch_sub(1, Ordering::SeqCst);
        if let Some(poll) = self.poll.take() {
            self.queue.abandoned_polls.lock().unwrap().push(poll);
            self.queue.feed_abandoned_polls();
        }
    }
}
