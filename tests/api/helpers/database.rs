//! PostgreSQL for the tests: a fresh database per test on the shared cluster, and private
//! clusters for the tests that stop, restart or reconfigure theirs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sqs2pg::adapters::postgres::{self, PostgresSink};
use tokio_postgres::NoTls;

use super::{Logs, Process, free_port, init_logging, required_env, text, unique};

/// The admin connection string of the shared test cluster.
pub fn admin_database_url() -> String {
    required_env("DATABASE_URL")
}

/// Replaces the database name at the end of a postgres:// URL.
pub fn with_database(url: &str, database: &str) -> String {
    let base = url.rsplit_once('/').map(|(base, _)| base).unwrap_or(url);
    format!("{base}/{database}")
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(connection);
    client
}

/// A fresh database with the migrations applied, on `admin_url`'s cluster.
pub struct TestDb {
    pub url: String,
}

impl TestDb {
    pub async fn create() -> Self {
        Self::create_on(&admin_database_url()).await
    }

    pub async fn create_on(admin_url: &str) -> Self {
        init_logging();
        let name = unique("sqs2pg_test");
        connect(admin_url)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        let url = with_database(admin_url, &name);
        postgres::migrate(&postgres::parse_database_url(&url).unwrap())
            .await
            .expect("migrate");
        Self { url }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }

    pub fn sink(&self, connections: usize) -> PostgresSink {
        PostgresSink::new(
            postgres::parse_database_url(&self.url).unwrap(),
            connections,
        )
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.client()
            .await
            .query_one(sql, &[])
            .await
            .expect(sql)
            .get(0)
    }

    /// The message ids of every row, duplicates included (for exactly-once checks).
    pub async fn message_ids(&self) -> Vec<String> {
        self.client()
            .await
            .query("SELECT message_id FROM user_logins", &[])
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect()
    }

    pub async fn row_count(&self) -> i64 {
        self.count("SELECT count(*) FROM user_logins").await
    }
}

/// A PostgreSQL cluster of the test's own, for tests that stop and restart the database.
/// Stopped and deleted on drop; its server log goes to the test's logs.
pub struct PrivatePostgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    logs: Logs,
}

impl PrivatePostgres {
    fn init(logs: &Logs) -> Self {
        init_logging();
        let bin = PathBuf::from(
            std::env::var("SQS2PG_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()),
        );
        let dir = private_clusters_dir(logs).join(unique("sqs2pg-test-pg"));
        std::fs::create_dir_all(&dir).unwrap();
        let this = Self {
            port: free_port(),
            dir,
            bin,
            logs: logs.clone(),
        };
        give_to_postgres(&this.dir);
        this.pg(&[
            "initdb",
            "-D",
            &this.data(),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ]);
        this
    }

    pub fn start(logs: &Logs) -> Self {
        let this = Self::init(logs);
        this.start_server();
        this
    }

    /// A cluster that accepts TLS connections only (`hostssl` in pg_hba.conf), with the
    /// given server certificate and key.
    pub fn start_tls_only(logs: &Logs, certificate: &Path, key: &Path) -> Self {
        let this = Self::init(logs);
        let data = PathBuf::from(this.data());
        std::fs::copy(certificate, data.join("server.crt")).unwrap();
        std::fs::copy(key, data.join("server.key")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        conf.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(data.join("postgresql.conf"), conf).unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        for file in ["server.crt", "server.key", "postgresql.conf", "pg_hba.conf"] {
            give_to_postgres(&data.join(file));
        }
        this.start_server();
        this
    }

    /// A cluster where only `postgres` gets in without a password (for the admin URL);
    /// every other role must give its password over TCP (scram-sha-256).
    pub fn start_with_passwords(logs: &Logs) -> Self {
        let this = Self::init(logs);
        let hba = PathBuf::from(this.data()).join("pg_hba.conf");
        std::fs::write(
            &hba,
            "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
        )
        .unwrap();
        give_to_postgres(&hba);
        this.start_server();
        this
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// A command that runs a PostgreSQL binary, as the `postgres` OS user when we are root
    /// (initdb refuses to run as root).
    fn pg_command(&self, program: &str) -> Command {
        as_postgres(self.bin.join(program))
    }

    fn pg(&self, args: &[&str]) {
        let output = Process::output(
            &self.logs,
            self.pg_command(args[0]).args(&args[1..]),
            Duration::from_secs(120),
        );
        assert!(
            output.status.success(),
            "{args:?} failed: {}",
            text(&output)
        );
    }

    pub fn start_server(&self) {
        let log = self.dir.join("log").display().to_string();
        let options = format!(
            "-p {} -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port
        );
        self.pg(&[
            "pg_ctl",
            "-D",
            &self.data(),
            "-l",
            &log,
            "-w",
            "-t",
            "60",
            "-o",
            &options,
            "start",
        ]);
    }

    /// Stops the server fast (open connections are cut, as in a crash or failover).
    pub fn stop_server(&self) {
        self.pg(&["pg_ctl", "-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // No assertion here: a drop during a failing test's unwinding must not panic.
        let mut stop = Process::spawn(
            &self.logs,
            "pg_ctl",
            self.pg_command("pg_ctl")
                .args(["-D", &self.data(), "-m", "immediate", "-w", "stop"]),
        );
        let started = Instant::now();
        while stop.exited().is_none() && started.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::copy(self.dir.join("log"), self.logs.file("postgres.log"));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `program`, run as the `postgres` OS user when we are root, from / (that user may not be
/// able to enter the current folder).
fn as_postgres(program: impl AsRef<std::ffi::OsStr>) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(program)
            .current_dir("/");
        command
    } else {
        Command::new(program)
    }
}

/// Where private clusters go: `.run/` in the checkout, unless we are root and the `postgres`
/// OS user, who runs the cluster then, cannot reach it (a checkout under /root, which is
/// drwx------); then the system's temporary folder, which every user can reach.
fn private_clusters_dir(logs: &Logs) -> PathBuf {
    let run = super::repo().join(".run");
    std::fs::create_dir_all(&run).unwrap();
    if !is_root() || postgres_reaches(logs, &run) {
        run
    } else {
        std::env::temp_dir()
    }
}

/// Whether the `postgres` OS user can reach (search) a folder.
fn postgres_reaches(logs: &Logs, dir: &Path) -> bool {
    Process::output(
        logs,
        as_postgres("test").arg("-x").arg(dir),
        Duration::from_secs(30),
    )
    .status
    .success()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Makes `path` the `postgres` OS user's (and its group's), when we are root and it runs
/// the cluster.
fn give_to_postgres(path: &Path) {
    if !is_root() {
        return;
    }
    let user = nix::unistd::User::from_name("postgres")
        .expect("read the user database")
        .expect("a `postgres` OS user (Debian's postgresql package makes it)");
    nix::unistd::chown(path, Some(user.uid), Some(user.gid))
        .unwrap_or_else(|error| panic!("chown {} to postgres: {error}", path.display()));
}
