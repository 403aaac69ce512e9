//! Extraction from MySQL and MariaDB. The query's exact column types
//! (decimal precision and scale, unsigned, `tinyint(1)`) come from an empty
//! temporary table made from it, which the protocol's column descriptions
//! do not carry through sqlx. Rows are streamed over the text protocol
//! (no prepared statement, so the server sends them as it finds them) and
//! each value is parsed into its column.

use crate::db::cancel::Running;
use crate::db::text_column::{TextBatches, TextType};
use crate::db::{DbTarget, KeyKind, split_ranges};
use crate::error::Result;
use crate::producers::{BatchSender, Producers};
use arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use sluice_core::config::SqlExtract;
use sqlx::mysql::{MySqlConnection, MySqlRow};
use sqlx::{AssertSqlSafe, Executor, Row};

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
    let query = crate::db::trimmed(query);
    let mut conn = connect(target).await?;
    // Describing runs the query too (into an empty table, which may still
    // mean computing it): a drop from here on cancels it on the server.
    let running = Running::mysql(target, &mut conn).await?;
    let columns = describe(target, &mut conn, query).await?;
    let schema = crate::db::schema_of(columns.iter().map(|c| (c.name.as_str(), c.ty.arrow_type())));
    let workers: Vec<Vec<String>> = if spec.partitions <= 1 {
        vec![vec![query.to_string()]]
    } else {
        let on = spec.partition_on.as_deref().unwrap_or_default();
        let ranges =
            partition_ranges(target, &mut conn, query, &columns, on, spec.partitions).await?;
        crate::db::range_queries(query, ranges)
    };
    let mut producers = Producers::new(schema.clone(), 2);
    let mut first = Some((conn, running));
    let batch_size = crate::db::reader_batch_size(spec.batch_size, workers.len());
    let readers = workers.len();
    for (i, statements) in workers.into_iter().enumerate() {
        let reader = TextRowReader {
            target: target.clone(),
            schema: schema.clone(),
            columns: columns.clone(),
            batch_size,
        };
        let tx = producers.sender();
        let conn = first.take();
        let name = if readers == 1 {
            "the MySQL reader".to_string()
        } else {
            format!("MySQL reader {}", i + 1)
        };
        producers.spawn(name, async move {
            let (mut conn, running) = match conn {
                Some(first) => first,
                None => {
                    let mut conn = connect(&reader.target).await?;
                    let running = Running::mysql(&reader.target, &mut conn).await?;
                    (conn, running)
                }
            };
            for statement in &statements {
                if !reader.read(&mut conn, statement, &tx).await? {
                    // The consumer went away mid-statement: `running`,
                    // dropped, has the server cancel it.
                    return Ok(());
                }
            }
            running.finish();
            Ok(())
        });
    }
    Ok(producers.into_stream())
}

async fn connect(target: &DbTarget) -> Result<MySqlConnection> {
    let mut conn = target.connect::<MySqlConnection>().await?;
    // TIMESTAMP columns are instants: have them sent in UTC.
    conn.execute("SET time_zone = '+00:00'")
        .await
        .map_err(|e| target.error("setting the session time zone", &e))?;
    Ok(conn)
}

async fn describe(
    target: &DbTarget,
    conn: &mut MySqlConnection,
    query: &str,
) -> Result<Vec<Described>> {
    let make = format!(
        "CREATE TEMPORARY TABLE sluice_describe AS SELECT * FROM ({query}) AS sluice_q LIMIT 0"
    );
    conn.execute(AssertSqlSafe(make))
        .await
        .map_err(|e| target.error("describing the query", &e))?;
    let rows: std::result::Result<Vec<MySqlRow>, _> =
        sqlx::raw_sql("SHOW COLUMNS FROM sluice_describe")
            .fetch_all(&mut *conn)
            .await;
    let _ = conn
        .execute("DROP TEMPORARY TABLE IF EXISTS sluice_describe")
        .await;
    let rows = rows.map_err(|e| target.error("describing the query", &e))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let get = |i: usize| -> Result<String> {
            let bytes: &[u8] = row
                .try_get_unchecked(i)
                .map_err(|e| target.error("describing the query", &e))?;
            Ok(String::from_utf8_lossy(bytes).into_owned())
        };
        let (name, declared) = (get(0)?, get(1)?);
        let ty = text_type(&declared).map_err(|m| target.column_error(&name, &m))?;
        out.push(Described { name, ty });
    }
    Ok(out)
}

