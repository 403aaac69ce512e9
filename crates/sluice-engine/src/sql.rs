//! DataFusion sessions for transforms and checks: upstream datasets are
//! registered as tables named by their task ids.

use crate::error::{Error, Result};
use crate::staging::StagedDataset;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use std::sync::Arc;

/// A session whose operators spill to disk past `memory_limit` bytes.
pub fn session(memory_limit: u64) -> Result<SessionContext> {
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(memory_limit as usize)))
        .build_arc()?;
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
