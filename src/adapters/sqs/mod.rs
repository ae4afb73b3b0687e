//! The SQS adapter: a small [`Queue`] trait that the consumer drives, and [`SqsQueue`],
//! its implementation on `aws-sdk-sqs`. Tests wrap it to inject faults (lost deletes,
//! slow calls) in front of the real LocalStack queue.

mod attributes;
mod credentials;
#[cfg(test)]
pub mod fake;
mod send;
#[cfg(test)]
pub(crate) mod stub;

pub use attributes::{dead_letter_attributes, string_attributes};
pub use credentials::{CREDENTIALS_DEADLINE, CredentialsFailure, check_credentials};
pub use send::NotTaken;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    BatchResultErrorEntry, ChangeMessageVisibilityBatchRequestEntry,
    DeleteMessageBatchRequestEntry, Message, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName, SendMessageBatchRequestEntry,
};
use chrono::{DateTime, Utc};
use tokio::sync::OnceCell;

use crate::domain::dead_letter::{
    CarriedIdentity, DeadLetter, DeadLetterAttributes, Distrust, attribute,
};
use crate::domain::keyring::Keyring;
use crate::error_chain::one_line;
use crate::retry::{Classify, ErrorClass};

/// The default deadline of one SQS call attempt (`SQS2PG_SQS_TIMEOUT`); a receive gets its
/// long-poll wait on top. Real regions answer in milliseconds; an endpoint that accepts and
/// then says nothing is noticed, logged and retried within this.
pub const DEFAULT_SQS_TIMEOUT: Duration = Duration::from_secs(10);
/// The deadline of opening a connection to SQS.
pub const SQS_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// SQS caps every batch call at ten entries.
pub const MAX_BATCH: usize = 10;
/// SQS caps a message's total visibility at 12 hours from its first receipt.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);
/// SQS caps a batch send at 256 KiB of bodies and attributes; keep a margin for attributes.
const MAX_SEND_BATCH_BYTES: usize = 200 * 1024;
/// The data type of every attribute we send. SQS counts it in a message's size.
const STRING_TYPE: &str = "String";
/// The message size assumed when a queue does not report its MaximumMessageSize: the
/// smallest default SQS has had, so a copy sized to it fits any real queue.
const FALLBACK_MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// The long-poll wait of a dead-letter scan: short, since the scan ends at an empty receive.
const DEAD_LETTER_WAIT: Duration = Duration::from_secs(1);

/// SQS requires a FIFO queue's dead-letter queue to be FIFO, and a standard queue's to be
/// standard: a dead letter sent across would be refused, message by message.
pub fn check_fifo_pair(queue_url: &str, dlq_url: &str) -> Result<(), SetupError> {
    if is_fifo_queue_url(queue_url) == is_fifo_queue_url(dlq_url) {
        return Ok(());
    }
    Err(SetupError::FifoMismatch {
        queue_url: queue_url.to_owned(),
        dlq_url: dlq_url.to_owned(),
    })
}

/// Whether a queue URL names a FIFO queue: SQS requires FIFO names to end in `.fifo`.
pub fn is_fifo_queue_url(url: &str) -> bool {
    url.trim_end_matches('/').ends_with(".fifo")
}

/// A message to send: its body, our attributes, and its message group. On a FIFO queue
/// the group and a deduplication id go in `fifo` (SQS refuses a FIFO send without a group,
/// and without a deduplication id unless the queue deduplicates by content); on a standard
/// queue a group is optional (a *fair queue* is a standard queue whose producers set one,
/// so that one noisy group does not delay the others) and a deduplication id refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub body: String,
    pub attributes: Vec<(&'static str, String)>,
    pub fifo: Option<FifoIds>,
    /// The group on a standard queue; ignored when `fifo` is set.
    pub group_id: Option<String>,
}

impl OutgoingMessage {
    pub fn new(body: String) -> Self {
        Self {
            body,
            attributes: Vec::new(),
            fifo: None,
            group_id: None,
        }
    }

    /// Keeps a received message's group on the way to another queue of the same kind: on
    /// a FIFO queue with `deduplication_id` (and the default group if it had none, which
    /// SQS never does), on a standard queue as it was, if it had one.
    pub fn in_group(self, fifo: bool, group_id: Option<String>, deduplication_id: &str) -> Self {
        match fifo {
            true => Self {
                fifo: Some(FifoIds {
                    group_id: group_id.unwrap_or_else(|| DEFAULT_GROUP_ID.to_owned()),
                    deduplication_id: deduplication_id.to_owned(),
                }),
                ..self
            },
            false => Self { group_id, ..self },
        }
    }

    /// The MessageGroupId it is sent with.
    fn message_group_id(&self) -> Option<String> {
        match &self.fifo {
            Some(ids) => Some(ids.group_id.clone()),
            None => self.group_id.clone(),
        }
    }
}

/// The ids a FIFO queue needs on every send. SQS drops a second send with the same
/// deduplication id within five minutes, which is what makes a repeated send harmless.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FifoIds {
    pub group_id: String,
    pub deduplication_id: String,
}

/// One received message, with what the consumer needs to process and acknowledge it.
#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    /// The id SQS gave this copy of the message.
    pub sqs_message_id: String,
    /// The idempotency key: the original id of a redriven message whose tag verified
    /// ([`CarriedIdentity`]), else `sqs_message_id`.
    pub key: String,
    pub receipt_handle: String,
    pub body: String,
    /// When the message was first sent; survives redrive through a tagged attribute.
    pub sent_at: DateTime<Utc>,
    pub first_received_at: DateTime<Utc>,
    pub receive_count: u32,
    /// The message group: a FIFO queue's, or a fair queue's.
    pub group_id: Option<String>,
    /// Identity attributes it carried that were not believed (not written by sqs2pg, or
    /// under a key no longer in the ring): it is keyed and dated as a fresh message, and
    /// the pipeline counts it.
    pub untrusted_attributes: Option<Distrust>,
}

