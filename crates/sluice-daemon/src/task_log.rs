//! Every line a task attempt emits, kept with the attempt. The executor
//! runs each attempt inside a `sluice_task` span (dag, run_id, task,
//! attempt); [`layer`], added to the process's subscriber, copies each
//! event under such a span into that attempt's buffer, wherever in the
//! engine it was logged (producers run in their spawner's span). When the
//! attempt ends, the executor writes the buffer to the state store with
//! the outcome, where the API and the UI read it.
//!
//! A buffer is bounded ([`MAX_LINES`], [`MAX_BYTES`]): a chatty task
//! loses its oldest lines, and the log says how many.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Lines kept per attempt.
pub const MAX_LINES: usize = 2000;
/// Bytes of messages kept per attempt.
pub const MAX_BYTES: usize = 512 * 1024;
/// One line longer than this is cut.
const MAX_LINE: usize = 8 * 1024;
/// The span's name, and its field that names the buffer.
const SPAN: &str = "sluice_task";
const FIELD: &str = "capture";

/// One captured line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Unix microseconds.
    pub at: i64,
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub level: &'static str,
    pub message: String,
}

#[derive(Debug, Default)]
struct Buffer {
    lines: VecDeque<Line>,
    bytes: usize,
    trimmed: u64,
}

impl Buffer {
    fn push(&mut self, line: Line) {
        self.bytes += line.message.len();
        self.lines.push_back(line);
        while self.lines.len() > MAX_LINES || self.bytes > MAX_BYTES {
            let Some(old) = self.lines.pop_front() else {
                break;
            };
            self.bytes -= old.message.len();
            self.trimmed += 1;
        }
    }
}

#[derive(Debug, Default)]
struct Buffers {
    open: Mutex<HashMap<u64, Buffer>>,
    next: AtomicU64,
}

static BUFFERS: LazyLock<Buffers> = LazyLock::new(Buffers::default);

/// An attempt's buffer, open from [`Recording::start`] to
/// [`Recording::take`] or drop.
#[derive(Debug)]
pub struct Recording {
    id: u64,
}

impl Recording {
    pub fn start() -> Recording {
        let id = BUFFERS.next.fetch_add(1, Ordering::Relaxed) + 1;
        BUFFERS
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Buffer::default());
        Recording { id }
    }

    /// The span to run the attempt in.
    pub fn span(&self, dag: &str, run_id: &str, task: &str, attempt: i64) -> tracing::Span {
        tracing::info_span!(
            "sluice_task",
            dag = %dag,
            run_id = %run_id,
            task = %task,
            attempt,
            capture = self.id
        )
    }

    /// The lines captured, oldest first, with a first line that says how
    /// many older ones were trimmed, if any.
    pub fn take(&self) -> Vec<Line> {
        let buffer = BUFFERS
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id)
            .unwrap_or_default();
        let mut out = Vec::with_capacity(buffer.lines.len() + 1);
        if buffer.trimmed > 0 {
            out.push(Line {
                at: buffer.lines.front().map_or(0, |l| l.at),
                level: "warn",
                message: format!(
                    "{} earlier lines of this attempt were trimmed (an attempt keeps its last {MAX_LINES} lines, {} KiB)",
                    buffer.trimmed,
                    MAX_BYTES / 1024
                ),
            });
        }
        out.extend(buffer.lines);
        out
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if let Ok(mut open) = BUFFERS.open.lock() {
            open.remove(&self.id);
        }
    }
}

/// The layer that fills the buffers; add it to the process's subscriber.
pub fn layer() -> CaptureLayer {
    CaptureLayer
}

#[derive(Debug, Clone, Copy)]
pub struct CaptureLayer;

/// Marks a `sluice_task` span with its buffer.
struct Capture(u64);

struct CaptureField(Option<u64>);

impl Visit for CaptureField {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == FIELD {
            self.0 = Some(value);
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == FIELD {
            self.0 = u64::try_from(value).ok();
        }
    }
    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

/// An event as one line: its message, then its other fields as
/// `key=value`.
#[derive(Default)]
struct Message {
    message: String,
    fields: String,
}

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

impl<S> tracing_subscriber::Layer<S> for CaptureLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != SPAN {
            return;
        }
        let mut field = CaptureField(None);
        attrs.record(&mut field);
        if let (Some(capture), Some(span)) = (field.0, ctx.span(id)) {
            span.extensions_mut().insert(Capture(capture));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        let Some(capture) = scope
            .into_iter()
            .find_map(|span| span.extensions().get::<Capture>().map(|c| c.0))
        else {
            return;
        };
        let mut m = Message::default();
        event.record(&mut m);
        let mut message = m.message;
        message.push_str(&m.fields);
        if message.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" […]");
        }
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warn",
            tracing::Level::INFO => "info",
            tracing::Level::DEBUG => "debug",
            tracing::Level::TRACE => "trace",
        };
        let line = Line {
            at: crate::clock::micros(chrono::Utc::now()),
            level,
            message,
        };
        if let Some(buffer) = BUFFERS
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&capture)
        {
            buffer.push(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn events_in_an_attempts_span_are_kept_with_it_and_bounded() {
        let subscriber = tracing_subscriber::registry().with(layer());
        tracing::subscriber::with_default(subscriber, || {
            let a = Recording::start();
            let b = Recording::start();
            tracing::info!("outside any attempt");
            a.span("d", "r", "t", 1).in_scope(|| {
                tracing::info!(rows = 5, "published");
                // Nested spans keep the attempt.
                tracing::info_span!("inner").in_scope(|| tracing::warn!("careful"));
            });
            b.span("d", "r", "u", 1).in_scope(|| {
                for i in 0..MAX_LINES + 10 {
                    tracing::info!(i, "chatty");
                }
            });
            let lines = a.take();
            let text: Vec<_> = lines
                .iter()
                .map(|l| (l.level, l.message.as_str()))
                .collect();
            assert_eq!(text, [("info", "published rows=5"), ("warn", "careful")]);
            let lines = b.take();
            assert_eq!(lines.len(), MAX_LINES + 1);
            assert!(
                lines[0].message.starts_with("10 earlier lines"),
                "{}",
                lines[0].message
            );
            assert_eq!(lines[1].message, "chatty i=10");
        });
    }

    #[test]
    fn a_huge_line_is_cut_and_bytes_are_bounded() {
        let subscriber = tracing_subscriber::registry().with(layer());
        tracing::subscriber::with_default(subscriber, || {
            let a = Recording::start();
            let big = "x".repeat(3 * MAX_LINE);
            a.span("d", "r", "t", 1).in_scope(|| {
                for _ in 0..200 {
                    tracing::info!("{big}");
                }
            });
            let lines = a.take();
            let bytes: usize = lines.iter().map(|l| l.message.len()).sum();
            assert!(bytes <= MAX_BYTES + 1024, "{bytes}");
            assert!(lines[1].message.len() <= MAX_LINE + 8);
            assert!(lines[0].message.contains("trimmed"));
        });
    }
}
