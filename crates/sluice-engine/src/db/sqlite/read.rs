//! Extraction from SQLite. SQLite types values, not columns, so a column's
//! Arrow type comes from its declared type (read through a temporary view
//! of the query, which keeps declared types such as `DECIMAL(12,2)` that
//! sqlx reduces to an affinity), or, for an expression, from the type sqlx
//! infers. A value whose storage class does not fit its column (text in an
//! INTEGER column, say) is an error naming the row and column.

use crate::db::DbTarget;
use crate::db::text_column::{TextBatches, TextType};
use crate::error::{Error, Result};
use crate::producers::{BatchSender, Producers};
use arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use sluice_core::config::SqlExtract;
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{AssertSqlSafe, Column as _, Executor, Row, SqlSafeStr, TypeInfo, ValueRef};

#[derive(Debug, Clone)]
struct Described {
    name: String,
    ty: TextType,
}

pub async fn extract(
    target: &DbTarget,
    query: &str,
    spec: &SqlExtract,
) -> Result<SendableRecordBatchStream> {
    if spec.partitions > 1 {
        return Err(Error::Config(format!(
            "connection {}: partitions read ranges on several connections at once, which a SQLite file does not serve faster; remove partitions",
            target.name
        )));
    }
    let query = crate::db::trimmed(query).to_string();
    let mut conn = target.connect::<SqliteConnection>().await?;
    let columns = describe(target, &mut conn, &query).await?;
    let schema = crate::db::schema_of(columns.iter().map(|c| (c.name.as_str(), c.ty.arrow_type())));
    let mut producers = Producers::new(schema.clone(), 2);
    let reader = RowReader {
        target: target.clone(),
        schema: schema.clone(),
        columns,
        batch_size: spec.batch_size,
    };
    let tx = producers.sender();
    producers.spawn("the SQLite reader", async move {
        reader.read(&mut conn, &query, &tx).await
    });
    Ok(producers.into_stream())
}

async fn describe(
    target: &DbTarget,
    conn: &mut SqliteConnection,
    query: &str,
) -> Result<Vec<Described>> {
    let fail = |e: sqlx::Error| target.error("describing the query", &e);
    let statement = conn
        .prepare(AssertSqlSafe(query.to_string()).into_sql_str())
        .await
        .map_err(fail)?;
    let inferred: Vec<(String, String)> = sqlx::Statement::columns(&statement)
        .iter()
        .map(|c| (c.name().to_string(), c.type_info().name().to_string()))
        .collect();
    conn.execute(AssertSqlSafe(format!(
        "CREATE TEMP VIEW sluice_describe AS {query}"
    )))
    .await
    .map_err(fail)?;
    let declared: std::result::Result<Vec<SqliteRow>, _> =
        sqlx::query("SELECT name, type FROM pragma_table_info('sluice_describe')")
            .fetch_all(&mut *conn)
            .await;
    let _ = conn.execute("DROP VIEW temp.sluice_describe").await;
    let declared = declared.map_err(fail)?;
    let mut out = Vec::with_capacity(inferred.len());
    for (i, (name, mut guess)) in inferred.into_iter().enumerate() {
        let decl: String = declared
            .get(i)
            .and_then(|r| r.try_get::<String, _>(1).ok())
            .unwrap_or_default();
        let typed = ["INTEGER", "REAL", "TEXT", "BLOB", "BOOLEAN"].contains(&guess.as_str());
        if decl.trim().is_empty() && !typed {
            // An expression sqlx could not type: its values' storage class.
            let quoted = format!("\"{}\"", name.replace('"', "\"\""));
            let class: Option<String> = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT upper(typeof({quoted})) FROM ({query}) WHERE {quoted} IS NOT NULL LIMIT 1"
            )))
            .fetch_optional(&mut *conn)
            .await
            .map_err(fail)?;
            // All NULL: any type holds that; text is the least surprising.
            guess = class.unwrap_or_else(|| "TEXT".into());
        }
        let ty = text_type(&decl, &guess).map_err(|m| target.column_error(&name, &m))?;
        out.push(Described { name, ty });
    }
    Ok(out)
}

