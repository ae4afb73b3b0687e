//! The in-flight budget: how many messages, and how many bytes of their bodies, may be
//! between receipt and settlement at once. It bounds memory, and it is the backpressure: a
//! receiver reserves room before it polls and waits while the budget is spent, so a slow
//! database pauses receiving instead of filling memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::adapters::sqs::ReceivedMessage;
use crate::telemetry::events::MessagesSettled;
use crate::telemetry::metrics::Metrics;

/// What one message is charged beyond its body: ids, receipt handle, timestamps, the row.
const OVERHEAD_BYTES: usize = 1024;
/// A receive reserves room for at least this many bytes per message before it knows their
/// size: a typical event is a few hundred bytes. After a receive brings bigger ones, the
/// next reserve for the biggest lately seen, so that big bodies limit the receives in
/// flight instead of arriving past the budget (16 polls × 10 × 256 KiB would be 40 MiB).
const RESERVED_BYTES_PER_MESSAGE: usize = 4 * 1024;
/// The expected size falls by this share of itself at each receive of smaller bodies, so
/// one big message does not slow receiving for long.
const EXPECTATION_DECAY: usize = 8;
const SMALLEST_EXPECTATION: usize = RESERVED_BYTES_PER_MESSAGE + OVERHEAD_BYTES;

/// The bytes a message is charged.
pub fn message_bytes(message: &ReceivedMessage) -> usize {
    message.body.len() + message.receipt_handle.len() + OVERHEAD_BYTES
}

#[derive(Debug)]
pub struct Budget {
    messages: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    total_messages: usize,
    total_bytes: usize,
    /// Messages admitted and not yet settled (reservations of polls in flight excluded): a
    /// watch, so a drain can wait for its own work to settle before it checks the queue.
    admitted: Arc<watch::Sender<usize>>,
    /// What a receive reserves per message: the biggest lately seen, decaying.
    expected_message_bytes: AtomicUsize,
    metrics: Arc<Metrics>,
}

/// Room reserved for one receive: `messages` and `bytes` permits, trimmed to what arrived.
#[derive(Debug)]
pub struct Reservation {
    messages: OwnedSemaphorePermit,
    bytes: OwnedSemaphorePermit,
}

/// One admitted message's part of the budget, given back when it is dropped.
#[derive(Debug)]
pub struct Share {
    _messages: OwnedSemaphorePermit,
    _bytes: OwnedSemaphorePermit,
    admitted: Arc<watch::Sender<usize>>,
    metrics: Arc<Metrics>,
}

impl Drop for Share {
    fn drop(&mut self) {
        self.admitted.send_modify(|admitted| *admitted -= 1);
        self.metrics.emit(MessagesSettled { count: 1 });
    }
}

impl Budget {
    pub fn new(messages: usize, bytes: usize, metrics: Arc<Metrics>) -> Self {
        let messages = messages.max(1);
        let bytes = bytes.max(OVERHEAD_BYTES);
        Self {
            messages: Arc::new(Semaphore::new(messages)),
            bytes: Arc::new(Semaphore::new(bytes)),
            total_messages: messages,
            total_bytes: bytes,
            admitted: Arc::new(watch::Sender::new(0)),
            expected_message_bytes: AtomicUsize::new(SMALLEST_EXPECTATION),
            metrics,
        }
    }

    fn receive_bytes(&self, messages: usize) -> usize {
        messages * self.expected_message_bytes.load(Ordering::Relaxed)
    }

    /// After a receive whose biggest message took `biggest`: expect that much, or a little
    /// less than before.
    fn expect(&self, biggest: usize) {
        let _ = self.expected_message_bytes.fetch_update(
            Ordering::Relaxed,
            Ordering::Relaxed,
            |expected| {
                let decayed = expected - expected / EXPECTATION_DECAY;
                Some(biggest.max(decayed).max(SMALLEST_EXPECTATION))
            },
        );
    }

