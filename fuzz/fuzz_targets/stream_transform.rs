//! Any body, alone or in an SNS notification, through the example streams (logins and the
//! wide orders one): a row of one value per column, or a poison whose detail quotes nothing
//! of the body; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // SQS bodies are text; a producer's invalid bytes arrive replaced.
    let body = String::from_utf8_lossy(data);
    sqs2pg::domain::invariants::check_streams(&body);
    let notification = serde_json::json!({
        "Type": "Notification",
        "MessageId": "0b1b3a5e-8d65-5a36-9f25-2f8a6c1e1d4a",
        "TopicArn": "arn:aws:sns:us-east-1:000000000000:orders",
        "Message": body,
    });
    sqs2pg::domain::invariants::check_streams(&notification.to_string());
});
