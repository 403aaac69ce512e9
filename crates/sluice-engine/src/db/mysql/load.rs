//! MySQL's and MariaDB's load: the bind-parameter INSERTs of
//! `db/load/insert.rs`, in a UTC session.

use crate::db::DbTarget;
use crate::db::load::{LoadRequest, Loaded, TablePlan, insert::insert_rows};
use crate::error::Result;
use arrow::datatypes::DataType;
use datafusion::execution::SendableRecordBatchStream;
use sqlx::Executor;

/// Bind parameters one statement may carry: the protocol counts them in
/// 16 bits.
const MAX_PARAMS: usize = 65_535;

pub(crate) async fn load(
    target: &DbTarget,
    req: LoadRequest<'_>,
    plan: &TablePlan,
    stream: SendableRecordBatchStream,
) -> Result<Loaded> {
    let mut conn = target.connect::<sqlx::MySqlConnection>().await?;
    conn.execute("SET time_zone = '+00:00'")
        .await
        .map_err(|e| target.error("setting the session time zone", &e))?;
    insert_rows::<sqlx::MySql>(&mut conn, target, req, plan, stream, MAX_PARAMS).await
}

/// The column type `create = true` gives an Arrow type; `in_key`: an
/// index needs a bounded length.
pub(crate) fn column_type(dt: &DataType, in_key: bool) -> Option<String> {
    Some(match dt {
        DataType::Int8 => "tinyint".into(),
        DataType::Int16 => "smallint".into(),
        DataType::Int32 => "int".into(),
        DataType::Int64 => "bigint".into(),
        DataType::UInt8 => "tinyint unsigned".into(),
        DataType::UInt16 => "smallint unsigned".into(),
        DataType::UInt32 => "int unsigned".into(),
        DataType::UInt64 => "bigint unsigned".into(),
        DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) if *p <= 65 => {
            format!("decimal({p},{s})")
        }
        // An index needs a bounded length.
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View if in_key => {
            "varchar(255)".into()
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "longtext".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView if in_key => {
            "varbinary(255)".into()
        }
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "longblob".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(_, _) => "datetime(6)".into(),
        _ => return None,
    })
}
