//! The HTML the server writes itself: the single-page shell (the same for every page; the
//! script reads the path), the embedded assets, the login form and the not-found page, plus the
//! security headers on every reply. The assets are compiled into the binary, so the dashboard
//! works air-gapped and the page can never load a script from anywhere but this coordinator.
//!
//! The script is native ES modules (`assets/js/`, one file per page, per chart kind and per
//! shared concern), served as they are from [`MODULES`] at `/assets/{file}`: no bundler, no
//! build step. `app.js` is the entry the shell loads; the browser fetches the rest by `import`.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};

use super::AppState;
use crate::text::{is_study_name, quote};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_CSS: &str = include_str!("assets/app.css");
const FAVICON_SVG: &str = include_str!("assets/favicon.svg");

/// The dashboard's JavaScript modules by the name they are served under (`/assets/{name}`),
/// entry first. A module imports others as `./{name}`, so every file of `assets/js/` must be
/// here (the tests check that every import names one).
const MODULES: &[(&str, &str)] = &[
    ("app.js", include_str!("assets/js/app.js")),
    ("api.js", include_str!("assets/js/api.js")),
    ("session.js", include_str!("assets/js/session.js")),
    ("format.js", include_str!("assets/js/format.js")),
    ("dom.js", include_str!("assets/js/dom.js")),
    ("theme.js", include_str!("assets/js/theme.js")),
    ("chart.js", include_str!("assets/js/chart.js")),
    ("scales.js", include_str!("assets/js/scales.js")),
    ("studies-page.js", include_str!("assets/js/studies-page.js")),
    ("study-page.js", include_str!("assets/js/study-page.js")),
    ("table.js", include_str!("assets/js/table.js")),
    ("chart-history.js", include_str!("assets/js/chart-history.js")),
    ("chart-curves.js", include_str!("assets/js/chart-curves.js")),
    ("chart-parallel.js", include_str!("assets/js/chart-parallel.js")),
    ("chart-slices.js", include_str!("assets/js/chart-slices.js")),
    ("chart-importance.js", include_str!("assets/js/chart-importance.js")),
    ("chart-seeds.js", include_str!("assets/js/chart-seeds.js")),
    ("trial-page.js", include_str!("assets/js/trial-page.js")),
    ("chart-metrics.js", include_str!("assets/js/chart-metrics.js")),
];

/// The source of the module served as `name`, if there is one.
fn module(name: &str) -> Option<&'static str> {
    MODULES.iter().find(|(served, _)| *served == name).map(|(_, source)| *source)
}

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
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        "favicon.svg" => (FAVICON_SVG, "image/svg+xml"),
        name => match module(name) {
            Some(source) => (source, "text/javascript; charset=utf-8"),
            None => return not_found_html(&format!("There is no asset {}.", quote(&file))),
        },
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
        assert!(INDEX_HTML.contains(r#"<script type="module" src="/assets/app.js"></script>"#));
        assert_eq!(INDEX_HTML.matches("<script").count(), 1, "index.html loads the entry module only");
        // Code the policy blocks, or that would put data into the page as HTML, or load from elsewhere.
        let forbidden = [
            "eval(",
            "new Function",
            "setTimeout('",
            "setInterval('",
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "setAttribute('style'",
            "http://",
            "https://",
            "import(",
        ];
        for (name, source) in MODULES {
            for code in forbidden {
                assert!(!source.contains(code), "{name} has {code}");
            }
        }
    }

    /// The specifiers of a module's static `import … from '…'` and `import '…'` statements.
    fn imports(source: &str) -> Vec<&str> {
        source
            .lines()
            .map(str::trim_start)
            .filter(|line| line.starts_with("import ") || line.starts_with("export ") || line.starts_with('}'))
            .filter_map(|line| {
                let rest = line.rsplit_once(" from ").map(|(_, spec)| spec).or_else(|| line.strip_prefix("import "))?;
                let rest = rest.trim_start();
                let mark = rest.chars().next().filter(|c| *c == '\'' || *c == '"')?;
                rest[1..].split(mark).next()
            })
            .collect()
    }

    #[test]
    fn every_import_names_a_served_module() {
        assert_eq!(MODULES[0].0, "app.js", "the entry comes first");
        let mut imported = std::collections::BTreeSet::new();
        for (name, source) in MODULES {
            assert!(source.lines().next().is_some_and(|l| l.starts_with("// bertsweep dashboard")), "{name}: header");
            let specs = imports(source);
            assert!(name == &"format.js" || !specs.is_empty(), "{name} imports nothing: {specs:?}");
            for spec in specs {
                let served =
                    spec.strip_prefix("./").unwrap_or_else(|| panic!("{name} imports {spec:?}, not ./{{file}}"));
                assert!(module(served).is_some(), "{name} imports {spec:?}, which MODULES does not serve");
                imported.insert(served);
            }
            assert!(source.lines().count() <= 600, "{name} is over 600 lines");
        }
        // Every module but the entry is imported by another, so none is dead weight.
        for (name, _) in &MODULES[1..] {
            assert!(imported.contains(name), "no module imports {name}");
        }
        assert_eq!(MODULES.iter().map(|(n, _)| n).collect::<std::collections::BTreeSet<_>>().len(), MODULES.len());
    }

    #[test]
    fn every_module_file_is_served() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/dashboard/assets/js");
        for entry in std::fs::read_dir(dir).unwrap() {
            let file = entry.unwrap().file_name().into_string().unwrap();
            assert!(module(&file).is_some(), "assets/js/{file} is not in MODULES");
        }
    }

    #[test]
    fn the_shell_preloads_every_module() {
        for (name, _) in MODULES {
            let link = format!(r#"<link rel="modulepreload" href="/assets/{name}">"#);
            assert!(INDEX_HTML.contains(&link), "index.html does not preload {name}");
        }
        assert_eq!(
            INDEX_HTML.matches("modulepreload").count(),
            MODULES.len(),
            "index.html preloads a module not served"
        );
    }

    #[tokio::test]
    async fn modules_are_served_as_javascript_and_other_names_are_not_found() {
        for (name, source) in MODULES {
            let reply = asset(Path(name.to_string())).await;
            assert_eq!(reply.status(), StatusCode::OK, "{name}");
            assert_eq!(reply.headers()[header::CONTENT_TYPE], "text/javascript; charset=utf-8", "{name}");
            let body = axum::body::to_bytes(reply.into_body(), usize::MAX).await.unwrap();
            assert_eq!(&body[..], source.as_bytes(), "{name}");
        }
        for name in ["nope.js", "APP.JS", "app.js.map", "index.html", ""] {
            assert_eq!(asset(Path(name.to_string())).await.status(), StatusCode::NOT_FOUND, "{name:?}");
        }
    }
}
