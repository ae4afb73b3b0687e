//! Throughput of the pure core (parse, validate, mask) on realistic bodies, one core: the
//! typed login transform, the generic one running streams/logins.toml, and the wide orders
//! example (20 columns, two masked) with and without its JSON Schema. Same run, same
//! machine. Prints figures; asserts nothing (these machines are shared and noisy).

use std::hint::black_box;
use std::time::Instant;

use sqs2pg::domain::envelope::EnvelopeMode;
use sqs2pg::domain::event::Masker;
use sqs2pg::domain::keyring::{KeyId, Keyring};
use sqs2pg::domain::stream::{self, Lookups, MessageMeta};
use sqs2pg::domain::synthetic::{Recipe, generate, orders};

const ROUNDS: usize = 10;

/// Times `run` over every body, `ROUNDS` times after a warm-up; prints and returns ns/message.
fn measure(label: &str, bodies: &[String], mut run: impl FnMut(&str) -> bool) -> f64 {
    for body in bodies {
        black_box(run(body));
    }
    let started = Instant::now();
    let mut valid = 0usize;
    for _ in 0..ROUNDS {
        for body in bodies {
            valid += usize::from(black_box(run(black_box(body))));
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let count = bodies.len() * ROUNDS;
    let nanos = elapsed * 1e9 / count as f64;
    println!(
        "{label:<44} {count} bodies ({valid} valid): {:>9.0} messages/s, {nanos:>6.0} ns/message",
        count as f64 / elapsed
    );
    nanos
}

fn main() {
    let (bodies, _) = generate(Recipe {
        count: 20_000,
        seed: 1,
        duplicate_share: 0.1,
        malformed_share: 0.01,
    });
    let masker = Masker::new(b"bench-key-0123456789abcdef");
    let keyring = Keyring::single(KeyId::default(), masker.clone());
    let sent_at = chrono::Utc::now();
    let meta = MessageMeta {
        sqs_message_id: "bench",
        original_message_id: None,
        sent_at,
    };

    let logins = stream::login::stream("bench", EnvelopeMode::Auto);
    let generic = measure("logins, generic transform (logins.toml)", &bodies, |body| {
        logins.transform(body, &meta, &keyring).is_ok()
    });
    // The line scripts/bench.sh records (transform.json), in its format: the service's path.
    println!(
        "transform: {} bodies in {:.3} s: {:.0} messages/s, {:.2} µs/message on one core",
        bodies.len() * ROUNDS,
        generic * 1e-9 * (bodies.len() * ROUNDS) as f64,
        1e9 / generic,
        generic / 1000.0
    );
    // The typed transform the service ran before streams, kept as the login stream's oracle
    // (the `invariants` feature, which scripts/bench.sh turns on).
    #[cfg(feature = "invariants")]
    {
        use sqs2pg::domain::event::{Envelope, transform};
        let envelope = Envelope {
            message_id: "bench",
            sent_at,
        };
        let typed = measure(
            "logins, typed transform (event::transform)",
            &bodies,
            |body| {
                sqs2pg::domain::envelope::unwrap(body, EnvelopeMode::Auto)
                    .is_ok_and(|inner| transform(&inner.body, envelope, &keyring).is_ok())
            },
        );
        println!(
            "  generic / typed time per message: {:.2} (throughput ratio {:.2})",
            generic / typed,
            typed / generic
        );
    }

    let file = include_str!("../streams/orders.toml");
    let schema_text = include_str!("../streams/orders.schema.json");
    let env = |_: &str| Some("bench".to_owned());
    let schema = |_: &str| Ok(schema_text.to_owned());
    let lookups = Lookups {
        env: &env,
        schema: &schema,
    };
    let with_schema = stream::compile(file, "orders.toml", &lookups).expect("compiles");
    let without_schema = stream::compile(
        &file
            .replace("schema = \"orders.schema.json\"", "")
            .replace(
                "from = \"order_id\" ",
                "from = \"order_id\"\ntype = \"uuid\" ",
            )
            .replace(
                "from = \"customer.id\" ",
                "from = \"customer.id\"\ntype = \"varchar(64)\" ",
            )
            .replace(
                "from = \"items_count\" ",
                "from = \"items_count\"\ntype = \"smallint\" ",
            )
            .replace(
                "from = \"discount_pct\" ",
                "from = \"discount_pct\"\ntype = \"double precision\"\nrequired = false ",
            )
            .replace(
                "from = \"is_gift\"",
                "from = \"is_gift\"\ntype = \"boolean\"",
            )
            .replace(
                "from = \"delivery_date\"",
                "from = \"delivery_date\"\ntype = \"date\"\nrequired = false",
            )
            .replace(
                "from = \"channel\"",
                "from = \"channel\"\ntype = \"varchar(16)\"",
            )
            .replace(
                "from = \"payment.installments\"",
                "from = \"payment.installments\"\nrequired = false",
            )
            .replace(
                "from = \"attributes\"",
                "from = \"attributes\"\ntype = \"jsonb\"",
            ),
        "orders.toml",
        &lookups,
    )
    .expect("compiles");
    let (order_bodies, _) = orders(20_000, 7);
    let schema_on = measure(
        "orders, 20 columns, with its JSON Schema",
        &order_bodies,
        |body| with_schema[0].transform(body, &meta, &keyring).is_ok(),
    );
    let schema_off = measure(
        "orders, 20 columns, without the schema",
        &order_bodies,
        |body| without_schema[0].transform(body, &meta, &keyring).is_ok(),
    );
    println!(
        "  the JSON Schema costs {:.0} ns/message (a second parse into a Value, then validation)",
        schema_on - schema_off
    );

    let started = Instant::now();
    for body in &bodies {
        black_box(masker.digest(black_box(body)));
    }
    let per_digest = started.elapsed().as_secs_f64() * 1e9 / bodies.len() as f64;
    println!("  of which one HMAC-SHA256 digest of a ~150-byte input: {per_digest:.0} ns");
}
