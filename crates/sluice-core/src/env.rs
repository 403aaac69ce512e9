//! `${VAR}` expansion from the environment, done in one pass over the parsed
//! TOML tree before it is deserialized, so that a missing variable can be
//! reported with the key it was used in. `$${` writes a literal `${`.
//!
//! Every environment variable Sluice itself reads is listed in [`VARS`].

use crate::error::ConfigError;
use std::path::Path;

/// The environment variables the daemon reads, besides `${VAR}` references
/// written in config files. `SLUICE_<KEY>` overrides the daemon config key.
pub const VARS: &[(&str, &str)] = &[
    (
        "SLUICE_CONFIG",
        "path of the daemon config file (default ./sluice.toml)",
    ),
    ("SLUICE_JOBS", "overrides `jobs`"),
    ("SLUICE_STATE", "overrides `state`"),
    ("SLUICE_STAGING", "overrides `staging`"),
    ("SLUICE_DEAD_LETTER", "overrides `dead_letter`"),
    ("SLUICE_LISTEN", "overrides `listen`"),
    ("SLUICE_WORKERS", "overrides `workers`"),
    ("SLUICE_MEMORY_LIMIT", "overrides `memory_limit`"),
    ("SLUICE_API_TOKEN", "overrides `api_token`"),
    (
        "SLUICE_LOG",
        "log filter, e.g. `info` or `sluice=debug` (tracing EnvFilter syntax)",
    ),
];

/// Expands `${VAR}` in every string of `value`. All missing variables are
/// reported, each with the key path it appeared under.
pub fn interpolate(
    value: &mut toml::Value,
    file: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), Vec<ConfigError>> {
    let mut errors = Vec::new();
    walk(value, &mut String::new(), file, lookup, &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Looks variables up in the process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn walk(
    value: &mut toml::Value,
    path: &mut String,
    file: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) {
    match value {
        toml::Value::String(s) if s.contains('$') => match expand(s, lookup) {
            Ok(expanded) => *s = expanded,
            Err(message) => errors.push(ConfigError::new(file, path.clone(), message)),
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(item, path, file, lookup, errors);
                path.truncate(len);
            }
        }
        toml::Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                walk(item, path, file, lookup, errors);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// Expands one string.
pub fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(escaped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = escaped;
        } else if let Some(body) = after.strip_prefix("${") {
            let Some(end) = body.find('}') else {
                return Err(format!("unclosed \"${{\" in \"{s}\""));
            };
            let name = &body[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("invalid environment variable name \"{name}\""));
            }
            match lookup(name) {
                Some(v) => out.push_str(&v),
                None => return Err(format!("environment variable \"{name}\" is not set")),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        (name == "PASS").then(|| "s3cret".to_string())
    }

    #[test]
    fn expands_and_escapes() {
        assert_eq!(expand("a:${PASS}@b", &vars).unwrap(), "a:s3cret@b");
        assert_eq!(
            expand("cost $5 and $${HOME}", &vars).unwrap(),
            "cost $5 and ${HOME}"
        );
        assert!(
            expand("${NOPE}", &vars)
                .unwrap_err()
                .contains("\"NOPE\" is not set")
        );
        assert!(expand("${PASS", &vars).unwrap_err().contains("unclosed"));
    }

    #[test]
    fn missing_variable_names_the_key() {
        let mut v: toml::Value =
            toml::from_str("[connections.db]\nurl = \"postgres://u:${DB_PASS}@h/d\"\n").unwrap();
        let errs = interpolate(&mut v, Path::new("sluice.toml"), &vars).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].key, "connections.db.url");
        assert_eq!(
            errs[0].to_string(),
            "sluice.toml: connections.db.url: environment variable \"DB_PASS\" is not set"
        );
    }
}
