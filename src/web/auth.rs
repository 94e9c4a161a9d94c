//! Who may use the web UI: the admin password, the one-time setup code, sessions with CSRF
//! tokens, and the login rate limiter.
//!
//! # Files (in `data_dir`, both mode 0600, written to a temporary file, fsynced, renamed)
//!
//! - `setup-code`: `XXXX-XXXX-XXXX-XXXX`, 16 characters from `23456789ABCDEFGHJKMNPQRSTVWXYZ`
//!   (no look-alikes; about 78 bits). The appliance's first-boot unit writes it
//!   (`image/units/setup-code`); when it is absent and no password is set, the daemon writes
//!   one the same way and prints it. Setting the password with it deletes it: it works once.
//!   While a password exists, no setup code is accepted.
//! - `web-admin.json`: `{"alg":"pbkdf2-sha256","iterations":N,"salt":hex,"hash":hex}`.
//!   PBKDF2-HMAC-SHA256 from `ring` (already the TLS provider, so no new crypto dependency),
//!   600 000 iterations (OWASP's 2023 figure for this KDF), 16-byte random salt, verified in
//!   constant time by `ring::pbkdf2::verify`. Argon2 would be memory-hard, but would add a
//!   dependency for a password that is also behind a rate limiter on a LAN.
//!
//! # Sessions
//!
//! In memory only (a restart logs everyone out). The cookie carries 32 random bytes (hex); the
//! table is keyed by their SHA-256 so a lookup leaks nothing useful through timing. Each
//! session has its own CSRF token, which every non-GET request must echo in `X-CSRF-Token`.
//! A session ends after `session_idle` without use or `session_max` after login. Each entry
//! holds a `watch` sender its streams subscribe to; the entry leaving the table (logout,
//! expiry) closes them, so a live preview or export ends with its session.
//!
//! # Rate limiting ([`LoginLimiter`], pure: time is passed in)
//!
//! Per client (IPv4 address, or IPv6 /64): 5 free failures, then each attempt must wait
//! 1 s, 2 s, 4 s, … up to 15 min after the previous failure. Globally: at most 30 failures a
//! minute from all clients together, so many addresses cannot guess in parallel; when that is
//! reached every attempt waits (the resident too, as long as someone keeps failing; a client
//! with a live session is exempt). A limited attempt is refused before any hashing. An
//! attempt is charged as a failure *before* its hash runs and refunded when it turns out not
//! to be a guess, so hanging up mid-hash does not escape the count. Setup-code attempts count
//! the same way.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::secret::{constant_time_eq, random_bytes};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// The setup code's alphabet: digits and capitals without 0/O, 1/I/L and U.
pub const SETUP_ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTVWXYZ";
/// PBKDF2 iterations for new passwords.
pub const PBKDF2_ITERATIONS: u32 = 600_000;
/// Shortest admin password accepted.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest admin password accepted (bytes).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Failures a client may make before it has to wait.
const FREE_FAILURES: u32 = 5;
/// Longest wait imposed on one client.
const MAX_CLIENT_DELAY: Duration = Duration::from_secs(15 * 60);
/// Window and size of the global failure budget.
const GLOBAL_WINDOW: Duration = Duration::from_secs(60);
const GLOBAL_MAX_FAILURES: usize = 30;
/// Clients remembered before old entries are pruned.
const MAX_TRACKED_CLIENTS: usize = 4096;

/// Why an authentication step failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The password is already set; setup is over.
    #[error("the admin password is already set; log in instead")]
    AlreadySetUp,
    /// No password yet: set it with the setup code first.
    #[error("no admin password yet: set one with the setup code")]
    NotSetUp,
    /// The setup code is wrong.
    #[error("wrong setup code")]
    WrongSetupCode,
    /// The password is wrong.
    #[error("wrong password")]
    WrongPassword,
    /// The new password is unacceptable.
    #[error("{0}")]
    WeakPassword(String),
    /// Too many failures: try again later.
    #[error("too many failed attempts; try again in {} s", .retry_after.as_millis().div_ceil(1000).max(1))]
    RateLimited {
        /// How long to wait.
        retry_after: Duration,
    },
    /// Reading or writing the password or setup-code file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The password file is damaged.
    #[error("{path} is damaged: {message}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The stored password hash.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct PasswordFile {
    alg: String,
    iterations: u32,
    salt: String,
    hash: String,
}

