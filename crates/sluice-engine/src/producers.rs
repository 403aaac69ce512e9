//! The one place the data plane starts concurrent work that feeds a
//! record batch stream. A reader that panics or fails must fail the task:
//! a detached task feeding a channel would instead close the channel, the
//! stream would look finished, and the sink would publish part of the
//! data as if it were all of it.
//!
//! [`Producers`] owns every producer in a [`JoinSet`] and turns their
//! ends into the stream's: batches flow until every producer has ended
//! well, the first error or panic (with the producer's name and the panic
//! message) ends the stream with an error, and dropping the stream aborts
//! the producers (a blocking one stops at its next send, which fails).
//!
//! `clippy.toml` forbids `tokio::spawn` and `std::thread::spawn` in the
//! library crates; this module is the allowed way round.

use crate::error::{Error, Result};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use std::collections::HashMap;
use std::future::Future;
use tokio::sync::mpsc;
use tokio::task::{Id, JoinError, JoinSet};

/// Where a producer sends its batches. A failed send means the consumer
/// is gone: the producer should stop and return `Ok`.
pub(crate) type BatchSender = mpsc::Sender<Result<RecordBatch>>;

/// Producers of one stream, before it is built.
pub(crate) struct Producers {
    schema: SchemaRef,
    tx: BatchSender,
    rx: mpsc::Receiver<Result<RecordBatch>>,
    tasks: Tasks,
}

impl Producers {
    /// `capacity` batches may wait between the producers and the consumer.
    pub(crate) fn new(schema: SchemaRef, capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        Producers {
            schema,
            tx,
            rx,
            tasks: Tasks::default(),
        }
    }

    pub(crate) fn sender(&self) -> BatchSender {
        self.tx.clone()
    }

    /// Runs `work` as a producer; `name` says which in a panic's message.
    pub(crate) fn spawn<F>(&mut self, name: impl Into<String>, work: F)
    where
        F: Future<Output = Result<()>> + Send + 'static,
    {
        self.tasks.spawn(name, work);
    }

    /// Runs `work` on a blocking thread, as a producer. Aborting cannot
    /// stop it: it must return when a send fails.
    pub(crate) fn spawn_blocking<F>(&mut self, name: impl Into<String>, work: F)
    where
        F: FnOnce() -> Result<()> + Send + 'static,
    {
        self.tasks.spawn_blocking(name, work);
    }

    /// The stream of every producer's batches. It ends when all of them
    /// have returned `Ok` and every batch sent has been taken.
    pub(crate) fn into_stream(self) -> SendableRecordBatchStream {
        let Producers {
            schema,
            tx,
            rx,
            tasks,
        } = self;
        drop(tx);
        let state = StreamState {
            rx,
            tasks,
            ended: false,
        };
        let stream = futures::stream::unfold(state, |mut s| async move {
            if s.ended {
                return None;
            }
            match s.next().await {
                Some(Ok(batch)) => Some((Ok(batch), s)),
                Some(Err(e)) => {
                    s.ended = true;
                    s.tasks.set.abort_all();
                    Some((Err(datafusion::error::DataFusionError::from(e)), s))
                }
                None => None,
            }
        });
        Box::pin(RecordBatchStreamAdapter::new(schema, stream))
    }
}

struct StreamState {
    rx: mpsc::Receiver<Result<RecordBatch>>,
    tasks: Tasks,
    ended: bool,
}

impl StreamState {
    async fn next(&mut self) -> Option<Result<RecordBatch>> {
        loop {
            tokio::select! {
                // A producer's failure is reported at once, not after the
                // batches still queued: the stream is failing anyway.
                biased;
                Some(joined) = self.tasks.set.join_next_with_id(), if !self.tasks.set.is_empty() => {
                    if let Err(e) = self.tasks.outcome(joined) {
                        return Some(Err(e));
                    }
                }
                item = self.rx.recv() => match item {
                    Some(item) => return Some(item),
                    None => {
                        // Every sender is gone; a producer may still be
                        // ending (or hold no sender): wait for all of them.
                        return self.tasks.join_all().await.err().map(Err);
                    }
                },
            }
        }
    }
}

/// A set of named tasks whose failures and panics become errors.
#[derive(Default)]
pub(crate) struct Tasks {
    set: JoinSet<Result<()>>,
    names: HashMap<Id, String>,
}

/// The tasks run inside the span of the code that spawned them, so what
/// they log is kept with the task attempt that caused it (the daemon keeps
/// each attempt's lines by its span).
impl Tasks {
    pub(crate) fn spawn<F>(&mut self, name: impl Into<String>, work: F)
    where
        F: Future<Output = Result<()>> + Send + 'static,
    {
        use tracing::Instrument;
        let handle = self.set.spawn(work.in_current_span());
        self.names.insert(handle.id(), name.into());
    }

    pub(crate) fn spawn_blocking<F>(&mut self, name: impl Into<String>, work: F)
    where
        F: FnOnce() -> Result<()> + Send + 'static,
    {
        let span = tracing::Span::current();
        let handle = self.set.spawn_blocking(move || span.in_scope(work));
        self.names.insert(handle.id(), name.into());
    }

