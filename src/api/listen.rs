//! Connection budgets for the daemon's HTTP listeners (the web UI on the LAN, the control API
//! on loopback), so that nothing reachable without a password can starve recording.
//!
//! Every listener serves through [`serve`], which:
//! - admits at most [`Budget::total`] connections at once, and [`Budget::per_ip`] from one
//!   address; beyond that a new connection is closed at once (never queued) and counted in
//!   [`ListenerStats::shed`];
//! - closes a connection whose request head has not arrived within [`HEAD_TIMEOUT`] (hyper's
//!   header read timeout: slowloris), and one that has been silent both ways for
//!   [`IDLE_TIMEOUT`] (idle keep-alive);
//! - backs off when `accept` fails for lack of descriptors (`EMFILE`/`ENFILE`) instead of
//!   spinning, and says so with the OS cause.
//!
//! The budgets are sized from the descriptors the process may hold ([`raise_nofile_limit`] at
//! start, then [`Budgets::for_limit`]): a reserve for the store, the camera sessions, the city
//! link and discovery is kept first, and the listeners share what remains (`docs/reliability.md`).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tower_service::Service;
use tracing::{debug, warn};

use crate::shutdown::Shutdown;

/// A request head (request line and headers) must arrive within this.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection silent both ways this long is closed (idle keep-alive, a stalled client).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Descriptors kept for everything but the listeners: the store and sled (about 16), the
/// city link, discovery sockets, the systemd notify socket and spare (48 together), and per
/// camera 8 (the RTSP session with its RTP/RTCP sockets over UDP, the segment being written,
/// a reconnect overlapping a closing session).
pub fn reserve(cameras: usize) -> u64 {
    64 + 8 * cameras as u64
}

/// How many connections one listener admits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Budget {
    /// At once, in total.
    pub total: usize,
    /// At once, from one address.
    pub per_ip: usize,
}

/// The budgets of both listeners.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Budgets {
    /// The web UI (LAN).
    pub web: Budget,
    /// The control API (loopback).
    pub api: Budget,
}

impl Budgets {
    /// Budgets for a process that may hold `nofile` descriptors with `cameras` cameras
    /// configured: the reserve first, then the web UI gets up to 256 (32 from one address)
    /// and the control API up to 64, scaled down together when descriptors are short.
    pub fn for_limit(nofile: u64, cameras: usize) -> Budgets {
        let spare = nofile.saturating_sub(reserve(cameras));
        // web : api = 4 : 1 of what is spare, within the defaults, at least a few each.
        let web_total = (spare * 4 / 5).clamp(8, 256) as usize;
        let api_total = (spare / 5).clamp(4, 64) as usize;
        Budgets {
            web: Budget {
                total: web_total,
                per_ip: web_total.min(32),
            },
            api: Budget {
                total: api_total,
                per_ip: api_total,
            },
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (the appliance's unit sets the hard limit
/// with `LimitNOFILE`), at most 65,536; returns the soft limit in force afterwards.
pub fn raise_nofile_limit() -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; setrlimit only reads it.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 1024;
        }
        // An unlimited hard limit cannot be the soft one for descriptors (the kernel's
        // nr_open caps it): ask for plenty instead.
        let target = rl.rlim_max.min(65_536);
        if rl.rlim_cur < target {
            let want = libc::rlimit {
                rlim_cur: target,
                rlim_max: rl.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                rl.rlim_cur = target;
            }
        }
    }
    // rlim_t is 32 bits on armv7, 64 on aarch64 and x86_64.
    #[allow(clippy::useless_conversion)]
    u64::from(rl.rlim_cur)
}

/// Both listeners' budgets and counters, shared with the status route.
#[derive(Debug)]
pub struct Listeners {
    /// The budgets in force.
    pub budgets: Budgets,
    /// The soft descriptor limit they were sized for.
    pub nofile: u64,
    /// The web UI's counters.
    pub web: Arc<ListenerStats>,
    /// The control API's counters.
    pub api: Arc<ListenerStats>,
}

/// `status`'s view of the listeners.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ListenersReport {
    /// The soft descriptor limit.
    pub nofile: u64,
    /// The web UI.
    pub web: ListenerReport,
    /// The control API.
    pub api: ListenerReport,
}

impl Listeners {
    /// Budgets for `nofile` descriptors and `cameras` cameras, counters at zero.
    pub fn new(nofile: u64, cameras: usize) -> Listeners {
        Listeners {
            budgets: Budgets::for_limit(nofile, cameras),
            nofile,
            web: Arc::default(),
            api: Arc::default(),
        }
    }

    /// A snapshot.
    pub fn report(&self) -> ListenersReport {
        ListenersReport {
            nofile: self.nofile,
            web: self.web.report(self.budgets.web),
            api: self.api.report(self.budgets.api),
        }
    }
}

/// What a listener has admitted and shed, for `status` and the logs.
#[derive(Debug, Default, Serialize)]
pub struct ListenerStats {
    /// Connections open now.
    pub open: AtomicUsize,
    /// Connections admitted since start.
    pub accepted: AtomicU64,
    /// Connections closed at once because a budget was full.
    pub shed: AtomicU64,
    /// `accept` failures for lack of descriptors.
    pub out_of_descriptors: AtomicU64,
}

/// A snapshot of [`ListenerStats`] with its budget.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ListenerReport {
    /// Connections open now.
    pub open: usize,
    /// Budget: at once in total.
    pub total: usize,
    /// Budget: at once from one address.
    pub per_ip: usize,
    /// Admitted since start.
    pub accepted: u64,
    /// Closed at once because a budget was full.
    pub shed: u64,
    /// `accept` failed for lack of descriptors.
    pub out_of_descriptors: u64,
}

