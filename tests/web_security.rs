//! The web UI's guard, over plain HTTP against the real daemon: nothing without a session,
//! setup only with the box's setup code and only once, CSRF and Origin checked on every
//! change, only the box's own names answered (no DNS rebinding, on the control API either),
//! login rate-limited even when the client hangs up mid-hash, streams ending with their
//! session, and no camera password in any answer.

use porchlight_testkit as support;
#[path = "web/support.rs"]
mod web;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::json;
use support::camera::{Camera, Codec, Stream};
use support::{camera_toml, Daemon, FAST_INGEST};
use web::{raw_http, setup_code, Client, WEB_TOML};

const PASSWORD: &str = "correct horse battery";

/// Every control route the page uses, with a body for the changes.
fn api_routes() -> Vec<(&'static str, &'static str, Option<serde_json::Value>)> {
    vec![
        ("GET", "/api/v1/status", None),
        ("GET", "/api/v1/cameras", None),
        ("GET", "/api/v1/uplink", None),
        ("GET", "/api/v1/consent", None),
        ("GET", "/api/v1/requests", None),
        ("GET", "/api/v1/audit", None),
        ("GET", "/api/v1/audit/verify", None),
        ("GET", "/api/v1/audit/export?format=csv", None),
        ("GET", "/api/v1/cameras/front/live.mp4", None),
        (
            "GET",
            "/api/v1/export/plan?camera=front&from=0&to=9999999999999",
            None,
        ),
        ("GET", "/api/v1/no-such-route", None),
        (
            "PUT",
            "/api/v1/consent/front",
            Some(json!({"live": "always", "clips": "always"})),
        ),
        ("POST", "/api/v1/pause", None),
        ("POST", "/api/v1/requests/x/approve", None),
        ("POST", "/api/v1/cameras", Some(json!({"id": "evil"}))),
        ("DELETE", "/api/v1/cameras/front", None),
    ]
}

#[test]
fn setup_needs_the_code_is_refused_cross_origin_and_works_only_once() {
    let d = Daemon::start(WEB_TOML);
    let mut c = Client::new(&d);
    let code = setup_code(&d);
    assert_eq!(code.len(), 19, "{code}");
    let code_file = d.data_dir().join("setup-code");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&code_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        d.logs().contains(&code),
        "the setup code is printed at start"
    );

    let st = c.get("/auth/state").json();
    assert_eq!(st["setup_needed"], true);
    assert_eq!(st["authenticated"], false);
    // The page itself carries no data; the API carries nothing without a session.
    let page = c.get("/");
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-security-policy")
        .unwrap()
        .contains("default-src 'none'"));
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    for (m, path, body) in api_routes() {
        let r = c.raw(m, path, body.as_ref(), &[]);
        assert_eq!(r.status, 401, "{m} {path}: {r:?}");
        assert_eq!(r.code(), "unauthorized", "{m} {path}");
    }
    assert_eq!(c.login(PASSWORD).status, 409, "no password before setup");

    // No code, a wrong code, a code from another origin: refused, code kept.
    let r = c.setup("", PASSWORD);
    assert_eq!((r.status, r.code().as_str()), (401, "wrong_setup_code"));
    let r = c.setup("ABCD-EFGH-JKMN-PQRS", PASSWORD);
    assert_eq!((r.status, r.code().as_str()), (401, "wrong_setup_code"));
    let r = c.raw(
        "POST",
        "/auth/setup",
        Some(&json!({"code": code, "password": PASSWORD})),
        &[("Origin", "http://evil.example")],
    );
    assert_eq!(r.status, 403, "{r:?}");
    let r = c.setup(&code, "short");
    assert_eq!((r.status, r.code().as_str()), (400, "weak_password"));
    assert!(code_file.exists(), "a refused setup keeps the code");

    // The right code (typed in lower case) works, logs in, and is consumed.
    let r = c.setup(&code.to_lowercase(), PASSWORD);
    assert_eq!(r.status, 200, "{r:?}");
    let cookie = r.header("set-cookie").unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(!code_file.exists(), "setup consumes the code");
    let admin = d.data_dir().join("web-admin.json");
    let mode = std::fs::metadata(&admin).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let stored = std::fs::read_to_string(&admin).unwrap();
    assert!(
        stored.contains("pbkdf2-sha256") && !stored.contains(PASSWORD),
        "{stored}"
    );
    assert_eq!(c.get("/api/v1/status").status, 200);
    assert_eq!(c.get("/auth/state").json()["authenticated"], true);

    // Once only: the same code again, from a fresh client, is refused.
    let mut other = Client::new(&d);
    let r = other.setup(&code, "another long password");
    assert_eq!((r.status, r.code().as_str()), (409, "already_set_up"));
    assert_eq!(other.login("another long password").status, 401);
    assert_eq!(other.login(PASSWORD).status, 200);
}

