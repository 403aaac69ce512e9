//! The states a DAG run and a task instance go through. The store keeps
//! them as text (Airflow's names, so users who query it find what they
//! know); everywhere else they are these enums, so a misspelt state is a
//! compile error rather than a run that never ends.

use std::fmt;
use std::str::FromStr;

/// A task instance's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskState {
    /// Waiting for its upstream tasks.
    Scheduled,
    /// Claimed by a replica; an attempt is under way.
    Running,
    Success,
    /// Out of attempts, or failed in a way a retry cannot change.
    Failed,
    /// Failed; runs again at `next_try_at`.
    UpForRetry,
    /// A sensor between pokes; pokes again at `next_try_at`.
    UpForReschedule,
    /// An upstream task failed, so this one never ran.
    UpstreamFailed,
}

impl TaskState {
    pub const ALL: [TaskState; 7] = [
        TaskState::Scheduled,
        TaskState::Running,
        TaskState::Success,
        TaskState::Failed,
        TaskState::UpForRetry,
        TaskState::UpForReschedule,
        TaskState::UpstreamFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Scheduled => "scheduled",
            TaskState::Running => "running",
            TaskState::Success => "success",
            TaskState::Failed => "failed",
            TaskState::UpForRetry => "up_for_retry",
            TaskState::UpForReschedule => "up_for_reschedule",
            TaskState::UpstreamFailed => "upstream_failed",
        }
    }

    /// Whether the task instance is done for this run.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Success | TaskState::Failed | TaskState::UpstreamFailed
        )
    }

    /// Whether a replica may claim it (once its time and upstreams allow).
    pub fn is_waiting(self) -> bool {
        matches!(
            self,
            TaskState::Scheduled | TaskState::UpForRetry | TaskState::UpForReschedule
        )
    }

    /// Whether its downstream tasks can no longer run.
    pub fn blocks_downstream(self) -> bool {
        matches!(self, TaskState::Failed | TaskState::UpstreamFailed)
    }
}

/// A DAG run's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunState {
    /// Created, waiting for a slot (`max_active_runs`).
    Queued,
    Running,
    Success,
    Failed,
}

impl RunState {
    pub const ALL: [RunState; 4] = [
        RunState::Queued,
        RunState::Running,
        RunState::Success,
        RunState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Success => "success",
            RunState::Failed => "failed",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, RunState::Success | RunState::Failed)
    }
}

/// A state name the store holds that this version does not know.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown {what} state \"{name}\" in the state store")]
pub struct UnknownState {
    what: &'static str,
    name: String,
}

macro_rules! text_form {
    ($ty:ty, $what:literal) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = UnknownState;

            fn from_str(s: &str) -> Result<Self, UnknownState> {
                <$ty>::ALL
                    .into_iter()
                    .find(|state| state.as_str() == s)
                    .ok_or_else(|| UnknownState {
                        what: $what,
                        name: s.to_string(),
                    })
            }
        }
    };
}

text_form!(TaskState, "task");
text_form!(RunState, "run");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_reads_back_from_its_name() {
        for state in TaskState::ALL {
            assert_eq!(state.as_str().parse::<TaskState>().unwrap(), state);
        }
        for state in RunState::ALL {
            assert_eq!(state.as_str().parse::<RunState>().unwrap(), state);
        }
        let err = "sucess".parse::<TaskState>().unwrap_err().to_string();
        assert_eq!(err, "unknown task state \"sucess\" in the state store");
    }
}
