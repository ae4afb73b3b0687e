//! Sending to the source queue until SQS has taken every message (`send`, `dlq redrive`),
//! through the one retry mechanism, [`crate::retry::retry`].

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{EntryFailure, OutgoingMessage, QueueError, SqsQueue};
use crate::retry::{Classify, ErrorClass, RetryPolicy, RetryReport, Stage, retry};

/// The messages SQS had still not taken when the retries ended.
#[derive(Debug, thiserror::Error)]
#[error("SQS did not take {} of {total} messages ({})", refused.len(), codes(refused))]
pub struct NotTaken {
    /// Each message not taken, by its index in the slice sent, with SQS's last code for it
    /// (`SendMessageBatch` if only whole calls failed for it).
    pub refused: Vec<EntryFailure>,
    pub total: usize,
    /// The last attempt's error, when it failed as a whole rather than entry by entry.
    #[source]
    pub call: Option<QueueError>,
}

/// `"InvalidMessageContents, ThrottlingException × 3"`: each code once, with its count.
fn codes<'a>(refused: impl IntoIterator<Item = &'a EntryFailure>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for failure in refused {
        *counts.entry(failure.code.as_str()).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(code, count)| match count {
            1 => code.to_owned(),
            _ => format!("{code} × {count}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why one attempt did not take everything.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error(transparent)]
    Call(#[from] QueueError),
    /// SQS took the rest of the batch; these may go through if sent again.
    #[error("SQS refused {count} of {sent} entries ({codes}); sending those again")]
    Refused {
        count: usize,
        sent: usize,
        codes: String,
    },
}

impl Classify for AttemptError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Call(error) => error.class(),
            Self::Refused { .. } => ErrorClass::Transient,
        }
    }
}