#[test]
fn every_change_needs_the_session_csrf_token_and_origin_and_no_password_leaks() {
    let camera_password = "Zq9-camera-secret-77";
    let cam = Camera::builder()
        .stream_config(Stream::new("s", Codec::H264).fps(10).gop(10))
        .auth("admin", camera_password)
        .start();
    let body = format!(
        "{FAST_INGEST}{WEB_TOML}{}",
        camera_toml(
            "front",
            &cam.url("s"),
            &format!("username = \"admin\"\npassword = \"{camera_password}\"\n")
        )
    );
    let d = Daemon::start(&body);
    d.wait_camera("front", Duration::from_secs(60), "streaming", |c| {
        c["state"] == "streaming"
    });
    let mut c = Client::new(&d);
    assert_eq!(c.setup(&setup_code(&d), PASSWORD).status, 200);
    let csrf = c.csrf.clone().unwrap();
    let origin = format!("http://{}", c.host);

    // Without the token, with a wrong one, or cross-origin: 403 and nothing changes.
    let pause = |headers: &[(&str, &str)]| c.raw("POST", "/api/v1/pause", None, headers);
    for (what, r) in [
        ("no token", pause(&[])),
        ("wrong token", pause(&[("X-CSRF-Token", &"0".repeat(64))])),
        (
            "other origin",
            pause(&[("X-CSRF-Token", &csrf), ("Origin", "http://evil.example")]),
        ),
        (
            "cross-site fetch",
            pause(&[("X-CSRF-Token", &csrf), ("Sec-Fetch-Site", "cross-site")]),
        ),
    ] {
        assert_eq!((r.status, r.code().as_str()), (403, "forbidden"), "{what}");
    }
    assert_eq!(c.get("/api/v1/consent").json()["paused"], false);
    let r = c.raw(
        "PUT",
        "/api/v1/consent/front",
        Some(&json!({"live": "always"})),
        &[("Origin", &origin)],
    );
    assert_eq!(r.status, 403);
    assert_eq!(
        c.get("/api/v1/consent").json()["cameras"][0]["rules"]["live"],
        "never"
    );

    // With the session's token from the page's origin, it works.
    let r = c.change("POST", "/api/v1/pause", None);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(c.get("/api/v1/consent").json()["paused"], true);
    assert_eq!(c.change("POST", "/api/v1/resume", None).status, 200);

    // A made-up cookie is no session.
    let mut forged = Client::new(&d);
    forged.cookie = Some("a".repeat(64));
    forged.csrf = Some(csrf.clone());
    assert_eq!(forged.get("/api/v1/status").status, 401);
    assert_eq!(forged.change("POST", "/api/v1/pause", None).status, 401);

    // No camera password in any answer (and none in the logs).
    let mut bodies = Vec::new();
    for path in [
        "/",
        "/app.js",
        "/auth/state",
        "/api/v1/status",
        "/api/v1/cameras",
        "/api/v1/uplink",
        "/api/v1/consent",
        "/api/v1/requests",
        "/api/v1/audit?limit=1000",
        "/api/v1/audit/export?format=csv",
        "/api/v1/audit/export?format=jsonl",
        "/api/v1/discovery",
        "/api/v1/pairing",
    ] {
        let r = c.get(path);
        bodies.push((path.to_owned(), r.body));
    }
    for (path, b) in &bodies {
        assert!(
            !b.contains(camera_password),
            "{path} leaks the camera password: {b}"
        );
    }
    // The live preview works with the session: an fMP4 init segment comes first.
    let (status, head) = c.first_bytes("/api/v1/cameras/front/live.mp4", 8);
    assert_eq!(status, 200);
    assert_eq!(&head[4..8], b"ftyp", "{head:?}");
    assert!(
        !d.logs().contains(camera_password),
        "the logs leak the camera password"
    );

    // Logout needs the token too, then the session is gone.
    assert_eq!(c.raw("POST", "/auth/logout", None, &[]).status, 403);
    assert_eq!(c.change("POST", "/auth/logout", None).status, 200);
    assert_eq!(c.get("/api/v1/status").status, 401);
}

