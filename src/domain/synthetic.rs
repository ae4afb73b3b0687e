//! Realistic synthetic events, pure and seeded, so the same seed always gives the same
//! bodies: login events for `sqs2pg send`, and order events like `streams/orders.toml` reads
//! (the second example, for the tests and the benchmark).

use std::net::Ipv4Addr;

use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const LOCALES: [&str; 12] = [
    "RU", "US", "DE", "PH", "BR", "IN", "CN", "FR", "GB", "JP", "ID", "MX",
];

/// Malformed bodies of the kinds real queues carry.
const MALFORMED: [&str; 4] = [
    r#"{"foo": "oops_wrong_msg_type", "bar": "123"}"#,
    r#"{"user_id": "7c4e0d7e-2a0b-4a8e-9f1e-1b1f3f9a2c11", "app_version": "2.3.0", "device_type": "ios", "ip": 42, "locale": "US", "device_id": "123-45-6789"}"#,
    r#"{"user_id": "truncated"#,
    r#"[{"not": "an object"}]"#,
];

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct Recipe {
    pub count: u64,
    pub seed: u64,
    /// Share of events that reuse an earlier event's ip or device id.
    pub duplicate_share: f64,
    /// Share of malformed bodies, rounded to a whole number of events.
    pub malformed_share: f64,
}

/// The bodies, in sending order, and how many of them are malformed.
pub fn generate(recipe: Recipe) -> (Vec<String>, u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(recipe.seed);
    let count = recipe.count as usize;
    let malformed = ((recipe.count as f64) * recipe.malformed_share).round() as usize;
    let mut is_malformed = vec![false; count];
    for index in rand::seq::index::sample(&mut rng, count, malformed.min(count)) {
        is_malformed[index] = true;
    }
    let mut ips: Vec<String> = Vec::new();
    let mut device_ids: Vec<String> = Vec::new();
    let bodies = is_malformed
        .iter()
        .enumerate()
        .map(|(index, &bad)| {
            if bad {
                return MALFORMED[index % MALFORMED.len()].to_owned();
            }
            let ip = reuse_or(&mut rng, &ips, recipe.duplicate_share, |rng| {
                Ipv4Addr::from(rng.random::<u32>()).to_string()
            });
            let device_id = reuse_or(&mut rng, &device_ids, recipe.duplicate_share, |rng| {
                format!(
                    "{:03}-{:02}-{:04}",
                    rng.random_range(0..1000),
                    rng.random_range(0..100),
                    rng.random_range(0..10_000)
                )
            });
            ips.push(ip.clone());
            device_ids.push(device_id.clone());
            let user_id = uuid::Builder::from_random_bytes(rng.random()).into_uuid();
            let app_version = if rng.random_bool(0.5) {
                format!("{}.{}", rng.random_range(0..6), rng.random_range(0..100))
            } else {
                format!(
                    "{}.{}.{}",
                    rng.random_range(0..6),
                    rng.random_range(0..10),
                    rng.random_range(0..10)
                )
            };
            let locale =
                (!rng.random_bool(0.3)).then(|| *LOCALES.choose(&mut rng).expect("not empty"));
            serde_json::json!({
                "user_id": user_id.to_string(),
                "app_version": app_version,
                "device_type": if rng.random_bool(0.5) { "android" } else { "ios" },
                "ip": ip,
                "locale": locale,
                "device_id": device_id,
            })
            .to_string()
        })
        .collect();
    (bodies, malformed as u64)
}

fn reuse_or(
    rng: &mut ChaCha8Rng,
    earlier: &[String],
    share: f64,
    fresh: impl FnOnce(&mut ChaCha8Rng) -> String,
) -> String {
    if !earlier.is_empty() && rng.random_bool(share) {
        earlier.choose(rng).expect("not empty").clone()
    } else {
        fresh(rng)
    }
}