/// Queue depth as SQS reports it (approximate on AWS, exact on LocalStack).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

impl QueueDepth {
    pub fn is_empty(&self) -> bool {
        self.visible == 0 && self.in_flight == 0 && self.delayed == 0
    }
}

/// An entry of a batch call that SQS refused while accepting the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryFailure {
    /// Index into the slice passed to the call.
    pub index: usize,
    pub code: String,
    /// SQS blames the caller (a stale receipt handle, say): trying again will not help.
    pub sender_fault: bool,
}

/// Splits the items of a batch call into those SQS accepted and those it refused, in order.
pub fn split_by_failures<T>(items: Vec<T>, failures: &[EntryFailure]) -> (Vec<T>, Vec<T>) {
    let refused: HashSet<usize> = failures.iter().map(|failure| failure.index).collect();
    let (refused, accepted): (Vec<_>, Vec<_>) = items
        .into_iter()
        .enumerate()
        .partition(|(index, _)| refused.contains(index));
    let items = |pairs: Vec<(usize, T)>| pairs.into_iter().map(|(_, item)| item).collect();
    (items(accepted), items(refused))
}

/// An SQS call that failed as a whole. `detail` is one line: the service's code and
/// message, or the SDK's cause chain (`dispatch failure: io error: … Connection refused`),
/// and the setting to check when one is evidently at fault.
#[derive(Debug, thiserror::Error)]
#[error("SQS {operation} failed ({class}): {detail}")]
pub struct QueueError {
    pub operation: &'static str,
    pub class: ErrorClass,
    pub detail: String,
}

impl Classify for QueueError {
    fn class(&self) -> ErrorClass {
        self.class
    }
}

use credentials::CHECK_CREDENTIALS;

/// The setting to check when a call fails this way.
const CHECK_ENDPOINT: &str = "check AWS_ENDPOINT_URL (or, without it, AWS_REGION) and the network";
const CHECK_QUEUE_URL: &str = "check SQS2PG_QUEUE_URL (and SQS2PG_DLQ_URL, if set)";

impl QueueError {
    fn from_sdk<E, R>(operation: &'static str, error: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
        SdkError<E, R>: std::error::Error + 'static,
    {
        // Not the endpoint's fault, whatever kind of failure the SDK calls it.
        if let Some(failure) = CredentialsFailure::behind(&error) {
            return Self {
                operation,
                class: failure.class(),
                detail: failure.to_string(),
            };
        }
        let class = match &error {
            SdkError::TimeoutError(_)
            | SdkError::DispatchFailure(_)
            | SdkError::ResponseError(_) => ErrorClass::Transient,
            SdkError::ServiceError(_) if is_transient_code(error.code()) => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        };
        let hint = match &error {
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => Some(CHECK_ENDPOINT),
            SdkError::ServiceError(_) => hint_for_code(error.code()),
            _ => None,
        };
        let description = describe_sdk_error(&error);
        Self {
            operation,
            class,
            detail: match hint {
                Some(hint) => format!("{description}; {hint}"),
                None => description,
            },
        }
    }

    /// For a missing queue, names the setting that gave this queue's URL, where the caller
    /// knows it better than "the queue URLs".
    fn naming_the_queue(mut self, hint: &str) -> Self {
        if let Some(stripped) = self.detail.strip_suffix(&format!("; {CHECK_QUEUE_URL}")) {
            self.detail = format!("{stripped}; {hint}");
        }
        self
    }
}

/// One line: a service error's code and message, else the error and its causes. Not
/// `DisplayErrorContext`, which appends the whole `Debug` output, raw HTTP response included.
fn describe_sdk_error<E, R>(error: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    SdkError<E, R>: std::error::Error + 'static,
{
    if let SdkError::ServiceError(service) = error {
        let service = service.err();
        match (service.code(), service.message()) {
            (Some(code), Some(message)) => return format!("{code}: {message}"),
            (Some(code), None) => return code.to_owned(),
            _ => return one_line(service),
        }
    }
    one_line(error)
}

fn hint_for_code(code: Option<&str>) -> Option<&'static str> {
    match code? {
        "AWS.SimpleQueueService.NonExistentQueue" | "QueueDoesNotExist" => Some(CHECK_QUEUE_URL),
        "InvalidClientTokenId"
        | "UnrecognizedClientException"
        | "SignatureDoesNotMatch"
        | "InvalidSignatureException"
        | "MissingAuthenticationToken"
        | "IncompleteSignature"
        | "InvalidSecurity"
        | "ExpiredToken"
        | "AccessDenied"
        | "AccessDeniedException" => Some(CHECK_CREDENTIALS),
        _ => None,
    }
}

/// Throttling and server-side codes that SQS documents as worth retrying.
fn is_transient_code(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "ThrottlingException"
                | "RequestThrottled"
                | "Throttling"
                | "ServiceUnavailable"
                | "InternalError"
                | "InternalFailure"
                | "KmsThrottled"
                | "RequestTimeout"
        )
    )
}

/// What the consumer needs from a queue. `SqsQueue` is the real one.
pub trait Queue: Send + Sync + 'static {
    /// Long-polls for up to `max` messages, hiding them for `visibility`.
    fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> impl Future<Output = Result<Vec<ReceivedMessage>, QueueError>> + Send;

    /// Deletes acknowledged messages, in calls of up to [`MAX_BATCH`] made concurrently.
    fn delete(
        &self,
        receipt_handles: &[&str],
    ) -> impl Future<Output = Result<Vec<EntryFailure>, QueueError>> + Send;

    /// Sets the visibility timeout of in-flight messages: extends them, or releases them with
    /// zero. In calls of up to [`MAX_BATCH`] made concurrently.
    fn change_visibility(
        &self,
        receipt_handles: &[&str],
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<EntryFailure>, QueueError>> + Send;

    /// Sends poison messages to the dead-letter queue, bodies unchanged, reasons attached.
    fn dead_letter(
        &self,
        letters: &[DeadLetter],
    ) -> impl Future<Output = Result<Vec<EntryFailure>, QueueError>> + Send;

    /// Depth of the source queue.
    fn depth(&self) -> impl Future<Output = Result<QueueDepth, QueueError>> + Send;

    /// Whether the queue promises an order within each message group (a FIFO queue). Its
    /// commits must keep that order, so the pipeline writes such a queue with one writer: a
    /// group's messages can span two batches, and one writer commits batches as they close.
    /// No default: a wrapper that forgot to forward it would lose the order silently.
    fn keeps_group_order(&self) -> bool;

    /// Depth of the dead-letter queue.
    fn dead_letter_depth(&self) -> impl Future<Output = Result<QueueDepth, QueueError>> + Send;
}

