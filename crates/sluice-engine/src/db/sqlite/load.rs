//! SQLite's load: the bind-parameter INSERTs of `db/load/insert.rs`.

use crate::db::DbTarget;
use crate::db::load::{LoadRequest, Loaded, TablePlan, insert::insert_rows};
use crate::error::Result;
use arrow::datatypes::DataType;
use datafusion::execution::SendableRecordBatchStream;

/// Bind parameters one statement may carry: the default
/// `SQLITE_MAX_VARIABLE_NUMBER` since 3.32.
const MAX_PARAMS: usize = 32_766;

pub(crate) async fn load(
    target: &DbTarget,
    req: LoadRequest<'_>,
    plan: &TablePlan,
    stream: SendableRecordBatchStream,
) -> Result<Loaded> {
    let mut conn = target.connect::<sqlx::SqliteConnection>().await?;
    insert_rows::<sqlx::Sqlite>(&mut conn, target, req, plan, stream, MAX_PARAMS).await
}

/// The column type `create = true` gives an Arrow type.
pub(crate) fn column_type(dt: &DataType) -> Option<String> {
    Some(match dt {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => "INTEGER".into(),
        DataType::Float32 | DataType::Float64 => "REAL".into(),
        DataType::Decimal128(p, s) => format!("DECIMAL({p},{s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "TEXT".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BLOB".into(),
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Date32 => "DATE".into(),
        DataType::Timestamp(_, _) => "DATETIME".into(),
        _ => return None,
    })
}