/// Maps a declared type (SQLite's affinity rules, plus the names people
/// write for dates, booleans and decimals); an expression's type is the
/// one sqlx inferred.
fn text_type(declared: &str, inferred: &str) -> std::result::Result<TextType, String> {
    let decl = declared.trim().to_ascii_uppercase();
    if decl.is_empty() {
        return match inferred {
            "INTEGER" => Ok(TextType::Int64),
            "REAL" => Ok(TextType::Float64),
            "TEXT" => Ok(TextType::Utf8),
            "BLOB" => Ok(TextType::Binary),
            "BOOLEAN" => Ok(TextType::Bool),
            other => Err(format!(
                "an expression of type {other}, which cannot be told from the query; CAST it, e.g. CAST(x AS TEXT)"
            )),
        };
    }
    let base = decl.split('(').next().unwrap_or_default().trim();
    let args: Vec<u32> = decl
        .split_once('(')
        .map(|(_, r)| r.trim_end_matches(')'))
        .unwrap_or_default()
        .split(',')
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    Ok(match base {
        "BOOL" | "BOOLEAN" => TextType::Bool,
        "DATE" => TextType::Date,
        "DATETIME" | "TIMESTAMP" => TextType::Timestamp { utc: false },
        "DECIMAL" | "NUMERIC" if !args.is_empty() => {
            let precision = args[0].min(76) as u8;
            TextType::Decimal {
                precision,
                scale: args.get(1).copied().unwrap_or(0) as i8,
            }
        }
        "DECIMAL" | "NUMERIC" => TextType::Decimal {
            precision: 38,
            scale: 10,
        },
        "JSON" | "UUID" => TextType::Utf8,
        b if b.contains("INT") => TextType::Int64,
        b if b.contains("CHAR") || b.contains("CLOB") || b.contains("TEXT") => TextType::Utf8,
        b if b.contains("BLOB") => TextType::Binary,
        b if b.contains("REAL") || b.contains("FLOA") || b.contains("DOUB") => TextType::Float64,
        other => {
            return Err(format!(
                "declared type {other} has no Arrow mapping in Sluice; CAST it in the query"
            ));
        }
    })
}

struct RowReader {
    target: DbTarget,
    schema: SchemaRef,
    columns: Vec<Described>,
    batch_size: usize,
}

impl RowReader {
    async fn read(&self, conn: &mut SqliteConnection, query: &str, tx: &BatchSender) -> Result<()> {
        let types: Vec<TextType> = self.columns.iter().map(|c| c.ty.clone()).collect();
        let mut batches = TextBatches::new(self.schema.clone(), &types, self.batch_size);
        let reading = |m: String| self.target.error_msg("reading rows", &m);
        let building = |m: String| self.target.error_msg("building a batch", &m);
        let get_err = |e: sqlx::Error| self.target.error("reading rows", &e);
        let mut rows = sqlx::query(AssertSqlSafe(query.to_string())).fetch(&mut *conn);
        let mut text = String::new();
        while let Some(row) = rows.next().await {
            let row = row.map_err(get_err)?;
            for (i, ty) in types.iter().enumerate() {
                let raw = row.try_get_raw(i).map_err(get_err)?;
                if raw.is_null() {
                    batches.append(i, None).map_err(reading)?;
                    continue;
                }
                let class = raw.type_info().name().to_string();
                // Values go through their text form, which TextColumn parses
                // into the column's type; a blob keeps its bytes.
                match (class.as_str(), ty) {
                    ("BLOB", TextType::Binary) => {
                        let v: &[u8] = row.try_get_unchecked(i).map_err(get_err)?;
                        batches.append(i, Some(v)).map_err(reading)?;
                    }
                    ("BLOB", _) => {
                        return Err(reading(
                            batches.row_error(i, "a blob in a column that is not BLOB"),
                        ));
                    }
                    ("INTEGER", TextType::Timestamp { .. } | TextType::Date) => {
                        return Err(reading(batches.row_error(
                            i,
                            "a number where a date or timestamp text was expected; convert it in the query, e.g. datetime(x, 'unixepoch')",
                        )));
                    }
                    ("INTEGER" | "REAL", _) => {
                        use std::fmt::Write;
                        text.clear();
                        if class == "INTEGER" {
                            let v: i64 = row.try_get_unchecked(i).map_err(get_err)?;
                            let _ = write!(text, "{v}");
                        } else {
                            let v: f64 = row.try_get_unchecked(i).map_err(get_err)?;
                            let _ = write!(text, "{v:?}");
                        }
                        batches.append(i, Some(text.as_bytes())).map_err(reading)?;
                    }
                    _ => {
                        let v: &str = row.try_get_unchecked(i).map_err(get_err)?;
                        batches.append(i, Some(v.as_bytes())).map_err(reading)?;
                    }
                }
            }
            if let Some(batch) = batches.end_row().map_err(building)?
                && tx.send(Ok(batch)).await.is_err()
            {
                return Ok(());
            }
        }
        if let Some(batch) = batches.rest().map_err(building)? {
            let _ = tx.send(Ok(batch)).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_types_follow_affinity() {
        assert_eq!(text_type("BIGINT", ""), Ok(TextType::Int64));
        assert_eq!(text_type("varchar(20)", ""), Ok(TextType::Utf8));
        assert_eq!(text_type("DOUBLE PRECISION", ""), Ok(TextType::Float64));
        assert_eq!(
            text_type("decimal(12, 2)", ""),
            Ok(TextType::Decimal {
                precision: 12,
                scale: 2
            })
        );
        assert_eq!(text_type("boolean", ""), Ok(TextType::Bool));
        assert_eq!(text_type("", "REAL"), Ok(TextType::Float64));
        assert!(text_type("", "NULL").is_err());
        assert!(text_type("GEOMETRY", "").is_err());
    }
}
