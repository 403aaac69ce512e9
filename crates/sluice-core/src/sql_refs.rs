//! Finds the tables a SQL statement reads, so that a transform's upstream
//! tasks need not be listed by hand. Names bound by a `WITH` clause are
//! not tables and are left out.

use sqlparser::ast::{ObjectName, ObjectNamePart, Query, Visit, Visitor};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;
use std::collections::BTreeSet;
use std::ops::ControlFlow;

/// The names of the tables `sql` reads, lowercased unless quoted.
pub fn tables(sql: &str) -> Result<Vec<String>, String> {
    let statements =
        Parser::parse_sql(&GenericDialect {}, sql).map_err(|e| format!("SQL syntax error: {e}"))?;
    let mut v = Relations::default();
    let _ = statements.visit(&mut v);
    Ok(v.tables.difference(&v.ctes).cloned().collect())
}

#[derive(Default)]
struct Relations {
    tables: BTreeSet<String>,
    ctes: BTreeSet<String>,
}

impl Visitor for Relations {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.ctes.insert(normalize(&cte.alias.name));
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        if let [ObjectNamePart::Identifier(ident)] = relation.0.as_slice() {
            self.tables.insert(normalize(ident));
        }
        ControlFlow::Continue(())
    }
}

fn normalize(ident: &sqlparser::ast::Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tables_not_ctes() {
        let sql = "WITH h AS (SELECT * FROM hits) SELECT * FROM h JOIN Users u ON h.id = u.id \
                   WHERE x IN (SELECT id FROM banned)";
        assert_eq!(tables(sql).unwrap(), vec!["banned", "hits", "users"]);
    }

    #[test]
    fn syntax_errors_are_reported() {
        assert!(
            tables("SELEC 1")
                .unwrap_err()
                .starts_with("SQL syntax error")
        );
    }
}
