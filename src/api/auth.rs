//! Signed requests, exactly as Pusher signs them.
//!
//! The query carries `auth_key`, `auth_timestamp`, `auth_version`, `body_md5` (only
//! when there is a body) and `auth_signature`, the hex HMAC-SHA256 under the app's
//! secret of `METHOD\nPATH\nQUERY`, where QUERY is every other parameter, keys in
//! lower case, sorted, joined with `&`, values not URL-escaped.
//!
//! PATH is the path this server received. A proxy that mounts Herald under a prefix
//! must pass the path through unchanged, or signatures made for the public path fail.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, to_bytes};
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use md5::{Digest, Md5};
use std::collections::HashMap;

use subtle::ConstantTimeEq;

use super::ApiError;
use crate::apps::App;
use crate::config::AppConfig;
use crate::protocol::hex_signature_matches;
use crate::state::Shared;

/// How far `auth_timestamp` may be from the server's clock, either way.
const TIMESTAMP_WINDOW_SECS: u64 = 600;

/// The parts of a request that its signature covers.
#[derive(Debug, Clone, Copy)]
pub struct RequestToVerify<'a> {
    /// `GET`, `POST`, …
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: &'a str,
    /// The raw body.
    pub body: &'a [u8],
}

/// Middleware for the Pusher API routes: finds the app, reads the body, checks the
/// signature, and hands the app and the body on to the handler.
pub(super) async fn signed_request(
    State(shared): State<Arc<Shared>>,
    Path(params): Path<HashMap<String, String>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let app = enabled_app(&shared, &params)?;
    verified(&shared, app, request, next).await
}

/// Middleware for the jobs and files routes: a signed request as for the Pusher
/// API, or the app's API token as `Authorization: Bearer …`. A token request is not
/// buffered, so it may carry an upload larger than `server.max_request_size`.
pub(super) async fn signed_or_token(
    State(shared): State<Arc<Shared>>,
    Path(params): Path<HashMap<String, String>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let app = enabled_app(&shared, &params)?;
    let Some(token) = bearer_token(&request) else {
        return verified(&shared, app, request, next).await;
    };
    let expected = app.config.api_token.as_bytes();
    if expected.is_empty() || !bool::from(expected.ct_eq(token.as_bytes())) {
        let message = "the bearer token is not this app's api_token";
        return Err(ApiError::unauthorized("invalid_token", message));
    }
    request.extensions_mut().insert(app);
    Ok(next.run(request).await)
}

fn bearer_token(request: &Request) -> Option<String> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim().to_owned())
}

/// The enabled app named by the `app_id` path parameter.
fn enabled_app(shared: &Shared, params: &HashMap<String, String>) -> Result<Arc<App>, ApiError> {
    let app_id = params.get("app_id").map(String::as_str).unwrap_or_default();
    let app = shared.apps.by_id(app_id).cloned().ok_or_else(|| {
        let message = format!("no app has the id {app_id:?}");
        ApiError::new(StatusCode::NOT_FOUND, "unknown_app", message)
    })?;
    if !app.config.enabled {
        let message = format!("app {app_id:?} is disabled");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "app_disabled",
            message,
        ));
    }
    Ok(app)
}