    /// Reserves room for a receive of up to `messages`, waiting while the budget is spent.
    pub async fn reserve(&self, messages: usize, bytes: usize) -> Reservation {
        let messages = messages.clamp(1, self.total_messages);
        let bytes = bytes.clamp(1, self.total_bytes);
        // Messages first: a receiver waiting for message room holds no bytes.
        let messages = acquire(&self.messages, messages).await;
        let bytes = acquire(&self.bytes, bytes).await;
        Reservation { messages, bytes }
    }

    /// The reservation a receive of `messages` makes before it knows their sizes.
    pub async fn reserve_receive(&self, messages: usize) -> Reservation {
        self.reserve(messages, self.receive_bytes(messages)).await
    }

    /// Turns a reservation into one share per message, in order: room not used goes back at
    /// once, and bytes beyond the reservation are waited for.
    pub async fn admit(
        &self,
        reservation: Reservation,
        messages: &[ReceivedMessage],
    ) -> Vec<Share> {
        let Reservation {
            messages: mut message_room,
            bytes: mut byte_room,
        } = reservation;
        let sizes: Vec<usize> = messages
            .iter()
            .map(|message| message_bytes(message).min(self.total_bytes))
            .collect();
        let needed: usize = sizes.iter().sum();
        self.expect(sizes.iter().copied().max().unwrap_or(0));
        if needed > byte_room.num_permits() {
            // Bodies bigger than reserved: give the reservation back and wait for all of it
            // at once (the whole budget at most). Waiting for the rest on top of what it
            // holds, a receive could wait for room another such receive holds while that
            // one waits for its room: both forever, with 1 MiB bodies and a small budget.
            drop(byte_room);
            byte_room = acquire(&self.bytes, needed.min(self.total_bytes)).await;
        }
        let mut shares = Vec::with_capacity(messages.len());
        for size in sizes {
            let messages = message_room.split(1);
            let size = size.min(byte_room.num_permits());
            let bytes = byte_room.split(size);
            let (Some(messages), Some(bytes)) = (messages, bytes) else {
                unreachable!("a reservation covers every message it was made for");
            };
            self.admitted.send_modify(|admitted| *admitted += 1);
            shares.push(Share {
                _messages: messages,
                _bytes: bytes,
                admitted: Arc::clone(&self.admitted),
                metrics: Arc::clone(&self.metrics),
            });
        }
        shares
    }

    /// Messages admitted and not yet settled.
    pub fn admitted(&self) -> usize {
        *self.admitted.borrow()
    }

    /// Waits until every admitted message is settled (committed and deleted, dead-lettered,
    /// released or dropped).
    pub async fn settled(&self) {
        let mut admitted = self.admitted.subscribe();
        // The sender lives in `self`, so the watch cannot close while this waits.
        let _ = admitted.wait_for(|admitted| *admitted == 0).await;
    }

    /// Whether another receive of `messages` would find room now.
    pub fn has_room_for(&self, messages: usize) -> bool {
        self.messages.available_permits() >= messages
            && self.bytes.available_permits() >= self.receive_bytes(messages)
    }
}

