//! Validation that needs the engine: SQL is planned against the schemas of
//! the tasks it reads (where they are known without reading data), load
//! columns are checked against their input, and every URL and connection
//! a job names is resolved. Nothing is read or written.

use crate::schema::declared_schema;
use crate::store::Stores;
use arrow::datatypes::SchemaRef;
use datafusion::datasource::MemTable;
use sluice_core::config::{
    ConfigError, DaemonConfig, Extract, Job, Load, LogFormat, SensorKind, TaskKind,
};
use sluice_core::template::Dialect;
use std::collections::HashMap;
use std::sync::Arc;

/// Problems with `job` that only the data plane can see.
pub async fn check_job(job: &Job, config: &DaemonConfig) -> Vec<ConfigError> {
    let stores = Stores::new(config.connections.clone());
    let mut errors = Vec::new();
    let mut schemas: HashMap<String, SchemaRef> = HashMap::new();
    let ctx = job.manual_context(
        job.start
            .map(|s| s.date_naive())
            .unwrap_or_else(|| chrono::Utc::now().date_naive()),
    );
    let err = |task: &str, key: &str, message: String| {
        ConfigError::new(&job.file, format!("tasks.{task}.{key}"), message)
    };
    for id in &job.dag.order {
        let task = job.task(id).expect("dag task");
        match &task.kind {
            TaskKind::Extract(Extract::Logs(spec)) => {
                if let Some(conn) = &spec.connection
                    && let Err(e) = stores.connection(conn)
                {
                    errors.push(err(id, "connection", e.to_string()));
                    continue;
                }
                let schema = match (&spec.format, &spec.schema) {
                    (LogFormat::NginxCombined | LogFormat::ApacheCombined, _) => {
                        Some(Arc::new(crate::logs::combined_schema()))
                    }
                    (LogFormat::Regex { pattern }, types) => {
                        match crate::logs::regex_schema(
                            pattern,
                            types.as_deref().unwrap_or_default(),
                        ) {
                            Ok(s) => Some(s),
                            Err(e) => {
                                errors.push(err(id, "schema", e.to_string()));
                                None
                            }
                        }
                    }
                    (_, Some(cols)) => Some(declared_schema(cols)),
                    (_, None) => None,
                };
                if let Some(s) = schema {
                    schemas.insert(id.clone(), s);
                }
                if let Ok(path) = ctx.render(&spec.path, "")
                    && let Err(e) = resolve_only(&stores, &path, spec.connection.as_deref())
                {
                    errors.push(err(id, "path", e));
                }
            }
            TaskKind::Extract(Extract::Sql(spec)) => {
                // The schema would need a connection; validation stays offline.
                if let Err(e) = crate::db::DbTarget::resolve(config, &spec.connection) {
                    errors.push(err(id, "connection", e.to_string()));
                }
            }
            TaskKind::Transform(t) => {
                if let Some(schema) =
                    plan(&t.sql, job, id, &schemas, &ctx, "transform", &mut errors).await
                {
                    schemas.insert(id.clone(), schema);
                }
            }
            TaskKind::Check(c) => {
                if let Some(schema) =
                    plan(&c.sql, job, id, &schemas, &ctx, "check", &mut errors).await
                    && (schema.fields().len() != 1
                        || schema.field(0).data_type() != &arrow::datatypes::DataType::Boolean)
                {
                    errors.push(err(id, "check", "a check must return one boolean column, e.g. SELECT count(*) > 0 FROM daily".into()));
                }
            }
            TaskKind::Load(Load::Sql(l)) => {
                if let Err(e) = crate::db::DbTarget::resolve(config, &l.connection) {
                    errors.push(err(id, "connection", e.to_string()));
                }
                if let (Some(schema), sluice_core::config::LoadMode::Upsert { key }) =
                    (schemas.get(&l.input), &l.mode)
                {
                    for k in key {
                        if schema.field_with_name(k).is_err() {
                            errors.push(err(
                                id,
                                "key",
                                format!(
                                    "column \"{k}\" is not in {}; its columns: {}",
                                    l.input,
                                    crate::schema::column_names(schema)
                                ),
                            ));
                        }
                    }
                }
            }
            TaskKind::Load(Load::Parquet(p)) => {
                if let Some(schema) = schemas.get(&p.input) {
                    for col in &p.partition_by {
                        // A stream derives dt and hour from the event time.
                        let derived = job.is_stream() && crate::stream::derives(col, schema);
                        if schema.field_with_name(col).is_err() && !derived {
                            errors.push(err(
                                id,
                                "partition_by",
                                format!(
                                    "column \"{col}\" is not in {}; its columns: {}",
                                    p.input,
                                    crate::schema::column_names(schema)
                                ),
                            ));
                        }
                    }
                    if p.partition_by.len() == schema.fields().len() && !p.partition_by.is_empty() {
                        errors.push(err(id, "partition_by", "every column is a partition column; no data would be left in the files".into()));
                    }
                }
                if let Ok(url) = ctx.render(&p.url, "")
                    && let Err(e) = resolve_only(&stores, &url, p.connection.as_deref())
                {
                    errors.push(err(id, "url", e));
                }
            }
            TaskKind::Sensor(s) => match &s.kind {
                SensorKind::ObjectExists { url, connection } => {
                    if let Ok(url) = ctx.render(url, "")
                        && let Err(e) = resolve_only(&stores, url.as_str(), connection.as_deref())
                    {
                        errors.push(err(id, "url", e));
                    }
                }
                SensorKind::Sql { connection, .. } => {
                    if let Err(e) = crate::db::DbTarget::resolve(config, connection) {
                        errors.push(err(id, "connection", e.to_string()));
                    }
                }
            },
        }
    }
    errors
}

fn resolve_only(stores: &Stores, target: &str, connection: Option<&str>) -> Result<(), String> {
    let (prefix, _) = crate::logs::source::split_glob(target);
    stores
        .resolve(prefix, connection)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Plans `sql` with empty tables of the upstream schemas; returns the
/// output schema, or `None` when an upstream schema is unknown or the
/// plan failed (the failure is pushed to `errors`).
async fn plan(
    sql: &str,
    job: &Job,
    id: &str,
    schemas: &HashMap<String, SchemaRef>,
    ctx: &sluice_core::template::RunContext,
    key: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<SchemaRef> {
    let upstream = &job.dag.upstream[id];
    if upstream.iter().any(|u| !schemas.contains_key(u)) {
        return None;
    }
    let rendered = ctx.render_sql(sql, "", Dialect::Standard).ok()?;
    let session = datafusion::prelude::SessionContext::new();
    for u in upstream {
        let table = MemTable::try_new(schemas[u].clone(), vec![vec![]]).ok()?;
        session.register_table(u.as_str(), Arc::new(table)).ok()?;
    }
    match session.sql(&rendered).await {
        Ok(df) => Some(Arc::new(df.schema().as_arrow().clone())),
        Err(e) => {
            let message = e.to_string();
            let message = message
                .strip_prefix("Error during planning: ")
                .unwrap_or(&message);
            errors.push(ConfigError::new(
                &job.file,
                format!("tasks.{id}.{key}"),
                format!("SQL error: {message}"),
            ));
            None
        }
    }
}
