//! The dashboard: a single page (`web/`, plain ES modules and CSS, no build
//! step) served at `/` with its assets under `/ui/`. The files are embedded in
//! the binary at compile time, so the API serves them from anywhere.
//!
//! The page holds no data: it reads everything through the REST API with the
//! visitor's token (sent as `Authorization: Bearer`), so with tokens configured
//! the page loads and then asks for one. It is mounted in `app.rs` inside the
//! same Host/Origin layers as the API; the page itself sets a strict
//! Content-Security-Policy (same-origin scripts and requests only, no framing).

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::error::ApiError;

/// Where the dashboard's assets are served.
pub const ASSET_PREFIX: &str = "/ui/";

/// One embedded file: its path under `web/`, media type and bytes.
struct Asset {
    path: &'static str,
    media_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $media_type:expr) => {
        Asset {
            path: $path,
            media_type: $media_type,
            bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../web/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// Every file of `web/` the page loads (`tests/tests/dashboard.rs` checks that
/// the list and the directory agree).
static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("js/app.js", JS),
    asset!("js/api.js", JS),
    asset!("js/dom.js", JS),
    asset!("js/charts.js", JS),
    asset!("js/pages/jobs.js", JS),
    asset!("js/pages/job.js", JS),
    asset!("js/pages/backtest.js", JS),
    asset!("js/pages/batch.js", JS),
    asset!("js/pages/optimization.js", JS),
    asset!("js/pages/walk_forward.js", JS),
    asset!("js/pages/monte_carlo.js", JS),
    asset!("js/pages/pipeline.js", JS),
    asset!("js/pages/candles.js", JS),
    asset!("js/pages/strategies.js", JS),
    asset!("vendor/lightweight-charts.standalone.production.mjs", JS),
    asset!("vendor/lightweight-charts.LICENSE", TEXT),
    asset!("vendor/lightweight-charts.NOTICE", TEXT),
];

/// The embedded files' paths under `web/` (for the test that checks nothing is missing).
pub fn asset_paths() -> Vec<&'static str> {
    ASSETS.iter().map(|a| a.path).collect()
}

/// `GET /` (the page) and `GET /ui/{path}` (its assets). No fallback: the API's
/// router answers everything else.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/ui/{*path}", get(asset))
}

async fn index() -> Response {
    serve(&ASSETS[0])
}

async fn asset(Path(path): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.path == path) {
        Some(asset) => serve(asset),
        None => ApiError::not_found(
            "not_found",
            "no such dashboard asset; the dashboard is at /",
        )
        .into_response(),
    }
}

/// Scripts, styles, images and requests from this origin only; never framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; base-uri 'none'; \
form-action 'none'; frame-ancestors 'none'";

fn serve(asset: &Asset) -> Response {
    let mut response = (StatusCode::OK, asset.bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.media_type),
    );
    // Embedded in the binary: a new build may change them, so revalidate.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_served_and_index_is_first() {
        assert_eq!(ASSETS[0].path, "index.html");
        for asset in ASSETS {
            assert!(!asset.bytes.is_empty(), "{} is empty", asset.path);
        }
        let html = std::str::from_utf8(ASSETS[0].bytes).unwrap();
        // Every asset the page references is embedded.
        for reference in html.split("/ui/").skip(1) {
            let path: String = reference
                .chars()
                .take_while(|c| !matches!(c, '"' | '\'' | '?' | '#'))
                .collect();
            assert!(
                ASSETS.iter().any(|a| a.path == path),
                "index.html references /ui/{path}, which is not embedded"
            );
        }
    }
}
