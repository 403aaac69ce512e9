//! The DAG of a job: tasks and the edges between them, checked acyclic and
//! put in a stable topological order (file order among independent tasks).

use indexmap::IndexMap;

/// A validated, acyclic task graph.
#[derive(Debug, Clone, Default)]
pub struct Dag {
    /// Task ids in an order where every task comes after its upstreams.
    pub order: Vec<String>,
    pub upstream: IndexMap<String, Vec<String>>,
    pub downstream: IndexMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DagError {
    #[error("task \"{task}\" depends on unknown task \"{upstream}\"")]
    UnknownUpstream { task: String, upstream: String },
    /// The cycle, starting and ending with the same task.
    #[error("cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
}

impl Dag {
    /// Builds the graph from `(task, upstreams)` pairs in file order.
    pub fn build(nodes: &[(String, Vec<String>)]) -> Result<Dag, DagError> {
        let mut upstream: IndexMap<String, Vec<String>> = IndexMap::new();
        let mut downstream: IndexMap<String, Vec<String>> = IndexMap::new();
        for (task, _) in nodes {
            upstream.insert(task.clone(), Vec::new());
            downstream.insert(task.clone(), Vec::new());
        }
        for (task, ups) in nodes {
            for up in ups {
                if !upstream.contains_key(up) {
                    return Err(DagError::UnknownUpstream {
                        task: task.clone(),
                        upstream: up.clone(),
                    });
                }
                if !upstream[task].contains(up) {
                    upstream[task].push(up.clone());
                    downstream[up].push(task.clone());
                }
            }
        }
        // Depth-first search; a grey node met again closes a cycle.
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            White,
            Grey,
            Black,
        }
        let index = |id: &str| upstream.get_index_of(id).expect("known task");
        let mut marks = vec![Mark::White; upstream.len()];
        let mut order = Vec::with_capacity(upstream.len());
        for start in 0..upstream.len() {
            if marks[start] != Mark::White {
                continue;
            }
            // Stack of (node, next upstream to visit).
            let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
            marks[start] = Mark::Grey;
            while let Some((node, next)) = stack.last_mut() {
                let ups = &upstream[*node];
                if *next < ups.len() {
                    let up = index(&ups[*next]);
                    *next += 1;
                    match marks[up] {
                        Mark::White => {
                            marks[up] = Mark::Grey;
                            stack.push((up, 0));
                        }
                        Mark::Grey => {
                            // The cycle runs from `up` through the stack back to `up`,
                            // reported in the direction data flows.
                            let pos = stack
                                .iter()
                                .position(|(n, _)| *n == up)
                                .expect("grey is on the stack");
                            let mut cycle: Vec<String> = stack[pos..]
                                .iter()
                                .map(|(n, _)| upstream.get_index(*n).expect("index").0.clone())
                                .collect();
                            cycle.reverse();
                            // Start at the task written first, so the message is stable.
                            let first = (0..cycle.len())
                                .min_by_key(|i| index(&cycle[*i]))
                                .expect("non-empty cycle");
                            cycle.rotate_left(first);
                            cycle.push(cycle[0].clone());
                            return Err(DagError::Cycle(cycle));
                        }
                        Mark::Black => {}
                    }
                } else {
                    let node = *node;
                    marks[node] = Mark::Black;
                    order.push(upstream.get_index(node).expect("index").0.clone());
                    stack.pop();
                }
            }
        }
        Ok(Dag {
            order,
            upstream,
            downstream,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(edges: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        edges
            .iter()
            .map(|(t, ups)| (t.to_string(), ups.iter().map(|u| u.to_string()).collect()))
            .collect()
    }

    #[test]
    fn topological_order() {
        let dag = Dag::build(&nodes(&[
            ("load", &["daily"]),
            ("daily", &["hits", "users"]),
            ("hits", &[]),
            ("users", &[]),
        ]))
        .unwrap();
        let pos = |t: &str| dag.order.iter().position(|x| x == t).unwrap();
        assert!(
            pos("hits") < pos("daily") && pos("users") < pos("daily") && pos("daily") < pos("load")
        );
        assert_eq!(dag.downstream["daily"], vec!["load"]);
    }

    #[test]
    fn cycle_is_reported_with_its_path() {
        let err = Dag::build(&nodes(&[
            ("a", &["c"]),
            ("b", &["a"]),
            ("c", &["b"]),
            ("d", &[]),
        ]))
        .unwrap_err();
        assert_eq!(err.to_string(), "cycle: a -> b -> c -> a");
        let err = Dag::build(&nodes(&[("a", &["a"])])).unwrap_err();
        assert_eq!(err.to_string(), "cycle: a -> a");
    }

    #[test]
    fn unknown_upstream_is_named() {
        let err = Dag::build(&nodes(&[("a", &["ghost"])])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "task \"a\" depends on unknown task \"ghost\""
        );
    }
}