#[test]
fn login_is_rate_limited_per_client() {
    let d = Daemon::start(WEB_TOML);
    let mut c = Client::new(&d);
    assert_eq!(c.setup(&setup_code(&d), PASSWORD).status, 200);
    let mut guesser = Client::new(&d);
    for i in 0..5 {
        let r = guesser.login(&format!("wrong guess {i}"));
        assert_eq!(
            (r.status, r.code().as_str()),
            (401, "wrong_password"),
            "{i}"
        );
    }
    // The sixth attempt is refused before the password is even looked at, right one or not.
    let r = guesser.login(PASSWORD);
    assert_eq!(
        (r.status, r.code().as_str()),
        (429, "too_many_attempts"),
        "{r:?}"
    );
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    std::thread::sleep(Duration::from_secs(wait) + Duration::from_millis(200));
    // A further failure doubles the wait.
    assert_eq!(guesser.login("wrong again").status, 401);
    let r = guesser.login(PASSWORD);
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("2"));
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(guesser.login(PASSWORD).status, 200);
    // The streak is over: a wrong guess is an ordinary 401 again.
    assert_eq!(guesser.login("wrong once more").status, 401);
}

/// The daemon's thread count (`Threads:` in `/proc/PID/status`).
fn threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Threads: in {status}"))
}

