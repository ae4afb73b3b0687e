//! `sqs2pg digest [VALUE]`: a known value's digest under every key of the keyring, so an
//! analyst finds its rows across key rotations without handling the keys in a tool of their
//! own. The value is PII: it is never logged, and only digests (and SQL made of digests and
//! key ids) reach stdout.

use std::io::Read;

use secrecy::{ExposeSecret, SecretString};

use crate::cli::config::{DigestArgs, LookupField, OutputFormat};
use crate::domain::event::MAX_DEVICE_ID_CHARS;
use crate::domain::keyring::{KeyDigest, Keyring};

/// The longest value read: a `device_id` of the most characters, each of the most bytes. A
/// longer value cannot be in any row, and it bounds what a mistaken pipe makes us read.
const MAX_VALUE_BYTES: usize = MAX_DEVICE_ID_CHARS * 4;

/// Why there is no value to digest. The text never quotes the value.
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    #[error("reading the value from stdin failed")]
    Stdin(#[source] std::io::Error),
    #[error("the value is empty")]
    Empty,
    #[error("the value is not valid UTF-8")]
    NotUtf8,
    #[error("the value is longer than {MAX_VALUE_BYTES} bytes, longer than any stored field")]
    TooLong,
    #[error("stdin holds more than one line; give one value at a time")]
    SeveralLines,
    #[error("several values were given; give one at a time")]
    SeveralValues,
}

/// `sqs2pg digest`.
pub fn digest(args: DigestArgs) -> anyhow::Result<()> {
    let keyring = args.key.keyring()?;
    let value = match args.value.as_slice() {
        [] => read_value(std::io::stdin().lock())?,
        [value] if value.expose_secret() == "-" => read_value(std::io::stdin().lock())?,
        [value] => check(value.expose_secret().as_bytes())?,
        [_, _, ..] => return Err(ValueError::SeveralValues.into()),
    };
    println!(
        "{}",
        render(&keyring, value.expose_secret(), args.sql, args.output)
    );
    Ok(())
}

/// One value from `input`: its bytes without one trailing `\n` or `\r\n`.
fn read_value(input: impl Read) -> Result<SecretString, ValueError> {
    let mut bytes = Vec::new();
    input
        .take(MAX_VALUE_BYTES as u64 + 3)
        .read_to_end(&mut bytes)
        .map_err(ValueError::Stdin)?;
    let line = bytes
        .strip_suffix(b"\r\n")
        .or_else(|| bytes.strip_suffix(b"\n"))
        .unwrap_or(&bytes);
    if line.contains(&b'\n') {
        return Err(ValueError::SeveralLines);
    }
    check(line)
}

fn check(bytes: &[u8]) -> Result<SecretString, ValueError> {
    if bytes.is_empty() {
        return Err(ValueError::Empty);
    }
    if bytes.len() > MAX_VALUE_BYTES {
        return Err(ValueError::TooLong);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| ValueError::NotUtf8)?;
    Ok(SecretString::from(text.to_owned()))
}

/// What `digest` prints: one line per key, or one JSON object.
fn render(
    keyring: &Keyring,
    value: &str,
    sql: Option<LookupField>,
    output: OutputFormat,
) -> String {
    let digests: Vec<KeyDigest<'_>> = keyring.digests(value).collect();
    let sql = sql.map(|field| lookup_sql(field, &digests));
    match output {
        OutputFormat::Text => {
            let mut lines: Vec<String> = digests
                .iter()
                .map(|d| {
                    let current = if d.current { "current" } else { "-" };
                    format!("{}\t{}\t{current}", d.key_id, d.digest)
                })
                .collect();
            lines.extend(sql);
            lines.join("\n")
        }
        OutputFormat::Json => {
            /// The documented shape (README, Key rotation): fields only ever added.
            #[derive(serde::Serialize)]
            struct Shape<'a> {
                keys: Vec<Key<'a>>,
                #[serde(skip_serializing_if = "Option::is_none")]
                sql: Option<String>,
            }
            #[derive(serde::Serialize)]
            struct Key<'a> {
                key_id: &'a str,
                current: bool,
                digest: &'a str,
            }
            let keys = digests
                .iter()
                .map(|d| Key {
                    key_id: d.key_id.as_str(),
                    current: d.current,
                    digest: &d.digest,
                })
                .collect();
            serde_json::to_string(&Shape { keys, sql }).expect("the shape serializes")
        }
    }
}

