//! The boundary between the scheduler and the work: what runs a task
//! instance, and how its failure says whether a retry can help.

use super::*;
pub use sluice_engine::fence::AttemptFence;

/// Why an attempt failed, and whether another attempt could do better.
#[derive(Debug, Clone)]
pub struct TaskError {
    pub kind: ErrorKind,
    pub message: String,
    /// The upstream task whose staged output was missing, if that is why:
    /// the executor then says which replica wrote it.
    pub missing_input: Option<String>,
    /// The attempt lost its claim to another replica and published
    /// nothing (its end, written next, is dropped by the store's fence).
    pub fenced: bool,
}

impl TaskError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        TaskError {
            kind,
            message: message.into(),
            missing_input: None,
            fenced: false,
        }
    }
}

impl From<sluice_engine::Error> for TaskError {
    fn from(e: sluice_engine::Error) -> Self {
        TaskError {
            missing_input: e.missing_input().map(str::to_string),
            fenced: e.is_fenced(),
            ..TaskError::new(e.kind(), e.to_string())
        }
    }
}

/// Runs the work of task instances. The daemon uses the data plane's
/// [`Engine`]; the scheduler benchmark uses tasks that do nothing, to
/// measure the scheduler alone.
pub trait TaskRunner: Send + Sync + 'static {
    /// Runs one unit (a task, or a load with its fused producer).
    fn run(
        &self,
        job: Arc<Job>,
        ctx: Arc<RunContext>,
        units: Arc<Units>,
        unit: String,
        attempt: TaskAttempt,
        fence: AttemptFence,
    ) -> BoxFuture<'static, Result<UnitOutput, TaskError>>;

    /// One poke of a sensor.
    fn poke(
        &self,
        job: Arc<Job>,
        ctx: Arc<RunContext>,
        task: String,
    ) -> BoxFuture<'static, Result<bool, TaskError>>;

    /// Called once when a run succeeds (the engine removes its staging).
    fn run_succeeded(&self, job: Arc<Job>, ctx: Arc<RunContext>) -> BoxFuture<'static, ()>;
}

pub struct EngineRunner(pub Arc<Engine>);

impl TaskRunner for EngineRunner {
    fn run(
        &self,
        job: Arc<Job>,
        ctx: Arc<RunContext>,
        units: Arc<Units>,
        unit: String,
        attempt: TaskAttempt,
        fence: AttemptFence,
    ) -> BoxFuture<'static, Result<UnitOutput, TaskError>> {
        let engine = self.0.clone();
        Box::pin(async move {
            let out = engine
                .run_unit(&job, &ctx, &units, &unit, attempt, &*fence)
                .await?;
            // Checked at success too: a late attempt that found its output
            // already published (a SQL load's marker says another attempt
            // committed) did not succeed, it was overtaken.
            fence.check().await?;
            Ok(out)
        })
    }

    fn poke(
        &self,
        job: Arc<Job>,
        ctx: Arc<RunContext>,
        task: String,
    ) -> BoxFuture<'static, Result<bool, TaskError>> {
        let engine = self.0.clone();
        Box::pin(async move {
            let t = job
                .task(&task)
                .ok_or_else(|| TaskError::new(ErrorKind::Internal, format!("no task {task}")))?;
            Ok(engine.poke(&job, &ctx, t).await?)
        })
    }

    fn run_succeeded(&self, job: Arc<Job>, ctx: Arc<RunContext>) -> BoxFuture<'static, ()> {
        let engine = self.0.clone();
        Box::pin(async move {
            if let Err(e) = engine.remove_staging(&job.name, &ctx).await {
                tracing::warn!(dag = %job.name, run = %ctx.run_id, error = %e, "could not remove staged data");
            }
        })
    }
}