/// The source queue and its dead-letter queue on SQS.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    queue_url: String,
    dlq_url: String,
    /// The dead-letter queue's MaximumMessageSize, read on the first dead letter.
    dlq_max_message_bytes: Arc<OnceCell<usize>>,
    /// Tags the dead letters it sends and checks the tags of what it receives
    /// ([`CarriedIdentity`]). `run` always sets it; without it dead letters go untagged and
    /// no carried identity is believed.
    keyring: Option<Arc<Keyring>>,
}

impl SqsQueue {
    pub fn new(client: Client, queue_url: String, dlq_url: String) -> Self {
        Self {
            client,
            queue_url,
            dlq_url,
            dlq_max_message_bytes: Arc::default(),
            keyring: None,
        }
    }

    /// The same queues, tagging and checking with `keyring` (the consumer's).
    pub fn with_keyring(self, keyring: Keyring) -> Self {
        Self {
            keyring: Some(Arc::new(keyring)),
            ..self
        }
    }

    /// Uses `dlq_url` when given, else the dead-letter target of the queue's redrive policy.
    pub async fn connect(
        client: Client,
        queue_url: String,
        dlq_url: Option<String>,
    ) -> Result<Self, SetupError> {
        let dlq_url = match dlq_url {
            Some(url) => url,
            None => redrive_target_url(&client, &queue_url).await?,
        };
        check_fifo_pair(&queue_url, &dlq_url)?;
        Ok(Self::new(client, queue_url, dlq_url))
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    pub fn dlq_url(&self) -> &str {
        &self.dlq_url
    }

    /// The largest message (body and attributes) the dead-letter queue accepts.
    async fn dead_letter_max_message_bytes(&self) -> Result<usize, QueueError> {
        self.dlq_max_message_bytes
            .get_or_try_init(|| async {
                let output = self
                    .client
                    .get_queue_attributes()
                    .queue_url(&self.dlq_url)
                    .attribute_names(QueueAttributeName::MaximumMessageSize)
                    .send()
                    .await
                    .map_err(|error| QueueError::from_sdk("GetQueueAttributes", error))?;
                Ok(output
                    .attributes()
                    .and_then(|attributes| attributes.get(&QueueAttributeName::MaximumMessageSize))
                    .and_then(|size| size.parse().ok())
                    .unwrap_or(FALLBACK_MAX_MESSAGE_BYTES))
            })
            .await
            .copied()
    }

    /// The client's attempt deadline is for calls that answer at once; a long poll may
    /// rightly stay silent for `wait`, so it gets that on top.
    fn long_poll_deadline(&self, wait: Duration) -> aws_sdk_sqs::config::Builder {
        let per_call = self
            .client
            .config()
            .timeout_config()
            .and_then(|timeouts| timeouts.operation_attempt_timeout())
            .unwrap_or(DEFAULT_SQS_TIMEOUT);
        aws_sdk_sqs::config::Builder::default().timeout_config(
            aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
                .connect_timeout(SQS_CONNECT_TIMEOUT)
                .operation_attempt_timeout(wait + per_call)
                .build(),
        )
    }

    /// Receives from the dead-letter queue (for `dlq inspect` and `dlq redrive`).
    pub async fn receive_dead_letters(
        &self,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<Message>, QueueError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.dlq_url)
            .max_number_of_messages(max.min(MAX_BATCH) as i32)
            .wait_time_seconds(DEAD_LETTER_WAIT.as_secs() as i32)
            .visibility_timeout(visibility.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .message_attribute_names("All")
            .customize()
            .config_override(self.long_poll_deadline(DEAD_LETTER_WAIT))
            .send()
            .await
            .map_err(|error| {
                QueueError::from_sdk("ReceiveMessage", error)
                    .naming_the_queue("check SQS2PG_DLQ_URL (or the source queue's redrive policy)")
            })?;
        Ok(output.messages.unwrap_or_default())
    }

    /// Changes the visibility of dead-letter messages (zero hands them back at once).
    pub async fn change_dead_letter_visibility(
        &self,
        receipt_handles: &[&str],
        timeout: Duration,
    ) -> Result<Vec<EntryFailure>, QueueError> {
        change_visibility(&self.client, &self.dlq_url, receipt_handles, timeout).await
    }

    /// Deletes messages from the dead-letter queue once they are safely back in the source.
    pub async fn delete_dead_letters(
        &self,
        receipt_handles: &[&str],
    ) -> Result<Vec<EntryFailure>, QueueError> {
        delete(&self.client, &self.dlq_url, receipt_handles).await
    }

    /// Sends messages to the source queue: `(body, attributes)` pairs.
    pub async fn send(
        &self,
        messages: &[OutgoingMessage],
    ) -> Result<Vec<EntryFailure>, QueueError> {
        send_batch(&self.client, &self.queue_url, messages).await
    }

    /// Whether the source queue is a FIFO queue (and so, `connect` checked, the DLQ too).
    pub fn is_fifo(&self) -> bool {
        is_fifo_queue_url(&self.queue_url)
    }
}

impl Queue for SqsQueue {
    fn keeps_group_order(&self) -> bool {
        self.is_fifo()
    }

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max.min(MAX_BATCH) as i32)
            .wait_time_seconds(wait.as_secs() as i32)
            .visibility_timeout(visibility.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(
                MessageSystemAttributeName::ApproximateFirstReceiveTimestamp,
            )
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .message_attribute_names("All")
            .customize()
            .config_override(self.long_poll_deadline(wait))
            .send()
            .await
            .map_err(|error| QueueError::from_sdk("ReceiveMessage", error))?;
        let keyring = self.keyring.as_deref();
        Ok(output
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|message| received_message(message, keyring))
            .collect())
    }

    async fn delete(&self, receipt_handles: &[&str]) -> Result<Vec<EntryFailure>, QueueError> {
        delete(&self.client, &self.queue_url, receipt_handles).await
    }

    async fn change_visibility(
        &self,
        receipt_handles: &[&str],
        timeout: Duration,
    ) -> Result<Vec<EntryFailure>, QueueError> {
        change_visibility(&self.client, &self.queue_url, receipt_handles, timeout).await
    }

    async fn dead_letter(&self, letters: &[DeadLetter]) -> Result<Vec<EntryFailure>, QueueError> {
        let source_queue = self
            .queue_url
            .rsplit('/')
            .next()
            .unwrap_or(&self.queue_url)
            .to_owned();
        let max_bytes = self.dead_letter_max_message_bytes().await?;
        let fifo = is_fifo_queue_url(&self.dlq_url);
        let keyring = self.keyring.as_deref();
        let messages: Vec<OutgoingMessage> = letters
            .iter()
            .map(|letter| {
                let attributes =
                    DeadLetterAttributes::of(letter, &source_queue, keyring).encode();
                let fitted = fit_attributes(letter.body.len(), max_bytes, &attributes);
                if fitted != attributes {
                    tracing::warn!(
                        message = "Dead letter too large for all its attributes; sending the body unchanged with fewer.",
                        message_id = %letter.message_id,
                        body_bytes = letter.body.len(),
                        max_bytes,
                        kept = ?fitted.iter().map(|(name, _)| *name).collect::<Vec<_>>(),
                    );
                }
                // On FIFO, the deduplication id is the SQS id of the copy being
                // dead-lettered: a kill between the send and the `dead_letters` record brings
                // that same copy back, and SQS drops its second send within five minutes, so
                // on FIFO the DLQ gets each poison message once. (Not the original id across
                // redrives: a redriven message that is poison again is a new copy, and SQS
                // must not drop it as a repeat of the copy redrive took out of the DLQ.)
                OutgoingMessage {
                    attributes: fitted,
                    ..OutgoingMessage::new(letter.body.clone())
                }
                .in_group(fifo, letter.group_id.clone(), &letter.sqs_message_id)
            })
            .collect();
        send_batch(&self.client, &self.dlq_url, &messages).await
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        queue_depth(&self.client, &self.queue_url).await
    }

    async fn dead_letter_depth(&self) -> Result<QueueDepth, QueueError> {
        queue_depth(&self.client, &self.dlq_url).await
    }
}

