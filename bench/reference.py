"""The reference consumer: the original project's approach, kept as the benchmark's baseline.

It is deliberately naive, and must stay so: it is what sqs2pg is measured against, not
something to improve. One process, one loop:

  - boto3 ``receive_message``, 10 messages at a time, 1 s long poll;
  - ``json.loads`` each body, and unsalted ``hashlib.sha256`` of ip and device_id;
  - one psycopg2 ``INSERT`` and ``commit()`` per row, into a table of the same shape as
    sqs2pg's ``user_logins`` (the benchmark migrates a fresh database with ``sqs2pg migrate``);
  - one ``delete_message`` per message;
  - a malformed body is skipped and deleted (no dead-letter queue);
  - it stops when the queue stays empty (two empty receives in a row).

Environment: SQS2PG_QUEUE_URL, DATABASE_URL, and the usual AWS_* settings.
Prints one JSON line: messages handled, rows, time from the first receive to the last
delete, and the CPU time of this process (user + system, start-up included).
"""

import datetime
import hashlib
import json
import os
import resource
import sys
import time

import boto3
import psycopg2

REQUIRED = ("user_id", "app_version", "device_type", "ip", "device_id")
INSERT = (
    "INSERT INTO user_logins (message_id, user_id, device_type, hashed_ip, hashed_device_id,"
    " locale, app_version, create_date, sent_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


def parse(body):
    """The event's fields, or None if the body is malformed."""
    try:
        event = json.loads(body)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    if not all(isinstance(event.get(field), str) for field in REQUIRED):
        return None
    if event.get("locale") is not None and not isinstance(event["locale"], str):
        return None
    return event


def main():
    queue_url = os.environ["SQS2PG_QUEUE_URL"]
    sqs = boto3.client("sqs")
    db = psycopg2.connect(os.environ["DATABASE_URL"])
    cursor = db.cursor()

    handled = inserted = skipped = failed = 0
    started = finished = None
    empty_in_a_row = 0
    while empty_in_a_row < 2:
        if started is None:
            started = time.monotonic()
        response = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            AttributeNames=["SentTimestamp"],
        )
        messages = response.get("Messages", [])
        if not messages:
            empty_in_a_row += 1
            continue
        empty_in_a_row = 0
        for message in messages:
            event = parse(message["Body"])
            if event is None:
                skipped += 1
            else:
                sent_at = datetime.datetime.fromtimestamp(
                    int(message["Attributes"]["SentTimestamp"]) / 1000, tz=datetime.timezone.utc
                )
                try:
                    cursor.execute(
                        INSERT,
                        (
                            message["MessageId"],
                            event["user_id"],
                            event["device_type"],
                            hashlib.sha256(event["ip"].encode()).hexdigest(),
                            hashlib.sha256(event["device_id"].encode()).hexdigest(),
                            event.get("locale"),
                            event["app_version"],
                            sent_at.date(),
                            sent_at,
                        ),
                    )
                    db.commit()
                    inserted += 1
                except psycopg2.Error:
                    db.rollback()
                    failed += 1
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            handled += 1
            finished = time.monotonic()

    usage = resource.getrusage(resource.RUSAGE_SELF)
    seconds = (finished or time.monotonic()) - started
    print(
        json.dumps(
            {
                "messages": handled,
                "inserted": inserted,
                "skipped_malformed": skipped,
                "insert_failures": failed,
                "seconds": seconds,
                "messages_per_second": handled / seconds if seconds > 0 else 0.0,
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
                "peak_rss_kib": usage.ru_maxrss,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
