//! TLS to PostgreSQL: `sslmode=require` connects over TLS and verifies the server's
//! certificate, against the system's roots and SQS2PG_DATABASE_CA_FILE.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::helpers::*;
use std::time::Duration;

/// A throwaway CA and a server certificate it signed for 127.0.0.1 and localhost.
struct Certificates {
    dir: PathBuf,
}

impl Certificates {
    fn generate(logs: &Logs) -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(".run")
            .join(unique("certs"));
        std::fs::create_dir_all(&dir).unwrap();
        let openssl = |args: &[&str]| {
            let output = Process::output(
                logs,
                Command::new("openssl").args(args).current_dir(&dir),
                Duration::from_secs(60),
            );
            assert!(
                output.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=sqs2pg test CA",
            "-days",
            "1",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "1",
            "-extfile",
            "san.ext",
        ]);
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_ingests_over_tls_with_a_verified_certificate() {
    let test = Test::shared().await;
    let certificates = Certificates::generate(&test.logs);
    let postgres = PrivatePostgres::start_tls_only(
        &test.logs,
        &certificates.path("server.crt"),
        &certificates.path("server.key"),
    );
    let plain_url = postgres.admin_url();
    let tls_url = format!("{plain_url}?sslmode=require");
    let ca = certificates.path("ca.crt");
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
