-- One row per valid login event. message_id is the idempotency key: the SQS message id,
-- or the original id of a redriven message. Column limits match the validation in
-- src/event.rs, so a row that passes validation is never refused for its length.
CREATE TABLE user_logins (
    message_id       text         PRIMARY KEY,
    user_id          varchar(128) NOT NULL,
    device_type      varchar(32)  NOT NULL,
    hashed_ip        char(64)     NOT NULL,
    hashed_device_id char(64)     NOT NULL,
    locale           varchar(32),
    app_version      varchar(32)  NOT NULL,
    create_date      date         NOT NULL,
    -- When the message was first sent to SQS; create_date is its UTC date.
    sent_at          timestamptz  NOT NULL,
    -- When this row was committed: ingestion lag is ingested_at - sent_at.
    ingested_at      timestamptz  NOT NULL DEFAULT now()
);

-- Find every login from a known IP or device by its keyed digest.
CREATE INDEX user_logins_hashed_ip_idx ON user_logins (hashed_ip);
CREATE INDEX user_logins_hashed_device_id_idx ON user_logins (hashed_device_id);
