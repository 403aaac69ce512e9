//! The tables `sluice run` and `sluice runs` print.

use sluice_engine::runner::RunReport;
use std::fmt::Write;

/// Aligns `rows` under `header`; columns from `right_from` on are numbers,
/// aligned right.
pub fn table(header: &[&str], rows: &[Vec<String>], right_from: usize) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: &[String], out: &mut String| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i >= right_from {
                    format!("{c:>w$}", w = widths[i])
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        let _ = writeln!(out, "{}", parts.join("  ").trim_end());
    };
    line(
        &header.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
        &mut out,
    );
    for r in rows {
        line(r, &mut out);
    }
    out
}

pub fn render(report: &RunReport) -> String {
    let header = [
        "task", "kind", "state", "rows in", "rows out", "bad", "duration", "tries",
    ];
    let rows: Vec<Vec<String>> = report
        .tasks
        .iter()
        .map(|t| {
            vec![
                t.task.clone(),
                t.kind.to_string(),
                t.state.to_string(),
                t.rows_in.to_string(),
                t.rows_out.to_string(),
                t.bad_records.to_string(),
                format!("{:.2}s", t.duration.as_secs_f64()),
                t.attempts.to_string(),
            ]
        })
        .collect();
    let mut out = table(&header, &rows, 3);
    for t in &report.tasks {
        if let Some(e) = &t.error {
            let _ = writeln!(out, "\n{} failed: {e}", t.task);
        }
    }
    let _ = writeln!(
        out,
        "\n{} {} {}",
        report.job,
        report.run_id,
        if report.success() {
            "succeeded"
        } else {
            "failed"
        }
    );
    out
}
