//! Any body, however hostile, gives a masked row or a typed rejection: never a panic, never
//! an unmasked value in a row, never a limit broken.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sqs2pg::event::{Envelope, Masker, transform, MAX_APP_VERSION_CHARS, MAX_DEVICE_TYPE_CHARS, MAX_LOCALE_CHARS, MAX_USER_ID_CHARS};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else { return };
    let masker = Masker::new(b"fuzz-key-0123456789");
    let envelope = Envelope { message_id: "fuzz", sent_at: chrono::DateTime::UNIX_EPOCH };
    match transform(body, envelope, &masker) {
        Ok(row) => {
            for digest in [&row.hashed_ip, &row.hashed_device_id] {
                assert_eq!(digest.len(), 64);
                assert!(digest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            }
            assert!(row.user_id.chars().count() <= MAX_USER_ID_CHARS);
            assert!(row.device_type.chars().count() <= MAX_DEVICE_TYPE_CHARS);
            assert!(row.app_version.chars().count() <= MAX_APP_VERSION_CHARS);
            assert!(row.locale.as_deref().is_none_or(|l| l.chars().count() <= MAX_LOCALE_CHARS));
            for text in [&row.user_id, &row.device_type, &row.app_version] {
                assert!(!text.is_empty() && !text.contains('\0'));
            }
            // Transforming the same body again gives the same row: masking is deterministic.
            assert_eq!(transform(body, envelope, &masker).unwrap(), row);
        }
        Err(rejection) => {
            let _ = rejection.reason();
            let _ = rejection.to_string();
        }
    }
});
