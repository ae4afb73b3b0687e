//! Any body, however hostile, gives a masked row or a typed rejection: never a panic, never
//! a raw `ip` or `device_id` in a row, never a limit broken, never a reason outside the set.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // SQS bodies are text; a producer's invalid bytes arrive replaced.
    sqs2pg::domain::invariants::check(&String::from_utf8_lossy(data));
});