async fn acquire(semaphore: &Arc<Semaphore>, permits: usize) -> OwnedSemaphorePermit {
    Arc::clone(semaphore)
        .acquire_many_owned(u32::try_from(permits).unwrap_or(u32::MAX))
        .await
        .expect("the budget's semaphores are never closed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn message(body_len: usize) -> ReceivedMessage {
        let now = chrono::Utc::now();
        ReceivedMessage {
            sqs_message_id: "m".into(),
            key: "m".into(),
            receipt_handle: "r".into(),
            body: "x".repeat(body_len),
            sent_at: now,
            first_received_at: now,
            receive_count: 1,
            group_id: None,
            untrusted_attributes: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_receiver_waits_while_the_budget_is_spent_and_resumes_when_a_message_settles() {
        let budget = Arc::new(Budget::new(10, 1 << 20, Arc::new(Metrics::new())));
        let reservation = budget.reserve_receive(10).await;
        let mut shares = budget.admit(reservation, &vec![message(10); 10]).await;
        assert_eq!(budget.admitted(), 10);
        assert!(!budget.has_room_for(1));

        let waiting = {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move { budget.reserve_receive(1).await })
        };
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(
            !waiting.is_finished(),
            "a spent budget must hold the receiver"
        );
        drop(shares.pop());
        let reservation = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("one settled message makes room for one")
            .unwrap();
        assert_eq!(budget.admitted(), 9);
        drop(reservation);
    }

    #[tokio::test]
    async fn room_a_receive_did_not_use_goes_back_at_once() {
        let budget = Budget::new(100, 1 << 20, Arc::new(Metrics::new()));
        let reservation = budget.reserve_receive(10).await;
        let shares = budget.admit(reservation, &[message(10), message(10)]).await;
        assert_eq!(shares.len(), 2);
        assert!(budget.has_room_for(98));
        assert!(!budget.has_room_for(99));
    }

    /// Receives of big bodies must not each bring 10 of them past the budget: after one
    /// brought 200 KB bodies, the next reserve for such bodies before they poll.
    #[tokio::test(start_paused = true)]
    async fn after_big_bodies_a_receive_reserves_for_big_bodies() {
        let budget = Budget::new(1000, 3 << 20, Arc::new(Metrics::new()));
        assert!(budget.has_room_for(10));
        let reservation = budget.reserve_receive(10).await;
        let held = budget.admit(reservation, &vec![message(200_000); 10]).await;
        assert!(
            !budget.has_room_for(10),
            "2 MB held of 3 MiB: ten more such bodies do not fit"
        );
        assert!(budget.has_room_for(4));
        drop(held);
        // Small bodies again: the expectation decays back to its floor.
        for _ in 0..60 {
            let reservation = budget.reserve_receive(10).await;
            drop(budget.admit(reservation, &vec![message(300); 10]).await);
        }
        assert_eq!(budget.receive_bytes(1), SMALLEST_EXPECTATION);
    }

    /// Two receives that each reserved for small bodies and each brought ten bodies of a
    /// MiB, with a budget of 2 MiB: each needs more than it holds. Holding its reservation
    /// while it waits for the rest, each would wait for the other forever.
    #[tokio::test(start_paused = true)]
    async fn receives_of_bodies_bigger_than_reserved_never_wait_for_each_other() {
        let budget = Arc::new(Budget::new(1000, 2 << 20, Arc::new(Metrics::new())));
        let first = budget.reserve_receive(10).await;
        let second = budget.reserve_receive(10).await;
        let admit = |reservation| {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move {
                let shares = budget.admit(reservation, &vec![message(1 << 20); 10]).await;
                drop(shares);
            })
        };
        let (a, b) = (admit(first), admit(second));
        tokio::time::timeout(Duration::from_secs(60), async {
            a.await.unwrap();
            b.await.unwrap();
        })
        .await
        .expect("both receives are admitted in turn");
    }

    #[tokio::test(start_paused = true)]
    async fn big_bodies_are_bounded_by_the_byte_budget() {
        let total = 1 << 20;
        let budget = Arc::new(Budget::new(1000, total, Arc::new(Metrics::new())));
        // Four 250 KB bodies fit in a MiB, a fifth does not.
        let first = budget.reserve_receive(4).await;
        let held = budget.admit(first, &vec![message(250_000); 4]).await;
        let next = {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move {
                let reservation = budget.reserve_receive(1).await;
                budget.admit(reservation, &[message(250_000)]).await
            })
        };
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!next.is_finished(), "the fifth body must wait for room");
        drop(held);
        let admitted = next.await.unwrap();
        assert_eq!(admitted.len(), 1);
    }
}
