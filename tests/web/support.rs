//! Plain-HTTP client for the web UI's listener, shared by `tests/web_*.rs`: finds the port the
//! daemon bound (`{data_dir}/web.addr`), keeps the session cookie and CSRF token by hand (no
//! cookie jar: the tests look at every header).
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::Daemon;

/// The `[web]` table every web test adds: loopback, port chosen by the kernel.
pub const WEB_TOML: &str = "[web]\nlisten = \"127.0.0.1:0\"\n";

/// One HTTP answer.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    /// The first header of that name (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (panics with the body otherwise).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The `error.code` of an error body.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// A browser-less client of the web listener.
pub struct Client {
    pub base: String,
    pub host: String,
    pub cookie: Option<String>,
    pub csrf: Option<String>,
    agent: ureq::Agent,
}

/// The web listener's address, once the daemon wrote it.
pub fn web_addr(data_dir: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(a) = std::fs::read_to_string(data_dir.join("web.addr")) {
            if !a.trim().is_empty() {
                return a.trim().to_owned();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no web.addr in {}",
            data_dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The setup code the daemon wrote (or the image would have).
pub fn setup_code(d: &Daemon) -> String {
    std::fs::read_to_string(d.data_dir().join("setup-code"))
        .expect("setup-code file")
        .trim()
        .to_owned()
}

impl Client {
    pub fn new(d: &Daemon) -> Client {
        let host = web_addr(&d.data_dir());
        Client {
            base: format!("http://{host}"),
            host,
            cookie: None,
            csrf: None,
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(60)))
                .build()
                .new_agent(),
        }
    }

    /// A request with the session cookie (if any) and these extra headers; the CSRF header
    /// is NOT added automatically (see [`Client::change`]).
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let url = format!("{}{path}", self.base);
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(c) = &self.cookie {
            req = req.header("Cookie", format!("porchlight_session={c}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = match body {
            Some(b) => {
                let req = req
                    .header("Content-Type", "application/json")
                    .body(serde_json::to_string(b).unwrap())
                    .unwrap();
                self.agent.run(req)
            }
            None => self.agent.run(req.body(()).unwrap()),
        }
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let body = resp.into_body().read_to_string().unwrap_or_default();
        Resp {
            status,
            headers,
            body,
        }
    }

    /// The status and first `n` bytes of a streamed answer (a live feed never ends).
    pub fn first_bytes(&self, path: &str, n: usize) -> (u16, Vec<u8>) {
        use std::io::Read;
        let mut req = ureq::http::Request::builder()
            .method("GET")
            .uri(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header("Cookie", format!("porchlight_session={c}"));
        }
        let resp = self
            .agent
            .run(req.body(()).unwrap())
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = resp.status().as_u16();
        let mut buf = vec![0u8; n];
        let mut reader = resp.into_body().into_reader();
        reader.read_exact(&mut buf).expect("first bytes");
        (status, buf)
    }

    pub fn get(&self, path: &str) -> Resp {
        self.raw("GET", path, None, &[])
    }

    /// A state-changing request as the page makes it: same Origin, the session's CSRF token.
    pub fn change(&self, method: &str, path: &str, body: Option<&serde_json::Value>) -> Resp {
        let origin = format!("http://{}", self.host);
        let csrf = self.csrf.clone().unwrap_or_default();
        self.raw(
            method,
            path,
            body,
            &[("Origin", &origin), ("X-CSRF-Token", &csrf)],
        )
    }

    /// Keeps the session from a setup or login answer.
    pub fn keep_session(&mut self, r: &Resp) {
        let set = r.header("set-cookie").expect("Set-Cookie");
        let token = set
            .split(';')
            .next()
            .and_then(|kv| kv.trim().strip_prefix("porchlight_session="))
            .expect("session cookie");
        self.cookie = Some(token.to_owned());
        self.csrf = r.json()["csrf"].as_str().map(str::to_owned);
    }

    /// Sets the first password with the setup code and keeps the session.
    pub fn setup(&mut self, code: &str, password: &str) -> Resp {
        let r = self.raw(
            "POST",
            "/auth/setup",
            Some(&serde_json::json!({"code": code, "password": password})),
            &[],
        );
        if r.status == 200 {
            self.keep_session(&r);
        }
        r
    }

    /// Logs in and keeps the session.
    pub fn login(&mut self, password: &str) -> Resp {
        let r = self.raw(
            "POST",
            "/auth/login",
            Some(&serde_json::json!({"password": password})),
            &[],
        );
        if r.status == 200 {
            self.keep_session(&r);
        }
        r
    }
}

/// One request written by hand on a fresh connection (`Connection: close`), so a test can set
/// any `Host` it likes (HTTP clients derive it from the URL). `headers` are sent as given.
pub fn raw_http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Resp {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Resp {
        status,
        headers,
        body: body.to_owned(),
    }
}

impl Client {
    /// [`raw_http`] to this client's listener with its session cookie and these headers
    /// (which should include `Host`).
    pub fn raw_as(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let cookie = self
            .cookie
            .as_ref()
            .map(|c| format!("porchlight_session={c}"));
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(c) = &cookie {
            all.push(("Cookie", c));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        raw_http(&self.host, method, path, &all, &body)
    }
}
