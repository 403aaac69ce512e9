//! The DAG drawn as a graph: each task in the column of its longest path
//! from a root, so every edge points right, as in Airflow's graph view.
//! The geometry is computed here; the template draws it as SVG (and so
//! escapes the task names).

use serde::Serialize;
use sluice_core::dag::Dag;
use std::collections::HashMap;

const NODE_W: i64 = 160;
const NODE_H: i64 = 36;
const COL_GAP: i64 = 56;
const ROW_GAP: i64 = 20;
const MARGIN: i64 = 12;
/// Longer task names are cut (the full name is the node's tooltip).
const MAX_LABEL: usize = 20;

#[derive(Debug, Serialize)]
pub struct Node {
    pub task: String,
    pub label: String,
    pub kind: String,
    /// The task's state in the run shown, if any.
    pub state: Option<String>,
    pub x: i64,
    pub y: i64,
    pub w: i64,
    pub h: i64,
}

#[derive(Debug, Serialize)]
pub struct Edge {
    /// An SVG path from the upstream node's right side to the
    /// downstream node's left side.
    pub d: String,
}

#[derive(Debug, Serialize)]
pub struct Graph {
    pub width: i64,
    pub height: i64,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

/// Lays `dag` out; `kind` and `state` name each task's kind and state.
pub fn layout(
    dag: &Dag,
    kind: impl Fn(&str) -> String,
    state: impl Fn(&str) -> Option<String>,
) -> Graph {
    // `order` puts every task after its upstream tasks, so one pass
    // gives each its longest path from a root.
    let mut column: HashMap<&str, i64> = HashMap::new();
    for task in &dag.order {
        let c = dag
            .upstream
            .get(task)
            .into_iter()
            .flatten()
            .filter_map(|u| column.get(u.as_str()))
            .map(|c| c + 1)
            .max()
            .unwrap_or(0);
        column.insert(task, c);
    }
    let mut rows_in_column: HashMap<i64, i64> = HashMap::new();
    let mut at: HashMap<&str, (i64, i64)> = HashMap::new();
    let mut nodes = Vec::new();
    for task in &dag.order {
        let c = column[task.as_str()];
        let r = rows_in_column.entry(c).or_insert(0);
        let (x, y) = (
            MARGIN + c * (NODE_W + COL_GAP),
            MARGIN + *r * (NODE_H + ROW_GAP),
        );
        *r += 1;
        at.insert(task, (x, y));
        let label = if task.chars().count() > MAX_LABEL {
            let cut: String = task.chars().take(MAX_LABEL - 1).collect();
            format!("{cut}…")
        } else {
            task.clone()
        };
        nodes.push(Node {
            task: task.clone(),
            label,
            kind: kind(task),
            state: state(task),
            x,
            y,
            w: NODE_W,
            h: NODE_H,
        });
    }
    let mut edges = Vec::new();
    for task in &dag.order {
        let (x2, y2) = at[task.as_str()];
        for up in dag.upstream.get(task).into_iter().flatten() {
            let Some(&(x1, y1)) = at.get(up.as_str()) else {
                continue;
            };
            let (sx, sy, ex, ey) = (x1 + NODE_W, y1 + NODE_H / 2, x2, y2 + NODE_H / 2);
            let mid = (sx + ex) / 2;
            edges.push(Edge {
                d: format!("M{sx},{sy} C{mid},{sy} {mid},{ey} {ex},{ey}"),
            });
        }
    }
    let columns = column.values().max().map_or(0, |c| c + 1);
    let rows = rows_in_column.values().max().copied().unwrap_or(0);
    Graph {
        width: 2 * MARGIN + columns * NODE_W + (columns - 1).max(0) * COL_GAP,
        height: 2 * MARGIN + rows * NODE_H + (rows - 1).max(0) * ROW_GAP,
        nodes,
        edges,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dag(edges: &[(&str, &[&str])]) -> Dag {
        let nodes: Vec<(String, Vec<String>)> = edges
            .iter()
            .map(|(t, ups)| (t.to_string(), ups.iter().map(|u| u.to_string()).collect()))
            .collect();
        Dag::build(&nodes).unwrap()
    }

    #[test]
    fn tasks_sit_right_of_all_their_upstream_tasks() {
        // a → b → d, a → c → d, and a → d directly: d goes after b and c.
        let g = layout(
            &dag(&[
                ("a", &[]),
                ("b", &["a"]),
                ("c", &["a"]),
                ("d", &["a", "b", "c"]),
            ]),
            |_| "transform".into(),
            |_| None,
        );
        let x = |t: &str| g.nodes.iter().find(|n| n.task == t).unwrap().x;
        assert!(x("a") < x("b"));
        assert_eq!(x("b"), x("c"));
        assert!(x("c") < x("d"));
        assert_eq!(g.edges.len(), 5);
        // b and c share a column, one above the other, inside the picture.
        let y = |t: &str| g.nodes.iter().find(|n| n.task == t).unwrap().y;
        assert_ne!(y("b"), y("c"));
        assert!(
            g.nodes
                .iter()
                .all(|n| n.x + n.w <= g.width && n.y + n.h <= g.height)
        );
    }

    #[test]
    fn long_names_are_cut_for_the_label_only() {
        let name = "a_task_with_a_very_long_descriptive_name";
        let g = layout(&dag(&[(name, &[])]), |_| "extract".into(), |_| None);
        assert_eq!(g.nodes[0].task, name);
        assert_eq!(g.nodes[0].label.chars().count(), MAX_LABEL);
    }
}
