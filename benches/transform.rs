//! Throughput of the pure core (parse, validate, mask) on realistic bodies, one core.
//! Prints figures; asserts nothing (these machines are shared and noisy).

use std::hint::black_box;
use std::time::Instant;

use sqs2pg::domain::event::{Envelope, Masker, transform};
use sqs2pg::domain::keyring::{KeyId, Keyring};
use sqs2pg::domain::synthetic::{Recipe, generate};

fn main() {
    let (bodies, _) = generate(Recipe {
        count: 20_000,
        seed: 1,
        duplicate_share: 0.1,
        malformed_share: 0.01,
    });
    let masker = Masker::new(b"bench-key-0123456789abcdef");
    let keyring = Keyring::single(KeyId::default(), masker.clone());
    let envelope = Envelope {
        message_id: "bench",
        sent_at: chrono::Utc::now(),
    };
    let rounds = 10;
    // Warm up, then time.
    for body in &bodies {
        let _ = black_box(transform(body, envelope, &keyring));
    }
    let started = Instant::now();
    let mut valid = 0usize;
    for _ in 0..rounds {
        for body in &bodies {
            valid += usize::from(black_box(transform(black_box(body), envelope, &keyring)).is_ok());
        }
    }
    let elapsed = started.elapsed();
    let count = bodies.len() * rounds;
    println!(
        "transform: {count} bodies ({valid} valid) in {:.3} s: {:.0} messages/s, {:.2} µs/message on one core",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / count as f64
    );

    let started = Instant::now();
    for body in &bodies {
        black_box(masker.digest(black_box(body)));
    }
    let per_digest = started.elapsed().as_secs_f64() * 1e6 / bodies.len() as f64;
    println!("  of which one HMAC-SHA256 digest of a ~150-byte input: {per_digest:.2} µs");
}
