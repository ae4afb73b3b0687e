//! Any text as a stream file: streams, or one error on one line that names the file, line
//! and column; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sqs2pg::domain::invariants::check_stream_file(&String::from_utf8_lossy(data));
});