impl ListenerStats {
    /// A snapshot with `budget`.
    pub fn report(&self, budget: Budget) -> ListenerReport {
        ListenerReport {
            open: self.open.load(Ordering::Relaxed),
            total: budget.total,
            per_ip: budget.per_ip,
            accepted: self.accepted.load(Ordering::Relaxed),
            shed: self.shed.load(Ordering::Relaxed),
            out_of_descriptors: self.out_of_descriptors.load(Ordering::Relaxed),
        }
    }
}

/// The admission bookkeeping of one listener.
struct Admission {
    budget: Budget,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    stats: Arc<ListenerStats>,
}

/// An admitted connection's place in the budget; freed on drop.
struct Slot {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Admission {
    fn try_admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let open = self.stats.open.load(Ordering::Relaxed);
        let from_ip = per_ip.get(&ip).copied().unwrap_or(0);
        if open >= self.budget.total || from_ip >= self.budget.per_ip {
            return None;
        }
        *per_ip.entry(ip).or_default() += 1;
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            admission: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut per_ip = self
            .admission
            .per_ip
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
        self.admission.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A TCP stream that holds its budget slot and ends when silent both ways for too long.
struct Budgeted {
    io: TcpStream,
    _slot: Slot,
    idle: Duration,
    last: Instant,
    timer: Pin<Box<Sleep>>,
}

impl Budgeted {
    fn new(io: TcpStream, slot: Slot, idle: Duration) -> Budgeted {
        Budgeted {
            io,
            _slot: slot,
            idle,
            last: Instant::now(),
            timer: Box::pin(tokio::time::sleep(idle)),
        }
    }

    /// `Err` once the connection has been idle too long; otherwise keeps the timer armed.
    fn check_idle(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        while self.timer.as_mut().poll(cx).is_ready() {
            let deadline = self.last + self.idle;
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection idle too long",
                ));
            }
            self.timer.as_mut().reset(deadline);
        }
        Ok(())
    }
}

impl AsyncRead for Budgeted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.last = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.check_idle(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
        }
    }
}

impl AsyncWrite for Budgeted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.last = Instant::now();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.last = Instant::now();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Whether an `accept` error means the process (or system) is out of descriptors.
fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// Serves `router` on `listener` within `budget` until `shutdown`; the peer address is
/// available to handlers as `ConnectInfo<SocketAddr>`. `name` names the listener in logs.
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    router: Router,
    budget: Budget,
    stats: Arc<ListenerStats>,
    shutdown: Shutdown,
) -> io::Result<()> {
    let admission = Arc::new(Admission {
        budget,
        per_ip: Mutex::new(HashMap::new()),
        stats: stats.clone(),
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .keep_alive(true);
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = shutdown.wait() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) if out_of_descriptors(&e) => {
                    stats.out_of_descriptors.fetch_add(1, Ordering::Relaxed);
                    warn!(listener = name, error = %e, "Cannot accept a connection: out of descriptors; pausing accepts");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
                Err(e) => {
                    debug!(listener = name, error = %e, "Accept failed");
                    continue;
                }
            },
        };
        let Some(slot) = admission.try_admit(peer.ip()) else {
            // Closed at once: a full budget never queues.
            let shed = stats.shed.fetch_add(1, Ordering::Relaxed) + 1;
            if shed.is_power_of_two() {
                warn!(listener = name, peer = %peer.ip(), shed, total = budget.total, per_ip = budget.per_ip, "Connection budget full; closing new connections");
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(Budgeted::new(stream, slot, IDLE_TIMEOUT));
        let router = router.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let mut router = router.clone();
                async move { router.call(req.map(axum::body::Body::new)).await }
            });
        let builder = builder.clone();
        let conn = builder
            .serve_connection_with_upgrades(io, service)
            .into_owned();
        let watched = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = watched.await {
                debug!(listener = name, error = %e, "Connection ended with an error");
            }
        });
    }
    drop(listener);
    // In-flight requests get a moment to finish; long streams are cut.
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_keep_the_reserve_and_scale_down_when_descriptors_are_short() {
        let roomy = Budgets::for_limit(65_536, 4);
        assert_eq!(
            roomy.web,
            Budget {
                total: 256,
                per_ip: 32
            }
        );
        assert_eq!(
            roomy.api,
            Budget {
                total: 64,
                per_ip: 64
            }
        );
        // The appliance's default soft limit, sixteen cameras: the reserve comes first.
        let tight = Budgets::for_limit(1024, 16);
        let spare = 1024 - reserve(16);
        assert!(tight.web.total as u64 + tight.api.total as u64 <= spare);
        assert!(tight.web.total >= 8 && tight.api.total >= 4);
        // Nothing spare at all: a few connections each, still.
        let none = Budgets::for_limit(32, 16);
        assert_eq!((none.web.total, none.api.total), (8, 4));
    }

    #[test]
    fn admission_counts_per_address_and_frees_on_drop() {
        let stats = Arc::new(ListenerStats::default());
        let a = Arc::new(Admission {
            budget: Budget {
                total: 3,
                per_ip: 2,
            },
            per_ip: Mutex::new(HashMap::new()),
            stats: stats.clone(),
        });
        let x: IpAddr = "192.0.2.1".parse().unwrap();
        let y: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = a.try_admit(x).unwrap();
        let _s2 = a.try_admit(x).unwrap();
        assert!(a.try_admit(x).is_none(), "per-address cap");
        let _s3 = a.try_admit(y).unwrap();
        assert!(a.try_admit(y).is_none(), "total cap");
        drop(s1);
        let s4 = a.try_admit(y);
        assert!(s4.is_some(), "a freed slot is reusable");
        assert_eq!(stats.open.load(Ordering::Relaxed), 3);
        drop(s4);
        assert_eq!(stats.open.load(Ordering::Relaxed), 2);
    }
}
