//! DataFusion sessions for transforms and checks: upstream datasets are
//! registered as tables named by their task ids.

use crate::error::{Error, Result};
use crate::memory_pool::SharedPool;
use crate::staging::StagedDataset;
use datafusion::execution::disk_manager::DiskManagerBuilder;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use std::sync::Arc;

/// Spill files a sort merges at once. Unbounded, a sort's merge books
/// room for every spill file it has, as much as the pool grants: under a
/// pool shared by concurrent queries that leaves the operators above it,
/// which cannot spill, nothing to grow into. Bounded, a merge of many
/// spill files takes more passes over disk and leaves room.
const SPILL_MERGE_FAN_IN: usize = 8;

/// The runtime every session of a process shares: one memory pool of
/// `memory_limit` bytes, so that the limit is the process's, however many
/// transforms run at once (each spills to disk when its share is used up;
/// see [`SharedPool`]).
pub fn runtime(memory_limit: u64) -> Result<Arc<RuntimeEnv>> {
    Ok(RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(SharedPool::new(
            usize::try_from(memory_limit).unwrap_or(usize::MAX),
        )))
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_max_spill_merge_fan_in(SPILL_MERGE_FAN_IN),
        )
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
