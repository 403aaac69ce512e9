//! `sluice trigger` and `sluice clear` ask the running daemon through its
//! REST API, as a user's script would: the daemon checks the token, the
//! job and the run, and answers what it did. Writing to the state store
//! directly (`--local`) is for when no daemon runs.

use anyhow::{Context, Result, anyhow};
use serde_json::Value;
use sluice_core::config::DaemonConfig;

/// The daemon's base URL: `--url`, else the config's `listen` address
/// (a wildcard host is reached on loopback).
pub fn base_url(url: Option<&str>, config: &DaemonConfig) -> String {
    if let Some(u) = url {
        return u.trim_end_matches('/').to_string();
    }
    let listen = config.listen.as_str();
    let (host, port) = listen.rsplit_once(':').unwrap_or((listen, "9898"));
    let host = match host {
        "" | "0.0.0.0" => "127.0.0.1",
        "[::]" => "[::1]",
        h => h,
    };
    format!("http://{host}:{port}")
}

/// An answer of the API: its status and JSON body.
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// The error's message, as the API words it.
    pub fn message(&self) -> String {
        self.body["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| self.body.to_string())
    }
}

/// POSTs `body` to `/api/v1/` + the path `segments` (each escaped).
pub async fn post(
    base: &str,
    token: Option<&str>,
    segments: &[&str],
    body: &Value,
) -> Result<Answer> {
    let mut url = reqwest::Url::parse(base).with_context(|| format!("--url {base}"))?;
    url.path_segments_mut()
        .map_err(|()| anyhow!("--url {base}: not a base URL"))?
        .pop_if_empty()
        .extend(["api", "v1"])
        .extend(segments);
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request.send().await.map_err(|e| {
        anyhow!(
            "no daemon answers at {base} ({e}); start `sluice serve`, pass its address \
             with --url, or --local to write to the state store directly"
        )
    })?;
    let status = response.status().as_u16();
    let text = response
        .text()
        .await
        .with_context(|| format!("reading the answer from {base}"))?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok(Answer { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_url_comes_from_listen() {
        let mut config = DaemonConfig::load(None, &|_| None).unwrap();
        config.listen = "0.0.0.0:9898".into();
        assert_eq!(base_url(None, &config), "http://127.0.0.1:9898");
        config.listen = "10.0.0.5:8080".into();
        assert_eq!(base_url(None, &config), "http://10.0.0.5:8080");
        config.listen = "[::]:9898".into();
        assert_eq!(base_url(None, &config), "http://[::1]:9898");
        assert_eq!(
            base_url(Some("https://sluice.example/"), &config),
            "https://sluice.example"
        );
    }
}