/// The group of a FIFO message that arrived without one (it cannot on SQS; a fake may).
pub const DEFAULT_GROUP_ID: &str = "sqs2pg";

/// What SQS counts towards a message's size: the body, and each attribute's name, data type
/// and value.
fn message_bytes(body_len: usize, attributes: &[(&str, String)]) -> usize {
    body_len
        + attributes
            .iter()
            .map(|(name, value)| name.len() + STRING_TYPE.len() + value.len())
            .sum::<usize>()
}

/// The attributes that fit beside a body of `body_len` bytes in a message of at most
/// `max_bytes`, taken in order; the detail is cut short rather than dropped. The body itself
/// is never shortened: redrive re-sends it, so it must stay byte for byte what was received.
/// (The source queue accepts up to the same size, so without this a poison message near
/// the limit could never be dead-lettered: it would come back until SQS moved it itself,
/// without a reason.)
fn fit_attributes<'a>(
    body_len: usize,
    max_bytes: usize,
    attributes: &[(&'a str, String)],
) -> Vec<(&'a str, String)> {
    const ELLIPSIS: &str = "…";
    let mut used = body_len;
    let mut kept = Vec::with_capacity(attributes.len());
    for (name, value) in attributes {
        let Some(room) = max_bytes.checked_sub(used + name.len() + STRING_TYPE.len()) else {
            continue;
        };
        let value = if value.len() <= room {
            value.clone()
        } else if *name == attribute::DETAIL && room > ELLIPSIS.len() {
            let mut cut = room - ELLIPSIS.len();
            while !value.is_char_boundary(cut) {
                cut -= 1;
            }
            if cut == 0 {
                continue;
            }
            format!("{}{ELLIPSIS}", &value[..cut])
        } else {
            continue;
        };
        used += name.len() + STRING_TYPE.len() + value.len();
        kept.push((*name, value));
    }
    kept
}

/// Turns an SDK message into ours. A message without a receipt handle cannot be acknowledged
/// and SQS never sends one; it is skipped rather than trusted.
fn received_message(message: Message, keyring: Option<&Keyring>) -> Option<ReceivedMessage> {
    // What a redrive carried over, the original id and SentTimestamp, if sqs2pg wrote it.
    let carried = CarriedIdentity::of(
        string_attributes(&message),
        message.body().unwrap_or_default(),
        keyring,
    );
    let (original_id, original_sent_at, untrusted_attributes) = match carried {
        CarriedIdentity::Verified {
            message_id,
            sent_at,
        } => (Some(message_id), Some(sent_at), None),
        CarriedIdentity::Absent => (None, None, None),
        CarriedIdentity::Untrusted(distrust) => (None, None, Some(distrust)),
    };
    let Message {
        message_id,
        receipt_handle,
        body,
        attributes,
        ..
    } = message;
    let (Some(sqs_message_id), Some(receipt_handle)) = (message_id, receipt_handle) else {
        tracing::error!(
            message = "Received a message without an id or receipt handle; ignoring it."
        );
        return None;
    };
    let system = attributes.unwrap_or_default();
    let millis =
        |name: &MessageSystemAttributeName| system.get(name).and_then(|v| v.parse::<i64>().ok());

    let key = original_id.unwrap_or_else(|| sqs_message_id.clone());
    let now = Utc::now();
    let sent_at = original_sent_at
        .or_else(|| {
            millis(&MessageSystemAttributeName::SentTimestamp)
                .and_then(DateTime::from_timestamp_millis)
        })
        .unwrap_or_else(|| {
            tracing::warn!(
                message = "Message has no SentTimestamp; using the time of receipt.",
                %sqs_message_id
            );
            now
        });
    let first_received_at = millis(&MessageSystemAttributeName::ApproximateFirstReceiveTimestamp)
        .and_then(DateTime::from_timestamp_millis)
        .unwrap_or(now);
    let receive_count = system
        .get(&MessageSystemAttributeName::ApproximateReceiveCount)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let group_id = system
        .get(&MessageSystemAttributeName::MessageGroupId)
        .cloned();
    Some(ReceivedMessage {
        sqs_message_id,
        key,
        receipt_handle,
        body: body.unwrap_or_default(),
        sent_at,
        first_received_at,
        receive_count,
        group_id,
        untrusted_attributes,
    })
}

fn entry_failures(failed: &[BatchResultErrorEntry]) -> Vec<EntryFailure> {
    failed
        .iter()
        .filter_map(|entry| {
            Some(EntryFailure {
                index: entry.id().parse().ok()?,
                code: entry.code().to_owned(),
                sender_fault: entry.sender_fault(),
            })
        })
        .collect()
}

/// Makes a batch call per [`MAX_BATCH`] items, concurrently; failure indexes are into `items`.
async fn in_batches<'a, Call, Fut>(
    items: &'a [&'a str],
    call: Call,
) -> Result<Vec<EntryFailure>, QueueError>
where
    Call: Fn(&'a [&'a str]) -> Fut,
    Fut: Future<Output = Result<Vec<EntryFailure>, QueueError>>,
{
    let results = futures::future::try_join_all(items.chunks(MAX_BATCH).map(call)).await?;
    Ok(results
        .into_iter()
        .enumerate()
        .flat_map(|(batch, failures)| {
            failures.into_iter().map(move |mut failure| {
                failure.index += batch * MAX_BATCH;
                failure
            })
        })
        .collect())
}

