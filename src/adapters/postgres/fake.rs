//! An in-memory sink: rows keyed by their idempotency key (a second insert of an id is a duplicate,
//! as with `ON CONFLICT DO NOTHING`), the dead-letter record, and faults a test turns on:
//! a database that is down (unreachable), busy (transient refusals), refuses some rows
//! (poison) or refuses every row alike (a bad migration).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::domain::dead_letter::DeadLetter;
use crate::domain::stream::Row;
use crate::retry::{Classify, ErrorClass};

use super::{Blame, Canary, InsertOutcome, Refusal, Sink, SinkFailure};

#[derive(Debug, thiserror::Error)]
#[error("fake database: {what}")]
pub struct FakeError {
    /// Boxed: a refusal's names make it large, and it travels in every `Result`.
    pub blame: Box<Blame>,
    pub what: &'static str,
}

impl FakeError {
    fn unreachable() -> Self {
        Self {
            blame: Box::new(Blame::Unreachable),
            what: "connection refused",
        }
    }

    fn refused(constraint: &str) -> Self {
        Self {
            blame: Box::new(Blame::Refused(Refusal {
                sqlstate: "23514".to_owned(),
                table: Some("user_logins".to_owned()),
                column: None,
                constraint: Some(constraint.to_owned()),
                datatype: None,
                message: None,
            })),
            what: "check constraint refused the row",
        }
    }
}

impl Classify for FakeError {
    fn class(&self) -> ErrorClass {
        match *self.blame {
            Blame::Refused(_) => ErrorClass::Permanent,
            Blame::Unreachable | Blame::Busy(_) => ErrorClass::Transient,
        }
    }
}

impl SinkFailure for FakeError {
    fn safe_detail(&self) -> String {
        match &*self.blame {
            Blame::Refused(refusal) => format!("database rejected the row: {refusal}"),
            _ => self.to_string(),
        }
    }

    fn blame(&self) -> Blame {
        (*self.blame).clone()
    }
}

#[derive(Default)]
pub struct FakeSink {
    pub rows: Mutex<HashMap<String, Row>>,
    pub dead_letter_record: Mutex<HashSet<String>>,
    /// Rows refused for good (a constraint, say), whatever batch they are in.
    pub refuse: Option<fn(&Row) -> bool>,
    /// How long each insert takes.
    pub insert_delay: Duration,
    /// Inserts that fail transiently before one succeeds.
    pub failing_inserts: AtomicUsize,
    /// While set, every call fails transiently (the database is down).
    pub down: AtomicBool,
    /// While set, every insert and the canary are refused alike (a constraint a bad
    /// migration added), while `ping` still answers.
    pub refuse_every_row: AtomicBool,
    /// While set, every insert fails with a busy refusal (a full disk), the canary too.
    pub busy: AtomicBool,
    /// While set, recording dead letters fails transiently (the rest works).
    pub failing_records: AtomicBool,
    /// Inserts in flight now, and the most seen at once.
    pub inserting: AtomicUsize,
    pub most_concurrent_inserts: AtomicUsize,
    pub insert_calls: AtomicUsize,
}

impl FakeSink {
    fn check_up(&self) -> Result<(), FakeError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(FakeError::unreachable());
        }
        Ok(())
    }

    /// The faults that refuse any write, the canary's included.
    fn check_writable(&self) -> Result<(), FakeError> {
        self.check_up()?;
        if self.busy.load(Ordering::SeqCst) {
            return Err(FakeError {
                blame: Box::new(Blame::Busy(Refusal {
                    sqlstate: "53100".to_owned(),
                    table: None,
                    column: None,
                    constraint: None,
                    datatype: None,
                    message: Some("could not extend file: No space left on device".to_owned()),
                })),
                what: "disk full",
            });
        }
        if self.refuse_every_row.load(Ordering::SeqCst) {
            return Err(FakeError::refused("bad_migration"));
        }
        Ok(())
    }
}

impl Sink for FakeSink {
    type Error = FakeError;

    async fn insert(&self, rows: &[&Row]) -> Result<InsertOutcome, FakeError> {
        self.insert_calls.fetch_add(1, Ordering::SeqCst);
        let now = self.inserting.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_concurrent_inserts
            .fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.insert_delay).await;
        self.inserting.fetch_sub(1, Ordering::SeqCst);
        self.check_writable()?;
        if self
            .failing_inserts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(FakeError {
                blame: Box::new(Blame::Busy(Refusal {
                    sqlstate: "40001".to_owned(),
                    table: None,
                    column: None,
                    constraint: None,
                    datatype: None,
                    message: Some("could not serialize access".to_owned()),
                })),
                what: "serialization failure",
            });
        }
        if let Some(refuse) = self.refuse
            && rows.iter().any(|row| refuse(row))
        {
            return Err(FakeError::refused("no_toasters"));
        }
        let mut stored = self.rows.lock().unwrap();
        let mut outcome = InsertOutcome::default();
        for row in rows {
            if stored.contains_key(row.key()) {
                outcome.duplicates += 1;
            } else {
                stored.insert(row.key().to_owned(), (*row).clone());
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
        if self.failing_records.load(Ordering::SeqCst) {
            return Err(FakeError::unreachable());
        }
        self.dead_letter_record
            .lock()
            .unwrap()
            .extend(letters.iter().map(|letter| letter.sqs_message_id.clone()));
        Ok(())
    }

    async fn ping(&self) -> Result<(), FakeError> {
        self.check_up()
    }

    async fn canary(&self) -> Result<Canary, FakeError> {
        self.check_writable()?;
        if self.rows.lock().unwrap().is_empty() {
            Ok(Canary::NoRow)
        } else {
            Ok(Canary::Accepted)
        }
    }
}
