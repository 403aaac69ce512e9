//! What `/readyz` reports: flags the daemon's loop sets as it goes.

use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Default)]
pub struct Health {
    /// The jobs folder has been read once.
    jobs_loaded: AtomicBool,
    /// The state store failed on the loop's last try.
    store_failing: AtomicBool,
    /// A shutdown has begun.
    draining: AtomicBool,
}

impl Health {
    pub fn new() -> Health {
        Health::default()
    }

    pub fn jobs_loaded(&self) {
        self.jobs_loaded.store(true, Ordering::Relaxed);
    }

    pub fn store_reachable(&self, ok: bool) {
        self.store_failing.store(!ok, Ordering::Relaxed);
    }

    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Why the daemon is not ready, or `None` when it is.
    pub fn not_ready(&self) -> Option<&'static str> {
        if self.draining.load(Ordering::Relaxed) {
            Some("shutting down")
        } else if self.store_failing.load(Ordering::Relaxed) {
            Some("the state store is failing")
        } else if !self.jobs_loaded.load(Ordering::Relaxed) {
            Some("the jobs folder has not been read yet")
        } else {
            None
        }
    }
}
