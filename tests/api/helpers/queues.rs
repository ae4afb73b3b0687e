//! SQS for the tests: a queue and its dead-letter queue per test on LocalStack, and the
//! reads that check what the consumer left in them.

use aws_sdk_sqs::Client;
use sqs2pg::adapters::sqs::{Queue, QueueDepth, QueueUrls, SqsQueue, create_queues};

use super::{init_logging, required_env, service_sqs_client, test_keyring, unique};

/// The client of the one-shot commands, on the test services.
pub async fn sqs_client() -> Client {
    required_env("AWS_ENDPOINT_URL");
    service_sqs_client().await.expect("SQS client")
}

/// A queue and its dead-letter queue with unique names.
pub struct TestQueues {
    pub client: Client,
    pub urls: QueueUrls,
    pub name: String,
}

impl TestQueues {
    pub async fn create() -> Self {
        Self::create_with(5).await
    }

    /// A FIFO queue and its FIFO dead-letter queue.
    pub async fn create_fifo() -> Self {
        Self::create_fifo_with(5).await
    }

    pub async fn create_fifo_with(max_receive_count: u32) -> Self {
        Self::create_named(".fifo", max_receive_count).await
    }

    pub async fn create_with(max_receive_count: u32) -> Self {
        Self::create_named("", max_receive_count).await
    }

    /// A unique pair: `q_<id><suffix>` and `q_<id>-dlq<suffix>` (`.fifo` makes a FIFO pair).
    async fn create_named(suffix: &str, max_receive_count: u32) -> Self {
        init_logging();
        let client = sqs_client().await;
        let stem = unique("q");
        let name = format!("{stem}{suffix}");
        let urls = create_queues(
            &client,
            &name,
            &format!("{stem}-dlq{suffix}"),
            max_receive_count,
        )
        .await
        .expect("create queues");
        Self { client, urls, name }
    }

    /// The pair as `run` has it: tagging its dead letters and checking redriven messages'
    /// tags with the tests' keyring.
    pub fn sqs_queue(&self) -> SqsQueue {
        SqsQueue::new(
            self.client.clone(),
            self.urls.queue_url.clone(),
            self.urls.dlq_url.clone(),
        )
        .with_keyring(test_keyring())
    }

    /// Sends bodies in batches of ten; returns the SQS message ids in order. On a FIFO
    /// queue the bodies are spread over sixteen message groups, each with a fresh
    /// deduplication id.
    pub async fn send(&self, bodies: &[String]) -> Vec<String> {
        let fifo = sqs2pg::adapters::sqs::is_fifo_queue_url(&self.urls.queue_url);
        let mut ids = Vec::with_capacity(bodies.len());
        for (chunk_index, chunk) in bodies.chunks(10).enumerate() {
            let mut request = self
                .client
                .send_message_batch()
                .queue_url(&self.urls.queue_url);
            for (index, body) in chunk.iter().enumerate() {
                let entry = aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .message_body(body);
                let entry = if fifo {
                    entry
                        .message_group_id(format!("g{}", (chunk_index * 10 + index) % 16))
                        .message_deduplication_id(uuid::Uuid::new_v4().to_string())
                } else {
                    entry
                };
                request = request.entries(entry.build().unwrap());
            }
            let output = request.send().await.expect("send batch");
            assert!(
                output.failed().is_empty(),
                "send failures: {:?}",
                output.failed()
            );
            let mut sent: Vec<_> = output.successful().to_vec();
            sent.sort_by_key(|entry| entry.id().parse::<usize>().unwrap());
            ids.extend(sent.iter().map(|entry| entry.message_id().to_owned()));
        }
        ids
    }

    /// Depth of the source queue, read in one call so the counts are consistent.
    pub async fn depth(&self) -> QueueDepth {
        self.sqs_queue().depth().await.expect("queue depth")
    }

    /// Visible plus in-flight (plus delayed) messages in the source queue.
    pub async fn source_total(&self) -> u64 {
        let depth = self.depth().await;
        depth.visible + depth.in_flight + depth.delayed
    }

    /// Visible messages in the dead-letter queue.
    pub async fn sqs_queue_dead_letter_visible(&self) -> u64 {
        self.sqs_queue()
            .dead_letter_depth()
            .await
            .expect("DLQ depth")
            .visible
    }

    /// Every message in the dead-letter queue, with its attributes and SentTimestamp
    /// (received with a long visibility, so each is seen once). A FIFO queue hands out no
    /// more of a group while some of it is in flight, so there each message read is
    /// deleted: this read empties a FIFO DLQ.
    pub async fn dead_letters(&self) -> Vec<aws_sdk_sqs::types::Message> {
        let fifo = sqs2pg::adapters::sqs::is_fifo_queue_url(&self.urls.dlq_url);
        let mut all = Vec::new();
        let mut empty_polls = 0;
        while empty_polls < 2 {
            let output = self
                .client
                .receive_message()
                .queue_url(&self.urls.dlq_url)
                .max_number_of_messages(10)
                .visibility_timeout(600)
                .wait_time_seconds(1)
                .message_attribute_names("All")
                .message_system_attribute_names(
                    aws_sdk_sqs::types::MessageSystemAttributeName::SentTimestamp,
                )
                .message_system_attribute_names(
                    aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId,
                )
                .send()
                .await
                .expect("receive dead letters");
            let messages = output.messages.unwrap_or_default();
            if messages.is_empty() {
                empty_polls += 1;
            }
            if fifo {
                for message in &messages {
                    self.client
                        .delete_message()
                        .queue_url(&self.urls.dlq_url)
                        .receipt_handle(message.receipt_handle().unwrap())
                        .send()
                        .await
                        .expect("delete a FIFO dead letter once read");
                }
            }
            all.extend(messages);
        }
        all
    }
}

pub fn attribute_of(message: &aws_sdk_sqs::types::Message, name: &str) -> Option<String> {
    sqs2pg::adapters::sqs::string_attributes(message)
        .find(|(found, _)| *found == name)
        .map(|(_, value)| value.to_owned())
}
