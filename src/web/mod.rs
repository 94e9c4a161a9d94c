//! The resident web UI: one small page (HTML, vanilla JS, CSS embedded in the binary, no CDN,
//! no web fonts) served by the daemon on `[web] listen`, over the same control routes the CLI
//! uses ([`crate::api::routes`]) but behind a session instead of the bearer token.
//!
//! # Routes on the web listener
//!
//! | route | auth | what |
//! |---|---|---|
//! | `GET /`, `/app.js`, `/app.css`, `/icon.svg` | none | the page itself (no data in it) |
//! | `GET /auth/state` | none | `{"setup_needed", "authenticated", "csrf"}` |
//! | `POST /auth/setup` | Origin | `{"code","password"}`: first password, with the setup code; logs in |
//! | `POST /auth/login` | Origin, rate limit | `{"password"}` → session cookie + `{"csrf"}` |
//! | `POST /auth/logout` | session + CSRF | ends the session |
//! | `/api/v1/...` | session (+ CSRF on non-GET) | every control route, plus `GET /api/v1/cameras/{id}/live.mp4` |
//!
//! Without a valid session every `/api/` route answers `401 unauthorized`; a non-GET request
//! without the session's CSRF token in `X-CSRF-Token`, or from another origin (`Origin` or
//! `Sec-Fetch-Site` say so), answers `403 forbidden`. The cookie is
//! `porchlight_session=…; HttpOnly; SameSite=Strict; Path=/` (no `Secure`: the box serves
//! plain HTTP on the LAN; see docs/web.md). Every response carries a strict
//! Content-Security-Policy (`'self'` only, no inline script), `X-Frame-Options: DENY`,
//! `nosniff` and `no-referrer`.
//!
//! The listener's address is written to `{data_dir}/web.addr` (tests bind port 0 and read it).

pub mod auth;
pub mod live;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tracing::{error, info, warn, Instrument};

use crate::api::AppState;
use crate::protocol::units::Dur;
use crate::shutdown::Shutdown;
use auth::{AuthError, Credentials, LoginLimiter, Sessions, SetupState};

/// `[web]`: the resident web UI (`crate::web`), served by the daemon on the LAN.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// Serve the UI at all.
    #[serde(default = "default_web_enabled")]
    pub enabled: bool,
    /// Address of the UI. All IPv4 interfaces by default: residents open it from a phone.
    #[serde(default = "default_web_listen")]
    pub listen: SocketAddr,
    /// A session unused for this long ends.
    #[serde(default = "default_session_idle")]
    pub session_idle: Dur,
    /// A session ends this long after login, used or not.
    #[serde(default = "default_session_max")]
    pub session_max: Dur,
}

fn default_web_enabled() -> bool {
    true
}
fn default_web_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8080))
}
fn default_session_idle() -> Dur {
    Dur(Duration::from_secs(30 * 60))
}
fn default_session_max() -> Dur {
    Dur(Duration::from_secs(12 * 3600))
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            enabled: default_web_enabled(),
            listen: default_web_listen(),
            session_idle: default_session_idle(),
            session_max: default_session_max(),
        }
    }
}

/// Name of the session cookie.
pub const COOKIE: &str = "porchlight_session";
/// Header carrying the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const ICON_SVG: &str = include_str!("assets/icon.svg");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
    media-src 'self' blob:; connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

/// What the web handlers share.
pub struct Web {
    credentials: Credentials,
    sessions: Sessions,
    limiter: Mutex<LoginLimiter>,
    /// One password hash at a time: parallel guesses queue here and meet the limiter one by
    /// one, instead of costing a second of CPU each before any failure is counted.
    hashing: tokio::sync::Semaphore,
    previews: Arc<live::Previews>,
    shutdown: Shutdown,
}

type WebState = Arc<Web>;

/// Path of the file holding the web listener's address.
pub fn addr_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("web.addr")
}

