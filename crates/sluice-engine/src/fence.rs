//! The check an attempt makes just before its output becomes visible.
//!
//! With several replicas on one state store, a replica that froze (a long
//! GC-like pause, SIGSTOP, a partitioned node) past the heartbeat timeout
//! has its claims re-run elsewhere. When it wakes up it must not publish
//! what it was writing: the new attempt publishes instead. The daemon
//! hands the engine a [`Fence`] that asks the state store whether the
//! attempt still holds its claim; a Parquet publish and a staged dataset
//! ask it just before their commit, a SQL load just before its
//! transaction commits (where the target's marker row is the stronger
//! fence, see `db::load`). A check and the step after it are not atomic:
//! the fence narrows the window to one store round trip, and the publish
//! protocol makes a late publish in that window replace the output
//! rather than add to it.

use crate::error::Result;
use futures::future::BoxFuture;
use std::sync::Arc;

/// Whether the attempt still holds its claim.
pub trait Fence: Send + Sync {
    /// `Ok` while it does; [`crate::Error::Fenced`] once it does not (or
    /// when that cannot be told).
    fn check(&self) -> BoxFuture<'_, Result<()>>;
}

/// The fence of a process that is the only one running tasks (a SQLite
/// state store, which one replica holds): nobody else can take a claim.
pub struct Sole;

impl Fence for Sole {
    fn check(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

/// A shared fence for one attempt.
pub type AttemptFence = Arc<dyn Fence>;
