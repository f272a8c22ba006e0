//! `GET /ops`: the operations page, served from files compiled into the binary (no build step,
//! no CDN: plain ES modules, so it works on an offline machine and `serve` needs no Node.js).
//! The page holds no data of its own: it signs in with an admin token and reads
//! `GET /api/admin/ops`, then listens to `ops:snapshot` over `/ws`.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::{ApiError, ErrorBody, Path};
use crate::state::AppState;

/// The page's files: name, content type, text.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "ops.css",
        "text/css; charset=utf-8",
        include_str!("assets/ops.css"),
    ),
    (
        "main.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/main.js"),
    ),
    (
        "map.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/map.js"),
    ),
    (
        "panels.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/panels.js"),
    ),
    (
        "chart.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/chart.js"),
    ),
    // Linked from the page, so the browser does not ask for a /favicon.ico nobody serves.
    ("icon.svg", "image/svg+xml", include_str!("assets/icon.svg")),
];

const INDEX: &str = include_str!("assets/index.html");

/// Scripts and styles only from the node; images also from a base map's tile server.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data: https: http:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(page))
        .routes(routes!(asset))
}

fn served(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The files change only with the binary; revalidating is cheap and keeps a new node's page.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The operations page (HTML). Anyone may load it; it shows a sign-in form until an admin
/// token is pasted or given in the fragment (`/ops#token=<JWT>`), and its data routes answer
/// 401/403 to anyone else.
#[utoipa::path(
    get,
    path = "/ops",
    tag = "ops",
    responses((status = 200, description = "The page", content_type = "text/html"))
)]
async fn page() -> Response {
    served("text/html; charset=utf-8", INDEX)
}

/// One of the page's files (`ops.css`, `main.js`, `map.js`, `panels.js`, `chart.js`,
/// `icon.svg`).
#[utoipa::path(
    get,
    path = "/ops/{asset}",
    tag = "ops",
    params(("asset" = String, Path, description = "File name")),
    responses(
        (status = 200, description = "The file", content_type = "text/javascript"),
        (status = 404, description = "No such file", body = ErrorBody),
    )
)]
async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .find(|(file, _, _)| *file == name)
        .map(|(_, content_type, body)| served(content_type, body))
        .ok_or_else(|| ApiError::not_found("no such file"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_page_imports_is_served() {
        let scripts: Vec<&str> = ASSETS.iter().map(|(name, _, _)| *name).collect();
        for (name, _, body) in ASSETS {
            for line in body.lines().filter(|l| l.starts_with("import ")) {
                let file = line
                    .rsplit("./")
                    .next()
                    .and_then(|rest| rest.split(['\'', '"']).next())
                    .unwrap_or_default();
                assert!(scripts.contains(&file), "{name} imports {file}, not served");
            }
        }
        for (name, _, _) in ASSETS.iter().filter(|(name, _, _)| !name.ends_with(".js")) {
            assert!(
                INDEX.contains(&format!("/ops/{name}")),
                "{name} is not linked"
            );
        }
        assert!(INDEX.contains("/ops/main.js"));
    }
}