/// Binds `[web] listen` and serves the UI until `shutdown`. Logs (and prints, for the console)
/// the setup code while no password is set. Returns `None` when the UI is disabled or cannot
/// start: the UI failing must not stop the cameras from recording.
pub async fn spawn(
    cfg: Option<&WebConfig>,
    data_dir: &Path,
    state: AppState,
    shutdown: Shutdown,
) -> Option<tokio::task::JoinHandle<()>> {
    let cfg = cfg?;
    let dir = data_dir.to_owned();
    let opened = tokio::task::spawn_blocking(move || Credentials::open(&dir)).await;
    let (credentials, setup) = match opened {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            error!(error = %e, "Web UI disabled: cannot read its password or setup code");
            return None;
        }
        Err(e) => {
            error!(error = %e, "Web UI disabled: credential loading panicked");
            return None;
        }
    };
    let listener = match tokio::net::TcpListener::bind(cfg.listen).await {
        Ok(l) => l,
        Err(e) => {
            error!(listen = %cfg.listen, error = %e, "Web UI disabled: cannot listen (set [web] listen)");
            return None;
        }
    };
    let addr = listener.local_addr().ok()?;
    if let Err(e) = std::fs::write(addr_path(data_dir), addr.to_string()) {
        warn!(error = %e, "Cannot write web.addr");
    }
    let code_file = auth::setup_code_path(data_dir);
    match &setup {
        SetupState::Ready => info!(addr = %addr, "Web UI listening"),
        SetupState::AwaitingSetup => {
            let code = std::fs::read_to_string(&code_file).unwrap_or_default();
            let code = code.trim();
            // The setup code is meant to be read off the console: it is what proves the person
            // at the web page holds the box.
            println!(
                "Porchlight setup code: {code}   (web UI on port {})",
                addr.port()
            );
            info!(addr = %addr, setup_code = %code, "Web UI listening; waiting for setup");
        }
        SetupState::AwaitingSetupNewCode(code) => {
            println!(
                "Porchlight setup code: {code}   (web UI on port {})",
                addr.port()
            );
            info!(addr = %addr, setup_code = %code, file = %code_file.display(), "Web UI listening; new setup code written");
        }
    }
    let web = Arc::new(Web {
        credentials,
        sessions: Sessions::new(cfg.session_idle.0, cfg.session_max.0),
        limiter: Mutex::new(LoginLimiter::default()),
        hashing: tokio::sync::Semaphore::new(1),
        previews: Arc::default(),
        shutdown: shutdown.clone(),
    });
    let app = router(web, state);
    Some(tokio::spawn(
        async move {
            let r = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await;
            if let Err(e) = r {
                error!(error = %e, "Web UI stopped");
            }
        }
        .instrument(tracing::info_span!("web")),
    ))
}

