//! Where bytes live: turns the URLs and paths of job files into an object
//! store and a path inside it. A target is a full URL (`s3://bucket/x`,
//! `file:///abs`, `file://./relative`), `<connection>/<path>` for a
//! connection of the daemon config, or a local path.

use crate::error::{Error, Result};
use indexmap::IndexMap;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreScheme};
use sluice_core::config::Connection;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use url::Url;

/// A resolved place: a store, a path in it, and the URL DataFusion knows
/// the store by.
#[derive(Clone)]
pub struct Location {
    pub store: Arc<dyn ObjectStore>,
    pub path: Path,
    /// Scheme and authority only, e.g. `s3://bucket` or `file://`.
    pub store_url: Url,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.url())
    }
}

impl Location {
    /// The full URL of this location (no credentials in it).
    pub fn url(&self) -> String {
        let base = self.store_url.as_str().trim_end_matches('/');
        if base == "file:" || base == "file://" {
            format!("file:///{}", self.path)
        } else {
            format!("{base}/{}", self.path)
        }
    }

    /// A location below this one.
    pub fn child(&self, relative: &str) -> Location {
        let mut path = self.path.clone();
        for part in relative.split('/').filter(|p| !p.is_empty()) {
            path = path.clone().join(part);
        }
        Location {
            store: self.store.clone(),
            path,
            store_url: self.store_url.clone(),
        }
    }
}

