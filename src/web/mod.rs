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
//! Before any of these, a request whose `Host` is not one of the box's names answers
//! `421 bad_host` ([`hosts`]: no DNS rebinding). Without a valid session every `/api/` route
//! answers `401 unauthorized`; a non-GET request without the session's CSRF token in
//! `X-CSRF-Token`, or from another origin (an `Origin` not on the same allowlist, or
//! `Sec-Fetch-Site` saying so), answers `403 forbidden`. A streamed answer (live preview,
//! export) ends when its session does. The cookie is
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
use std::sync::atomic::{AtomicUsize, Ordering};
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

use crate::api::hosts::{self, HostPolicy};
use crate::api::AppState;
use crate::protocol::units::Dur;
use crate::shutdown::Shutdown;
use auth::{AuthError, Credentials, LoginLimiter, Sessions, SetupState};

/// Most login or setup attempts waiting for the hash at once; more answer 429 at once.
const MAX_HASH_QUEUE: usize = 4;

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
    /// More DNS names the UI answers to (`Host` and `Origin`), besides `porchlight.local`,
    /// `localhost` and the box's own IP addresses, e.g. `["box.home.arpa"]` when the router's
    /// DNS names the box. Any other name is refused (`421 bad_host`): that is what stops DNS
    /// rebinding ([`hosts`]). Empty by default.
    #[serde(default)]
    pub hosts: Vec<String>,
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
            hosts: Vec::new(),
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
    /// One password hash at a time. The permit moves into the hashing task, so a client that
    /// closes its connection cannot free it while its hash still runs.
    hashing: Arc<tokio::sync::Semaphore>,
    /// Attempts waiting for `hashing` (at most [`MAX_HASH_QUEUE`]).
    queued: AtomicUsize,
    /// The names and addresses this listener answers to.
    hosts: Arc<HostPolicy>,
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
            // Not in the log: logs may be shipped off the box, the console stays on it.
            info!(addr = %addr, file = %code_file.display(), "Web UI listening; waiting for setup with the code on the console");
        }
        SetupState::AwaitingSetupNewCode(code) => {
            println!(
                "Porchlight setup code: {code}   (web UI on port {})",
                addr.port()
            );
            info!(addr = %addr, file = %code_file.display(), "Web UI listening; new setup code written and shown on the console");
        }
    }
    let web = Arc::new(Web {
        credentials,
        sessions: Sessions::new(cfg.session_idle.0, cfg.session_max.0),
        limiter: Mutex::new(LoginLimiter::default()),
        hashing: Arc::new(tokio::sync::Semaphore::new(1)),
        queued: AtomicUsize::new(0),
        hosts: Arc::new(HostPolicy::web(addr.port(), &cfg.hosts)),
        previews: Arc::default(),
        shutdown: shutdown.clone(),
    });
    let budget = state.listeners.budgets.web;
    let stats = state.listeners.web.clone();
    let app = router(web, state);
    Some(tokio::spawn(
        async move {
            let r = crate::api::listen::serve("web", listener, app, budget, stats, shutdown).await;
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
    let hosts = web.hosts.clone();
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
        // Outside every route and the fallback: a foreign Host meets no handler at all.
        .layer(middleware::from_fn_with_state(hosts, hosts::require_host))
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
/// one) on the listener's allowlist ([`HostPolicy::allows_origin`], not the request's own
/// `Host`, which a DNS-rebinding page sets as well), and no `Sec-Fetch-Site` saying another
/// site.
fn same_origin(hosts: &HostPolicy, headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if !matches!(site, "same-origin" | "none") {
            return false;
        }
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    origin.to_str().is_ok_and(|o| hosts.allows_origin(o))
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
        if !same_origin(&web.hosts, &headers) {
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
    let token = session_token(&headers).unwrap_or_default();
    let ended = web.sessions.subscribe(&token);
    let resp = next.run(req).await;
    match ended {
        Some(ended) => end_with_session(resp, web, token, ended),
        None => resp,
    }
}

/// A streamed answer (live preview, export: no known length) ends, as an aborted body, when
/// the session that asked for it ends (logout, or expiry: streaming does not count as use).
/// Dropping the inner body is what stops its producer (the preview's pump sees its channel
/// closed, the export its receiver gone).
fn end_with_session(
    resp: Response,
    web: WebState,
    token: String,
    ended: tokio::sync::watch::Receiver<()>,
) -> Response {
    use axum::body::HttpBody;
    use futures_util::StreamExt;
    if resp.body().size_hint().exact().is_some() {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let over = Box::pin(session_over(web, token, ended));
    let chunks =
        futures_util::stream::unfold(Some((body.into_data_stream(), over)), |state| async move {
            let (mut data, mut over) = state?;
            tokio::select! {
                biased;
                () = &mut over => {
                    Some((Err(std::io::Error::other("the session ended")), None))
                }
                chunk = data.next() => {
                    let chunk = chunk?.map_err(std::io::Error::other);
                    Some((chunk, Some((data, over))))
                }
            }
        });
    Response::from_parts(parts, axum::body::Body::from_stream(chunks))
}

/// Resolves when the session leaves the table or reaches its idle or absolute limit.
async fn session_over(web: WebState, token: String, mut ended: tokio::sync::watch::Receiver<()>) {
    loop {
        let Some(at) = web.sessions.ends_at(&token, Instant::now()) else {
            return;
        };
        tokio::select! {
            // Nothing is ever sent: this fails when the session's entry (the sender) is gone.
            _ = ended.changed() => return,
            () = tokio::time::sleep_until(at.into()) => {}
        }
    }
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

/// Runs a limited attempt, in an order no client can cut short by closing its connection:
///
/// 1. the limiter is asked and the attempt is charged as a failure at once, before any
///    hashing (no await in between);
/// 2. it waits for the one hashing permit, unless [`MAX_HASH_QUEUE`] attempts already wait
///    (then 429 at once, uncharged);
/// 3. the hash and the outcome run in a blocking task that owns the permit: a wrong password
///    or code confirms the charge (the client's wait runs from now), a success or a failure
///    that is not a guess (a weak new password, an I/O error) refunds it.
///
/// A client that goes away during 2 leaves its charge and costs no hash; during 3 the hash
/// finishes, the outcome is recorded and only then is the permit released.
async fn limited(
    web: &WebState,
    ip: IpAddr,
    known: bool,
    attempt: impl FnOnce(&Credentials) -> Result<(), AuthError> + Send + 'static,
) -> Result<(), AuthError> {
    struct Queued<'a>(&'a AtomicUsize);
    impl Drop for Queued<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let queued = Queued(&web.queued);
    if web.queued.fetch_add(1, Ordering::SeqCst) >= MAX_HASH_QUEUE {
        return Err(AuthError::RateLimited {
            retry_after: Duration::from_secs(1),
        });
    }
    let charged = Instant::now();
    {
        let mut l = web.limiter.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(retry_after) = l.check(ip, charged, known) {
            return Err(AuthError::RateLimited { retry_after });
        }
        l.failure(ip, charged);
    }
    let permit = web
        .hashing
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| AuthError::Damaged {
            path: "web-admin.json".into(),
            message: e.to_string(),
        })?;
    drop(queued);
    let w = web.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let r = attempt(&w.credentials);
        let mut l = w.limiter.lock().unwrap_or_else(|p| p.into_inner());
        match &r {
            Err(AuthError::WrongPassword | AuthError::WrongSetupCode) => {
                l.confirm(ip, Instant::now())
            }
            Ok(()) => {
                l.refund(ip, charged);
                l.success(ip);
            }
            Err(_) => l.refund(ip, charged),
        }
        r
    })
    .await
    .unwrap_or_else(|e| {
        Err(AuthError::Damaged {
            path: "web-admin.json".into(),
            message: e.to_string(),
        })
    })
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
    if !same_origin(&web.hosts, &headers) {
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
    match limited(&web, peer.ip(), false, move |c| {
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
    if !same_origin(&web.hosts, &headers) {
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
    // A browser that still holds a live session is the resident's: the global budget (which
    // anyone with a few addresses can exhaust) does not hold it back; its own streak does.
    let known = session_token(&headers)
        .and_then(|t| web.sessions.touch(&t, Instant::now()))
        .is_some();
    match limited(&web, peer.ip(), known, move |c| c.verify(&body.password)).await {
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
    if !same_origin(&web.hosts, &headers) || !auth::csrf_ok(&session, given) {
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
    fn origin_must_be_on_the_allowlist_whatever_the_host_says() {
        let p = HostPolicy::web(8080, &["box.home.arpa".to_owned()]);
        let ok = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
        ]);
        assert!(same_origin(&p, &ok));
        let named = headers(&[("origin", "http://box.home.arpa:8080")]);
        assert!(same_origin(&p, &named));
        let evil = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example"),
        ]);
        assert!(!same_origin(&p, &evil));
        // DNS rebinding: Host and Origin agree, and both name the attacker.
        let rebound = headers(&[
            ("host", "evil.example:8080"),
            ("origin", "http://evil.example:8080"),
        ]);
        assert!(!same_origin(&p, &rebound));
        let cross = headers(&[("host", "h"), ("sec-fetch-site", "cross-site")]);
        assert!(!same_origin(&p, &cross));
        // Non-browser clients send no Origin; the CSRF token still guards them.
        assert!(same_origin(&p, &headers(&[("host", "h")])));
    }
}
