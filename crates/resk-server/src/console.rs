//! The operator console: a static page at `/console` over the operator's API (`crate::admin`).
//!
//! Its files are compiled into the binary (`include_bytes!`): nothing to install or build at run
//! time, no CDN, works offline. The page is plain JavaScript (no framework, no build step); charts
//! are [uPlot] 1.6.32 (MIT, 51 KB minified, vendored under `console/vendor/` with its licence):
//! small, dependency-free, made for time series, and it draws on a canvas without inline styles or
//! `eval`, so the page keeps a strict Content-Security-Policy (`script-src 'self'`, no
//! `'unsafe-inline'`).
//!
//! The page holds no data: it asks for a token with `cache:admin`, keeps it in the tab's session
//! storage, and sends it as a bearer token on every call to the API, which scopes every answer to
//! the token's tenant. No cookie is set, so no request can be forged across sites.
//!
//! [uPlot]: https://github.com/leeoniya/uPlot

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use crate::{error::ApiError, state::AppState};

/// The page's policy: its own scripts, styles and API only; no inline script or style element,
/// no framing, no form posts, no base-URI games.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
     img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The console's files: path under `/console/`, content type, bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../console/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../console/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../console/app.css"),
    ),
    (
        "vendor/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../console/vendor/uPlot.iife.min.js"),
    ),
    (
        "vendor/uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../console/vendor/uPlot.min.css"),
    ),
];

/// Bytes of every file of the console (its page weight, uncompressed).
pub fn weight() -> usize {
    FILES.iter().map(|(_, _, bytes)| bytes.len()).sum()
}

/// Each file's entity tag (a digest of its bytes, in [`FILES`] order), made once.
static ETAGS: std::sync::LazyLock<Vec<HeaderValue>> = std::sync::LazyLock::new(|| {
    use sha2::Digest as _;
    FILES
        .iter()
        .map(|(_, _, bytes)| {
            let digest = sha2::Sha256::digest(bytes);
            let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
            HeaderValue::from_str(&format!("\"{hex}\"")).unwrap_or(HeaderValue::from_static("\"\""))
        })
        .collect()
});

/// Whether `If-None-Match` names `etag` (or `*`).
fn fresh(request: &HeaderMap, etag: &HeaderValue) -> bool {
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag.as_bytes() == etag.as_bytes())
}

fn serve(app: &AppState, request: &HeaderMap, name: &str) -> Response {
    if !app.console {
        return ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route").into_response();
    }
    let Some(i) = FILES.iter().position(|(path, _, _)| *path == name) else {
        return ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such console file")
            .into_response();
    };
    let (_, content_type, bytes) = FILES[i];
    let etag = &ETAGS[i];
    let mut response = if fresh(request, etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        bytes.into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::ETAG, etag.clone());
    // Revalidated on each load (a 304 when unchanged): a new binary's page is never mixed with an
    // old script.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /console`: the page.
pub(crate) async fn index(State(app): State<Arc<AppState>>, request: HeaderMap) -> Response {
    serve(&app, &request, "index.html")
}

/// `GET /console/{*file}`: its scripts and styles (`/console/` is the page too).
pub(crate) async fn file(
    State(app): State<Arc<AppState>>,
    Path(file): Path<String>,
    request: HeaderMap,
) -> Response {
    serve(
        &app,
        &request,
        if file.is_empty() { "index.html" } else { &file },
    )
}
