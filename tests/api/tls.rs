//! TLS to PostgreSQL: `sslmode=require` connects over TLS and verifies the server's
//! certificate, against the system's roots and SQS2PG_DATABASE_CA_FILE.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use crate::helpers::*;

/// A throwaway CA, and a server certificate it signed for 127.0.0.1 and localhost, as PEM
/// files in the test's folder.
struct Certificates {
    ca: PathBuf,
    server_certificate: PathBuf,
    server_key: PathBuf,
}

impl Certificates {
    fn generate(logs: &Logs) -> Self {
        let mut ca = CertificateParams::default();
        ca.distinguished_name
            .push(DnType::CommonName, "sqs2pg test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().expect("a CA key");
        let ca_certificate = ca.self_signed(&ca_key).expect("the CA's certificate");
        let issuer = Issuer::new(ca, ca_key);

        let mut server = CertificateParams::new(["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("an IP address and a DNS name");
        server
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let server_key = KeyPair::generate().expect("a server key");
        let server_certificate = server
            .signed_by(&server_key, &issuer)
            .expect("the server's certificate, signed by the CA");

        let write = |name: &str, pem: String| {
            let path = logs.file(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        Self {
            ca: write("ca.crt", ca_certificate.pem()),
            server_certificate: write("server.crt", server_certificate.pem()),
            server_key: write("server.key", server_key.serialize_pem()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_ingests_over_tls_with_a_verified_certificate() {
    let test = Test::shared().await;
    let certificates = Certificates::generate(&test.logs);
    let postgres = PrivatePostgres::start_tls_only(
        &test.logs,
        &certificates.server_certificate,
        &certificates.server_key,
    );
    let plain_url = postgres.admin_url();
    let tls_url = format!("{plain_url}?sslmode=require");
    let ca = certificates.ca.clone();
    let migrate = |url: &str, ca: Option<&Path>| {
        let mut command = sqs2pg_command();
        command.arg("migrate").env("DATABASE_URL", url);
        if let Some(ca) = ca {
            command.env("SQS2PG_DATABASE_CA_FILE", ca);
        }
        Process::output(&test.logs, &mut command, Duration::from_secs(120))
    };

    // The server refuses plain text, so a success below can only be TLS.
    let output = migrate(&plain_url, None);
    assert!(
        !output.status.success(),
        "plain text was accepted: {}",
        text(&output)
    );
    // Without our CA the certificate cannot be verified, and the connection is refused.
    let output = migrate(&tls_url, None);
    assert!(
        !output.status.success(),
        "an unverified certificate was accepted: {}",
        text(&output)
    );
    assert!(
        text(&output).to_lowercase().contains("certificate"),
        "{}",
        text(&output)
    );
    // A CA file without sslmode=require is a configuration mistake, named as such.
    let output = migrate(&plain_url, Some(&ca));
    assert!(!output.status.success());
    assert!(
        text(&output).contains("sslmode=require"),
        "{}",
        text(&output)
    );

    let output = migrate(&tls_url, Some(&ca));
    assert!(output.status.success(), "{}", text(&output));

    // A whole drain over TLS.
    let queues = TestQueues::create().await;
    queues
        .send(&[
            SAMPLE.to_owned(),
            GARBAGE.to_owned(),
            SAMPLE.replace("2.3.0", "0.96"),
        ])
        .await;
    let mut command = sqs2pg_command();
    command
        .args(["run", "--drain"])
        .env("DATABASE_URL", &tls_url)
        .env("SQS2PG_DATABASE_CA_FILE", &ca)
        .env("SQS2PG_QUEUE_URL", &queues.urls.queue_url);
    let output = Process::output(&test.logs, &mut command, Duration::from_secs(120));
    assert!(output.status.success(), "{}", text(&output));
    println!(
        "over TLS: {}",
        String::from_utf8_lossy(&output.stdout).trim()
    );
    assert!(
        String::from_utf8_lossy(&output.stdout)
            .contains("rows inserted: 2, duplicates skipped: 0, dead-lettered: 1")
    );

    // Read back with psql (libpq's sslmode=require encrypts without verifying).
    let count = Process::output(
        &test.logs,
        Command::new("psql").args([tls_url.as_str(), "-Atc", "SELECT count(*) FROM user_logins"]),
        Duration::from_secs(60),
    );
    assert_eq!(
        String::from_utf8_lossy(&count.stdout).trim(),
        "2",
        "{}",
        text(&count)
    );
}
