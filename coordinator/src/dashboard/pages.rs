//! The HTML the server writes itself: the single-page shell (the same for every page; the
//! script reads the path), the embedded assets, the login form and the not-found page, plus the
//! security headers on every reply. The assets are compiled into the binary, so the dashboard
//! works air-gapped and the page can never load a script from anywhere but this coordinator.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};

use super::AppState;
use crate::text::{is_study_name, quote};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const FAVICON_SVG: &str = include_str!("assets/favicon.svg");

/// Scripts and styles from this origin only, no inline code, no framing, forms post here only.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
     object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Adds the security headers, and keeps study data out of shared caches.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let is_asset = request.uri().path().starts_with("/assets/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    let cache = if is_asset { "no-cache" } else { "no-store" };
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static(cache));
    response
}

/// `GET /assets/{file}`.
pub async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        "favicon.svg" => (FAVICON_SVG, "image/svg+xml"),
        _ => return not_found_html(&format!("There is no asset {}.", quote(&file))),
    };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// `GET /`: the studies page.
pub async fn shell() -> Html<&'static str> {
    Html(INDEX_HTML)
}

/// `GET /studies/{name}`: the study page, or a 404 page for a study that does not exist.
pub async fn study(State(app): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    if !is_study_name(&name) || app.shared.lock().study(&name).is_err() {
        return no_study(&name);
    }
    Html(INDEX_HTML).into_response()
}

/// `GET /studies/{name}/trials/{number}`: the trial page, or a 404 page.
pub async fn trial(State(app): State<Arc<AppState>>, Path((name, number)): Path<(String, String)>) -> Response {
    if !is_study_name(&name) {
        return no_study(&name);
    }
    let Ok(count) = app.shared.lock().with_trials(&name, |_, trials| trials.len()) else { return no_study(&name) };
    if !number.parse::<u32>().is_ok_and(|n| (n as usize) < count) {
        return not_found_html(&format!("Study {} has no trial {}.", quote(&name), quote(&number)));
    }
    Html(INDEX_HTML).into_response()
}

/// Any other path.
pub async fn not_found(request: Request) -> Response {
    let path = request.uri().path();
    if path.starts_with("/api/") {
        let message = format!("no API endpoint {}; see the README's dashboard section", quote(path));
        return (StatusCode::NOT_FOUND, axum::Json(serde_json::json!({ "error": message }))).into_response();
    }
    not_found_html(&format!("There is no page {}.", quote(path)))
}

fn no_study(name: &str) -> Response {
    not_found_html(&format!("There is no study named {}. `bertsweep study list` shows the studies.", quote(name)))
}

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A small page in the dashboard's style around `body` (already escaped).
fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · bertsweep</title><link rel=\"icon\" href=\"/assets/favicon.svg\" type=\"image/svg+xml\">\
         <link rel=\"stylesheet\" href=\"/assets/app.css\"></head><body class=\"plain-page\">\
         <header class=\"topbar\"><a class=\"brand\" href=\"/\">bertsweep</a></header>\
         <main class=\"narrow\">{body}</main></body></html>\n",
        title = escape(title)
    )
}

/// A page titled `title` saying `message` (for refusals).
pub fn message_html(title: &str, message: &str) -> Html<String> {
    let body =
        format!("<h1>{}</h1><p class=\"notfound-message\" id=\"message\">{}</p>", escape(title), escape(message));
    Html(page(title, &body))
}

/// The 404 page saying `message`.
pub fn not_found_html(message: &str) -> Response {
    let body = format!(
        "<h1>Not found</h1><p class=\"notfound-message\" id=\"not-found\">{}</p><p><a href=\"/\">All studies</a></p>",
        escape(message)
    );
    (StatusCode::NOT_FOUND, Html(page("Not found", &body))).into_response()
}

/// The login form, returning to `next` (already checked to be local) after a right token.
pub fn login_html(next: &str, error: Option<&str>) -> Html<String> {
    let error =
        error.map(|e| format!("<p class=\"login-error\" id=\"login-error\">{}</p>", escape(e))).unwrap_or_default();
    let body = format!(
        "<h1>Log in</h1><p>This coordinator shows its studies to viewer and admin tokens.</p>{error}\
         <form method=\"post\" action=\"/login\" class=\"login-form\" id=\"login-form\">\
         <input type=\"hidden\" name=\"next\" value=\"{next}\">\
         <label for=\"token\">Token</label>\
         <input type=\"password\" id=\"token\" name=\"token\" autocomplete=\"current-password\" required autofocus>\
         <button type=\"submit\">Log in</button></form>",
        next = escape(next)
    );
    Html(page("Log in", &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_attributes() {
        assert_eq!(escape("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }

    #[test]
    fn login_page_quotes_next_safely() {
        let Html(html) = login_html("/studies/a\"><script>", Some("<b>"));
        assert!(!html.contains("<script>") && !html.contains("<b>"), "{html}");
        assert!(html.contains("value=\"/studies/a&quot;&gt;&lt;script&gt;\""));
    }

    #[test]
    fn assets_have_no_inline_code_the_policy_would_block() {
        assert!(!INDEX_HTML.contains("<script>") && !INDEX_HTML.contains("style="), "index.html has inline code");
        assert!(!INDEX_HTML.contains("http://") && !INDEX_HTML.contains("https://"), "index.html loads from elsewhere");
        assert!(INDEX_HTML.contains("/assets/app.js"));
    }
}