#[test]
fn a_rebound_name_is_refused_before_any_route_and_changes_nothing() {
    let d = Daemon::start(&format!("{WEB_TOML}hosts = [\"box.home.arpa\"]\n"));
    let mut c = Client::new(&d);
    let port = c.host.rsplit_once(':').unwrap().1.to_owned();
    let evil = format!("evil.example:{port}");
    let evil_origin = format!("http://{evil}");
    let code = setup_code(&d);

    // Under the attacker's name nothing answers but 421: not the page, not the assets, not
    // the state, not the fallback, not setup with the right code.
    for path in ["/", "/app.js", "/icon.svg", "/auth/state", "/no-such-page"] {
        let r = c.raw_as("GET", path, None, &[("Host", &evil)]);
        assert_eq!(
            (r.status, r.code().as_str()),
            (421, "bad_host"),
            "{path}: {r:?}"
        );
        assert!(r.header("content-security-policy").is_some(), "{path}");
    }
    let rebound = [("Host", evil.as_str()), ("Origin", evil_origin.as_str())];
    let r = c.raw_as(
        "POST",
        "/auth/setup",
        Some(&json!({"code": code, "password": PASSWORD})),
        &rebound,
    );
    assert_eq!((r.status, r.code().as_str()), (421, "bad_host"), "{r:?}");
    assert!(r.header("set-cookie").is_none());
    assert!(d.data_dir().join("setup-code").exists(), "the code is kept");
    // A port other than the listener's is another host too.
    let r = c.raw_as("GET", "/auth/state", None, &[("Host", "127.0.0.1:1")]);
    assert_eq!(r.status, 421, "{r:?}");

    // The box's own names work: the loopback address the client uses, localhost.
    assert_eq!(c.setup(&code, PASSWORD).status, 200);
    let local = format!("localhost:{port}");
    let r = c.raw_as("GET", "/auth/state", None, &[("Host", &local)]);
    assert_eq!(
        (r.status, r.json()["authenticated"].clone()),
        (200, json!(true))
    );

    // Login and a change with a valid session and CSRF token, sent under the attacker's
    // name, are refused; so is the attacker's Origin with the box's Host.
    let r = c.raw_as(
        "POST",
        "/auth/login",
        Some(&json!({"password": PASSWORD})),
        &rebound,
    );
    assert_eq!((r.status, r.code().as_str()), (421, "bad_host"), "{r:?}");
    assert!(r.header("set-cookie").is_none());
    let csrf = c.csrf.clone().unwrap();
    let mut with_csrf = rebound.to_vec();
    with_csrf.push(("X-CSRF-Token", &csrf));
    let r = c.raw_as("POST", "/api/v1/pause", None, &with_csrf);
    assert_eq!((r.status, r.code().as_str()), (421, "bad_host"), "{r:?}");
    let r = c.raw_as(
        "POST",
        "/api/v1/pause",
        None,
        &[
            ("Host", &c.host),
            ("Origin", &evil_origin),
            ("X-CSRF-Token", &csrf),
        ],
    );
    assert_eq!((r.status, r.code().as_str()), (403, "forbidden"), "{r:?}");
    assert_eq!(
        c.get("/api/v1/consent").json()["paused"],
        false,
        "nothing changed"
    );

    // A name from [web] hosts is the box's: Host and Origin both.
    let named = format!("box.home.arpa:{port}");
    let named_origin = format!("http://{named}");
    let r = c.raw_as(
        "POST",
        "/api/v1/pause",
        None,
        &[
            ("Host", &named),
            ("Origin", &named_origin),
            ("X-CSRF-Token", &csrf),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(c.get("/api/v1/consent").json()["paused"], true);

    // The control API answers to loopback only, even with the right bearer token.
    let token = std::fs::read_to_string(d.data_dir().join("api.token")).unwrap();
    let bearer = format!("Bearer {}", token.trim());
    let api = format!("127.0.0.1:{}", d.api_port);
    let api_evil = format!("evil.example:{}", d.api_port);
    for host in ["evil.example", api_evil.as_str(), "porchlight.local"] {
        let r = raw_http(
            &api,
            "GET",
            "/api/v1/status",
            &[("Host", host), ("Authorization", &bearer)],
            "",
        );
        assert_eq!(
            (r.status, r.code().as_str()),
            (421, "bad_host"),
            "{host}: {r:?}"
        );
    }
    let r = raw_http(
        &api,
        "GET",
        "/api/v1/status",
        &[("Host", &api), ("Authorization", &bearer)],
        "",
    );
    assert_eq!(r.status, 200, "{r:?}");
    // The CLI (Host from [api] listen) still works.
    d.cli_ok(&["status"]);
}

#[test]
fn logins_abandoned_mid_hash_still_count_and_hash_one_at_a_time() {
    let d = Daemon::start(WEB_TOML);
    let mut c = Client::new(&d);
    assert_eq!(c.setup(&setup_code(&d), PASSWORD).status, 200);
    let before = threads(d.pid());
    let mut peak = before;
    // Each client sends a whole wrong login, then hangs up while the hash would run.
    for i in 0..20 {
        let mut s = std::net::TcpStream::connect(&c.host).unwrap();
        let body = json!({"password": format!("wrong guess {i}")}).to_string();
        let req = format!(
            "POST /auth/login HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            c.host,
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        drop(s);
        peak = peak.max(threads(d.pid()));
    }
    // The limiter counted them: the next (ordinary) wrong login is refused unhashed.
    let r = Client::new(&d).login("one more wrong guess");
    assert_eq!(
        (r.status, r.code().as_str()),
        (429, "too_many_attempts"),
        "{r:?}"
    );
    assert!(r.header("retry-after").is_some());
    peak = peak.max(threads(d.pid()));
    // One hash at a time: no pile of blocking threads.
    assert!(
        peak <= before + 3,
        "threads grew from {before} to {peak} during abandoned logins"
    );
}

#[test]
fn a_live_preview_ends_when_its_session_logs_out() {
    let cam = Camera::builder()
        .stream_config(Stream::new("s", Codec::H264).fps(10).gop(10))
        .start();
    let body = format!(
        "{FAST_INGEST}{WEB_TOML}{}",
        camera_toml("front", &cam.url("s"), "")
    );
    let d = Daemon::start(&body);
    d.wait_camera("front", Duration::from_secs(60), "streaming", |c| {
        c["state"] == "streaming"
    });
    let mut c = Client::new(&d);
    assert_eq!(c.setup(&setup_code(&d), PASSWORD).status, 200);
    let mut other = Client::new(&d);
    assert_eq!(other.login(PASSWORD).status, 200);

    let open = |c: &Client| {
        let mut s = std::net::TcpStream::connect(&c.host).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let req = format!(
            "GET /api/v1/cameras/front/live.mp4 HTTP/1.1\r\nHost: {}\r\n\
             Cookie: porchlight_session={}\r\n\r\n",
            c.host,
            c.cookie.as_deref().unwrap()
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut head = vec![0u8; 4096];
        let n = s.read(&mut head).unwrap();
        let head = String::from_utf8_lossy(&head[..n]).into_owned();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        s
    };
    let mut mine = open(&c);
    let mut theirs = open(&other);
    let mut buf = vec![0u8; 64 * 1024];
    for s in [&mut mine, &mut theirs] {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the preview streams");
    }

    assert_eq!(c.change("POST", "/auth/logout", None).status, 200);
    // The logged-out session's stream ends (EOF or reset) within seconds, while video keeps
    // coming (10 frames a second) on the other session's.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match mine.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => assert!(
                Instant::now() < deadline,
                "the preview outlived its session's logout"
            ),
        }
    }
    let n = theirs.read(&mut buf).unwrap();
    assert!(n > 0, "another session's preview goes on");
}
