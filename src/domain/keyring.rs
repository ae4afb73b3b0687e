//! The HMAC keyring: several masking keys, each with an id, one of them current. Pure: the
//! keys are loaded by `cli::config`; this holds them, keyed, and picks the one that masks.
//!
//! Why a ring: rotating a single key changes every future digest, so the rows of one IP or
//! device before and after the rotation no longer match. With a ring, new rows are masked
//! with the current key and every row records the id of its key (`hmac_key_id`), so a known
//! value is found across a rotation by its digest under each key (`sqs2pg digest`), for as
//! long as the older keys are kept in the ring.
//!
//! Key ids are not secret (they are logged, stored in every row and printed); keys are.

use std::fmt;

use crate::domain::event::Masker;

/// The longest key id: `user_logins.hmac_key_id` is `varchar(32)`.
pub const MAX_KEY_ID_CHARS: usize = 32;

/// The id of the single key of a configuration without a keyring, and of every row written
/// before keyrings existed (the V3 migration gives them this id).
pub const DEFAULT_KEY_ID: &str = "default";

/// A key's id: 1 to 32 ASCII letters, digits, `.`, `_` or `-`, starting with a letter or a
/// digit. Safe to log, to store, to print and to put in a file name or an SQL literal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(String);

/// Why a text is not a [`KeyId`]. Ids are not secret, so the text is quoted back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "key id {text:?} is not 1 to {MAX_KEY_ID_CHARS} letters, digits, '.', '_' or '-' starting with a letter or digit"
)]
pub struct InvalidKeyId {
    pub text: String,
}