/// Maps a column type as `SHOW COLUMNS` writes it, e.g. `decimal(12,2)`,
/// `bigint(20) unsigned`, `enum('a','b')`.
fn text_type(declared: &str) -> std::result::Result<TextType, String> {
    let lower = declared.to_ascii_lowercase();
    let unsigned = lower.contains(" unsigned");
    let (base, args) = match lower.split_once('(') {
        Some((b, rest)) => (b.trim(), rest.split(')').next().unwrap_or_default()),
        None => (lower.split(' ').next().unwrap_or_default(), ""),
    };
    let nums: Vec<u32> = args
        .split(',')
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    Ok(match (base, unsigned) {
        ("tinyint", _) if args == "1" => TextType::Bool,
        ("bool" | "boolean", _) => TextType::Bool,
        ("tinyint", false) => TextType::Int8,
        ("tinyint", true) => TextType::UInt8,
        ("smallint", false) => TextType::Int16,
        ("smallint", true) => TextType::UInt16,
        ("mediumint" | "int" | "integer", false) => TextType::Int32,
        ("mediumint" | "int" | "integer", true) => TextType::UInt32,
        ("bigint", false) => TextType::Int64,
        ("bigint", true) => TextType::UInt64,
        ("year", _) => TextType::Int16,
        ("float", _) => TextType::Float32,
        ("double" | "real" | "double precision", _) => TextType::Float64,
        ("decimal" | "numeric" | "dec" | "fixed", _) => {
            let precision = nums.first().copied().unwrap_or(10);
            let scale = nums.get(1).copied().unwrap_or(0);
            TextType::Decimal {
                precision: precision as u8,
                scale: scale as i8,
            }
        }
        (
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "json" | "enum"
            | "set" | "uuid",
            _,
        ) => TextType::Utf8,
        ("binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob", _) => {
            TextType::Binary
        }
        ("bit", _) => TextType::Bits,
        ("date", _) => TextType::Date,
        ("time", _) => TextType::Time,
        ("datetime", _) => TextType::Timestamp { utc: false },
        ("timestamp", _) => TextType::Timestamp { utc: true },
        _ => {
            return Err(format!(
                "type {declared} has no Arrow mapping in Sluice; cast it in the query, e.g. CAST(x AS CHAR)"
            ));
        }
    })
}

