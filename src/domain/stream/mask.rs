//! Masks: what a column stores instead of the value the event holds.
//!
//! - `hmac`: the keyed digest (HMAC-SHA256, lowercase hex, `char(64)`) of the text exactly
//!   as the event has it, under the keyring's current key, whose id the row records. As
//!   today: `2001:DB8::1` and `2001:db8::1` are two texts and give two digests.
//! - `ip_prefix`: an address cut to its network (`199.172.111.135` → `199.172.111.0/24`),
//!   for analytics by network without the host.
//! - Inside a jsonb column, `drop` removes fields and `hmac` digests them; a path through an
//!   array applies to each of its elements.

use std::net::IpAddr;

use serde_json::Value as Json;

use crate::domain::event::Masker;

/// A column's mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mask {
    Hmac,
    IpPrefix {
        v4: u8,
        v6: u8,
    },
    /// Paths inside a jsonb value.
    Json {
        drop: Vec<Vec<String>>,
        hmac: Vec<Vec<String>>,
    },
}

impl Mask {
    /// Its name, as errors and docs give it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Hmac => "hmac",
            Self::IpPrefix { .. } => "ip_prefix",
            Self::Json { .. } => "drop/hmac paths",
        }
    }

    pub fn uses_hmac(&self) -> bool {
        match self {
            Self::Hmac => true,
            Self::IpPrefix { .. } => false,
            Self::Json { hmac, .. } => !hmac.is_empty(),
        }
    }
}

/// `addr` with every bit past the prefix cleared, and the prefix length kept.
pub fn ip_prefix(addr: IpAddr, v4: u8, v6: u8) -> (IpAddr, u8) {
    match addr {
        IpAddr::V4(v4_addr) => {
            let bits = u32::from(v4_addr);
            let mask = u32::MAX.checked_shl(32 - u32::from(v4)).unwrap_or(0);
            (IpAddr::V4((bits & mask).into()), v4)
        }
        IpAddr::V6(v6_addr) => {
            let bits = u128::from(v6_addr);
            let mask = u128::MAX.checked_shl(128 - u32::from(v6)).unwrap_or(0);
            (IpAddr::V6((bits & mask).into()), v6)
        }
    }
}

/// Applies a jsonb column's `drop` and `hmac` paths to `value`, in place.
pub fn mask_json(value: &mut Json, drop: &[Vec<String>], hmac: &[Vec<String>], masker: &Masker) {
    for path in drop {
        at_path(value, path, &mut |parent, key| {
            parent.remove(key);
        });
    }
    for path in hmac {
        at_path(value, path, &mut |parent, key| {
            if let Some(found) = parent.get_mut(key) {
                let text = match &*found {
                    Json::Null => return,
                    Json::String(text) => masker.digest(text),
                    // A number, boolean, array or object: the digest of its JSON text.
                    other => masker.digest(&other.to_string()),
                };
                *found = Json::String(text);
            }
        });
    }
}

/// Calls `apply` with the object holding the path's last name, for every such object
/// (arrays on the way are entered element by element).
fn at_path(
    value: &mut Json,
    path: &[String],
    apply: &mut dyn FnMut(&mut serde_json::Map<String, Json>, &str),
) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    match value {
        Json::Array(items) => {
            for item in items {
                at_path(item, path, apply);
            }
        }
        Json::Object(map) if rest.is_empty() => apply(map, first),
        Json::Object(map) => {
            if let Some(inner) = map.get_mut(first.as_str()) {
                at_path(inner, rest, apply);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(text: &str) -> Vec<String> {
        text.split('.').map(str::to_owned).collect()
    }

    #[test]
    fn ip_prefixes_clear_the_host_bits() {
        let cut = |text: &str| {
            let (addr, prefix) = ip_prefix(text.parse().unwrap(), 24, 48);
            format!("{addr}/{prefix}")
        };
        assert_eq!(cut("199.172.111.135"), "199.172.111.0/24");
        assert_eq!(cut("2001:db8:aaaa:bbbb::1"), "2001:db8:aaaa::/48");
        assert_eq!(
            format!("{:?}", ip_prefix("10.1.2.3".parse().unwrap(), 0, 0)),
            "(0.0.0.0, 0)"
        );
        assert_eq!(
            ip_prefix("10.1.2.3".parse().unwrap(), 32, 128)
                .0
                .to_string(),
            "10.1.2.3"
        );
    }

    #[test]
    fn json_masks_drop_and_digest_through_objects_and_arrays() {
        let masker = Masker::new(b"mask-key-0123456789");
        let mut value = json!({
            "card": {"number": "4111", "brand": "visa"},
            "items": [{"sku": "a", "email": "x@y"}, {"sku": "b"}, 7],
            "ip": "10.0.0.1",
            "count": 3
        });
        mask_json(
            &mut value,
            &[path("card.number"), path("missing.field")],
            &[path("items.email"), path("ip"), path("count")],
            &masker,
        );
        assert_eq!(
            value,
            json!({
                "card": {"brand": "visa"},
                "items": [{"sku": "a", "email": masker.digest("x@y")}, {"sku": "b"}, 7],
                "ip": masker.digest("10.0.0.1"),
                "count": masker.digest("3")
            })
        );
    }
}
