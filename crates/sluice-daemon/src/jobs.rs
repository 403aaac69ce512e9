//! The jobs folder, watched. Each scan reads the `*.toml` files; a new or
//! changed file that loads and validates replaces its job, one that does
//! not is reported while the last valid version of the job keeps running,
//! and a removed file's job stops being scheduled (its history stays in
//! the state store). Polling the folder, rather than subscribing to file
//! events, also sees edits made through Kubernetes ConfigMap symlink swaps.

use futures::future::BoxFuture;
use sluice_core::config::{Job, parse_job};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What one scan found.
#[derive(Debug, Default)]
pub struct Changes {
    /// Jobs loaded for the first time or changed: (name, file).
    pub loaded: Vec<(String, PathBuf)>,
    /// Files that failed to load: (job name, file, error).
    pub failed: Vec<(String, PathBuf, String)>,
    /// Jobs whose file is gone.
    pub removed: Vec<String>,
}

/// Checks a parsed job beyond its own file (SQL plans, connections).
/// Async, so that the daemon's loop awaits it rather than blocking a
/// runtime thread on it.
pub type Validator =
    Box<dyn for<'a> Fn(&'a Job) -> BoxFuture<'a, Result<(), String>> + Send + Sync>;

/// A validator that accepts every job that parses.
pub fn no_checks() -> Validator {
    Box::new(|_| Box::pin(async { Ok(()) }))
}

/// Looks up environment variables for `${VAR}` in job files.
pub type Env = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

struct Loaded {
    /// What the job came from: its file's text and the `.sql` files it
    /// names, with their text (`None`: missing). A change to any of them
    /// reloads the job.
    source: Source,
    job: Option<Arc<Job>>,
}

#[derive(PartialEq, Eq)]
struct Source {
    text: String,
    sql_files: Vec<(PathBuf, Option<String>)>,
}

impl Source {
    fn read(path: &Path, text: String) -> Source {
        let sql_files = sluice_core::config::job_sources(&text, path)
            .into_iter()
            .map(|p| {
                let content = std::fs::read_to_string(&p).ok();
                (p, content)
            })
            .collect();
        Source { text, sql_files }
    }
}

pub struct JobSet {
    /// The folder scanned; `None` for a fixed set.
    dir: Option<PathBuf>,
    env: Env,
    validator: Validator,
    files: BTreeMap<PathBuf, Loaded>,
    jobs: HashMap<String, Arc<Job>>,
}

impl JobSet {
    pub fn new(dir: PathBuf, env: Env, validator: Validator) -> JobSet {
        JobSet {
            dir: Some(dir),
            env,
            validator,
            files: BTreeMap::new(),
            jobs: HashMap::new(),
        }
    }

    /// Just `job`, never scanned for changes: what `sluice run` runs is
    /// the job as it was read, cut down to the tasks asked for.
    pub fn fixed(job: Job) -> JobSet {
        let mut set = JobSet {
            dir: None,
            env: Box::new(|_| None),
            validator: no_checks(),
            files: BTreeMap::new(),
            jobs: HashMap::new(),
        };
        set.insert(job);
        set
    }

    /// Adds a job read from elsewhere (a backfill of a file outside the
    /// folder). A file in the folder with the same name replaces it.
    pub fn insert(&mut self, job: Job) {
        self.jobs.insert(job.name.clone(), Arc::new(job));
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Job>> {
        self.jobs.get(name)
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Job>> {
        self.jobs.values()
    }

    /// Reads the folder and applies what changed since the last scan.
    pub async fn scan(&mut self) -> Changes {
        let mut changes = Changes::default();
        let Some(dir) = &self.dir else {
            return changes;
        };
        let present: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => {
                let mut v: Vec<PathBuf> = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                    .collect();
                v.sort();
                v
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot read the jobs folder");
                return changes;
            }
        };
        for path in &present {
            let Ok(text) = std::fs::read_to_string(path) else {
                continue; // Mid-replace; the next scan sees it.
            };
            let source = Source::read(path, text);
            if self.files.get(path).is_some_and(|l| l.source == source) {
                continue;
            }
            let text = source.text.clone();
            let previous = self.files.get(path).and_then(|l| l.job.clone());
            let parsed = match parse_job(&text, path, &*self.env) {
                Ok(job) => (self.validator)(&job).await.map(|()| job),
                Err(e) => Err(e.to_string()),
            };
            match parsed {
                Ok(job) => {
                    let clash = self
                        .jobs
                        .get(&job.name)
                        .filter(|other| other.file != job.file)
                        .map(|other| other.file.clone());
                    if let Some(other) = clash {
                        let message = format!(
                            "{}: name: job \"{}\" is already defined in {}",
                            path.display(),
                            job.name,
                            other.display()
                        );
                        changes
                            .failed
                            .push((job.name.clone(), path.clone(), message));
                        self.files.insert(
                            path.clone(),
                            Loaded {
                                source,
                                job: previous,
                            },
                        );
                        continue;
                    }
                    if let Some(prev) = &previous
                        && prev.name != job.name
                    {
                        // Renamed: the old name stops being scheduled.
                        self.jobs.remove(&prev.name);
                        changes.removed.push(prev.name.clone());
                    }
                    let job = Arc::new(job);
                    self.jobs.insert(job.name.clone(), job.clone());
                    changes.loaded.push((job.name.clone(), path.clone()));
                    self.files.insert(
                        path.clone(),
                        Loaded {
                            source,
                            job: Some(job),
                        },
                    );
                }
                Err(message) => {
                    let name = previous
                        .as_ref()
                        .map(|j| j.name.clone())
                        .unwrap_or_else(|| stem(path));
                    changes.failed.push((name, path.clone(), message));
                    // Keep the last valid version; remember the text so the
                    // same bad edit is reported once.
                    self.files.insert(
                        path.clone(),
                        Loaded {
                            source,
                            job: previous,
                        },
                    );
                }
            }
        }
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !present.contains(p))
            .cloned()
            .collect();
        for path in gone {
            if let Some(Loaded { job: Some(job), .. }) = self.files.remove(&path)
                && self.jobs.get(&job.name).is_some_and(|j| j.file == path)
            {
                self.jobs.remove(&job.name);
                changes.removed.push(job.name.clone());
            }
        }
        changes
    }
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(dir: &Path) -> JobSet {
        JobSet::new(dir.to_path_buf(), Box::new(|_| None), no_checks())
    }

