//! DataFusion sessions for transforms and checks: upstream datasets are
//! registered as tables named by their task ids.

use crate::error::{Error, Result};
use crate::staging::StagedDataset;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use std::sync::Arc;

/// The runtime every session of a process shares: one memory pool of
/// `memory_limit` bytes, so that the limit is the process's, however many
/// transforms run at once (each spills to disk when its share is used up).
pub fn runtime(memory_limit: u64) -> Result<Arc<RuntimeEnv>> {
    Ok(RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(
            usize::try_from(memory_limit).unwrap_or(usize::MAX),
        )))
        .build_arc()?)
}

/// A session on the shared `runtime`.
pub fn session(runtime: &Arc<RuntimeEnv>) -> Result<SessionContext> {
    let runtime = runtime.clone();
    let mut config = SessionConfig::new()
        .with_information_schema(true)
        .with_target_partitions(std::thread::available_parallelism().map_or(2, |n| n.get()));
    // Staged Parquet holds plain strings; reading them as views would only
    // make the sinks convert them back.
    config
        .options_mut()
        .execution
        .parquet
        .schema_force_view_types = false;
    Ok(SessionContext::new_with_config_rt(config, runtime))
}

/// Makes `dataset` readable as table `name`.
pub async fn register(ctx: &SessionContext, name: &str, dataset: &StagedDataset) -> Result<()> {
    ctx.register_object_store(&dataset.location.store_url, dataset.location.store.clone());
    ctx.register_parquet(name, dataset.url(), ParquetReadOptions::default())
        .await
        .map_err(|e| Error::sql(format!("registering upstream table {name}"), e))
}
