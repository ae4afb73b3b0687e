//! The one fault-injecting queue: the real SQS queue behind a wrapper that loses, delays or
//! stalls calls, and falsifies readings, as told.

use std::sync::Arc;
use std::time::Duration;

use sqs2pg::adapters::sqs::{
    EntryFailure, Queue, QueueDepth, QueueError, ReceivedMessage, SqsQueue,
};
use sqs2pg::domain::dead_letter::DeadLetter;
use sqs2pg::retry::ErrorClass;

use super::TestQueues;

/// Faults to inject in front of the real queue. Counters count down as faults fire.
#[derive(Debug, Default)]
pub struct Faults {
    /// Delete calls to swallow: answered as successful, nothing deleted (a lost response).
    pub lose_deletes: std::sync::atomic::AtomicUsize,
    /// Messages whose delete was swallowed so far.
    pub lost_deletes: std::sync::atomic::AtomicUsize,
    /// Delete calls to hold back for `delete_delay` before passing them on.
    pub slow_deletes: std::sync::atomic::AtomicUsize,
    pub delete_delay: Duration,
    /// Ignore visibility changes, so the heartbeat cannot keep messages in flight.
    pub freeze_visibility: std::sync::atomic::AtomicBool,
    /// Swallow every n-th delete call (0: never), like `lose_deletes` but as a pattern.
    pub lose_every_nth_delete: usize,
    /// Delete calls seen so far (for the pattern).
    pub delete_calls: std::sync::atomic::AtomicUsize,
    /// Receipt handles of every message whose delete was swallowed, in order.
    pub lost_receipt_handles: std::sync::Mutex<Vec<String>>,
    /// The key (idempotency id) of every received message, by receipt handle.
    pub received_keys: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// Dead-letter sends to hold for `dead_letter_stall` and then fail as transient, like a
    /// call caught in an outage.
    pub stall_dead_letters: std::sync::atomic::AtomicUsize,
    pub dead_letter_stall: Duration,
    /// Receives to answer empty without asking SQS (a long poll that found nothing).
    pub empty_receives: std::sync::atomic::AtomicUsize,
    /// Depth reads to answer "empty" whatever the queue holds (approximate counts).
    pub falsely_empty_depths: std::sync::atomic::AtomicUsize,
}

/// The real SQS queue behind a fault injector.
pub struct FaultyQueue {
    pub inner: SqsQueue,
    pub faults: Arc<Faults>,
}

impl TestQueues {
    /// The real source queue behind `faults`.
    pub fn faulty(&self, faults: &Arc<Faults>) -> FaultyQueue {
        FaultyQueue {
            inner: self.sqs_queue(),
            faults: Arc::clone(faults),
        }
    }
}

fn take_one(counter: &std::sync::atomic::AtomicUsize) -> bool {
    use std::sync::atomic::Ordering;
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl Queue for FaultyQueue {
    fn keeps_group_order(&self) -> bool {
        self.inner.keeps_group_order()
    }

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        if take_one(&self.faults.empty_receives) {
            return Ok(Vec::new());
        }
        let messages = self.inner.receive(max, wait, visibility).await?;
        let mut keys = self.faults.received_keys.lock().expect("not poisoned");
        for message in &messages {
            keys.insert(message.receipt_handle.clone(), message.key.clone());
        }
        Ok(messages)
    }

    async fn delete(&self, receipt_handles: &[&str]) -> Result<Vec<EntryFailure>, QueueError> {
        let call = self
            .faults
            .delete_calls
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        let nth = self.faults.lose_every_nth_delete;
        if take_one(&self.faults.lose_deletes) || (nth > 0 && call.is_multiple_of(nth)) {
            self.faults
                .lost_deletes
                .fetch_add(receipt_handles.len(), std::sync::atomic::Ordering::SeqCst);
            self.faults
                .lost_receipt_handles
                .lock()
                .expect("not poisoned")
                .extend(receipt_handles.iter().map(|handle| (*handle).to_owned()));
            return Ok(Vec::new());
        }
        if take_one(&self.faults.slow_deletes) {
            tokio::time::sleep(self.faults.delete_delay).await;
        }
        self.inner.delete(receipt_handles).await
    }

    async fn change_visibility(
        &self,
        receipt_handles: &[&str],
        timeout: Duration,
    ) -> Result<Vec<EntryFailure>, QueueError> {
        if self
            .faults
            .freeze_visibility
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(Vec::new());
        }
        self.inner.change_visibility(receipt_handles, timeout).await
    }

    async fn dead_letter(&self, letters: &[DeadLetter]) -> Result<Vec<EntryFailure>, QueueError> {
        if take_one(&self.faults.stall_dead_letters) {
            tokio::time::sleep(self.faults.dead_letter_stall).await;
            return Err(QueueError {
                operation: "SendMessageBatch",
                class: ErrorClass::Transient,
                detail: "injected: the dead-letter queue was unreachable".to_owned(),
            });
        }
        self.inner.dead_letter(letters).await
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        if take_one(&self.faults.falsely_empty_depths) {
            return Ok(QueueDepth::default());
        }
        self.inner.depth().await
    }

    async fn dead_letter_depth(&self) -> Result<QueueDepth, QueueError> {
        self.inner.dead_letter_depth().await
    }
}
