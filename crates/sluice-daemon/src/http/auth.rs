//! The API token: with `api_token` set, every call that changes something
//! needs `Authorization: Bearer <token>`, and so do reads unless
//! `api_read_public = true`. The token is compared in constant time and
//! never logged.

use super::AppState;
use super::api::ApiError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};

/// A request that passed the token check (an extractor: a handler that
/// takes it cannot run without it).
#[derive(Debug)]
pub struct Bearer;

/// Equal, in a time that depends only on the lengths.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(!x));
    }
    diff == 0
}

impl FromRequestParts<AppState> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Bearer, ApiError> {
        let Some(token) = state.api_token.as_deref() else {
            return Ok(Bearer);
        };
        let reading = parts.method == Method::GET || parts.method == Method::HEAD;
        if reading && state.read_public {
            return Ok(Bearer);
        }
        let given = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(given) if same(given.trim().as_bytes(), token.as_bytes()) => Ok(Bearer),
            Some(_) => Err(ApiError::new(StatusCode::UNAUTHORIZED, "wrong API token")),
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this call needs the API token: Authorization: Bearer <api_token>",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_compare_whole() {
        assert!(super::same(b"s3cret", b"s3cret"));
        assert!(!super::same(b"s3cret", b"s3cre"));
        assert!(!super::same(b"s3cre", b"s3cret"));
        assert!(!super::same(b"s3cret", b"S3cret"));
        assert!(!super::same(b"", b"x"));
        assert!(super::same(b"", b""));
    }
}
