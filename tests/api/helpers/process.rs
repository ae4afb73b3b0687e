//! Every child process a test starts (`sqs2pg` and its subcommands, prometheus, promtool,
//! kubectl, psql, PostgreSQL's own binaries, python3): one [`Process`] type, whose output
//! goes to files in the test's [`Logs`].

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use nix::sys::signal::Signal;

use super::{HMAC_KEY, TestDb, TestQueues, unique};

/// Set to `1` to keep the logs of passing tests too.
const KEEP_LOGS: &str = "SQS2PG_KEEP_TEST_LOGS";

/// A test's folder, `target/test-logs/<test name>/`: the output of each process it starts,
/// and the files it writes for them (a configuration, certificates). Made on first use.
/// When the test fails it is kept and its path printed; when it passes it is deleted,
/// unless `SQS2PG_KEEP_TEST_LOGS=1`. A clone is a handle to the same folder (a private
/// cluster holds one to save its server log), decided on when the last one goes.
#[derive(Clone)]
pub struct Logs(Arc<Folder>);

struct Folder {
    path: PathBuf,
    /// Files made so far, to number them in order.
    made: AtomicUsize,
}

impl Logs {
    /// The folder of the test `name`, emptied of what an earlier run left there.
    pub fn for_test(name: &str) -> Self {
        // CARGO_TARGET_TMPDIR is `<target dir>/tmp`, wherever CARGO_TARGET_DIR puts it.
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("the target dir")
            .join("test-logs")
            .join(name);
        let _ = std::fs::remove_dir_all(&path);
        Self(Arc::new(Folder {
            path,
            made: AtomicUsize::new(0),
        }))
    }

    pub fn dir(&self) -> &Path {
        std::fs::create_dir_all(&self.0.path)
            .unwrap_or_else(|error| panic!("create {}: {error}", self.0.path.display()));
        &self.0.path
    }