/// Resolves targets against the daemon's connections, caching one client
/// per store.
pub struct Stores {
    connections: IndexMap<String, Connection>,
    cache: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl Stores {
    pub fn new(connections: IndexMap<String, Connection>) -> Self {
        Stores {
            connections,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn connection(&self, name: &str) -> Result<&Connection> {
        self.connections.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.connections.keys().map(String::as_str).collect();
            Error::Config(format!(
                "unknown connection \"{name}\"; connections in the daemon config: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })
    }

    /// Resolves `target`, relative to `connection` when one is named.
    pub fn resolve(&self, target: &str, connection: Option<&str>) -> Result<Location> {
        if let Some(name) = connection {
            let conn = self.connection(name)?;
            return self.resolve_url(&join(&conn.url, target), Some(conn));
        }
        if target.contains("://") {
            // A full URL into a connection's store uses that connection's options.
            let conn = self
                .connections
                .values()
                .find(|c| store_of(&c.url) == store_of(target));
            return self.resolve_url(target, conn);
        }
        if let Some((first, rest)) = target.split_once('/')
            && let Some(conn) = self.connections.get(first)
        {
            return self.resolve_url(&join(&conn.url, rest), Some(conn));
        }
        local(target)
    }

    fn resolve_url(&self, url: &str, conn: Option<&Connection>) -> Result<Location> {
        if let Some(rest) = url.strip_prefix("file://")
            && !rest.starts_with('/')
        {
            // `file://./data` and `file://data`: relative to the working folder.
            return local(rest);
        }
        let parsed = Url::parse(url).map_err(|e| {
            Error::Config(format!(
                "invalid URL \"{}\": {e}",
                sluice_core::redact::redact_url(url)
            ))
        })?;
        let (scheme, path) = ObjectStoreScheme::parse(&parsed).map_err(|e| {
            Error::Config(format!(
                "unsupported URL \"{}\": {e}",
                sluice_core::redact::redact_url(url)
            ))
        })?;
        let path = Path::parse(path)
            .map_err(|e| Error::Config(format!("invalid path in \"{url}\": {e}")))?;
        let mut store_url = parsed.clone();
        store_url.set_path("");
        store_url.set_query(None);
        let _ = store_url.set_password(None);
        let _ = store_url.set_username("");
        let key = format!(
            "{}|{}",
            store_url,
            conn.map(|c| c.name.as_str()).unwrap_or("")
        );
        if let Some(store) = self.cache.lock().expect("store cache").get(&key) {
            return Ok(Location {
                store: store.clone(),
                path,
                store_url,
            });
        }
        let empty = IndexMap::new();
        let options = conn.map(|c| &c.options).unwrap_or(&empty);
        let who = conn
            .map(|c| format!("connection \"{}\"", c.name))
            .unwrap_or_else(|| store_url.to_string());
        let store: Arc<dyn ObjectStore> = match scheme {
            ObjectStoreScheme::Local => Arc::new(LocalFileSystem::new()),
            ObjectStoreScheme::Memory => Arc::new(object_store::memory::InMemory::new()),
            ObjectStoreScheme::AmazonS3 => {
                let mut b =
                    object_store::aws::AmazonS3Builder::from_env().with_url(store_url.as_str());
                for (k, v) in options {
                    let key = k
                        .to_ascii_lowercase()
                        .parse()
                        .map_err(|_| unknown_option(&who, k, "s3"))?;
                    b = b.with_config(key, v);
                }
                Arc::new(
                    b.build()
                        .map_err(|e| Error::store(format!("configuring {who}"), e))?,
                )
            }
            ObjectStoreScheme::GoogleCloudStorage => {
                let mut b = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(store_url.as_str());
                for (k, v) in options {
                    let key = k
                        .to_ascii_lowercase()
                        .parse()
                        .map_err(|_| unknown_option(&who, k, "gcs"))?;
                    b = b.with_config(key, v);
                }
                Arc::new(
                    b.build()
                        .map_err(|e| Error::store(format!("configuring {who}"), e))?,
                )
            }
            ObjectStoreScheme::MicrosoftAzure => {
                let mut b = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(store_url.as_str());
                for (k, v) in options {
                    let key = k
                        .to_ascii_lowercase()
                        .parse()
                        .map_err(|_| unknown_option(&who, k, "azure"))?;
                    b = b.with_config(key, v);
                }
                Arc::new(
                    b.build()
                        .map_err(|e| Error::store(format!("configuring {who}"), e))?,
                )
            }
            other => {
                return Err(Error::Config(format!(
                    "unsupported URL scheme in \"{}\" ({other:?}); expected file://, s3://, gs:// or az://",
                    sluice_core::redact::redact_url(url)
                )));
            }
        };
        self.cache
            .lock()
            .expect("store cache")
            .insert(key, store.clone());
        Ok(Location {
            store,
            path,
            store_url,
        })
    }
}

fn unknown_option(who: &str, key: &str, kind: &str) -> Error {
    Error::Config(format!("{who}: unknown {kind} option \"{key}\""))
}

/// `scheme://authority` of a URL.
fn store_of(url: &str) -> &str {
    match url.find("://") {
        Some(i) => {
            let rest = &url[i + 3..];
            &url[..i + 3 + rest.find('/').unwrap_or(rest.len())]
        }
        None => url,
    }
}

fn join(base: &str, rest: &str) -> String {
    if rest.is_empty() {
        base.to_string()
    } else {
        format!(
            "{}/{}",
            base.trim_end_matches('/'),
            rest.trim_start_matches('/')
        )
    }
}

/// A local path, made absolute against the working folder.
fn local(path: &str) -> Result<Location> {
    let p = std::path::Path::new(if path.is_empty() { "." } else { path });
    let abs = std::path::absolute(p).map_err(|source| Error::Io {
        path: p.to_path_buf(),
        source,
    })?;
    // Normalise `.` and `..` so that object paths are canonical.
    let mut clean = std::path::PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                clean.pop();
            }
            other => clean.push(other),
        }
    }
    let text = clean.to_string_lossy();
    let path = Path::parse(text.trim_start_matches('/'))
        .map_err(|e| Error::Config(format!("invalid local path \"{path}\": {e}")))?;
    Ok(Location {
        store: Arc::new(LocalFileSystem::new()),
        path,
        store_url: Url::parse("file:///").expect("static URL"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stores() -> Stores {
        let mut c = IndexMap::new();
        c.insert(
            "lake".to_string(),
            Connection {
                name: "lake".into(),
                url: "s3://analytics/base".into(),
                options: [
                    ("endpoint".to_string(), "http://127.0.0.1:9".to_string()),
                    ("allow_http".to_string(), "true".to_string()),
                ]
                .into_iter()
                .collect(),
            },
        );
        Stores::new(c)
    }

    #[test]
    fn connection_relative_targets() {
        let l = stores().resolve("lake/daily/", None).unwrap();
        assert_eq!(l.url(), "s3://analytics/base/daily");
        let l = stores().resolve("x/y", Some("lake")).unwrap();
        assert_eq!(l.url(), "s3://analytics/base/x/y");
    }

    #[test]
    fn local_paths_are_absolute() {
        let l = stores().resolve("file://./data/staging", None).unwrap();
        assert!(l.url().starts_with("file:///"), "{}", l.url());
        assert!(l.url().ends_with("/data/staging"));
        let l = stores().resolve("/tmp/a/../b", None).unwrap();
        assert_eq!(l.url(), "file:///tmp/b");
    }

    #[test]
    fn unknown_options_are_errors() {
        let mut s = stores();
        s.connections[0]
            .options
            .insert("endpont".into(), "x".into());
        let err = s.resolve("lake/x", None).unwrap_err().to_string();
        assert_eq!(err, "connection \"lake\": unknown s3 option \"endpont\"");
    }
}
