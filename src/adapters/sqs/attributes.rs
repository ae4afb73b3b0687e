//! A received message's attributes as the domain's codec reads them: names and strings
//! (see [`DeadLetterAttributes`]). Sending converts the other way, in `send_batch`.

use aws_sdk_sqs::types::Message;

use crate::domain::dead_letter::DeadLetterAttributes;

/// The message's attributes that have a string value (String and Number), as (name, value);
/// binary ones are left out.
pub fn string_attributes(message: &Message) -> impl Iterator<Item = (&str, &str)> {
    message
        .message_attributes()
        .into_iter()
        .flatten()
        .filter_map(|(name, value)| Some((name.as_str(), value.string_value()?)))
}

/// The `sqs2pg.*` attributes of a message read from the dead-letter queue.
pub fn dead_letter_attributes(message: &Message) -> DeadLetterAttributes {
    DeadLetterAttributes::decode(string_attributes(message))
}
