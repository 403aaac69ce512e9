//! Who the web UI is talking to. With `api_token` set, a user signs in
//! once by pasting the token into a form; the daemon answers with an
//! HttpOnly, SameSite=Strict cookie that holds a digest of the token (so
//! the token itself is in no URL, no page and no browser storage), and
//! every replica behind a load balancer accepts it without shared
//! sessions. Changing `api_token` signs every browser out.
//!
//! Buttons post through htmx, which sends `HX-Request: true`; a post
//! without that header is refused. A cross-site form cannot set a header,
//! so together with SameSite=Strict no other site can press a button on
//! a signed-in user's behalf, even when no token is set at all.

use crate::http::AppState;
use axum::http::HeaderMap;
use axum::http::header;
use sha2::{Digest, Sha256};

/// The cookie's name.
pub const COOKIE: &str = "sluice_session";

/// What a request may do in the UI.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Access {
    /// See pages.
    pub read: bool,
    /// Press buttons.
    pub act: bool,
    /// Signed in with the token (so "sign out" is offered).
    pub signed_in: bool,
    /// A token is configured (so "sign in" is offered).
    pub token_set: bool,
}

/// The cookie value that stands for `token`.
pub fn digest(token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"sluice-ui-session\0");
    h.update(token.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of cookie `name` in the request, if sent.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

pub fn access(headers: &HeaderMap, state: &AppState) -> Access {
    let Some(token) = state.api_token.as_deref() else {
        return Access {
            read: true,
            act: true,
            signed_in: false,
            token_set: false,
        };
    };
    let by_cookie = cookie(headers, COOKIE)
        .is_some_and(|c| crate::http::auth::same(c.as_bytes(), digest(token).as_bytes()));
    let by_bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| crate::http::auth::same(t.trim().as_bytes(), token.as_bytes()));
    let signed_in = by_cookie || by_bearer;
    Access {
        read: signed_in || state.read_public,
        act: signed_in,
        signed_in,
        token_set: true,
    }
}

/// The `Set-Cookie` that signs a browser in; `Secure` when the request
/// came over HTTPS through a proxy that says so.
pub fn sign_in_cookie(token: &str, headers: &HeaderMap) -> String {
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age=2592000{}",
        digest(token),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` that signs a browser out.
pub fn sign_out_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Whether a post came from the UI's own htmx (see the module's doc).
pub fn from_htmx(headers: &HeaderMap) -> bool {
    headers
        .get("hx-request")
        .is_some_and(|v| v.as_bytes() == b"true")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; sluice_session=abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn digest_hides_the_token_and_depends_on_it() {
        let d = digest("s3cret");
        assert_eq!(d.len(), 64);
        assert!(!d.contains("s3cret"));
        assert_ne!(d, digest("s3cres"));
    }
}