/// The query that finds the value's rows under every key. Key ids and hex digests need no
/// quoting (their alphabets hold no quote), so the literals are safe as they are. Each pair
/// becomes `hmac_key_id = … AND hashed_… = …`, which the index on the digest column serves.
fn lookup_sql(field: LookupField, digests: &[KeyDigest<'_>]) -> String {
    let column = match field {
        LookupField::Ip => "hashed_ip",
        LookupField::DeviceId => "hashed_device_id",
    };
    let pairs: Vec<String> = digests
        .iter()
        .map(|d| format!("('{}', '{}')", d.key_id, d.digest))
        .collect();
    format!(
        "SELECT * FROM user_logins WHERE (hmac_key_id, {column}) IN ({});",
        pairs.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::Masker;
    use crate::domain::keyring::KeyId;

    fn ring() -> Keyring {
        let id = |text| KeyId::parse(text).unwrap();
        Keyring::new(
            vec![
                (id("2026-12"), Masker::new(b"new-key-0123456789abcdef")),
                (
                    id("default"),
                    Masker::new(b"test-hmac-key-0123456789abcdef"),
                ),
            ],
            &id("2026-12"),
        )
        .unwrap()
    }

    #[test]
    fn a_value_is_one_line_of_stdin() {
        for (input, expected) in [
            (&b"199.172.111.135"[..], "199.172.111.135"),
            (b"199.172.111.135\n", "199.172.111.135"),
            (b"199.172.111.135\r\n", "199.172.111.135"),
            (b" spaced \n", " spaced "),
        ] {
            assert_eq!(read_value(input).unwrap().expose_secret(), expected);
        }
        for (input, error) in [
            (&b""[..], "empty"),
            (b"\n", "empty"),
            (b"a\nb\n", "more than one line"),
            (b"a\n\n", "more than one line"),
            (b"\xff\xfe", "UTF-8"),
        ] {
            assert!(
                read_value(input).unwrap_err().to_string().contains(error),
                "{input:?}"
            );
        }
        let long = "x".repeat(MAX_VALUE_BYTES + 1);
        assert!(matches!(
            read_value(long.as_bytes()),
            Err(ValueError::TooLong)
        ));
        assert!(read_value("x".repeat(MAX_VALUE_BYTES).as_bytes()).is_ok());
    }

    #[test]
    fn errors_never_quote_the_value() {
        for input in [&b"SECRET-VALUE\nSECRET-VALUE"[..], b"SECRET-VALUE\xff"] {
            let error = read_value(input).unwrap_err().to_string();
            assert!(!error.contains("SECRET"), "{error}");
        }
    }

    #[test]
    fn text_is_a_line_per_key_and_json_one_object() {
        let ring = ring();
        let text = render(&ring, "199.172.111.135", None, OutputFormat::Text);
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0][0], "2026-12");
        assert_eq!(lines[0][2], "current");
        assert_eq!(
            lines[1],
            [
                "default",
                "da992b2230cd81b5156ff32ec9674acbbf4485c2a7a17c29b30ce830734a96f2",
                "-"
            ],
            "the README's worked example, under the default key"
        );
        assert!(!text.contains("199.172.111.135"));

        let json: serde_json::Value = serde_json::from_str(&render(
            &ring,
            "199.172.111.135",
            Some(LookupField::Ip),
            OutputFormat::Json,
        ))
        .unwrap();
        assert_eq!(json["keys"][0]["key_id"], "2026-12");
        assert_eq!(json["keys"][0]["current"], true);
        assert_eq!(json["keys"][0]["digest"], lines[0][1]);
        assert_eq!(json["keys"][1]["current"], false);
        assert_eq!(
            json["sql"],
            format!(
                "SELECT * FROM user_logins WHERE (hmac_key_id, hashed_ip) IN (('2026-12', '{}'), ('default', '{}'));",
                lines[0][1], lines[1][1]
            )
        );
    }

    /// The worked example of the README's Key rotation section, text and JSON, as printed.
    #[test]
    fn readme_rotation_example_holds() {
        let id = |text| KeyId::parse(text).unwrap();
        let ring = Keyring::new(
            vec![
                (
                    id("2026-12"),
                    Masker::new(b"example-new-key-0123456789abcdef"),
                ),
                (
                    id("default"),
                    Masker::new(b"test-hmac-key-0123456789abcdef"),
                ),
            ],
            &id("2026-12"),
        )
        .unwrap();
        let readme = include_str!("../../README.md");
        for output in [OutputFormat::Text, OutputFormat::Json] {
            let shown = render(&ring, "199.172.111.135", Some(LookupField::Ip), output);
            assert!(
                readme.contains(&shown),
                "the README does not show:\n{shown}"
            );
        }
    }

    #[test]
    fn device_lookups_match_the_device_digest_column() {
        let text = render(
            &ring(),
            "593-47-5928",
            Some(LookupField::DeviceId),
            OutputFormat::Text,
        );
        let sql = text.lines().last().unwrap();
        assert!(
            sql.contains("(hmac_key_id, hashed_device_id) IN (('2026-12', '"),
            "{sql}"
        );
    }
}