async fn delete(
    client: &Client,
    queue_url: &str,
    receipt_handles: &[&str],
) -> Result<Vec<EntryFailure>, QueueError> {
    in_batches(receipt_handles, |batch| {
        delete_batch(client, queue_url, batch)
    })
    .await
}

async fn delete_batch(
    client: &Client,
    queue_url: &str,
    receipt_handles: &[&str],
) -> Result<Vec<EntryFailure>, QueueError> {
    let entries = receipt_handles
        .iter()
        .enumerate()
        .map(|(index, handle)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(index.to_string())
                .receipt_handle(*handle)
                .build()
                .expect("id and receipt handle are set")
        })
        .collect();
    let output = client
        .delete_message_batch()
        .queue_url(queue_url)
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(|error| QueueError::from_sdk("DeleteMessageBatch", error))?;
    Ok(entry_failures(output.failed()))
}

async fn change_visibility(
    client: &Client,
    queue_url: &str,
    receipt_handles: &[&str],
    timeout: Duration,
) -> Result<Vec<EntryFailure>, QueueError> {
    in_batches(receipt_handles, |batch| {
        change_visibility_batch(client, queue_url, batch, timeout)
    })
    .await
}

async fn change_visibility_batch(
    client: &Client,
    queue_url: &str,
    receipt_handles: &[&str],
    timeout: Duration,
) -> Result<Vec<EntryFailure>, QueueError> {
    let entries = receipt_handles
        .iter()
        .enumerate()
        .map(|(index, handle)| {
            ChangeMessageVisibilityBatchRequestEntry::builder()
                .id(index.to_string())
                .receipt_handle(*handle)
                .visibility_timeout(timeout.as_secs() as i32)
                .build()
                .expect("id and receipt handle are set")
        })
        .collect();
    let output = client
        .change_message_visibility_batch()
        .queue_url(queue_url)
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(|error| QueueError::from_sdk("ChangeMessageVisibilityBatch", error))?;
    Ok(entry_failures(output.failed()))
}

/// The batch calls a send of `messages` takes: at most ten entries and SQS's size cap each.
fn send_chunks(messages: &[OutgoingMessage]) -> Vec<std::ops::Range<usize>> {
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < messages.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < messages.len() && end - start < MAX_BATCH {
            let size = message_bytes(messages[end].body.len(), &messages[end].attributes);
            if end > start && bytes + size > MAX_SEND_BATCH_BYTES {
                break;
            }
            bytes += size;
            end += 1;
        }
        chunks.push(start..end);
        start = end;
    }
    chunks
}