/// `count` order events of the `streams/orders.toml` example: the event id `evt-<seed>-<n>`
/// keys each, every hundredth is malformed (truncated JSON). Returns the bodies and how many
/// are malformed.
pub fn orders(count: usize, seed: u64) -> (Vec<String>, usize) {
    let bodies: Vec<String> = (0..count)
        .map(|index| {
            if index % 100 == 99 {
                return format!(r#"{{"event_id": "evt-{seed}-{index}", "truncated"#);
            }
            let tier = ["standard", "silver", "gold"][index % 3];
            let currency = ["EUR", "USD", "GBP"][index % 3];
            serde_json::json!({
                "event_id": format!("evt-{seed}-{index}"),
                "order_id": format!("5b6f2b1e-3c1a-4e0a-9d4f-{:012x}", seed * 1_000_000 + index as u64),
                "occurred_at": format!("2026-12-01T10:{:02}:{:02}Z", index / 60 % 60, index % 60),
                "customer": {
                    "id": format!("c-{}", index % 977),
                    "email": format!("user{}@example.com", index % 977),
                    "tier": tier,
                },
                "shipping": {
                    "ip": format!("10.{}.{}.{}", index % 256, index / 256 % 256, index % 7),
                    "country": "DE",
                    "postcode": "10115",
                },
                "total": format!("{}.{:02}", index % 500, index % 100),
                "currency": currency,
                "items_count": index % 9 + 1,
                "discount_pct": (index % 40) as f64 * 0.5,
                "is_gift": index % 5 == 0,
                "delivery_date": "2026-12-10",
                "channel": "web",
                "payment": {"method": "card", "installments": index % 3 + 1},
                "weight_grams": 1200 + index % 100,
                "attributes": {
                    "gift_message": "Happy birthday",
                    "referrer": {"user": "bob", "campaign": "winter"},
                },
            })
            .to_string()
        })
        .collect();
    let malformed = count / 100;
    (bodies, malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::{Envelope, Masker, transform};
    use crate::domain::keyring::{KeyId, Keyring};
    use std::collections::HashSet;

    fn recipe(count: u64) -> Recipe {
        Recipe {
            count,
            seed: 7,
            duplicate_share: 0.2,
            malformed_share: 0.01,
        }
    }

    fn parse(
        body: &str,
    ) -> Result<crate::domain::event::LoginRow, crate::domain::event::Rejection> {
        let envelope = Envelope {
            message_id: "m",
            sent_at: chrono::Utc::now(),
        };
        transform(
            body,
            envelope,
            &Keyring::single(KeyId::default(), Masker::new(b"0123456789abcdef")),
        )
    }

    #[test]
    fn same_seed_same_events() {
        assert_eq!(generate(recipe(50)), generate(recipe(50)));
        assert_ne!(
            generate(recipe(50)).0,
            generate(Recipe {
                seed: 8,
                ..recipe(50)
            })
            .0
        );
    }

    #[test]
    fn exactly_the_requested_share_is_malformed_and_the_rest_is_valid() {
        let (bodies, malformed) = generate(recipe(100));
        assert_eq!(malformed, 1);
        assert_eq!(bodies.iter().filter(|body| parse(body).is_err()).count(), 1);
    }

    #[test]
    fn events_look_like_the_real_queue() {
        let (bodies, _) = generate(Recipe {
            malformed_share: 0.0,
            ..recipe(1000)
        });
        let values: Vec<serde_json::Value> = bodies
            .iter()
            .map(|b| serde_json::from_str(b).unwrap())
            .collect();
        let null_locales = values.iter().filter(|v| v["locale"].is_null()).count();
        assert!(
            (200..400).contains(&null_locales),
            "null locales: {null_locales}"
        );
        for value in &values {
            let version = value["app_version"].as_str().unwrap();
            assert!(matches!(version.split('.').count(), 2 | 3), "{version}");
            let device_id = value["device_id"].as_str().unwrap();
            assert!(
                device_id.len() == 11
                    && device_id.as_bytes()[3] == b'-'
                    && device_id.as_bytes()[6] == b'-'
            );
            assert!(value["ip"].as_str().unwrap().parse::<Ipv4Addr>().is_ok());
            assert!(matches!(
                value["device_type"].as_str().unwrap(),
                "ios" | "android"
            ));
            assert_eq!(
                uuid::Uuid::parse_str(value["user_id"].as_str().unwrap())
                    .unwrap()
                    .get_version_num(),
                4
            );
        }
        let distinct_ips: HashSet<_> = values.iter().map(|v| v["ip"].as_str().unwrap()).collect();
        assert!(
            distinct_ips.len() < 900,
            "duplicates were requested: {} distinct",
            distinct_ips.len()
        );
    }
}
