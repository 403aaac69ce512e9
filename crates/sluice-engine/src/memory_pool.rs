//! The memory pool behind `memory_limit`, shared by every query of the
//! process.
//!
//! DataFusion's `FairSpillPool` splits what the operators that cannot
//! spill leave over evenly among those that can (sorts, aggregations).
//! When one query is still reading while another has reached its final
//! merge, the reader's sort may take all of it, and the other query's
//! merge, which cannot spill, fails for want of a megabyte. This pool
//! does the same split but keeps a share of the limit (`HEADROOM`) out of
//! reach of spilling operators: they spill sooner, and what cannot spill
//! always has room to grow into. Nothing is ever granted past the limit.

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};
use std::sync::Mutex;

/// The fraction of the limit (1/`HEADROOM`) that spilling operators
/// leave to those that cannot spill.
const HEADROOM: usize = 4;

#[derive(Debug, Default)]
struct State {
    /// Consumers that can spill, registered now.
    spillers: usize,
    spillable: usize,
    unspillable: usize,
}

/// See the module's doc.
#[derive(Debug)]
pub struct SharedPool {
    limit: usize,
    state: Mutex<State>,
}

impl SharedPool {
    pub fn new(limit: usize) -> SharedPool {
        SharedPool {
            limit,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn refuse(
        &self,
        r: &MemoryReservation,
        additional: usize,
        available: usize,
    ) -> DataFusionError {
        DataFusionError::ResourcesExhausted(format!(
            "{} asked for {additional} more bytes (it holds {}); {available} are available to it \
             under memory_limit = {} bytes",
            r.consumer().name(),
            r.size(),
            self.limit
        ))
    }
}

impl std::fmt::Display for SharedPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sluice(limit: {} bytes)", self.limit)
    }
}

impl MemoryPool for SharedPool {
    fn name(&self) -> &str {
        "sluice"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        if consumer.can_spill() {
            self.state().spillers += 1;
        }
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        if consumer.can_spill() {
            let mut s = self.state();
            s.spillers = s.spillers.saturating_sub(1);
        }
    }

    fn grow(&self, r: &MemoryReservation, additional: usize) {
        let mut s = self.state();
        if r.consumer().can_spill() {
            s.spillable += additional;
        } else {
            s.unspillable += additional;
        }
    }

    fn shrink(&self, r: &MemoryReservation, shrink: usize) {
        let mut s = self.state();
        if r.consumer().can_spill() {
            s.spillable = s.spillable.saturating_sub(shrink);
        } else {
            s.unspillable = s.unspillable.saturating_sub(shrink);
        }
    }

    fn try_grow(&self, r: &MemoryReservation, additional: usize) -> Result<()> {
        let mut s = self.state();
        let free = self.limit.saturating_sub(s.spillable + s.unspillable);
        if r.consumer().can_spill() {
            // Each spiller's even share of what the others leave, less
            // the headroom; never more than is free.
            let share = (self.limit - self.limit / HEADROOM).saturating_sub(s.unspillable)
                / s.spillers.max(1);
            if r.size() + additional > share || additional > free {
                return Err(self.refuse(r, additional, share.saturating_sub(r.size()).min(free)));
            }
            s.spillable += additional;
        } else {
            if additional > free {
                return Err(self.refuse(r, additional, free));
            }
            s.unspillable += additional;
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        let s = self.state();
        s.spillable + s.unspillable
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn spillers_leave_headroom_and_nothing_passes_the_limit() {
        let pool: Arc<dyn MemoryPool> = Arc::new(SharedPool::new(1000));
        let sort = MemoryConsumer::new("sort")
            .with_can_spill(true)
            .register(&pool);
        let merge = MemoryConsumer::new("merge").register(&pool);
        // One spiller alone gets the limit less the headroom.
        assert!(sort.try_grow(750).is_ok());
        assert!(sort.try_grow(1).is_err(), "past the spillers' share");
        // What cannot spill still has the headroom.
        assert!(merge.try_grow(250).is_ok());
        assert!(merge.try_grow(1).is_err(), "past the limit");
        assert_eq!(pool.reserved(), 1000);
        // A second spiller halves the share; what the first holds over it
        // stays until it spills.
        sort.shrink(750);
        merge.shrink(250);
        let other = MemoryConsumer::new("sort 2")
            .with_can_spill(true)
            .register(&pool);
        assert!(sort.try_grow(376).is_err());
        assert!(sort.try_grow(375).is_ok());
        assert!(other.try_grow(375).is_ok());
        // Unspillable use shrinks the spillers' shares.
        sort.shrink(375);
        assert!(merge.try_grow(500).is_ok());
        assert!(sort.try_grow(200).is_err(), "(750 - 500) / 2 = 125");
        assert!(sort.try_grow(125).is_ok());
        assert_eq!(pool.reserved(), 1000);
        assert!(sort.try_grow(1).is_err());
        // A spiller that ends gives its share to the others.
        drop(other);
        assert!(sort.try_grow(125).is_ok(), "(750 - 500) / 1 = 250");
        assert!(sort.try_grow(1).is_err());
        assert_eq!(pool.reserved(), 750);
    }
}