/// Sends `(body, string attributes)` pairs, in as many batch calls as SQS's size cap needs:
/// concurrently, except to a FIFO queue, where a group's messages must go in order.
///
/// A call that fails while another succeeded is reported as failures of its own entries,
/// not as an error of the whole send: the caller must learn which messages went, or it
/// would send them again (for dead letters, a duplicate in the DLQ). Only when every call
/// failed (nothing went) is the send an error, to be retried whole.
async fn send_batch(
    client: &Client,
    queue_url: &str,
    messages: &[OutgoingMessage],
) -> Result<Vec<EntryFailure>, QueueError> {
    let call = |chunk: std::ops::Range<usize>| {
        let entries = messages[chunk.clone()]
            .iter()
            .enumerate()
            .map(|(offset, message)| {
                let attributes: HashMap<String, MessageAttributeValue> = message
                    .attributes
                    .iter()
                    .map(|(name, value)| {
                        let value = MessageAttributeValue::builder()
                            .data_type(STRING_TYPE)
                            .string_value(value)
                            .build()
                            .expect("data type is set");
                        ((*name).to_owned(), value)
                    })
                    .collect();
                SendMessageBatchRequestEntry::builder()
                    .id((chunk.start + offset).to_string())
                    .message_body(&message.body)
                    .set_message_attributes((!attributes.is_empty()).then_some(attributes))
                    .set_message_group_id(message.message_group_id())
                    .set_message_deduplication_id(
                        message
                            .fifo
                            .as_ref()
                            .map(|ids| ids.deduplication_id.clone()),
                    )
                    .build()
                    .expect("id and body are set")
            })
            .collect();
        let request = client
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries));
        async move { (chunk, request.send().await) }
    };
    let chunks = send_chunks(messages);
    let results = if is_fifo_queue_url(queue_url) {
        let mut results = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            let (chunk, result) = call(chunk).await;
            let nothing_went = results.is_empty() && result.is_err();
            results.push((chunk, result));
            if nothing_went {
                break;
            }
        }
        results
    } else {
        futures::future::join_all(chunks.into_iter().map(call)).await
    };
    let mut failures = Vec::new();
    let mut errors = Vec::new();
    let calls = results.len();
    for (chunk, result) in results {
        match result {
            Ok(output) => failures.extend(entry_failures(output.failed())),
            Err(error) => {
                let code = error.code().unwrap_or("SendMessageBatchFailed").to_owned();
                errors.push((chunk, code, QueueError::from_sdk("SendMessageBatch", error)));
            }
        }
    }
    if errors.len() == calls && !errors.is_empty() {
        let (_, _, error) = errors.swap_remove(0);
        return Err(error);
    }
    for (chunk, code, error) in errors {
        tracing::warn!(
            message = "A batch send failed while others succeeded; reporting its entries as failed.",
            %error,
            entries = chunk.len(),
        );
        failures.extend(chunk.map(|index| EntryFailure {
            index,
            code: code.clone(),
            sender_fault: error.class == ErrorClass::Permanent,
        }));
    }
    failures.sort_by_key(|failure| failure.index);
    Ok(failures)
}

async fn queue_depth(client: &Client, queue_url: &str) -> Result<QueueDepth, QueueError> {
    let output = client
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .map_err(|error| QueueError::from_sdk("GetQueueAttributes", error))?;
    let attributes = output.attributes.unwrap_or_default();
    let count = |name: QueueAttributeName| {
        attributes
            .get(&name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(QueueDepth {
        visible: count(QueueAttributeName::ApproximateNumberOfMessages),
        in_flight: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        delayed: count(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
    })
}

/// Creating queues and finding the dead-letter queue.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(
        "queue {queue_url} has no redrive policy, so there is no dead-letter queue to default to; set SQS2PG_DLQ_URL or run `sqs2pg setup`"
    )]
    NoRedrivePolicy { queue_url: String },
    #[error("the redrive policy of {queue_url} is not valid JSON with a deadLetterTargetArn")]
    BadRedrivePolicy { queue_url: String },
    #[error(
        "SQS2PG_QUEUE_URL {queue_url} and SQS2PG_DLQ_URL {dlq_url} are not both FIFO or both standard queues: SQS requires a FIFO queue's dead-letter queue to be FIFO (a name ending in .fifo), and a standard queue's to be standard"
    )]
    FifoMismatch { queue_url: String, dlq_url: String },
    #[error(
        "queue {queue_url} exists with a different redrive policy: it has {current}, setup asks for {wanted}; left as it is: run `sqs2pg setup --update` to change it"
    )]
    RedriveDiffers {
        queue_url: String,
        current: RedrivePolicy,
        wanted: RedrivePolicy,
    },
}

impl Classify for SetupError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Queue(error) => error.class(),
            Self::NoRedrivePolicy { .. }
            | Self::BadRedrivePolicy { .. }
            | Self::FifoMismatch { .. }
            | Self::RedriveDiffers { .. } => ErrorClass::Permanent,
        }
    }
}

/// The URLs that `setup` made or found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueUrls {
    pub queue_url: String,
    pub dlq_url: String,
}

/// A queue's redrive policy, as far as `setup` sets it; `None` fields: the queue has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedrivePolicy {
    pub dead_letter_target_arn: Option<String>,
    pub max_receive_count: Option<String>,
}

impl RedrivePolicy {
    /// Reads the RedrivePolicy attribute (maxReceiveCount may be a number or a string).
    fn parse(attribute: Option<&str>) -> Self {
        let policy: serde_json::Value = attribute
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default();
        let field = |name: &str| match &policy[name] {
            serde_json::Value::String(text) => Some(text.clone()),
            serde_json::Value::Number(number) => Some(number.to_string()),
            _ => None,
        };
        Self {
            dead_letter_target_arn: field("deadLetterTargetArn"),
            max_receive_count: field("maxReceiveCount"),
        }
    }

    fn to_attribute(&self) -> String {
        serde_json::json!({
            "deadLetterTargetArn": self.dead_letter_target_arn,
            "maxReceiveCount": self.max_receive_count,
        })
        .to_string()
    }
}

impl std::fmt::Display for RedrivePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.dead_letter_target_arn, &self.max_receive_count) {
            (None, None) => f.write_str("no redrive policy"),
            (arn, count) => write!(
                f,
                "dead-letter target {}, maxReceiveCount {}",
                arn.as_deref().unwrap_or("none"),
                count.as_deref().unwrap_or("none")
            ),
        }
    }
}

/// What `setup` did to the source queue's redrive policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedriveChange {
    /// A new queue: created with the policy.
    Created,
    /// An existing queue that already had it.
    Unchanged,
    /// An existing queue whose policy differed, changed because `update` was asked for.
    Updated { previous: RedrivePolicy },
}

