//! Any body, however hostile, unwraps in every envelope mode to the body itself, the event
//! inside, or a typed rejection with a fixed text; and inside an SNS notification or an
//! EventBridge event it gives what it gives alone (the same row or the same reason).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // SQS bodies are text; a producer's invalid bytes arrive replaced.
    sqs2pg::domain::invariants::check_envelopes(&String::from_utf8_lossy(data));
});
