//! `memory_limit` is the process's: every transform's session draws on the
//! one pool of [`sql::runtime`]. Two transforms sort at once, each more
//! than the limit: both finish, both spill, and the pool never grants more
//! than the limit in total. Were a session to build its own pool, its
//! sorts would not appear in the shared one and the test fails.

use crate::sql;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

const LIMIT: usize = 64 << 20;
/// Rows per transform, each with a 128-byte string: about 77 MB of text
/// to sort, more than `LIMIT`.
const ROWS: usize = 600_000;
const _: () = assert!(ROWS * 128 > LIMIT);

/// What the pool has granted, booked under one lock so the peak is exact.
#[derive(Debug, Default)]
struct Ledger {
    reserved: usize,
    peak: usize,
    /// The sort consumers registered now.
    sorters: HashSet<usize>,
}

/// The runtime's pool, seen through a ledger.
#[derive(Debug)]
struct Recorder {
    inner: Arc<dyn MemoryPool>,
    ledger: Mutex<Ledger>,
}

impl Recorder {
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Display for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.inner, f)
    }
}

impl MemoryPool for Recorder {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn register(&self, consumer: &MemoryConsumer) {
        let mut ledger = self.ledger();
        self.inner.register(consumer);
        if consumer.name().starts_with("ExternalSorter[") {
            ledger.sorters.insert(consumer.id());
        }
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        let mut ledger = self.ledger();
        self.inner.unregister(consumer);
        ledger.sorters.remove(&consumer.id());
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        let mut ledger = self.ledger();
        self.inner.grow(reservation, additional);
        ledger.reserved += additional;
        ledger.peak = ledger.peak.max(ledger.reserved);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        let mut ledger = self.ledger();
        self.inner.shrink(reservation, shrink);
        ledger.reserved -= shrink;
    }

    fn try_grow(
        &self,
        reservation: &MemoryReservation,
        additional: usize,
    ) -> datafusion::error::Result<()> {
        let mut ledger = self.ledger();
        self.inner.try_grow(reservation, additional)?;
        ledger.reserved += additional;
        ledger.peak = ledger.peak.max(ledger.reserved);
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.inner.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.inner.memory_limit()
    }
}

/// A transform's session on `runtime` and its planned sort: two sort
/// partitions whatever the machine's cores, small batches, and 2 MiB kept
/// back per sort for its merge.
async fn sorting_transform(runtime: &Arc<RuntimeEnv>) -> (SessionContext, Arc<dyn ExecutionPlan>) {
    let ctx = sql::session(runtime).unwrap();
    for set in [
        "SET datafusion.execution.target_partitions = 2",
        "SET datafusion.execution.batch_size = 512",
        "SET datafusion.execution.sort_spill_reservation_bytes = 2097152",
    ] {
        ctx.sql(set).await.unwrap().collect().await.unwrap();
    }
    let plan = ctx
        .sql(&format!(
            "SELECT value, repeat(md5(CAST(value AS VARCHAR)), 4) AS s \
             FROM generate_series(1, {ROWS}) ORDER BY s"
        ))
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    (ctx, plan)
}

/// Spill files written by the plan's sorts (repartitions may spill too;
/// they are not counted).
fn sort_spills(plan: &Arc<dyn ExecutionPlan>) -> usize {
    let own = if plan.name() == "SortExec" {
        plan.metrics().and_then(|m| m.spill_count()).unwrap_or(0)
    } else {
        0
    };
    own + plan.children().into_iter().map(sort_spills).sum::<usize>()
}

async fn rows(stream: SendableRecordBatchStream) -> datafusion::error::Result<usize> {
    stream
        .try_fold(0, |n, b| async move { Ok(n + b.num_rows()) })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// Known bug, kept in view: the final SortPreservingMergeExec asks for memory
// it cannot spill, and by then the two sorts' merges hold most of the pool
// as memory that cannot spill either (56-60 MiB of the 64 MiB, measured
// with a pool that kept half the limit away from spilling operators, so
// reserving headroom does not fix it). The merges' batches are slices of
// larger sorted runs and are booked at the size of the whole run.
#[ignore = "known bug: the sorts' merges book memory they cannot spill at the size of \
            whole sorted runs and exhaust the pool (ResourcesExhausted); un-ignore with its fix"]
async fn concurrent_sorts_share_one_pool_and_spill() {
    let shared = sql::runtime(LIMIT as u64).unwrap();
    assert!(
        matches!(shared.memory_pool.memory_limit(), MemoryLimit::Finite(n) if n == LIMIT),
        "the pool's limit is memory_limit"
    );
    let recorder = Arc::new(Recorder {
        inner: Arc::clone(&shared.memory_pool),
        ledger: Mutex::default(),
    });
    // The same pool and disk manager, through the recorder.
    let runtime = RuntimeEnvBuilder::from_runtime_env(&shared)
        .with_memory_pool(Arc::clone(&recorder) as Arc<dyn MemoryPool>)
        .build_arc()
        .unwrap();

    let (ctx_a, plan_a) = sorting_transform(&runtime).await;
    let (ctx_b, plan_b) = sorting_transform(&runtime).await;
    // `execute` registers each sort partition with the session's pool.
    let stream_a = execute_stream(Arc::clone(&plan_a), ctx_a.task_ctx()).unwrap();
    let sorters_a = recorder.ledger().sorters.clone();
    let stream_b = execute_stream(Arc::clone(&plan_b), ctx_b.task_ctx()).unwrap();
    let sorters_b: HashSet<usize> = recorder
        .ledger()
        .sorters
        .difference(&sorters_a)
        .copied()
        .collect();
    assert!(
        !sorters_a.is_empty(),
        "the first sort is not in the shared pool"
    );
    assert!(
        !sorters_b.is_empty(),
        "the second sort is not in the shared pool"
    );

    let (rows_a, rows_b) = tokio::try_join!(rows(stream_a), rows(stream_b)).unwrap();
    assert_eq!((rows_a, rows_b), (ROWS, ROWS));
    assert!(sort_spills(&plan_a) > 0, "the first sort did not spill");
    assert!(sort_spills(&plan_b) > 0, "the second sort did not spill");

    let ledger = recorder.ledger();
    assert!(
        ledger.peak <= LIMIT,
        "the pool granted {} bytes at once, past the {LIMIT}-byte limit",
        ledger.peak
    );
    assert_eq!(ledger.reserved, 0, "reservations outlived the queries");
}