/// The WHERE conditions splitting the query into `n` ranges of `on`. Each
/// range is read in its own transaction: MySQL cannot share a snapshot
/// between connections.
async fn partition_ranges(
    target: &DbTarget,
    conn: &mut MySqlConnection,
    query: &str,
    columns: &[Described],
    on: &str,
    n: usize,
) -> Result<Vec<Vec<String>>> {
    let col = crate::db::partition_column(columns.iter().map(|c| c.name.as_str()), on)
        .map(|i| &columns[i])?;
    let kind = match col.ty {
        TextType::Int8
        | TextType::Int16
        | TextType::Int32
        | TextType::Int64
        | TextType::UInt8
        | TextType::UInt16
        | TextType::UInt32 => KeyKind::Int,
        TextType::Date => KeyKind::Date,
        TextType::Timestamp { utc } => KeyKind::Timestamp { utc },
        _ => return Err(crate::db::unsplittable(on, &col.ty.arrow_type())),
    };
    let quoted = format!("`{}`", on.replace('`', "``"));
    // The extremes of the column itself, measured afterwards: an index on
    // the key answers `MIN(key)` at once, but not `MIN(CAST(key ...))`.
    let measure = |extreme: &str| match kind {
        KeyKind::Int => format!("CAST({extreme}({quoted}) AS SIGNED)"),
        KeyKind::Date => format!("CAST(DATEDIFF({extreme}({quoted}), '1970-01-01') AS SIGNED)"),
        KeyKind::Timestamp { .. } => format!(
            "CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', {extreme}({quoted})) AS SIGNED)"
        ),
    };
    let row: MySqlRow = sqlx::query(AssertSqlSafe(format!(
        "SELECT {}, {} FROM ({query}) AS sluice_q",
        measure("MIN"),
        measure("MAX")
    )))
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| target.error("finding the partition bounds", &e))?;
    let lo: Option<i64> = row
        .try_get(0)
        .map_err(|e| target.error("finding the partition bounds", &e))?;
    let hi: Option<i64> = row
        .try_get(1)
        .map_err(|e| target.error("finding the partition bounds", &e))?;
    let literal = |v: i64| match kind {
        KeyKind::Int => v.to_string(),
        KeyKind::Date => format!("'{}'", crate::db::date_literal(v)),
        KeyKind::Timestamp { .. } => format!("'{}'", crate::db::timestamp_literal(v)),
    };
    Ok(split_ranges(lo.zip(hi), n, &quoted, literal))
}

/// Reads one statement's rows into batches.
struct TextRowReader {
    target: DbTarget,
    schema: SchemaRef,
    columns: Vec<Described>,
    batch_size: usize,
}

impl TextRowReader {
    /// Returns whether the statement was read to its end (false: the
    /// consumer went away first).
    async fn read(
        &self,
        conn: &mut MySqlConnection,
        statement: &str,
        tx: &BatchSender,
    ) -> Result<bool> {
        let types: Vec<TextType> = self.columns.iter().map(|c| c.ty.clone()).collect();
        let mut batches = TextBatches::new(self.schema.clone(), &types, self.batch_size);
        let reading = |m: String| self.target.error_msg("reading rows", &m);
        let building = |m: String| self.target.error_msg("building a batch", &m);
        let mut rows = sqlx::raw_sql(AssertSqlSafe(statement.to_string())).fetch(&mut *conn);
        while let Some(row) = rows.next().await {
            let row = row.map_err(|e| self.target.error("reading rows", &e))?;
            for i in 0..types.len() {
                let value: Option<&[u8]> = row
                    .try_get_unchecked(i)
                    .map_err(|e| self.target.error("reading rows", &e))?;
                batches.append(i, value).map_err(reading)?;
            }
            if let Some(batch) = batches.end_row().map_err(building)?
                && tx.send(Ok(batch)).await.is_err()
            {
                return Ok(false);
            }
        }
        if let Some(batch) = batches.rest().map_err(building)? {
            let _ = tx.send(Ok(batch)).await;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_types_map_exactly() {
        assert_eq!(text_type("tinyint(1)"), Ok(TextType::Bool));
        assert_eq!(text_type("tinyint(4)"), Ok(TextType::Int8));
        assert_eq!(text_type("bigint(20) unsigned"), Ok(TextType::UInt64));
        assert_eq!(text_type("int unsigned"), Ok(TextType::UInt32));
        assert_eq!(
            text_type("decimal(65,30)"),
            Ok(TextType::Decimal {
                precision: 65,
                scale: 30
            })
        );
        assert_eq!(text_type("enum('a','b')"), Ok(TextType::Utf8));
        assert_eq!(
            text_type("datetime(6)"),
            Ok(TextType::Timestamp { utc: false })
        );
        assert_eq!(
            text_type("timestamp"),
            Ok(TextType::Timestamp { utc: true })
        );
        assert!(text_type("geometry").unwrap_err().contains("geometry"));
    }
}
