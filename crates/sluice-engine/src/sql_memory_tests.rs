//! `memory_limit` is the process's: every transform's session draws on the
//! one pool of [`sql::runtime`]. Two transforms sort at once, each more
//! than the limit: both finish, both spill, the pool never grants more
//! than the limit in total, and the process's resident memory grows by
//! little more than the limit at its peak. Were a session to build its
//! own pool, its sorts would not appear in the shared one and the test
//! fails; were the pool to let the sorts take all it has, the final merge
//! of one query (which cannot spill) would find nothing left and fail.

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
    /// What each consumer holds now: (name, can spill, bytes), by id.
    holders: std::collections::HashMap<usize, (String, bool, usize)>,
}

impl Ledger {
    fn book(&mut self, r: &MemoryReservation, delta: isize) {
        let c = r.consumer();
        let e = self
            .holders
            .entry(c.id())
            .or_insert_with(|| (c.name().to_string(), c.can_spill(), 0));
        e.2 = e.2.saturating_add_signed(delta);
    }

    /// The consumers holding memory, largest first.
    fn holding(&self) -> String {
        let mut h: Vec<_> = self.holders.values().filter(|h| h.2 > 0).collect();
        h.sort_by_key(|h| std::cmp::Reverse(h.2));
        h.iter()
            .map(|(n, spill, b)| format!("{n}{}: {b}", if *spill { " (spills)" } else { "" }))
            .collect::<Vec<_>>()
            .join("; ")
    }
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
        ledger.book(reservation, additional as isize);
        ledger.reserved += additional;
        ledger.peak = ledger.peak.max(ledger.reserved);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        let mut ledger = self.ledger();
        self.inner.shrink(reservation, shrink);
        ledger.book(reservation, -(shrink as isize));
        ledger.reserved -= shrink;
    }

    fn try_grow(
        &self,
        reservation: &MemoryReservation,
        additional: usize,
    ) -> datafusion::error::Result<()> {
        let mut ledger = self.ledger();
        if let Err(e) = self.inner.try_grow(reservation, additional) {
            return Err(datafusion::error::DataFusionError::ResourcesExhausted(
                format!("{e}; holding: {}", ledger.holding()),
            ));
        }
        ledger.book(reservation, additional as isize);
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

/// The process's peak resident memory (VmHWM) since the last
/// [`reset_peak_rss`], in bytes.
fn peak_rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status");
    kb * 1024
}

/// The resident memory now (VmRSS), in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

/// Starts counting the peak resident memory afresh (Linux: writing 5 to
/// clear_refs resets VmHWM to the current RSS).
fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
}

async fn rows(stream: SendableRecordBatchStream) -> datafusion::error::Result<usize> {
    stream
        .try_fold(0, |n, b| async move { Ok(n + b.num_rows()) })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// What made this fail before (ResourcesExhausted in the final
// SortPreservingMergeExec, about half the runs): each sort's merge of its
// spill files booked room for all of them at once, and a sort still
// reading took every byte the merges left, so the other query's final
// merge, which cannot spill, found nothing. `sql::runtime` bounds the
// merge fan-in and its pool keeps a quarter of the limit from spilling
// operators (memory_pool.rs); with either alone it still failed.
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

    let before = rss();
    reset_peak_rss();
    let (rows_a, rows_b) = tokio::try_join!(rows(stream_a), rows(stream_b)).unwrap();
    let peak = peak_rss().saturating_sub(before);
    assert_eq!((rows_a, rows_b), (ROWS, ROWS));
    assert!(sort_spills(&plan_a) > 0, "the first sort did not spill");
    assert!(sort_spills(&plan_b) > 0, "the second sort did not spill");

    // Unbounded, the two sorts would hold their 2 x 77 MB of text at once.
    assert!(
        peak <= LIMIT + LIMIT / 2,
        "the process grew by {} MiB at its peak while sorting under a {} MiB limit",
        peak >> 20,
        LIMIT >> 20
    );

    let ledger = recorder.ledger();
    assert!(
        ledger.peak <= LIMIT,
        "the pool granted {} bytes at once, past the {LIMIT}-byte limit",
        ledger.peak
    );
    assert_eq!(ledger.reserved, 0, "reservations outlived the queries");
}
