//! The start of every test: its turn and its logs.
//!
//! The whole suite runs in one process, on libtest's threads. Timing-sensitive tests (the
//! chaos tests, the scale-in tests) and heavy ones (the hostile corpus, the leak checks at
//! TRACE) take the turn alone: beside a heavy neighbour on a machine of two cores, a
//! heartbeat, a kill window or a deadline can slip and a test flake. Every other test takes
//! it shared, so those run beside each other, and never beside one that runs alone. The lock is fair: once a test waits to run alone, later tests queue behind
//! it.
//!
//! At its end each test prints how long it waited for its turn and how long it ran (what
//! libtest's own timing cannot tell apart).

use std::time::{Duration, Instant};

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::process::Logs;

static TURN: RwLock<()> = RwLock::const_new(());

/// A running test: its turn (one of the two guards), held until the end, and its [`Logs`].
pub struct Test {
    /// Where its processes write; kept if the test fails.
    pub logs: Logs,
    name: String,
    waited: Duration,
    started: Instant,
    _shared: Option<RwLockReadGuard<'static, ()>>,
    alone: Option<RwLockWriteGuard<'static, ()>>,
}

impl Test {
    /// A test that may run beside other shared ones.
    pub async fn shared() -> Self {
        let asked = Instant::now();
        Self::with(asked, Some(TURN.read().await), None)
    }

    /// A heavy or timing-sensitive test: nothing else runs meanwhile.
    pub async fn alone() -> Self {
        let asked = Instant::now();
        Self::with(asked, None, Some(TURN.write().await))
    }

    /// [`Test::shared`] for a test without an async runtime.
    pub fn shared_blocking() -> Self {
        let asked = Instant::now();
        Self::with(asked, Some(TURN.blocking_read()), None)
    }

    fn with(
        asked: Instant,
        shared: Option<RwLockReadGuard<'static, ()>>,
        alone: Option<RwLockWriteGuard<'static, ()>>,
    ) -> Self {
        super::init_logging();
        // libtest runs each test on a thread named after it (`chaos::kill_minus_nine_…`).
        let name = std::thread::current()
            .name()
            .map(str::to_owned)
            .unwrap_or_else(|| super::unique("unnamed-test"));
        Self {
            logs: Logs::for_test(&name),
            name,
            waited: asked.elapsed(),
            started: Instant::now(),
            _shared: shared,
            alone,
        }
    }
}

impl Drop for Test {
    fn drop(&mut self) {
        eprintln!(
            "{}: ran {:.1?} ({}), after {:.1?} waiting for its turn",
            self.name,
            self.started.elapsed(),
            if self.alone.is_some() {
                "alone"
            } else {
                "shared"
            },
            self.waited
        );
    }
}
