-- Poison messages already sent to the dead-letter queue. Keyed on the SQS id of the copy
-- that was dead-lettered: if its delete is lost and the same copy comes back, it is found
-- here and only deleted, so it never appears twice in the DLQ. A redriven message is a new
-- copy with a new id, so if it is still poison it is dead-lettered again, as it should be.
CREATE TABLE dead_letters (
    sqs_message_id    text        PRIMARY KEY,
    -- The idempotency key (the original message id, kept across redrives).
    message_id        text        NOT NULL,
    reason            text        NOT NULL,
    detail            text        NOT NULL,
    source_queue      text        NOT NULL,
    first_received_at timestamptz NOT NULL,
    dead_lettered_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_message_id_idx ON dead_letters (message_id);