/// The web UI's routes: the page, the auth routes, and the control routes behind the session.
fn router(web: WebState, state: AppState) -> Router {
    let (previews, shutdown) = (web.previews.clone(), web.shutdown.clone());
    let api = crate::api::routes()
        .route(
            "/api/v1/cameras/{id}/live.mp4",
            get(move |s: State<AppState>, p: axum::extract::Path<String>| {
                live::live_mp4(s, p, previews.clone(), shutdown.clone())
            }),
        )
        .fallback(|| async { crate::api::ApiError::NotFound("no such API route".into()) })
        .with_state(state)
        .layer(middleware::from_fn_with_state(web.clone(), require_session));
    Router::new()
        .route("/", get(|| asset("text/html; charset=utf-8", INDEX_HTML)))
        .route(
            "/app.js",
            get(|| asset("text/javascript; charset=utf-8", APP_JS)),
        )
        .route(
            "/app.css",
            get(|| asset("text/css; charset=utf-8", APP_CSS)),
        )
        .route("/icon.svg", get(|| asset("image/svg+xml", ICON_SVG)))
        .route("/auth/state", get(auth_state))
        .route("/auth/setup", post(setup))
        .route("/auth/login", post(login))
        .route("/auth/logout", post(logout))
        .with_state(web)
        .merge(api)
        .layer(middleware::from_fn(security_headers))
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn security_headers(req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with("/api/") || req.uri().path().starts_with("/auth/");
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if api {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// A JSON error in the control API's shape.
fn err(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

fn auth_error(e: &AuthError) -> Response {
    let msg = e.to_string();
    match e {
        AuthError::AlreadySetUp => err(StatusCode::CONFLICT, "already_set_up", msg),
        AuthError::NotSetUp => err(StatusCode::CONFLICT, "setup_needed", msg),
        AuthError::WrongSetupCode => err(StatusCode::UNAUTHORIZED, "wrong_setup_code", msg),
        AuthError::WrongPassword => err(StatusCode::UNAUTHORIZED, "wrong_password", msg),
        AuthError::WeakPassword(_) => err(StatusCode::BAD_REQUEST, "weak_password", msg),
        AuthError::RateLimited { retry_after } => {
            let mut r = err(StatusCode::TOO_MANY_REQUESTS, "too_many_attempts", msg);
            let secs = retry_after.as_millis().div_ceil(1000).max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        AuthError::Io { .. } | AuthError::Damaged { .. } => {
            err(StatusCode::INTERNAL_SERVER_ERROR, "internal", msg)
        }
    }
}

/// The session token from the `Cookie` header(s).
fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// Whether a state-changing request comes from this page: an `Origin` (when the browser sends
/// one) naming the host it was sent to, and no `Sec-Fetch-Site` saying another site.
fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if !matches!(site, "same-origin" | "none") {
            return false;
        }
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let (Ok(origin), Some(host)) = (
        origin.to_str(),
        headers.get(header::HOST).and_then(|h| h.to_str().ok()),
    ) else {
        return false;
    };
    origin == format!("http://{host}") || origin == format!("https://{host}")
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

async fn require_session(
    State(web): State<WebState>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    let Some(session) =
        session_token(&headers).and_then(|t| web.sessions.touch(&t, Instant::now()))
    else {
        return err(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "log in first (no valid session)",
        );
    };
    if !is_safe(req.method()) {
        if !same_origin(&headers) {
            return err(
                StatusCode::FORBIDDEN,
                "forbidden",
                "cross-origin request refused",
            );
        }
        let given = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !auth::csrf_ok(&session, given) {
            return err(
                StatusCode::FORBIDDEN,
                "forbidden",
                "missing or wrong CSRF token (reload the page)",
            );
        }
    }
    next.run(req).await
}

fn cookie_for(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
    ))
    .expect("hex token is a valid header")
}

async fn auth_state(State(web): State<WebState>, headers: HeaderMap) -> Response {
    let session = session_token(&headers).and_then(|t| web.sessions.touch(&t, Instant::now()));
    Json(json!({
        "setup_needed": !web.credentials.is_set_up(),
        "authenticated": session.is_some(),
        "csrf": session.map(|s| s.csrf),
    }))
    .into_response()
}

#[derive(Deserialize)]
struct SetupBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    password: String,
}

#[derive(Deserialize)]
struct LoginBody {
    #[serde(default)]
    password: String,
}

/// Runs a limited attempt: checks the limiter, runs `attempt` off the async workers, records
/// the outcome. Wrong codes and passwords count as failures.
async fn limited(
    web: &WebState,
    ip: IpAddr,
    attempt: impl FnOnce(&Credentials) -> Result<(), AuthError> + Send + 'static,
) -> Result<(), AuthError> {
    let _permit = web.hashing.acquire().await;
    {
        let mut l = web.limiter.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(retry_after) = l.check(ip, Instant::now()) {
            return Err(AuthError::RateLimited { retry_after });
        }
    }
    let w = web.clone();
    let r = tokio::task::spawn_blocking(move || attempt(&w.credentials))
        .await
        .unwrap_or_else(|e| {
            Err(AuthError::Damaged {
                path: "web-admin.json".into(),
                message: e.to_string(),
            })
        });
    let mut l = web.limiter.lock().unwrap_or_else(|p| p.into_inner());
    match &r {
        Ok(()) => l.success(ip),
        Err(AuthError::WrongPassword | AuthError::WrongSetupCode) => l.failure(ip, Instant::now()),
        Err(_) => {}
    }
    r
}

fn logged_in(web: &Web) -> Response {
    let (token, session) = web.sessions.create(Instant::now());
    let mut r = Json(json!({"csrf": session.csrf})).into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, cookie_for(&token));
    r
}

async fn setup(
    State(web): State<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Option<Json<SetupBody>>,
) -> Response {
    if !same_origin(&headers) {
        return err(
            StatusCode::FORBIDDEN,
            "forbidden",
            "cross-origin request refused",
        );
    }
    let Some(Json(body)) = body else {
        return err(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "expected JSON {\"code\", \"password\"}",
        );
    };
    if web.credentials.is_set_up() {
        return auth_error(&AuthError::AlreadySetUp);
    }
    match limited(&web, peer.ip(), move |c| {
        c.setup(&body.code, &body.password)
    })
    .await
    {
        Ok(()) => {
            info!(client = %peer.ip(), "Web UI admin password set with the setup code");
            logged_in(&web)
        }
        Err(e) => {
            warn!(client = %peer.ip(), error = %e, "Web UI setup refused");
            auth_error(&e)
        }
    }
}

async fn login(
    State(web): State<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Option<Json<LoginBody>>,
) -> Response {
    if !same_origin(&headers) {
        return err(
            StatusCode::FORBIDDEN,
            "forbidden",
            "cross-origin request refused",
        );
    }
    let Some(Json(body)) = body else {
        return err(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "expected JSON {\"password\"}",
        );
    };
    match limited(&web, peer.ip(), move |c| c.verify(&body.password)).await {
        Ok(()) => {
            info!(client = %peer.ip(), "Web UI login");
            logged_in(&web)
        }
        Err(e) => {
            warn!(client = %peer.ip(), error = %e, "Web UI login refused");
            auth_error(&e)
        }
    }
}

async fn logout(State(web): State<WebState>, headers: HeaderMap) -> Response {
    let Some(token) = session_token(&headers) else {
        return err(StatusCode::UNAUTHORIZED, "unauthorized", "not logged in");
    };
    let Some(session) = web.sessions.touch(&token, Instant::now()) else {
        return err(StatusCode::UNAUTHORIZED, "unauthorized", "not logged in");
    };
    let given = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !same_origin(&headers) || !auth::csrf_ok(&session, given) {
        return err(
            StatusCode::FORBIDDEN,
            "forbidden",
            "missing or wrong CSRF token",
        );
    }
    web.sessions.remove(&token);
    let mut r = Json(json!({"logged_out": true})).into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "porchlight_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
        ),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; porchlight_session=abc; b=2")]);
        assert_eq!(session_token(&h).as_deref(), Some("abc"));
        assert_eq!(
            session_token(&headers(&[("cookie", "x=porchlight_session")])),
            None
        );
    }

    #[test]
    fn origin_must_name_the_host() {
        let ok = headers(&[
            ("host", "192.168.1.5:8080"),
            ("origin", "http://192.168.1.5:8080"),
        ]);
        assert!(same_origin(&ok));
        let evil = headers(&[
            ("host", "192.168.1.5:8080"),
            ("origin", "http://evil.example"),
        ]);
        assert!(!same_origin(&evil));
        let cross = headers(&[("host", "h"), ("sec-fetch-site", "cross-site")]);
        assert!(!same_origin(&cross));
        // Non-browser clients send no Origin; the CSRF token still guards them.
        assert!(same_origin(&headers(&[("host", "h")])));
    }
}