impl KeyId {
    pub fn parse(text: &str) -> Result<Self, InvalidKeyId> {
        let valid = (1..=MAX_KEY_ID_CHARS).contains(&text.len())
            && text.starts_with(|c: char| c.is_ascii_alphanumeric())
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(InvalidKeyId {
                text: text.to_owned(),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for KeyId {
    fn default() -> Self {
        Self(DEFAULT_KEY_ID.to_owned())
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for KeyId {
    type Err = InvalidKeyId;

    fn from_str(text: &str) -> Result<Self, InvalidKeyId> {
        Self::parse(text)
    }
}

/// Why keys do not make a keyring. Names ids only, never key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("the keyring holds no key")]
    Empty,
    #[error("key id {0} appears more than once in the keyring")]
    DuplicateId(KeyId),
    #[error("the current key {current} is not in the keyring (its keys: {known})")]
    UnknownCurrent { current: KeyId, known: String },
}

/// Masking keys by id, exactly one of them current. The current key masks new rows; the
/// others only compute digests for lookups ([`Keyring::digests`]).
#[derive(Clone)]
pub struct Keyring {
    /// In the order given (the loader sorts them by id), ids unique.
    keys: Vec<(KeyId, Masker)>,
    current: usize,
}

/// One key's digest of a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDigest<'a> {
    pub key_id: &'a KeyId,
    pub current: bool,
    /// Lowercase hex HMAC-SHA256, as `hashed_ip` and `hashed_device_id` hold it.
    pub digest: String,
}

impl Keyring {
    /// A ring of `keys` whose current key is `current`.
    pub fn new(keys: Vec<(KeyId, Masker)>, current: &KeyId) -> Result<Self, KeyringError> {
        if keys.is_empty() {
            return Err(KeyringError::Empty);
        }
        for (index, (id, _)) in keys.iter().enumerate() {
            if keys[..index].iter().any(|(earlier, _)| earlier == id) {
                return Err(KeyringError::DuplicateId(id.clone()));
            }
        }
        let current = keys
            .iter()
            .position(|(id, _)| id == current)
            .ok_or_else(|| KeyringError::UnknownCurrent {
                current: current.clone(),
                known: keys
                    .iter()
                    .map(|(id, _)| id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        Ok(Self { keys, current })
    }

    /// A ring of one key, which is current: the configuration without a keyring.
    pub fn single(id: KeyId, masker: Masker) -> Self {
        Self {
            keys: vec![(id, masker)],
            current: 0,
        }
    }

    /// The key that masks new rows, and its id (which each row records).
    pub fn current(&self) -> (&KeyId, &Masker) {
        let (id, masker) = &self.keys[self.current];
        (id, masker)
    }

    pub fn current_id(&self) -> &KeyId {
        self.current().0
    }

    /// The key with this id, if the ring holds it.
    pub fn key(&self, id: &KeyId) -> Option<&Masker> {
        self.keys
            .iter()
            .find(|(key_id, _)| key_id == id)
            .map(|(_, masker)| masker)
    }

    /// Every key's id, in the ring's order.
    pub fn ids(&self) -> impl Iterator<Item = &KeyId> {
        self.keys.iter().map(|(id, _)| id)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Never true: a ring holds at least one key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// `value`'s digest under every key of the ring, in the ring's order: what a lookup
    /// across rotations matches as `(hmac_key_id, hashed_ip)` pairs.
    pub fn digests<'a>(&'a self, value: &'a str) -> impl Iterator<Item = KeyDigest<'a>> + 'a {
        self.keys
            .iter()
            .enumerate()
            .map(move |(index, (key_id, masker))| KeyDigest {
                key_id,
                current: index == self.current,
                digest: masker.digest(value),
            })
    }
}

/// Ids only: the keys are [`Masker`]s, which never show theirs either.
impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("ids", &self.ids().map(KeyId::as_str).collect::<Vec<_>>())
            .field("current", &self.current_id().as_str())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(text: &str) -> KeyId {
        KeyId::parse(text).unwrap()
    }

    fn ring(ids: &[&str], current: &str) -> Result<Keyring, KeyringError> {
        let keys = ids
            .iter()
            .map(|text| {
                (
                    id(text),
                    Masker::new(format!("key-of-{text}-0123456789").as_bytes()),
                )
            })
            .collect();
        Keyring::new(keys, &id(current))
    }

    #[test]
    fn key_ids_are_short_plain_names() {
        for good in ["default", "2026-12", "k1", "a.b_c-d", &"x".repeat(32), "0"] {
            assert_eq!(id(good).as_str(), good);
        }
        for bad in [
            "",
            &"x".repeat(33),
            ".hidden",
            "..data",
            "-flag",
            "_x",
            "with space",
            "a/b",
            "quote'",
            "é",
            "a\n",
        ] {
            let error = KeyId::parse(bad).unwrap_err();
            assert_eq!(error.text, bad);
        }
        assert_eq!(KeyId::default().as_str(), DEFAULT_KEY_ID);
    }

    #[test]
    fn the_current_key_masks_and_every_key_digests() {
        let ring = ring(&["2026-12", "default"], "2026-12").unwrap();
        assert_eq!(ring.current_id().as_str(), "2026-12");
        assert_eq!(ring.len(), 2);
        let expected_current = Masker::new(b"key-of-2026-12-0123456789").digest("10.0.0.1");
        assert_eq!(ring.current().1.digest("10.0.0.1"), expected_current);
        let digests: Vec<KeyDigest<'_>> = ring.digests("10.0.0.1").collect();
        assert_eq!(digests.len(), 2);
        assert_eq!(
            (digests[0].key_id.as_str(), digests[0].current),
            ("2026-12", true)
        );
        assert_eq!(digests[0].digest, expected_current);
        assert_eq!(
            (digests[1].key_id.as_str(), digests[1].current),
            ("default", false)
        );
        assert_eq!(
            digests[1].digest,
            Masker::new(b"key-of-default-0123456789").digest("10.0.0.1")
        );
    }

    #[test]
    fn bad_rings_are_typed_errors() {
        assert_eq!(
            Keyring::new(Vec::new(), &KeyId::default()).unwrap_err(),
            KeyringError::Empty
        );
        assert_eq!(
            ring(&["a", "b", "a"], "a").unwrap_err(),
            KeyringError::DuplicateId(id("a"))
        );
        let error = ring(&["a", "b"], "c").unwrap_err();
        assert_eq!(
            error,
            KeyringError::UnknownCurrent {
                current: id("c"),
                known: "a, b".to_owned()
            }
        );
        assert_eq!(
            error.to_string(),
            "the current key c is not in the keyring (its keys: a, b)"
        );
    }

    #[test]
    fn debug_shows_ids_not_keys() {
        let keys = vec![
            (id("old"), Masker::new(b"SECRET-OLD-0123456789")),
            (id("new"), Masker::new(b"SECRET-NEW-0123456789")),
        ];
        let shown = format!("{:?}", Keyring::new(keys, &id("new")).unwrap());
        assert!(
            shown.contains("old") && shown.contains("\"new\""),
            "{shown}"
        );
        assert!(!shown.contains("SECRET"), "{shown}");
    }

    fn arb_id() -> impl Strategy<Value = String> {
        "[A-Za-z0-9][A-Za-z0-9._-]{0,31}"
    }

    proptest! {
        /// Whatever the ids and whichever is current: exactly one digest is marked current,
        /// it is the current key's, there is one digest per key, and distinct keys disagree.
        #[test]
        fn exactly_one_current_key_and_one_digest_per_key(
            ids in proptest::collection::btree_set(arb_id(), 1..6),
            pick in any::<proptest::sample::Index>(),
            value in ".{0,40}",
        ) {
            let ids: Vec<String> = ids.into_iter().collect();
            let current = id(&ids[pick.index(ids.len())]);
            let keys = ids
                .iter()
                .map(|text| (id(text), Masker::new(format!("k-{text}-0123456789abcdef").as_bytes())))
                .collect();
            let ring = Keyring::new(keys, &current).unwrap();
            let digests: Vec<KeyDigest<'_>> = ring.digests(&value).collect();
            prop_assert_eq!(digests.len(), ids.len());
            let marked: Vec<&KeyDigest<'_>> = digests.iter().filter(|d| d.current).collect();
            prop_assert_eq!(marked.len(), 1);
            prop_assert_eq!(marked[0].key_id, &current);
            prop_assert_eq!(&marked[0].digest, &ring.current().1.digest(&value));
            let distinct: std::collections::HashSet<&str> =
                digests.iter().map(|d| d.digest.as_str()).collect();
            prop_assert_eq!(distinct.len(), ids.len());
        }

        /// Any text the id rule accepts fits the column and round-trips; anything else is refused.
        #[test]
        fn key_id_parsing_agrees_with_the_rule(text in "[ -~é]{0,40}") {
            let rule = (1..=MAX_KEY_ID_CHARS).contains(&text.len())
                && text.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
                && text.chars().all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c));
            match KeyId::parse(&text) {
                Ok(parsed) => {
                    prop_assert!(rule);
                    prop_assert_eq!(parsed.to_string(), text);
                }
                Err(_) => prop_assert!(!rule),
            }
        }
    }
}