/// What `setup` made or found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupOutcome {
    pub urls: QueueUrls,
    /// The source queue's ARN: the DLQ's with the source's name, since `setup` makes both
    /// in one account and region. `None` when SQS gave no DLQ ARN.
    pub queue_arn: Option<String>,
    pub dlq_arn: Option<String>,
    /// Whether the DLQ was absent before (CreateQueue itself does not say).
    pub dlq_created: bool,
    /// What happened to the source queue and its redrive policy; `Created`: a new queue.
    pub change: RedriveChange,
}

/// Creates the source queue and its dead-letter queue if absent, the source with a redrive
/// policy to the DLQ. An existing source queue is changed only with `update`: without it, a
/// policy that differs is an error saying how, and the queue is left as it was.
pub async fn setup_queues(
    client: &Client,
    queue_name: &str,
    dlq_name: &str,
    max_receive_count: u32,
    update: bool,
) -> Result<SetupOutcome, SetupError> {
    // A FIFO pair: SQS requires both names to end in .fifo and the DLQ to be FIFO too.
    // Deduplication is by id, not content: two logins may rightly have the same body.
    let fifo = queue_name.ends_with(".fifo");
    if fifo != dlq_name.ends_with(".fifo") {
        return Err(SetupError::FifoMismatch {
            queue_url: queue_name.to_owned(),
            dlq_url: dlq_name.to_owned(),
        });
    }
    let create = |name: String| async move {
        let request = client.create_queue().queue_name(name);
        let request = if fifo {
            request
                .attributes(QueueAttributeName::FifoQueue, "true")
                .attributes(QueueAttributeName::ContentBasedDeduplication, "false")
        } else {
            request
        };
        request
            .send()
            .await
            .map_err(|error| QueueError::from_sdk("CreateQueue", error))?
            .queue_url
            .ok_or_else(|| QueueError {
                operation: "CreateQueue",
                class: ErrorClass::Permanent,
                detail: "the response has no queue URL".to_owned(),
            })
    };
    let existing_url = async |name: &str| match client.get_queue_url().queue_name(name).send().await
    {
        Ok(output) => Ok(output.queue_url),
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|error| error.is_queue_does_not_exist()) =>
        {
            Ok(None)
        }
        Err(error) => Err(QueueError::from_sdk("GetQueueUrl", error)),
    };
    let dlq_created = existing_url(dlq_name).await?.is_none();
    let dlq_url = create(dlq_name.to_owned()).await?;
    let dlq_arn = client
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|error| QueueError::from_sdk("GetQueueAttributes", error))?
        .attributes
        .and_then(|mut attributes| attributes.remove(&QueueAttributeName::QueueArn));
    let queue_arn = dlq_arn
        .as_deref()
        .and_then(|arn| arn.rsplit_once(':'))
        .map(|(prefix, _)| format!("{prefix}:{queue_name}"));
    let wanted = RedrivePolicy {
        dead_letter_target_arn: Some(dlq_arn.clone().unwrap_or_default()),
        max_receive_count: Some(max_receive_count.to_string()),
    };
    let outcome = |urls, change| SetupOutcome {
        urls,
        queue_arn: queue_arn.clone(),
        dlq_arn: dlq_arn.clone(),
        dlq_created,
        change,
    };
    let Some(queue_url) = existing_url(queue_name).await? else {
        let queue_url = create(queue_name.to_owned()).await?;
        set_redrive_policy(client, &queue_url, &wanted).await?;
        return Ok(outcome(
            QueueUrls { queue_url, dlq_url },
            RedriveChange::Created,
        ));
    };
    let current = RedrivePolicy::parse(
        client
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .map_err(|error| QueueError::from_sdk("GetQueueAttributes", error))?
            .attributes
            .as_ref()
            .and_then(|attributes| attributes.get(&QueueAttributeName::RedrivePolicy))
            .map(String::as_str),
    );
    let urls = QueueUrls { queue_url, dlq_url };
    if current == wanted {
        return Ok(outcome(urls, RedriveChange::Unchanged));
    }
    if !update {
        return Err(SetupError::RedriveDiffers {
            queue_url: urls.queue_url,
            current,
            wanted,
        });
    }
    set_redrive_policy(client, &urls.queue_url, &wanted).await?;
    Ok(outcome(urls, RedriveChange::Updated { previous: current }))
}

async fn set_redrive_policy(
    client: &Client,
    queue_url: &str,
    policy: &RedrivePolicy,
) -> Result<(), QueueError> {
    client
        .set_queue_attributes()
        .queue_url(queue_url)
        .attributes(QueueAttributeName::RedrivePolicy, policy.to_attribute())
        .send()
        .await
        .map_err(|error| QueueError::from_sdk("SetQueueAttributes", error))?;
    Ok(())
}

/// [`setup_queues`] with `update`: the queues exist afterwards with exactly this policy.
/// For queues of one's own, such as a test's.
pub async fn create_queues(
    client: &Client,
    queue_name: &str,
    dlq_name: &str,
    max_receive_count: u32,
) -> Result<QueueUrls, QueueError> {
    match setup_queues(client, queue_name, dlq_name, max_receive_count, true).await {
        Ok(outcome) => Ok(outcome.urls),
        Err(SetupError::Queue(error)) => Err(error),
        Err(other) => Err(QueueError {
            operation: "SetQueueAttributes",
            class: other.class(),
            detail: other.to_string(),
        }),
    }
}

