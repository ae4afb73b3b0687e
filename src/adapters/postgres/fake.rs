//! An in-memory sink: rows keyed by message id (a second insert of an id is a duplicate,
//! as with `ON CONFLICT DO NOTHING`), the dead-letter record, and faults a test turns on.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::domain::dead_letter::DeadLetter;
use crate::domain::event::LoginRow;
use crate::retry::{Classify, ErrorClass};

use super::{InsertOutcome, Sink, SinkFailure};

#[derive(Debug, thiserror::Error)]
#[error("fake database: {what}")]
pub struct FakeError {
    pub class: ErrorClass,
    pub what: &'static str,
}

impl Classify for FakeError {
    fn class(&self) -> ErrorClass {
        self.class
    }
}

impl SinkFailure for FakeError {}

#[derive(Default)]
pub struct FakeSink {
    pub rows: Mutex<HashMap<String, LoginRow>>,
    pub dead_letter_record: Mutex<HashSet<String>>,
    /// Rows refused for good (a constraint, say), whatever batch they are in.
    pub refuse: Option<fn(&LoginRow) -> bool>,
    /// How long each insert takes.
    pub insert_delay: Duration,
    /// Inserts that fail transiently before one succeeds.
    pub failing_inserts: AtomicUsize,
    /// While set, every call fails transiently (the database is down).
    pub down: std::sync::atomic::AtomicBool,
    /// Inserts in flight now, and the most seen at once.
    pub inserting: AtomicUsize,
    pub most_concurrent_inserts: AtomicUsize,
    pub insert_calls: AtomicUsize,
}

impl FakeSink {
    fn check_up(&self) -> Result<(), FakeError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(FakeError {
                class: ErrorClass::Transient,
                what: "connection refused",
            });
        }
        Ok(())
    }
}

impl Sink for FakeSink {
    type Error = FakeError;

    async fn insert(&self, rows: &[&LoginRow]) -> Result<InsertOutcome, FakeError> {
        self.insert_calls.fetch_add(1, Ordering::SeqCst);
        let now = self.inserting.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_concurrent_inserts
            .fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.insert_delay).await;
        self.inserting.fetch_sub(1, Ordering::SeqCst);
        self.check_up()?;
        if self
            .failing_inserts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(FakeError {
                class: ErrorClass::Transient,
                what: "serialization failure",
            });
        }
        if let Some(refuse) = self.refuse
            && rows.iter().any(|row| refuse(row))
        {
            return Err(FakeError {
                class: ErrorClass::Permanent,
                what: "value too long",
            });
        }
        let mut stored = self.rows.lock().unwrap();
        let mut outcome = InsertOutcome::default();
        for row in rows {
            if stored.contains_key(&row.message_id) {
                outcome.duplicates += 1;
            } else {
                stored.insert(row.message_id.clone(), (*row).clone());
                outcome.inserted += 1;
            }
        }
        Ok(outcome)
    }

    async fn dead_lettered(&self, sqs_message_ids: &[&str]) -> Result<HashSet<String>, FakeError> {
        self.check_up()?;
        let record = self.dead_letter_record.lock().unwrap();
        Ok(sqs_message_ids
            .iter()
            .filter(|id| record.contains(**id))
            .map(|id| (*id).to_owned())
            .collect())
    }

    async fn record_dead_letters(&self, letters: &[DeadLetter], _: &str) -> Result<(), FakeError> {
        self.check_up()?;
        self.dead_letter_record
            .lock()
            .unwrap()
            .extend(letters.iter().map(|letter| letter.sqs_message_id.clone()));
        Ok(())
    }

    async fn ping(&self) -> Result<(), FakeError> {
        self.check_up()
    }
}