/// `data_dir/setup-code`.
pub fn setup_code_path(data_dir: &Path) -> PathBuf {
    data_dir.join("setup-code")
}

/// `data_dir/web-admin.json`.
pub fn password_path(data_dir: &Path) -> PathBuf {
    data_dir.join("web-admin.json")
}

pub use crate::secret::random_token;

/// A new setup code, `XXXX-XXXX-XXXX-XXXX`, by rejection sampling (no modulo bias).
pub fn new_setup_code() -> String {
    let n = SETUP_ALPHABET.len();
    let limit = 256 - 256 % n;
    let mut chars = Vec::with_capacity(16);
    while chars.len() < 16 {
        for b in random_bytes::<32>() {
            if (b as usize) < limit && chars.len() < 16 {
                chars.push(SETUP_ALPHABET[b as usize % n]);
            }
        }
    }
    chars
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

/// A setup code as typed (any case, dashes and spaces anywhere) reduced to its characters.
pub fn normalize_code(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Writes `data` to `path` with mode 0600, durably ([`crate::fsutil::write_atomic`]).
fn write_private(path: &Path, data: &[u8]) -> Result<(), AuthError> {
    crate::fsutil::write_atomic(path, data, 0o600).map_err(|e| AuthError::Io {
        path: e.path,
        source: e.source,
    })
}

fn hash_password(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        NonZeroU32::new(iterations.max(1)).expect("at least 1"),
        salt,
        password.as_bytes(),
        &mut out,
    );
    out
}

/// Checks a new password; the message says what to change.
pub fn check_new_password(password: &str) -> Result<(), AuthError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(AuthError::WeakPassword(format!(
            "the password needs at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AuthError::WeakPassword(format!(
            "the password may have at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(())
}

/// The admin password and the setup code, backed by their files.
#[derive(Debug)]
pub struct Credentials {
    data_dir: PathBuf,
    password: Mutex<Option<PasswordFile>>,
}

/// What [`Credentials::open`] found or made.
#[derive(Debug, PartialEq, Eq)]
pub enum SetupState {
    /// A password is set.
    Ready,
    /// No password; the setup code was already in `data_dir/setup-code`.
    AwaitingSetup,
    /// No password; the daemon wrote this new setup code (print it for the resident).
    AwaitingSetupNewCode(String),
}

impl Credentials {
    /// Loads the password file; with no password, makes sure a setup code exists.
    pub fn open(data_dir: &Path) -> Result<(Credentials, SetupState), AuthError> {
        let path = password_path(data_dir);
        let password = match std::fs::read(&path) {
            Ok(bytes) => {
                let p: PasswordFile =
                    serde_json::from_slice(&bytes).map_err(|e| AuthError::Damaged {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                if p.alg != "pbkdf2-sha256" || hex::decode(&p.hash).map(|h| h.len()) != Ok(32) {
                    return Err(AuthError::Damaged {
                        path,
                        message: format!("unknown algorithm {:?} or bad hash", p.alg),
                    });
                }
                Some(p)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(AuthError::Io { path, source }),
        };
        let state = if password.is_some() {
            SetupState::Ready
        } else {
            let code_path = setup_code_path(data_dir);
            let existing = std::fs::read_to_string(&code_path)
                .map(|s| normalize_code(&s))
                .unwrap_or_default();
            if existing.len() >= 16 {
                SetupState::AwaitingSetup
            } else {
                let code = new_setup_code();
                write_private(&code_path, format!("{code}\n").as_bytes())?;
                SetupState::AwaitingSetupNewCode(code)
            }
        };
        Ok((
            Credentials {
                data_dir: data_dir.to_owned(),
                password: Mutex::new(password),
            },
            state,
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<PasswordFile>> {
        self.password.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the admin password is set.
    pub fn is_set_up(&self) -> bool {
        self.lock().is_some()
    }

    /// Sets the first password with the setup code (blocking: hashes and fsyncs), then
    /// deletes the code.
    pub fn setup(&self, code: &str, password: &str) -> Result<(), AuthError> {
        // Held throughout: two setups at once cannot both succeed.
        let mut guard = self.lock();
        if guard.is_some() {
            return Err(AuthError::AlreadySetUp);
        }
        let code_path = setup_code_path(&self.data_dir);
        let expected = match std::fs::read_to_string(&code_path) {
            Ok(s) => normalize_code(&s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(AuthError::Io {
                    path: code_path,
                    source,
                })
            }
        };
        let given = normalize_code(code);
        if expected.len() < 16 || !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            return Err(AuthError::WrongSetupCode);
        }
        check_new_password(password)?;
        let salt = random_bytes::<16>();
        let hash = hash_password(password, &salt, PBKDF2_ITERATIONS);
        let file = PasswordFile {
            alg: "pbkdf2-sha256".into(),
            iterations: PBKDF2_ITERATIONS,
            salt: hex::encode(salt),
            hash: hex::encode(hash),
        };
        let json = serde_json::to_vec(&file).expect("serializable");
        write_private(&password_path(&self.data_dir), &json)?;
        if let Err(source) = std::fs::remove_file(&code_path) {
            if source.kind() != std::io::ErrorKind::NotFound {
                return Err(AuthError::Io {
                    path: code_path,
                    source,
                });
            }
        }
        *guard = Some(file);
        Ok(())
    }

    /// Checks the password (blocking: one PBKDF2 hash).
    pub fn verify(&self, password: &str) -> Result<(), AuthError> {
        let Some(file) = self.lock().clone() else {
            return Err(AuthError::NotSetUp);
        };
        let salt = hex::decode(&file.salt).unwrap_or_default();
        let hash = hex::decode(&file.hash).unwrap_or_default();
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(AuthError::WrongPassword);
        }
        ring::pbkdf2::verify(
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::new(file.iterations.max(1)).expect("at least 1"),
            &salt,
            password.as_bytes(),
            &hash,
        )
        .map_err(|_| AuthError::WrongPassword)
    }
}

/// One logged-in browser.
#[derive(Clone, Debug)]
pub struct Session {
    /// The token every non-GET request must carry in `X-CSRF-Token`.
    pub csrf: String,
    created: Instant,
    last_used: Instant,
}

/// A session in the table, with the channel its streams watch: dropping the sender (the
/// entry leaving the table, for any reason) ends every receiver.
#[derive(Debug)]
struct Entry {
    session: Session,
    ended: watch::Sender<()>,
}

/// The session table.
#[derive(Debug)]
pub struct Sessions {
    idle: Duration,
    max: Duration,
    table: Mutex<HashMap<[u8; 32], Entry>>,
}

fn key(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

impl Sessions {
    /// A table whose sessions end after `idle` unused or `max` after login.
    pub fn new(idle: Duration, max: Duration) -> Self {
        Sessions {
            idle,
            max,
            table: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a session; returns the cookie token and the session.
    pub fn create(&self, now: Instant) -> (String, Session) {
        let token = random_token();
        let s = Session {
            csrf: random_token(),
            created: now,
            last_used: now,
        };
        let mut t = self.lock();
        let (idle, max) = (self.idle, self.max);
        t.retain(|_, e| !expired(&e.session, now, idle, max));
        let (ended, _) = watch::channel(());
        t.insert(
            key(&token),
            Entry {
                session: s.clone(),
                ended,
            },
        );
        (token, s)
    }

    /// The live session for this cookie token, marked as used now.
    pub fn touch(&self, token: &str, now: Instant) -> Option<Session> {
        let mut t = self.lock();
        let k = key(token);
        let e = t.get_mut(&k)?;
        if expired(&e.session, now, self.idle, self.max) {
            t.remove(&k);
            return None;
        }
        e.session.last_used = now;
        Some(e.session.clone())
    }

    /// A receiver that closes (`changed()` fails) when this session leaves the table: logout,
    /// or expiry noticed by [`Sessions::ends_at`], [`Sessions::touch`] or a later login.
    pub fn subscribe(&self, token: &str) -> Option<watch::Receiver<()>> {
        self.lock().get(&key(token)).map(|e| e.ended.subscribe())
    }

    /// When this session ends if nobody uses it from now on; `None` (and the session removed)
    /// when it has already ended. Does not count as a use.
    pub fn ends_at(&self, token: &str, now: Instant) -> Option<Instant> {
        let mut t = self.lock();
        let k = key(token);
        let e = t.get(&k)?;
        if expired(&e.session, now, self.idle, self.max) {
            t.remove(&k);
            return None;
        }
        Some((e.session.last_used + self.idle).min(e.session.created + self.max))
    }

    /// Ends the session (logout); its streams end with it.
    pub fn remove(&self, token: &str) {
        self.lock().remove(&key(token));
    }

    /// Number of live and not yet pruned sessions.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there is no session.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn expired(s: &Session, now: Instant, idle: Duration, max: Duration) -> bool {
    now.saturating_duration_since(s.last_used) >= idle
        || now.saturating_duration_since(s.created) >= max
}

/// Whether the CSRF token a request carries is the session's.
pub fn csrf_ok(session: &Session, given: &str) -> bool {
    constant_time_eq(session.csrf.as_bytes(), given.as_bytes())
}

/// The rate-limiting key of a client: the IPv4 address, or the /64 of an IPv6 address (one
/// home or device usually holds a whole /64).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[derive(Clone, Copy, Debug)]
struct Failures {
    count: u32,
    last: Instant,
}

/// Login and setup attempt limiter: per-client exponential backoff plus a global budget.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    clients: HashMap<IpAddr, Failures>,
    global: VecDeque<Instant>,
}

impl LoginLimiter {
    /// Whether `ip` may try now; `Err(wait)` when it must wait. A `known` client (one that
    /// presents a valid session) is not held back by the global budget, only by its own
    /// streak.
    pub fn check(&mut self, ip: IpAddr, now: Instant, known: bool) -> Result<(), Duration> {
        while self
            .global
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= GLOBAL_WINDOW)
        {
            self.global.pop_front();
        }
        let mut wait = Duration::ZERO;
        if !known && self.global.len() >= GLOBAL_MAX_FAILURES {
            let oldest = *self.global.front().expect("non-empty");
            wait = (oldest + GLOBAL_WINDOW).saturating_duration_since(now);
        }
        if let Some(f) = self.clients.get(&client_key(ip)) {
            if f.count >= FREE_FAILURES {
                let exp = (f.count - FREE_FAILURES).min(20);
                let delay = Duration::from_secs(1u64 << exp).min(MAX_CLIENT_DELAY);
                wait = wait.max((f.last + delay).saturating_duration_since(now));
            }
        }
        if wait.is_zero() {
            Ok(())
        } else {
            Err(wait)
        }
    }

    /// Records a failed attempt.
    pub fn failure(&mut self, ip: IpAddr, now: Instant) {
        if self.clients.len() >= MAX_TRACKED_CLIENTS {
            self.clients
                .retain(|_, f| now.saturating_duration_since(f.last) < MAX_CLIENT_DELAY);
        }
        let f = self.clients.entry(client_key(ip)).or_insert(Failures {
            count: 0,
            last: now,
        });
        f.count = f.count.saturating_add(1);
        f.last = now;
        self.global.push_back(now);
        if self.global.len() > GLOBAL_MAX_FAILURES * 2 {
            self.global.pop_front();
        }
    }

    /// A successful attempt clears the client's failures (not the global budget).
    pub fn success(&mut self, ip: IpAddr) {
        self.clients.remove(&client_key(ip));
    }

    /// A failure charged before its hash ran is confirmed at `now`: the client's wait runs
    /// from the answer, as if the failure had been recorded only then (a hash takes a second
    /// or more on the box, longer than the first waits).
    pub fn confirm(&mut self, ip: IpAddr, now: Instant) {
        if let Some(f) = self.clients.get_mut(&client_key(ip)) {
            f.last = f.last.max(now);
        }
    }

    /// Takes back a failure charged with [`LoginLimiter::failure`] at `at` for an attempt
    /// that turned out not to be a guess (it succeeded, or failed for another reason). The
    /// client's last-failure time stays: a refund never shortens a running wait.
    pub fn refund(&mut self, ip: IpAddr, at: Instant) {
        if let Some(f) = self.clients.get_mut(&client_key(ip)) {
            f.count = f.count.saturating_sub(1);
            if f.count == 0 {
                self.clients.remove(&client_key(ip));
            }
        }
        if let Some(i) = self.global.iter().rposition(|t| *t == at) {
            self.global.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn setup_codes_have_the_image_format() {
        for _ in 0..50 {
            let c = new_setup_code();
            assert_eq!(c.len(), 19, "{c}");
            let parts: Vec<&str> = c.split('-').collect();
            assert_eq!(parts.len(), 4);
            assert!(c.bytes().all(|b| b == b'-' || SETUP_ALPHABET.contains(&b)));
        }
        assert_eq!(normalize_code(" abcd-efgh ijkm\n"), "ABCDEFGHIJKM");
    }

    #[test]
    fn five_failures_are_free_then_the_wait_doubles() {
        let mut l = LoginLimiter::default();
        let t0 = Instant::now();
        let a = ip("192.0.2.7");
        for i in 0..5 {
            assert!(l.check(a, t0, false).is_ok(), "attempt {i}");
            l.failure(a, t0);
        }
        assert_eq!(l.check(a, t0, false), Err(Duration::from_secs(1)));
        assert!(l.check(a, t0 + Duration::from_secs(1), false).is_ok());
        l.failure(a, t0 + Duration::from_secs(1));
        assert_eq!(
            l.check(a, t0 + Duration::from_secs(1), false),
            Err(Duration::from_secs(2))
        );
        // Another client is not affected; success clears the client.
        assert!(l.check(ip("192.0.2.8"), t0, false).is_ok());
        l.success(a);
        assert!(l.check(a, t0 + Duration::from_secs(1), false).is_ok());
    }

    #[test]
    fn client_wait_is_capped() {
        let mut l = LoginLimiter::default();
        let t0 = Instant::now();
        let a = ip("192.0.2.7");
        for _ in 0..100 {
            l.failure(a, t0);
        }
        let wait = l.check(a, t0, false).unwrap_err();
        assert!(wait <= MAX_CLIENT_DELAY, "{wait:?}");
    }

    #[test]
    fn many_addresses_exhaust_the_global_budget_for_a_minute() {
        let mut l = LoginLimiter::default();
        let t0 = Instant::now();
        for i in 0..GLOBAL_MAX_FAILURES {
            let a = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, (i / 250) as u8, i as u8));
            assert!(l.check(a, t0, false).is_ok());
            l.failure(a, t0);
        }
        let fresh = ip("198.51.100.1");
        assert_eq!(l.check(fresh, t0, false), Err(GLOBAL_WINDOW));
        assert!(l.check(fresh, t0 + GLOBAL_WINDOW, false).is_ok());
        // A client with a valid session is held back only by its own streak.
        assert!(l.check(fresh, t0, true).is_ok());
    }

    #[test]
    fn a_refund_takes_back_one_charged_failure() {
        let mut l = LoginLimiter::default();
        let t0 = Instant::now();
        let a = ip("192.0.2.7");
        for i in 0..4 {
            l.failure(a, t0 + Duration::from_millis(i));
        }
        // The fifth attempt is charged before it runs: a sixth would have to wait.
        let t4 = t0 + Duration::from_millis(4);
        l.failure(a, t4);
        assert!(l.check(a, t4, false).is_err());
        // It was no guess after all: the sixth may go at once.
        l.refund(a, t4);
        assert!(l.check(a, t4, false).is_ok());
        assert_eq!(l.global.len(), 4);
        for i in 0..4 {
            l.refund(a, t0 + Duration::from_millis(i));
        }
        assert!(l.clients.is_empty() && l.global.is_empty());
        // Confirming a failure moves the client's wait to the answer.
        l.failure(a, t0);
        for _ in 0..4 {
            l.failure(a, t0);
        }
        l.confirm(a, t0 + Duration::from_secs(3));
        assert_eq!(
            l.check(a, t0 + Duration::from_secs(3), false),
            Err(Duration::from_secs(1))
        );
    }

    #[test]
    fn ipv6_clients_are_limited_per_64() {
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa::1")),
            client_key(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_eq!(client_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn sessions_end_when_idle_or_too_old() {
        let s = Sessions::new(Duration::from_secs(60), Duration::from_secs(300));
        let t0 = Instant::now();
        let (tok, sess) = s.create(t0);
        assert_eq!(s.touch(&tok, t0).unwrap().csrf, sess.csrf);
        assert!(s.touch("nope", t0).is_none());
        // Used every 50 s it stays alive until the absolute limit.
        let mut t = t0;
        for _ in 0..5 {
            t += Duration::from_secs(50);
            assert!(s.touch(&tok, t).is_some());
        }
        t += Duration::from_secs(50);
        assert!(s.touch(&tok, t).is_none(), "past session_max");
        let (tok2, _) = s.create(t);
        assert!(
            s.touch(&tok2, t + Duration::from_secs(61)).is_none(),
            "idle"
        );
        let (tok3, _) = s.create(t);
        s.remove(&tok3);
        assert!(s.touch(&tok3, t).is_none(), "logged out");
    }

    #[test]
    fn a_sessions_streams_hear_when_it_ends() {
        let s = Sessions::new(Duration::from_secs(60), Duration::from_secs(300));
        let t0 = Instant::now();
        let (tok, _) = s.create(t0);
        let rx = s.subscribe(&tok).unwrap();
        assert!(rx.has_changed().is_ok(), "open while the session lives");
        assert_eq!(s.ends_at(&tok, t0), Some(t0 + Duration::from_secs(60)));
        s.remove(&tok);
        assert!(rx.has_changed().is_err(), "closed at logout");
        assert!(s.subscribe(&tok).is_none());

        let (tok, _) = s.create(t0);
        let rx = s.subscribe(&tok).unwrap();
        let later = t0 + Duration::from_secs(290);
        let mut t = t0;
        while t < later {
            t += Duration::from_secs(50);
            s.touch(&tok, t.min(later));
        }
        assert_eq!(s.ends_at(&tok, later), Some(t0 + Duration::from_secs(300)));
        assert_eq!(s.ends_at(&tok, t0 + Duration::from_secs(300)), None);
        assert!(rx.has_changed().is_err(), "closed at expiry");
    }

    #[test]
    fn setup_needs_the_code_works_once_and_then_the_password_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let (c, state) = Credentials::open(dir.path()).unwrap();
        let SetupState::AwaitingSetupNewCode(code) = state else {
            panic!("{state:?}")
        };
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(setup_code_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            c.setup("AAAA-AAAA-AAAA-AAAA", "long enough pw"),
            Err(AuthError::WrongSetupCode)
        ));
        assert!(matches!(
            c.setup("", "long enough pw"),
            Err(AuthError::WrongSetupCode)
        ));
        assert!(matches!(
            c.setup(&code, "short"),
            Err(AuthError::WeakPassword(_))
        ));
        c.setup(&code.to_lowercase(), "long enough pw").unwrap();
        assert!(!setup_code_path(dir.path()).exists(), "code consumed");
        assert!(matches!(
            c.setup(&code, "another password"),
            Err(AuthError::AlreadySetUp)
        ));
        c.verify("long enough pw").unwrap();
        assert!(matches!(
            c.verify("long enough pX"),
            Err(AuthError::WrongPassword)
        ));
        let text = std::fs::read_to_string(password_path(dir.path())).unwrap();
        assert!(!text.contains("long enough"), "{text}");
        // Reopened: set up, no new code written.
        let (c2, state) = Credentials::open(dir.path()).unwrap();
        assert_eq!(state, SetupState::Ready);
        assert!(!setup_code_path(dir.path()).exists());
        c2.verify("long enough pw").unwrap();
    }

    #[test]
    fn an_existing_setup_code_file_is_used_as_is() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(setup_code_path(dir.path()), "ABCD-EFGH-JKMN-PQRS\n").unwrap();
        let (c, state) = Credentials::open(dir.path()).unwrap();
        assert_eq!(state, SetupState::AwaitingSetup);
        c.setup("abcdefghjkmnpqrs", "long enough pw").unwrap();
    }
}