/// The URL of the queue's redrive target, read from its RedrivePolicy.
pub async fn redrive_target_url(client: &Client, queue_url: &str) -> Result<String, SetupError> {
    let policy = client
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .map_err(|error| {
            QueueError::from_sdk("GetQueueAttributes", error)
                .naming_the_queue("check SQS2PG_QUEUE_URL")
        })?
        .attributes
        .and_then(|mut attributes| attributes.remove(&QueueAttributeName::RedrivePolicy))
        .ok_or_else(|| SetupError::NoRedrivePolicy {
            queue_url: queue_url.to_owned(),
        })?;
    let bad = || SetupError::BadRedrivePolicy {
        queue_url: queue_url.to_owned(),
    };
    let policy: serde_json::Value = serde_json::from_str(&policy).map_err(|_| bad())?;
    let arn = policy["deadLetterTargetArn"].as_str().ok_or_else(bad)?;
    // arn:aws:sqs:REGION:ACCOUNT:NAME
    let mut parts = arn.rsplitn(3, ':');
    let (Some(name), Some(account)) = (parts.next(), parts.next()) else {
        return Err(bad());
    };
    let url = client
        .get_queue_url()
        .queue_name(name)
        .queue_owner_aws_account_id(account)
        .send()
        .await
        .map_err(|error| {
            QueueError::from_sdk("GetQueueUrl", error).naming_the_queue(
                "the redrive policy's dead-letter queue is missing: set SQS2PG_DLQ_URL or run `sqs2pg setup --update`",
            )
        })?
        .queue_url
        .ok_or_else(bad)?;
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_splits_into_accepted_and_refused_in_order() {
        let failure = |index| EntryFailure {
            index,
            code: "x".into(),
            sender_fault: false,
        };
        let items = vec!["a", "b", "c", "d"];
        assert_eq!(
            split_by_failures(items.clone(), &[failure(3), failure(1)]),
            (vec!["a", "c"], vec!["b", "d"])
        );
        assert_eq!(split_by_failures(items.clone(), &[]), (items, vec![]));
    }

    #[test]
    fn message_keys_must_look_like_ids() {
        use crate::domain::dead_letter::is_valid_message_key;
        assert!(is_valid_message_key("424cdd21-063a-43a7-b91b-7ca1a833afae"));
        assert!(!is_valid_message_key(""));
        assert!(!is_valid_message_key("has space"));
        assert!(!is_valid_message_key(&"x".repeat(129)));
    }

    fn attributes() -> Vec<(&'static str, String)> {
        vec![
            (attribute::REASON, "invalid_json".to_owned()),
            (attribute::ORIGINAL_MESSAGE_ID, "m".repeat(36)),
            (attribute::DETAIL, "détail ".repeat(20)),
            (attribute::SOURCE_QUEUE, "q".repeat(40)),
        ]
    }

    #[test]
    fn attributes_that_fit_are_all_kept() {
        let all = attributes();
        assert_eq!(fit_attributes(100, 1_000_000, &all), all);
        assert_eq!(fit_attributes(100, message_bytes(100, &all), &all), all);
    }

    #[test]
    fn a_dead_letter_near_the_size_limit_keeps_what_fits_in_order() {
        let all = attributes();
        let max = 256 * 1024;
        for body_len in [max - 400, max - 200, max - 120, max - 60, max - 10, max] {
            let fitted = fit_attributes(body_len, max, &all);
            assert!(
                message_bytes(body_len, &fitted) <= max,
                "{body_len}: {fitted:?}"
            );
            for (name, value) in &fitted {
                let original = &all.iter().find(|(n, _)| n == name).unwrap().1;
                if *name == attribute::DETAIL {
                    assert!(!value.is_empty());
                    assert!(original.starts_with(value.trim_end_matches('…')), "{value}");
                } else {
                    assert_eq!(value, original, "kept whole or not at all");
                }
            }
        }
        // Room for the essentials only: the detail is shortened, the later ones dropped.
        let essentials = message_bytes(0, &all[..2]);
        let fitted = fit_attributes(max - essentials - 30, max, &all);
        let names: Vec<&str> = fitted.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                attribute::REASON,
                attribute::ORIGINAL_MESSAGE_ID,
                attribute::DETAIL
            ]
        );
        assert!(fitted[2].1.ends_with('…'));
        // No room at all: the body still goes, without attributes.
        assert!(fit_attributes(max, max, &all).is_empty());
    }

    #[test]
    fn redrive_policies_compare_whatever_the_count_is_written_as() {
        let number = RedrivePolicy::parse(Some(
            r#"{"deadLetterTargetArn":"arn:x","maxReceiveCount":5}"#,
        ));
        let string = RedrivePolicy::parse(Some(
            r#"{"deadLetterTargetArn":"arn:x","maxReceiveCount":"5"}"#,
        ));
        assert_eq!(number, string);
        assert_eq!(RedrivePolicy::parse(Some(&number.to_attribute())), number);
        assert_eq!(
            number.to_string(),
            "dead-letter target arn:x, maxReceiveCount 5"
        );
        let none = RedrivePolicy::parse(None);
        assert_eq!(none.to_string(), "no redrive policy");
        assert_ne!(none, number);
    }

    #[test]
    fn errors_name_the_setting_at_fault() {
        assert_eq!(
            hint_for_code(Some("AWS.SimpleQueueService.NonExistentQueue")),
            Some(CHECK_QUEUE_URL)
        );
        assert_eq!(
            hint_for_code(Some("InvalidClientTokenId")),
            Some(CHECK_CREDENTIALS)
        );
        assert_eq!(hint_for_code(Some("InvalidParameterValue")), None);
        let error = QueueError {
            operation: "GetQueueAttributes",
            class: ErrorClass::Permanent,
            detail: format!("QueueDoesNotExist: gone; {CHECK_QUEUE_URL}"),
        }
        .naming_the_queue("check SQS2PG_DLQ_URL");
        assert_eq!(
            error.detail,
            "QueueDoesNotExist: gone; check SQS2PG_DLQ_URL"
        );
    }

    #[test]
    fn throttling_and_server_errors_are_transient() {
        assert!(is_transient_code(Some("ThrottlingException")));
        assert!(is_transient_code(Some("InternalError")));
        assert!(!is_transient_code(Some(
            "AWS.SimpleQueueService.NonExistentQueue"
        )));
        assert!(!is_transient_code(None));
    }
}