impl SqsQueue {
    /// Sends `messages` to the source queue. What SQS refuses for a reason that may pass
    /// (throttling, a batch call that failed after others went) is sent again under
    /// `policy`, and only that, so nothing it took is sent twice; a whole call that fails
    /// transiently is tried again the same way. An entry SQS blames on the sender (a body
    /// it does not accept) is not retried. Every retry is told to `report`.
    pub async fn send_until_taken(
        &self,
        messages: &[OutgoingMessage],
        policy: RetryPolicy,
        report: &(dyn Fn(RetryReport<'_>) + Sync),
    ) -> Result<(), NotTaken> {
        // Indexes into `messages` still to send, and the latest refusal of each one refused.
        let pending = Mutex::new((0..messages.len()).collect::<Vec<usize>>());
        let refusals = Mutex::new(BTreeMap::<usize, EntryFailure>::new());
        let attempt = || async {
            let sent = pending.lock().expect("not poisoned").clone();
            let batch: Vec<OutgoingMessage> = sent.iter().map(|&i| messages[i].clone()).collect();
            let failures = self.send(&batch).await?;
            let mut refused = refusals.lock().expect("not poisoned");
            for index in &sent {
                refused.remove(index);
            }
            let mut again = Vec::new();
            for failure in failures {
                let index = sent[failure.index];
                if !failure.sender_fault {
                    again.push(index);
                }
                refused.insert(index, EntryFailure { index, ..failure });
            }
            let outcome = match again.len() {
                0 => Ok(()),
                count => Err(AttemptError::Refused {
                    count,
                    sent: sent.len(),
                    codes: codes(again.iter().map(|index| &refused[index])),
                }),
            };
            *pending.lock().expect("not poisoned") = again;
            outcome
        };
        let outcome = retry(policy, Stage::Send, report, attempt).await;
        let mut refused = refusals.into_inner().expect("not poisoned");
        let call = match outcome {
            Err(AttemptError::Call(error)) => {
                for index in pending.into_inner().expect("not poisoned") {
                    refused.entry(index).or_insert(EntryFailure {
                        index,
                        code: error.operation.to_owned(),
                        sender_fault: error.class == ErrorClass::Permanent,
                    });
                }
                Some(error)
            }
            Ok(()) | Err(AttemptError::Refused { .. }) => None,
        };
        if refused.is_empty() {
            return Ok(());
        }
        Err(NotTaken {
            refused: refused.into_values().collect(),
            total: messages.len(),
            call,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use serde_json::{Value, json};

    use super::*;
    use crate::adapters::sqs::stub::{StubSqs, batch_answer};

    const QUICK: RetryPolicy = RetryPolicy {
        initial_interval: Duration::from_millis(1),
        max_interval: Duration::from_millis(2),
        max_elapsed: Some(Duration::from_millis(100)),
    };

    fn messages(bodies: &[&str]) -> Vec<OutgoingMessage> {
        bodies
            .iter()
            .map(|body| OutgoingMessage::new((*body).to_owned()))
            .collect()
    }

    /// The bodies of one SendMessageBatch request.
    fn bodies(request: &Value) -> Vec<String> {
        request["Entries"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|entry| entry["MessageBody"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn entries_refused_for_a_passing_reason_are_sent_again_and_only_they() {
        let answered = AtomicUsize::new(0);
        let stub = StubSqs::start(move |_, request| {
            let first = answered.fetch_add(1, Ordering::SeqCst) == 0;
            batch_answer(request, |entry| {
                (first && entry["MessageBody"] == "b").then_some(("ThrottlingException", false))
            })
        })
        .await;
        let reports = Mutex::new(Vec::new());
        stub.queue()
            .send_until_taken(&messages(&["a", "b", "c"]), QUICK, &|report| {
                reports
                    .lock()
                    .unwrap()
                    .push(matches!(report, RetryReport::Recovered { .. }));
            })
            .await
            .unwrap();
        let sent: Vec<Vec<String>> = stub.calls("SendMessageBatch").iter().map(bodies).collect();
        assert_eq!(sent, [vec!["a", "b", "c"], vec!["b"]]);
        assert_eq!(
            *reports.lock().unwrap(),
            [false, true],
            "a retry, then a recovery"
        );
    }

    #[tokio::test]
    async fn what_sqs_will_not_take_is_named_by_index_and_code() {
        let stub = StubSqs::start(|_, request| {
            batch_answer(request, |entry| match entry["MessageBody"].as_str() {
                Some("bad") => Some(("InvalidMessageContents", true)),
                Some("slow") => Some(("ThrottlingException", false)),
                _ => None,
            })
        })
        .await;
        let error = stub
            .queue()
            .send_until_taken(&messages(&["ok", "bad", "slow"]), QUICK, &|_| {})
            .await
            .unwrap_err();
        let refused: Vec<(usize, &str, bool)> = error
            .refused
            .iter()
            .map(|failure| (failure.index, failure.code.as_str(), failure.sender_fault))
            .collect();
        assert_eq!(
            refused,
            [
                (1, "InvalidMessageContents", true),
                (2, "ThrottlingException", false)
            ]
        );
        assert!(error.call.is_none());
        assert_eq!(
            error.to_string(),
            "SQS did not take 2 of 3 messages (InvalidMessageContents, ThrottlingException)"
        );
        let sends = stub.calls("SendMessageBatch");
        assert!(sends.len() > 1, "the throttled entry was tried again");
        assert!(
            sends[1..].iter().all(|request| bodies(request) == ["slow"]),
            "neither what was taken nor the sender's fault is sent again: {sends:?}"
        );
    }

    #[tokio::test]
    async fn a_call_that_fails_for_good_leaves_what_it_held_not_taken() {
        let answered = AtomicUsize::new(0);
        let stub =
            StubSqs::start(
                move |_, request| match answered.fetch_add(1, Ordering::SeqCst) {
                    0 => batch_answer(request, |entry| {
                        (entry["MessageBody"] == "b").then_some(("ThrottlingException", false))
                    }),
                    _ => json!({
                        "__type": "com.amazonaws.sqs#QueueDoesNotExist",
                        "message": "The specified queue does not exist.",
                    }),
                },
            )
            .await;
        let error = stub
            .queue()
            .send_until_taken(&messages(&["a", "b"]), QUICK, &|_| {})
            .await
            .unwrap_err();
        assert_eq!(error.refused.len(), 1);
        assert_eq!(error.refused[0].index, 1);
        assert_eq!(
            error.refused[0].code, "ThrottlingException",
            "its own last code"
        );
        let call = error.call.expect("the call's error");
        assert_eq!(call.class, ErrorClass::Permanent);
        assert!(call.detail.contains("QueueDoesNotExist"), "{call}");
        assert_eq!(
            stub.calls("SendMessageBatch").len(),
            2,
            "permanent: not retried"
        );
    }

    #[test]
    fn refusals_are_summed_up_by_code() {
        let failure = |index, code: &str| EntryFailure {
            index,
            code: code.to_owned(),
            sender_fault: false,
        };
        let refused = vec![
            failure(0, "ThrottlingException"),
            failure(3, "InvalidMessageContents"),
            failure(4, "ThrottlingException"),
        ];
        let error = NotTaken {
            refused,
            total: 10,
            call: None,
        };
        assert_eq!(
            error.to_string(),
            "SQS did not take 3 of 10 messages (InvalidMessageContents, ThrottlingException × 2)"
        );
    }
}
