//! The table `sluice run` prints.

use sluice_engine::runner::RunReport;
use std::fmt::Write;

pub fn render(report: &RunReport) -> String {
    let header = [
        "task", "kind", "state", "rows in", "rows out", "bad", "duration",
    ];
    let rows: Vec<[String; 7]> = report
        .tasks
        .iter()
        .map(|t| {
            [
                t.task.clone(),
                t.kind.to_string(),
                t.state.to_string(),
                t.rows_in.to_string(),
                t.rows_out.to_string(),
                t.bad_records.to_string(),
                format!("{:.2}s", t.duration.as_secs_f64()),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &rows {
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
                if i >= 3 {
                    format!("{c:>w$}", w = widths[i])
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        let _ = writeln!(out, "{}", parts.join("  ").trim_end());
    };
    line(&header.map(String::from), &mut out);
    for r in &rows {
        line(r, &mut out);
    }
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
