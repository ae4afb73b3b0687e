//! Poison floods, summarised. A producer that breaks its schema can send thousands of
//! poison messages a minute, and one WARN line each buries every other line. So, per
//! dead-letter reason, the first few of each window are logged one by one and the rest
//! only counted, then reported in one line per reason when the window ends. The metrics
//! count every one either way.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::domain::dead_letter::DeadLetterReason;

/// Dead letters of one reason logged one by one in each window.
pub const LOGGED_PER_WINDOW: u32 = 5;

/// What to do with the log line of one dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log it.
    Log,
    /// Log it, and say that the rest of this window's are only counted.
    LogLast,
    /// Count it for the window's summary.
    Count,
}

/// Per reason, this window's dead letters logged and those only counted.
#[derive(Debug, Default)]
pub struct DeadLetterLog {
    windows: Mutex<BTreeMap<DeadLetterReason, Window>>,
}

#[derive(Debug, Default)]
struct Window {
    logged: u32,
    unlogged: u64,
}

impl DeadLetterLog {
    /// One dead letter for `reason`: whether its line is written.
    pub fn admit(&self, reason: DeadLetterReason) -> Verdict {
        let mut windows = self.windows.lock().expect("not poisoned");
        let window = windows.entry(reason).or_default();
        if window.logged < LOGGED_PER_WINDOW {
            window.logged += 1;
            if window.logged == LOGGED_PER_WINDOW {
                Verdict::LogLast
            } else {
                Verdict::Log
            }
        } else {
            window.unlogged += 1;
            Verdict::Count
        }
    }

    /// Ends the window: the dead letters only counted in it, by reason (none left out).
    pub fn end_window(&self) -> Vec<(DeadLetterReason, u64)> {
        let windows = std::mem::take(&mut *self.windows.lock().expect("not poisoned"));
        windows
            .into_iter()
            .filter(|(_, window)| window.unlogged > 0)
            .map(|(reason, window)| (reason, window.unlogged))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_logs_a_few_per_reason_then_counts_the_rest_until_the_window_ends() {
        let log = DeadLetterLog::default();
        let verdicts: Vec<_> = (0..1000)
            .map(|_| log.admit(DeadLetterReason::InvalidJson))
            .collect();
        let logged = verdicts.iter().filter(|v| **v != Verdict::Count).count();
        assert_eq!(logged, LOGGED_PER_WINDOW as usize);
        assert_eq!(verdicts[LOGGED_PER_WINDOW as usize - 1], Verdict::LogLast);
        // Another reason has a window of its own.
        assert_eq!(log.admit(DeadLetterReason::MissingField), Verdict::Log);
        assert_eq!(
            log.end_window(),
            vec![(
                DeadLetterReason::InvalidJson,
                1000 - u64::from(LOGGED_PER_WINDOW)
            )]
        );
        // A new window logs again, and an ended one is not reported twice.
        assert_eq!(log.admit(DeadLetterReason::InvalidJson), Verdict::Log);
        assert!(log.end_window().is_empty());
    }
}