    /// Waits for every task; the first failure, in the order they end.
    pub(crate) async fn join_all(&mut self) -> Result<()> {
        while let Some(joined) = self.set.join_next_with_id().await {
            if let Err(e) = self.outcome(joined) {
                self.set.abort_all();
                return Err(e);
            }
        }
        Ok(())
    }

    fn outcome(&mut self, joined: std::result::Result<(Id, Result<()>), JoinError>) -> Result<()> {
        match joined {
            Ok((id, result)) => {
                self.names.remove(&id);
                result
            }
            Err(e) => {
                let name = self
                    .names
                    .remove(&e.id())
                    .unwrap_or_else(|| "a producer".into());
                Err(join_error(&name, e))
            }
        }
    }
}

/// A producer that panicked or was cancelled, as an error naming it.
pub(crate) fn join_error(name: &str, e: JoinError) -> Error {
    if e.is_panic() {
        Error::Internal(format!(
            "{name} panicked: {}",
            panic_message(e.into_panic())
        ))
    } else {
        Error::Internal(format!("{name} was cancelled"))
    }
}

/// The text a panic was raised with, when it was a string.
pub fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(s) => (*s).to_string(),
            Err(_) => "(no message)".into(),
        },
    }
}

/// Test builds only: a reader whose output has a column named
/// `sluice_test_panic_after_N` panics before sending its batch N+1, as a
/// reader hitting a bug (an Arrow offset overflow, say) would. Column
/// names survive every rewrite of a query, so this reaches partitioned
/// readers too.
#[cfg(test)]
pub(crate) fn injected_panic(schema: &arrow::datatypes::Schema, sent: usize) {
    for field in schema.fields() {
        if let Some(n) = field.name().strip_prefix("sluice_test_panic_after_")
            && n.parse::<usize>() == Ok(sent)
        {
            panic!("injected panic after {sent} batches");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use futures::StreamExt;
    use std::sync::Arc;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]))
    }

    fn batch(n: i64) -> RecordBatch {
        RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from(vec![n]))]).unwrap()
    }

    /// Collects the stream: the batches' values, then the error if any.
    async fn drain(stream: SendableRecordBatchStream) -> (Vec<i64>, Option<String>) {
        let mut stream = stream;
        let mut values = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(b) => values.push(
                    b.column(0)
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .unwrap()
                        .value(0),
                ),
                Err(e) => return (values, Some(e.to_string())),
            }
        }
        (values, None)
    }

    async fn counting(tx: BatchSender, from: i64, n: i64, panic_at: Option<i64>) -> Result<()> {
        for i in from..from + n {
            if Some(i) == panic_at {
                panic!("boom at {i}");
            }
            if tx.send(Ok(batch(i))).await.is_err() {
                return Ok(());
            }
        }
        Ok(())
    }

    #[tokio::test]
    async fn every_batch_of_every_producer_arrives() {
        let mut p = Producers::new(schema(), 2);
        p.spawn("a", counting(p.sender(), 0, 50, None));
        p.spawn("b", counting(p.sender(), 100, 50, None));
        let (mut values, error) = drain(p.into_stream()).await;
        assert_eq!(error, None);
        values.sort();
        let expected: Vec<i64> = (0..50).chain(100..150).collect();
        assert_eq!(values, expected);
    }

    #[tokio::test]
    async fn a_panicking_producer_ends_the_stream_with_an_error() {
        let mut p = Producers::new(schema(), 2);
        p.spawn("reader 1", counting(p.sender(), 0, 10, Some(3)));
        let (values, error) = drain(p.into_stream()).await;
        let error = error.expect("a panic must not look like the end of the data");
        assert!(error.contains("reader 1 panicked: boom at 3"), "{error}");
        assert!(values.len() <= 3, "{values:?}");
    }

    #[tokio::test]
    async fn a_panic_after_the_last_send_is_still_an_error() {
        // The channel is drained and closed before the join says it panicked.
        let mut p = Producers::new(schema(), 16);
        let tx = p.sender();
        p.spawn("late", async move {
            tx.send(Ok(batch(1))).await.ok();
            drop(tx);
            tokio::task::yield_now().await;
            panic!("after the data");
        });
        let (_, error) = drain(p.into_stream()).await;
        assert!(
            error
                .expect("error")
                .contains("late panicked: after the data")
        );
    }

    #[tokio::test]
    async fn a_failing_producer_fails_the_stream_while_others_run() {
        let mut p = Producers::new(schema(), 2);
        p.spawn("slow", counting(p.sender(), 0, 1_000_000, None));
        p.spawn("failing", async {
            Err(Error::Internal("the reader failed".into()))
        });
        let (_, error) = drain(p.into_stream()).await;
        assert!(error.expect("error").contains("the reader failed"));
    }

    #[tokio::test]
    async fn dropping_the_stream_stops_the_producers() {
        let mut p = Producers::new(schema(), 1);
        let tx = p.sender();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        p.spawn("endless", async move {
            let _done = done_tx; // dropped when this task ends or is aborted
            loop {
                if tx.send(Ok(batch(0))).await.is_err() {
                    return Ok(());
                }
            }
        });
        let mut stream = p.into_stream();
        stream.next().await.unwrap().unwrap();
        drop(stream);
        tokio::time::timeout(std::time::Duration::from_secs(5), done_rx)
            .await
            .expect("the producer must stop when the stream is dropped")
            .unwrap_err();
    }
}
