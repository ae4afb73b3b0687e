//! Row-specific or systemic: the judgement of rows the database refused.
//!
//! A refused batch is split in halves until the refused rows stand alone (see
//! [`super::write`]). The SQLSTATE does not say whose fault a refusal is: a CHECK that one
//! poison row breaks and a CHECK that a bad migration added, which every row breaks, both
//! answer 23514. Isolation does. A refused row is **poison**, and goes to the dead-letter
//! queue, only when the database was seen to take other rows at the same time:
//! - its batch-mates committed around it, or
//! - no batch-mate did (it was alone, or they were all refused), but the canary did: a row
//!   already in the table, written again through the same constraints and triggers
//!   ([`crate::adapters::postgres::Sink::canary`]);
//!
//! and only while one refusal (the same SQLSTATE, constraint, table and column) has not
//! refused more than `poison_per_minute` rows in the last minute: a refusal that takes row
//! after row is the database's fault even when some rows pass (a constraint that refuses
//! half of all valid rows). Any other refused row is **systemic**: it is not
//! dead-lettered, its message goes back to the queue, and the write path pauses (the
//! circuit breaker in [`super::breaker`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::adapters::postgres::Refusal;

/// The window of [`PoisonLedger`]: refusals counted per minute.
pub const POISON_WINDOW: Duration = Duration::from_secs(60);
/// Rows one refusal may dead-letter per [`POISON_WINDOW`] by default
/// (`SQS2PG_POISON_REFUSALS_PER_MINUTE`).
pub const DEFAULT_POISON_PER_MINUTE: usize = 20;

/// What became of the rows one refusal took in one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The rows are at fault: dead-letter them.
    Poison,
    /// The database is: keep the rows, pause the writes.
    Systemic,
}

/// What was seen of the database while it refused the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// Batch-mates committed, or the canary was accepted: the table takes rows.
    TakesRows,
    /// Nothing committed, and the canary was refused, failed or found no row to try.
    None,
}

/// How many rows each refusal dead-lettered lately, to cap it at `per_window`.
#[derive(Debug)]
pub struct PoisonLedger {
    per_window: usize,
    window: Duration,
    recent: Mutex<HashMap<Refusal, VecDeque<Instant>>>,
}

impl PoisonLedger {
    pub fn new(per_window: usize) -> Self {
        Self {
            per_window,
            window: POISON_WINDOW,
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// The verdict on `rows` rows refused by `refusal`. Poison is recorded against the
    /// refusal's allowance; all `rows` share one verdict, so a batch's rows refused alike
    /// are never split between the dead-letter queue and the source queue.
    pub fn judge(&self, refusal: &Refusal, rows: usize, evidence: Evidence) -> Verdict {
        if evidence == Evidence::None {
            return Verdict::Systemic;
        }
        let now = Instant::now();
        let mut recent = self.recent.lock().expect("not poisoned");
        recent.retain(|_, times| {
            while times.front().is_some_and(|at| now - *at >= self.window) {
                times.pop_front();
            }
            !times.is_empty()
        });
        let times = recent.entry(refusal.clone()).or_default();
        if times.len() + rows > self.per_window {
            return Verdict::Systemic;
        }
        times.extend(std::iter::repeat_n(now, rows));
        Verdict::Poison
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(constraint: &str) -> Refusal {
        Refusal {
            sqlstate: "23514".to_owned(),
            table: Some("user_logins".to_owned()),
            column: None,
            constraint: Some(constraint.to_owned()),
            datatype: None,
            message: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_row_is_poison_only_when_the_table_was_seen_taking_rows() {
        let ledger = PoisonLedger::new(20);
        let check = refusal("no_toasters");
        assert_eq!(
            ledger.judge(&check, 1, Evidence::None),
            Verdict::Systemic,
            "alone, with no canary: the database may refuse every row"
        );
        assert_eq!(
            ledger.judge(&check, 1, Evidence::TakesRows),
            Verdict::Poison
        );
    }

    #[tokio::test(start_paused = true)]
    async fn one_refusal_dead_letters_at_most_its_allowance_per_minute() {
        let ledger = PoisonLedger::new(3);
        let check = refusal("no_toasters");
        assert_eq!(
            ledger.judge(&check, 2, Evidence::TakesRows),
            Verdict::Poison
        );
        assert_eq!(
            ledger.judge(&check, 2, Evidence::TakesRows),
            Verdict::Systemic,
            "the rows of one batch share a verdict: 2 more would make 4"
        );
        assert_eq!(
            ledger.judge(&check, 1, Evidence::TakesRows),
            Verdict::Poison
        );
        assert_eq!(
            ledger.judge(&check, 1, Evidence::TakesRows),
            Verdict::Systemic
        );
        assert_eq!(
            ledger.judge(&refusal("other"), 3, Evidence::TakesRows),
            Verdict::Poison,
            "each refusal has its own allowance"
        );
        tokio::time::advance(POISON_WINDOW).await;
        assert_eq!(
            ledger.judge(&check, 3, Evidence::TakesRows),
            Verdict::Poison,
            "the window moved on"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_allowance_of_zero_judges_every_refusal_systemic() {
        let ledger = PoisonLedger::new(0);
        assert_eq!(
            ledger.judge(&refusal("c"), 1, Evidence::TakesRows),
            Verdict::Systemic
        );
    }
}
