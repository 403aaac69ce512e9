//! Stream jobs in the state store: each stream's checkpoint, and which
//! replica owns it. A replica owns a stream while its lease lasts and
//! renews it while the stream runs; a checkpoint is committed only by the
//! owner, in the statement that checks the ownership, so a replica that
//! lost its lease (frozen past it, say) cannot commit over the new owner.

use super::StateStore;
use super::runs::AnyQuery;
use crate::error::Result;
use sqlx::Row;

/// A stream as the store knows it, for `sluice streams` and the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRow {
    pub job: String,
    pub checkpoint: Option<String>,
    pub committed_at: Option<i64>,
    pub owner: Option<String>,
    pub lease_until: i64,
}

impl StateStore {
    /// Takes or renews the lease on stream `job` for `owner` until
    /// `until`: granted when nobody holds it, when `owner` does, or when
    /// the holder's lease ran out before `now`. Whether it was granted.
    pub async fn lease_stream(&self, job: &str, owner: &str, now: i64, until: i64) -> Result<bool> {
        let q: AnyQuery<'_> = sqlx::query(
            "INSERT INTO streams (job, owner, lease_until) VALUES ($1, $2, $3)
             ON CONFLICT (job) DO UPDATE SET owner = excluded.owner,
                 lease_until = excluded.lease_until
             WHERE streams.owner IS NULL OR streams.owner = excluded.owner
                 OR streams.lease_until < $4",
        )
        .bind(job.to_string())
        .bind(owner.to_string())
        .bind(until)
        .bind(now);
        Ok(self.exec(q).await? == 1)
    }

    /// Gives the lease up (a clean stop), so another replica takes the
    /// stream at once.
    pub async fn release_stream(&self, job: &str, owner: &str) -> Result<()> {
        let q: AnyQuery<'_> =
            sqlx::query("UPDATE streams SET lease_until = 0 WHERE job = $1 AND owner = $2")
                .bind(job.to_string())
                .bind(owner.to_string());
        self.exec(q).await?;
        Ok(())
    }

    /// The last checkpoint committed for `job`.
    pub async fn stream_checkpoint(&self, job: &str) -> Result<Option<String>> {
        let q: AnyQuery<'_> =
            sqlx::query("SELECT checkpoint FROM streams WHERE job = $1").bind(job.to_string());
        let rows = self.fetch(q, |r| r.try_get::<Option<String>, _>(0)).await?;
        Ok(rows.into_iter().next().flatten())
    }

    /// Replaces the checkpoint of `job` if `owner` still holds its lease at
    /// `now`. Whether it did.
    pub async fn commit_stream(
        &self,
        job: &str,
        owner: &str,
        checkpoint: &str,
        now: i64,
    ) -> Result<bool> {
        let q: AnyQuery<'_> = sqlx::query(
            "UPDATE streams SET checkpoint = $1, committed_at = $2
             WHERE job = $3 AND owner = $4 AND lease_until >= $2",
        )
        .bind(checkpoint.to_string())
        .bind(now)
        .bind(job.to_string())
        .bind(owner.to_string());
        Ok(self.exec(q).await? == 1)
    }

    /// Every stream the store knows, by job name.
    pub async fn streams(&self) -> Result<Vec<StreamRow>> {
        let q: AnyQuery<'_> = sqlx::query(
            "SELECT job, checkpoint, committed_at, owner, lease_until FROM streams ORDER BY job",
        );
        self.fetch(q, |r| {
            Ok(StreamRow {
                job: r.try_get(0)?,
                checkpoint: r.try_get(1)?,
                committed_at: r.try_get(2)?,
                owner: r.try_get(3)?,
                lease_until: r.try_get(4)?,
            })
        })
        .await
    }
}