/// Reads the body (at most `server.max_request_size`), checks the signature, and
/// passes the request on with the app attached.
async fn verified(
    shared: &Shared,
    app: Arc<App>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let limit = shared.config.server.max_request_size;
    let body = to_bytes(body, limit).await.map_err(|_| {
        let message = format!(
            "request body is larger than {limit} bytes; signed requests are read whole \
             (larger uploads can use the app's api_token instead)"
        );
        ApiError::too_large("body_too_large", message)
    })?;
    let to_verify = RequestToVerify {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or_default(),
        body: &body,
    };
    verify_request(&app.config, to_verify, unix_now())?;

    let mut request = Request::from_parts(parts, Body::from(body));
    request.extensions_mut().insert(app);
    Ok(next.run(request).await)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Checks a request's signature against `app`'s credentials at time `now`.
///
/// # Errors
///
/// A 401 naming what is missing or wrong; a bad signature's message quotes the
/// string that should have been signed.
pub fn verify_request(
    app: &AppConfig,
    request: RequestToVerify<'_>,
    now: u64,
) -> Result<(), ApiError> {
    let mut params: Vec<(String, String)> = form_urlencoded::parse(request.query.as_bytes())
        .map(|(key, value)| (key.to_ascii_lowercase(), value.into_owned()))
        .collect();
    let take = |params: &mut Vec<(String, String)>, name: &str| {
        let at = params.iter().position(|(key, _)| key == name)?;
        Some(params.remove(at).1)
    };
    let signature = take(&mut params, "auth_signature");
    let param = |name: &str| params.iter().find(|(key, _)| key == name).map(|(_, v)| v);

    let (Some(key), Some(timestamp), Some(signature)) =
        (param("auth_key"), param("auth_timestamp"), signature)
    else {
        return Err(ApiError::unauthorized(
            "missing_auth_params",
            "sign the request: auth_key, auth_timestamp and auth_signature are required \
             query parameters (with auth_version=1.0, and body_md5 when there is a body)",
        ));
    };
    if *key != app.key {
        let message = format!("auth_key {key:?} is not the key of this app");
        return Err(ApiError::unauthorized("invalid_auth_key", message));
    }
    if param("auth_version").is_some_and(|version| version != "1.0") {
        let message = "auth_version must be 1.0";
        return Err(ApiError::unauthorized("invalid_auth_version", message));
    }
    check_timestamp(timestamp, now)?;
    check_body_md5(param("body_md5").map(String::as_str), request.body)?;

    params.sort();
    let query = params
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join("&");
    let to_sign = format!("{}\n{}\n{query}", request.method, request.path);
    if hex_signature_matches(&app.secret, &to_sign, &signature) {
        Ok(())
    } else {
        Err(ApiError::unauthorized(
            "invalid_signature",
            format!(
                "Invalid signature: expected the HMAC SHA256 hex digest of {to_sign:?}, \
                 signed with the app's secret"
            ),
        ))
    }
}

fn check_timestamp(timestamp: &str, now: u64) -> Result<(), ApiError> {
    let Ok(timestamp) = timestamp.parse::<u64>() else {
        let message = "auth_timestamp must be seconds since the Unix epoch";
        return Err(ApiError::unauthorized("invalid_timestamp", message));
    };
    let skew = now.abs_diff(timestamp);
    if skew > TIMESTAMP_WINDOW_SECS {
        return Err(ApiError::unauthorized(
            "stale_timestamp",
            format!(
                "auth_timestamp is {skew} s away from the server's clock; the limit is \
                 {TIMESTAMP_WINDOW_SECS} s (check the clock of the signing machine)"
            ),
        ));
    }
    Ok(())
}

/// A body must come with its MD5; an empty body may come without one.
fn check_body_md5(given: Option<&str>, body: &[u8]) -> Result<(), ApiError> {
    let actual = hex::encode(Md5::digest(body));
    match given {
        Some(given) if given.eq_ignore_ascii_case(&actual) => Ok(()),
        None if body.is_empty() => Ok(()),
        Some(_) => Err(ApiError::unauthorized(
            "body_md5_mismatch",
            format!("body_md5 does not match the body, whose MD5 is {actual}"),
        )),
        None => Err(ApiError::unauthorized(
            "missing_body_md5",
            "a request with a body must carry body_md5, the hex MD5 of the body",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pusher_example_app() -> AppConfig {
        let mut config = crate::Config::embedded().apps.remove(0);
        config.id = "3".into();
        config.key = "278d425bdf160c739803".into();
        config.secret = "7ad3773142a6692b25b8".into();
        config
    }

    const BODY: &str = r#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
    const QUERY: &str = "auth_key=278d425bdf160c739803&auth_timestamp=1353088179\
        &auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f\
        &auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c";

    fn example(query: &str, body: &str) -> RequestToVerify<'static> {
        RequestToVerify {
            method: "POST",
            path: "/apps/3/events",
            query: Box::leak(query.to_owned().into_boxed_str()),
            body: Box::leak(body.as_bytes().to_vec().into_boxed_slice()),
        }
    }

    #[test]
    fn pusher_published_example_verifies() {
        let app = pusher_example_app();
        assert_eq!(
            verify_request(&app, example(QUERY, BODY), 1353088179),
            Ok(())
        );
    }

    #[test]
    fn a_changed_body_or_clock_is_refused() {
        let app = pusher_example_app();
        let tampered = verify_request(
            &app,
            example(QUERY, &BODY.replace("foo", "bar")),
            1353088179,
        );
        assert_eq!(tampered.unwrap_err().code, "body_md5_mismatch");
        let late = verify_request(&app, example(QUERY, BODY), 1353088179 + 601);
        assert_eq!(late.unwrap_err().code, "stale_timestamp");
    }

    #[test]
    fn a_bad_signature_names_the_string_to_sign() {
        let app = pusher_example_app();
        let query = QUERY.replace("auth_signature=da", "auth_signature=db");
        let error = verify_request(&app, example(&query, BODY), 1353088179).unwrap_err();
        assert_eq!(error.code, "invalid_signature");
        assert!(error.message.contains(
            r"POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179"
        ));
    }
}