    /// A path in the folder for `name`, numbered in the order of the calls, so that the
    /// files of a test sort as they were made (`03-consumer.stderr`).
    pub fn file(&self, name: &str) -> PathBuf {
        let n = self.0.made.fetch_add(1, Ordering::SeqCst) + 1;
        self.dir().join(format!("{n:02}-{name}"))
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        if !self.path.exists() {
            return;
        }
        if std::thread::panicking() {
            eprintln!("the test failed; its logs are in {}", self.path.display());
        } else if std::env::var(KEEP_LOGS).is_ok_and(|keep| keep == "1") {
            eprintln!("logs kept in {} ({KEEP_LOGS}=1)", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A child process of a test, its stdin closed and its stdout and stderr in files of the
/// test's [`Logs`] (`<n>-<name>.stdout`, `.stderr`, and its command line in `.command`):
/// a chatty child never blocks on a full pipe, and what it wrote so far can be read while
/// it runs. Killed (SIGKILL) and reaped on drop, even when an assertion failed.
pub struct Process {
    name: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    status: Option<ExitStatus>,
}

impl Process {
    /// Starts `command`, with whatever environment it was given.
    pub fn spawn(logs: &Logs, name: &str, command: &mut Command) -> Self {
        Self::spawn_with_stdin(logs, name, command, Stdio::null())
    }

    fn spawn_with_stdin(logs: &Logs, name: &str, command: &mut Command, stdin: Stdio) -> Self {
        let base = logs.file(name).display().to_string();
        let (stdout, stderr) = (
            PathBuf::from(format!("{base}.stdout")),
            PathBuf::from(format!("{base}.stderr")),
        );
        std::fs::write(format!("{base}.command"), format!("{command:?}\n")).unwrap();
        let child = command
            .stdin(stdin)
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {name} ({command:?}): {error}"));
        Self {
            name: name.to_owned(),
            child,
            stdout,
            stderr,
            status: None,
        }
    }

    /// Runs `command` to its end, like `Command::output`, but fails the test (killing the
    /// child) if that takes longer than `limit`: a hang must fail fast, not stall the suite.
    pub fn output(logs: &Logs, command: &mut Command, limit: Duration) -> Output {
        Self::output_with_stdin(logs, command, Stdio::null(), limit)
    }

    /// [`Process::output`] with `input` on the child's stdin (kept in the test's folder as
    /// `<program>.stdin`).
    pub fn output_with_input(
        logs: &Logs,
        command: &mut Command,
        input: &[u8],
        limit: Duration,
    ) -> Output {
        let path = logs.file(&format!("{}.stdin", unique("input")));
        std::fs::write(&path, input).unwrap();
        Self::output_with_stdin(
            logs,
            command,
            Stdio::from(File::open(&path).unwrap()),
            limit,
        )
    }

    fn output_with_stdin(
        logs: &Logs,
        command: &mut Command,
        stdin: Stdio,
        limit: Duration,
    ) -> Output {
        // Named after the program, or what `runuser -u <user> -- <program>` runs.
        let mut words = std::iter::once(command.get_program()).chain(command.get_args());
        let program = match words.next() {
            Some(runuser) if runuser == "runuser" => {
                words.find(|word| *word == "--").and(words.next())
            }
            first => first,
        };
        let name = program
            .and_then(|program| Path::new(program).file_name())
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut process = Self::spawn_with_stdin(logs, &name, command, stdin);
        let status = process.wait_within(limit);
        Output {
            status,
            stdout: std::fs::read(&process.stdout).unwrap(),
            stderr: std::fs::read(&process.stderr).unwrap(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// What it wrote to stdout so far.
    pub fn stdout(&self) -> String {
        read_lossy(&self.stdout)
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr)
    }

    /// The last `lines` lines of its stderr, and where the rest is.
    pub fn stderr_tail(&self, lines: usize) -> String {
        let text = self.stderr();
        let all: Vec<&str> = text.lines().collect();
        format!(
            "{}\n(all of it in {})",
            all[all.len().saturating_sub(lines)..].join("\n"),
            self.stderr.display()
        )
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("poll the child");
        }
        self.status
    }

    /// Fails the test if the process has exited.
    pub fn assert_running(&mut self, during: &str) {
        if let Some(status) = self.exited() {
            panic!(
                "{} exited ({status}) during {during}; its stderr ends with:\n{}",
                self.name,
                self.stderr_tail(40)
            );
        }
    }

    /// Waits (blocking the thread) for the exit; kills the child and fails the test if it
    /// takes longer than `limit`.
    pub fn wait_within(&mut self, limit: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            if started.elapsed() > limit {
                self.kill();
                panic!(
                    "{} did not exit within {limit:?}; its stderr ends with:\n{}",
                    self.name,
                    self.stderr_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (asynchronously) up to `limit` for the process to exit by itself.
    pub async fn exit_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if started.elapsed() >= limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `signal` (SIGTERM, SIGINT…) to the running process.
    pub fn signal(&mut self, signal: Signal) {
        assert!(
            self.exited().is_none(),
            "{} already exited: no {signal} for it",
            self.name
        );
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal)
            .unwrap_or_else(|error| panic!("{signal} to {}: {error}", self.name));
    }

    /// SIGKILL, and reaped.
    pub fn kill(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            self.status = Some(self.child.wait().expect("reap the child"));
        }
    }

    /// The events of its JSON logs (`SQS2PG_LOG_FORMAT=json`) whose message is `message`.
    pub fn log_events(&self, message: &str) -> Vec<serde_json::Value> {
        self.stderr()
            .lines()
            .filter(|line| line.contains(message))
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|event| event["fields"]["message"] == message)
            .collect()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn read_lossy(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

/// Stdout then stderr of a finished command, as text.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The service binary, with the environment of the test services.
pub fn sqs2pg_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sqs2pg"));
    command
        .env("SQS2PG_HMAC_KEY", HMAC_KEY)
        .env("SQS2PG_METRICS_ADDR", "127.0.0.1:0");
    if let Some(file) = login_stream_file() {
        command.env("SQS2PG_STREAMS", file);
    }
    command
}

/// `streams/logins.toml` when the suite runs with the login stream declared in its file
/// (`SQS2PG_TEST_LOGIN_FILE=1`, the test command's second pass) rather than built in.
pub fn login_stream_file() -> Option<std::path::PathBuf> {
    std::env::var_os("SQS2PG_TEST_LOGIN_FILE")
        .is_some_and(|value| value == "1")
        .then(|| super::repo().join("streams").join("logins.toml"))
}

/// The service binary with only `PATH` of the test's environment: no setting leaks in.
pub fn bare_sqs2pg_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sqs2pg"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command
}

/// Environment for the binary to consume `queues` into `db`.
pub fn run_env(command: &mut Command, db: &TestDb, queues: &TestQueues) {
    command
        .env("DATABASE_URL", &db.url)
        .env("SQS2PG_QUEUE_URL", &queues.urls.queue_url)
        .env("SQS2PG_DLQ_URL", &queues.urls.dlq_url);
}
