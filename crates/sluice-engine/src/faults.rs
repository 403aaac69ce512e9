//! Fault injection for the crash tests. Compiled in only with the
//! `fault-injection` feature, which the `sluice` package's tests turn on
//! and no release build does: `SLUICE_FAULT_PAUSE=<point>:<task>` stops
//! that task forever at that point, so that a test can kill the process
//! exactly there (for example between a load's commit and the state
//! store's record of it).

/// Never returns when `SLUICE_FAULT_PAUSE` names this point and task.
#[cfg(feature = "fault-injection")]
pub async fn pause_at(point: &str, task: &str) {
    let Ok(wanted) = std::env::var("SLUICE_FAULT_PAUSE") else {
        return;
    };
    if wanted == format!("{point}:{task}") {
        tracing::warn!(
            point,
            task,
            "fault injection: paused until the process is killed"
        );
        std::future::pending::<()>().await;
    }
}

#[cfg(not(feature = "fault-injection"))]
pub async fn pause_at(_point: &str, _task: &str) {}