    const JOB: &str = "schedule = \"@daily\"\n[tasks.a]\ncheck = \"SELECT true\"\n";

    #[tokio::test]
    async fn bad_edit_keeps_the_last_valid_version() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("daily.toml");
        std::fs::write(&file, JOB).unwrap();
        let mut jobs = set(dir.path());
        let c = jobs.scan().await;
        assert_eq!(c.loaded.len(), 1);
        assert!(jobs.get("daily").is_some());
        // Nothing changed: nothing reported.
        let c = jobs.scan().await;
        assert!(c.loaded.is_empty() && c.failed.is_empty());

        std::fs::write(&file, "schedule = \"@daily\"\n[tasks.a]\nchek = \"x\"\n").unwrap();
        let c = jobs.scan().await;
        assert_eq!(c.failed.len(), 1);
        assert_eq!(c.failed[0].0, "daily");
        assert!(c.failed[0].2.contains("tasks.a"), "{}", c.failed[0].2);
        assert!(jobs.get("daily").is_some(), "the last valid version stays");
        // The same bad text is reported once.
        assert!(jobs.scan().await.failed.is_empty());

        std::fs::write(&file, JOB.replace("@daily", "@hourly")).unwrap();
        let c = jobs.scan().await;
        assert_eq!(c.loaded.len(), 1);
        assert_eq!(
            jobs.get("daily").unwrap().schedule.as_ref().unwrap().expr,
            "@hourly"
        );

        std::fs::remove_file(&file).unwrap();
        let c = jobs.scan().await;
        assert_eq!(c.removed, vec!["daily".to_string()]);
        assert!(jobs.get("daily").is_none());
    }

    #[tokio::test]
    async fn an_edit_to_a_sql_file_reloads_its_job() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sql")).unwrap();
        let file = dir.path().join("daily.toml");
        std::fs::write(&file, "[tasks.a]\ncheck = \"sql/a.sql\"\n").unwrap();
        let mut jobs = set(dir.path());
        // Missing: an error naming the file, then loaded once it appears.
        let c = jobs.scan().await;
        assert_eq!(c.failed.len(), 1);
        assert!(
            c.failed[0].2.contains("cannot read SQL file"),
            "{}",
            c.failed[0].2
        );
        std::fs::write(dir.path().join("sql/a.sql"), "SELECT true").unwrap();
        let c = jobs.scan().await;
        assert_eq!(c.loaded.len(), 1, "{c:?}");
        let sql = |jobs: &JobSet| match &jobs.get("daily").unwrap().tasks[0].kind {
            sluice_core::config::TaskKind::Check(c) => c.sql.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(sql(&jobs), "SELECT true");
        assert!(jobs.scan().await.loaded.is_empty(), "nothing changed");
        // An edit to the SQL alone reloads the job.
        std::fs::write(dir.path().join("sql/a.sql"), "SELECT 1 = 1").unwrap();
        let c = jobs.scan().await;
        assert_eq!(c.loaded.len(), 1, "{c:?}");
        assert_eq!(sql(&jobs), "SELECT 1 = 1");
        // Removed: reported, and the last valid version keeps running.
        std::fs::remove_file(dir.path().join("sql/a.sql")).unwrap();
        let c = jobs.scan().await;
        assert_eq!(c.failed.len(), 1);
        assert_eq!(sql(&jobs), "SELECT 1 = 1");
    }
}
