//! Keeps secrets out of logs and errors: URLs lose their password, option
//! maps lose values whose key looks secret.

/// Replaces the password of a `scheme://user:password@host` URL with `***`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return url.to_string();
    };
    format!(
        "{}://{}:***{}",
        &url[..scheme_end],
        &userinfo[..colon],
        &rest[at..]
    )
}

/// True for option keys whose values must never be shown.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["secret", "password", "token", "key", "credential", "sas"]
        .iter()
        .any(|s| k.contains(s))
        && !k.ends_with("key_id")
        && k != "access_key_id"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact_url("postgres://etl:hunter2@db:5432/app"),
            "postgres://etl:***@db:5432/app"
        );
        assert_eq!(redact_url("postgres://etl@db/app"), "postgres://etl@db/app");
        assert_eq!(redact_url("s3://bucket/path"), "s3://bucket/path");
        assert_eq!(
            redact_url("mysql://u:p%40ss@h/x?y=@"),
            "mysql://u:***@h/x?y=@"
        );
    }

    #[test]
    fn secret_keys() {
        assert!(is_secret_key("secret_access_key"));
        assert!(is_secret_key("password"));
        assert!(!is_secret_key("access_key_id"));
        assert!(!is_secret_key("endpoint"));
    }
}
