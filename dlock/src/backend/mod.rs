//! The [`Backend`] trait: what a lock service must do, and nothing more.
//!
//! Four methods, each implemented fully by every backend:
//!
//! | method | does |
//! |---|---|
//! | [`Backend::acquire`] | take `key` as `kind` (a mutex, a read or write hold, a semaphore permit) for `token` with a lease of `ttl`, waiting for release notices until `deadline`; returns the fence |
//! | [`Backend::release`] | token-checked delete; `false` when the hold is not (any more) ours |
//! | [`Backend::extend`] | token-checked move of the lease to `ttl` from now; `false` when not ours |
//! | [`Backend::name`] | a short name for errors and tracing |
//! | [`Backend::close`] | closes connections at [`Locker::close`](crate::Locker::close) (default: nothing) |
//! | [`Backend::inspect`] | the holder of `key`: owner, fence, time left (default: unsupported) |
//! | [`Backend::list`] | every held lock whose key starts with a prefix, at a bounded cost (default: unsupported) |
//! | [`Backend::force_release`] | removes whoever holds `key`, waking waiters as a release does (default: unsupported) |
//!
//! Waiting lives inside `acquire` because how a waiter learns of a release is what distinguishes
//! backends: Redis must subscribe *before* the attempt that fails, ZooKeeper's queue entry *is* the
//! attempt (a sequential node watched by its successor), MySQL waits for a `GET_LOCK` turn that
//! only says who tries the row next.
//! None of these fit "try, then sleep" driven from the outside, so the locker leaves the whole
//! wait to the backend and keeps only what is common: tokens, leases, guards and cancellation.
//!
//! Read-write locks and semaphores are the same three methods with another [`Kind`]: a hold is
//! a hold, with its own token and lease, whatever rule decides when it is granted. Each kind
//! has its own key space (`lock("a")`, `read_lock("a")` and `semaphore("a", 3)` are three
//! different locks). A backend that cannot offer a kind soundly answers
//! [`Error::Unsupported`](crate::Error::Unsupported) from `acquire` ([`Kind::unsupported`]).

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

pub use crate::inspect::{token_parts, LockInfo};
use crate::Result;

#[cfg(any(feature = "mysql", feature = "postgres", feature = "zookeeper"))]
mod digest;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod memory;
#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "redlock")]
pub mod redlock;
#[cfg_attr(
    not(any(
        feature = "redis",
        feature = "mysql",
        feature = "postgres",
        feature = "zookeeper",
        feature = "etcd"
    )),
    allow(dead_code)
)]
pub(crate) mod tls;
pub(crate) mod url_params;
#[cfg(feature = "mysql")]
pub(crate) mod waiters;
#[cfg(feature = "zookeeper")]
pub mod zookeeper;

/// A boxed, `Send` future: the return type of [`Backend`] methods (keeps the trait object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What kind of hold an acquire asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// A mutex: one holder ([`Locker::lock`](crate::Locker::lock), and leader election).
    Exclusive,
    /// A shared hold of a read-write lock: any number of readers, no writer.
    Read,
    /// The exclusive hold of a read-write lock: no reader, no other writer. Its fence grows
    /// across writers; readers see the fence of the last write.
    Write,
    /// One of `permits` permits of a semaphore; every holder of a key names the same count.
    Permit(u32),
}

impl Kind {
    /// A short name for errors and tracing: `"lock"`, `"read_lock"`, `"write_lock"`,
    /// `"semaphore"`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Exclusive => "lock",
            Kind::Read => "read_lock",
            Kind::Write => "write_lock",
            Kind::Permit(_) => "semaphore",
        }
    }

    /// Which key space the kind lives in: read and write holds share one (they exclude each
    /// other); a mutex and a semaphore each have their own.
    pub fn space(self) -> Space {
        match self {
            Kind::Exclusive => Space::Mutex,
            Kind::Read | Kind::Write => Space::ReadWrite,
            Kind::Permit(_) => Space::Semaphore,
        }
    }

    /// The error a backend answers for a kind it does not offer, naming the backends that do.
    pub fn unsupported(self, backend: &'static str) -> crate::Error {
        crate::Error::Unsupported {
            backend,
            what: format!(
                "`{}` (offered by: {}; {backend} cannot give it soundly)",
                self.name(),
                match self.space() {
                    Space::Mutex => "every backend",
                    Space::ReadWrite | Space::Semaphore => READ_WRITE_AND_SEMAPHORE_BACKENDS,
                }
            ),
        }
    }
}

/// The error a backend answers when a [`Kind::Permit`] request names another count than the
/// semaphore's current holders (`held`: the count they use, when the backend knows it).
pub fn permit_mismatch(asked: u32, held: Option<u32>) -> crate::Error {
    let held = held.map_or("another number of".to_owned(), |n| n.to_string());
    crate::Error::InvalidArgument {
        reason: format!(
            "this semaphore is held with {held} permits, the request names {asked}; every holder \
             of a semaphore must name the same number of permits"
        ),
    }
}

/// The backends that offer read-write locks and semaphores (for [`Kind::unsupported`]).
pub const READ_WRITE_AND_SEMAPHORE_BACKENDS: &str =
    "memory, redis, postgres, mysql, zookeeper, etcd";

/// The key spaces of [`Kind`]s: a backend keeps each apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Space {
    /// Mutexes (and leader elections).
    Mutex,
    /// Read-write locks: readers and writers of one key.
    ReadWrite,
    /// Semaphores.
    Semaphore,
}

/// What a successful [`Backend::acquire`] hands back.
pub struct Grant {
    /// Strictly increasing per key across holders; `None` where the backend cannot give one.
    pub fence: Option<u64>,
    /// Resolves when the backend learns by itself that the lock is gone (for example a ZooKeeper
    /// session expired). `None` when only renewals can tell.
    pub lost: Option<BoxFuture<'static, ()>>,
    /// When the attempt that won was sent: the lease is counted from here, so the client never
    /// believes it holds the lock longer than the server does.
    pub sent_at: Instant,
}

impl Grant {
    /// A grant with a fence and no loss signal of its own, won by an attempt sent at `sent_at`.
    pub fn new(fence: Option<u64>, sent_at: Instant) -> Self {
        Grant {
            fence,
            lost: None,
            sent_at,
        }
    }
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("fence", &self.fence)
            .field("lost", &self.lost.is_some())
            .finish()
    }
}

/// A lock service. Implement it to plug a new store into [`Locker`](crate::Locker).
///
/// Every method must be safe to cancel (the future dropped at any `.await`): the locker releases
/// a `token` whose acquire was dropped or failed, so a backend only has to make `release` able to
/// find whatever a half-finished `acquire` left (a row, a key, a queue node).
pub trait Backend: Send + Sync + 'static {
    /// Short name used in errors and `tracing` events (`"redis"`, `"mysql"`, ...).
    fn name(&self) -> &'static str;

    /// Takes `key` as `kind` for `token` with a lease of `ttl`.
    ///
    /// A kind the backend does not offer is `Err(kind.unsupported(..))` ([`Kind::unsupported`])
    /// before anything is sent; a [`Kind::Permit`] count other than the one the key's current
    /// holders use is [`Error::InvalidArgument`](crate::Error::InvalidArgument), never a second
    /// semaphore.
    ///
    /// Waits for the holder's release (by the backend's own notice mechanism) until `deadline`;
    /// `Some(deadline)` in the past means exactly one attempt, `None` means wait as long as it
    /// takes. Returns `Ok(None)` when the deadline passes with the lock still held by another
    /// token, having left nothing behind.
    ///
    /// # Errors
    /// [`Error::Backend`](crate::Error::Backend) when the server cannot be reached or answers
    /// with an error.
    fn acquire<'a>(
        &'a self,
        key: &'a str,
        kind: Kind,
        token: &'a str,
        ttl: Duration,
        deadline: Option<Instant>,
    ) -> BoxFuture<'a, Result<Option<Grant>>>;

    /// Deletes the hold of `kind` on `key` if `token` has it. `Ok(false)` when it does not
    /// (expired, taken over).
    ///
    /// # Errors
    /// [`Error::Backend`](crate::Error::Backend) when the server cannot be reached.
    fn release<'a>(
        &'a self,
        key: &'a str,
        kind: Kind,
        token: &'a str,
    ) -> BoxFuture<'a, Result<bool>>;

    /// Sets the lease of `key` to `ttl` from now if `token` holds it. `Ok(false)` when it does not.
    ///
    /// # Errors
    /// [`Error::Backend`](crate::Error::Backend) when the server cannot be reached.
    fn extend<'a>(
        &'a self,
        key: &'a str,
        kind: Kind,
        token: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool>>;

    /// Closes the backend's connections (called by [`Locker::close`](crate::Locker::close)
    /// once its background releases are done). Best effort; later calls may fail. The default
    /// does nothing, for backends whose connections close when dropped.
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// The holder of `key` (owner from its token, see [`token_parts`]; fence; lease left), or
    /// `None` when nobody holds it. The default answers [`Error::Unsupported`](crate::Error::Unsupported).
    ///
    /// # Errors
    /// [`Error::Backend`](crate::Error::Backend) when the server cannot be reached.
    fn inspect<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<LockInfo>>> {
        let _ = key;
        Box::pin(async move { Err(unsupported(self.name(), "inspect")) })
    }

    /// Every held lock whose key starts with `prefix` (all of them for `""`), sorted by key.
    /// The cost must be bounded by the locks under the prefix (an index range, a `SCAN` with a
    /// pattern), never a full read of the server. The default answers
    /// [`Error::Unsupported`](crate::Error::Unsupported).
    ///
    /// # Errors
    /// [`Error::Backend`](crate::Error::Backend) when the server cannot be reached.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<LockInfo>>> {
        let _ = prefix;
        Box::pin(async move { Err(unsupported(self.name(), "list")) })
    }

    /// Removes whoever holds `key`, as that holder's own release would (waiters are woken);
    /// `Ok(false)` when nobody held it. The old holder's next renewal or release finds the lock
    /// gone. The default answers [`Error::Unsupported`](crate::Error::Unsupported).
    ///
    /// # Errors
    /// [`Error::Backend`](crate::Error::Backend) when the server cannot be reached.
    fn force_release<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        let _ = key;
        Box::pin(async move { Err(unsupported(self.name(), "force_release")) })
    }
}

fn unsupported(backend: &'static str, what: &str) -> crate::Error {
    crate::Error::Unsupported {
        backend,
        what: format!(
            "`{what}` (a custom backend that does not implement `Backend::{what}`; every built-in \
             backend does)"
        ),
    }
}

/// Runs `futures` concurrently in the calling task and returns their outputs in order (a small
/// `join_all`: no task is spawned per future).
#[allow(dead_code)] // used by the redlock backend
pub(crate) async fn join_all<F: Future + Unpin>(mut futures: Vec<F>) -> Vec<F::Output> {
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match Pin::new(future).poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// The least time one request to a server is given, however short the caller's wait.
#[allow(dead_code)] // used by the networked backends
pub(crate) const MIN_ANSWER_TIME: Duration = Duration::from_millis(500);

/// Runs one request of an acquire bounded by the caller's wait (but at least
/// [`MIN_ANSWER_TIME`], so a one-attempt request still reaches a slow server): a server that
/// stops answering fails the acquire within its wait, not after the client's own timeouts. A
/// request cut short may still take effect on the server; the error makes the locker release
/// the token.
#[allow(dead_code)] // used by the networked backends
pub(crate) async fn within_wait<T>(
    backend: &'static str,
    deadline: Option<Instant>,
    request: impl Future<Output = Result<T>>,
) -> Result<T> {
    let Some(left) = remaining(deadline) else {
        return request.await;
    };
    let limit = left.max(MIN_ANSWER_TIME);
    match tokio::time::timeout(limit, request).await {
        Ok(result) => result,
        Err(_) => Err(crate::Error::backend(
            backend,
            format!("no answer within {limit:?} (the wait); is the server paused or overloaded?"),
        )),
    }
}

#[allow(dead_code)] // used by the networked backends
/// Time left until `deadline` (`None`: no deadline), saturating at zero.
pub(crate) fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

/// Opens one sqlx connection for a connect-time check, bounded by `limit`; a failure says what
/// happened: what the server answered (access denied, unknown database), or, when it did not
/// answer, whether the port refused or the server did not speak `kind`.
#[cfg(any(feature = "mysql", feature = "postgres"))]
pub(crate) async fn sqlx_connect<C>(
    backend: &'static str,
    kind: &'static str,
    url: &str,
    host: &str,
    limit: Duration,
    connect: impl Future<Output = std::result::Result<C, sqlx::Error>>,
) -> Result<C> {
    let url = crate::backend::url_params::mask_password(url);
    let why = match tokio::time::timeout(limit, connect).await {
        Ok(Ok(conn)) => return Ok(conn),
        // What the server said speaks for itself; a refused login gets a pointer to the URL.
        Ok(Err(sqlx::Error::Database(e))) => {
            let text = e.to_string();
            let lower = text.to_ascii_lowercase();
            let tls_off = {
                let url = url.to_ascii_lowercase();
                url.contains("ssl-mode=disabled") || url.contains("sslmode=disable")
            };
            let hint = if lower.contains("access denied") && tls_off {
                // MySQL answers an account that requires TLS with the same "access denied".
                " (bad credentials, or the account accepts only TLS connections and the URL \
                 turned TLS off: check the user and password, and drop `ssl-mode=DISABLED`)"
            } else if lower.contains("access denied")
                || lower.contains("password authentication failed")
                || lower.contains("authentication failed")
            {
                " (bad credentials: check the user and password in the URL)"
            } else if lower.contains("insecure transport") || lower.contains("no encryption") {
                " (the server accepts only TLS connections: add `?sslmode=require` \
                 (PostgreSQL) or `?ssl-mode=REQUIRED` (MySQL), or `tls_ca=PATH`)"
            } else {
                ""
            };
            return Err(crate::Error::backend(
                backend,
                format!("cannot connect to {url}: {text}{hint}"),
            ));
        }
        Ok(Err(e)) => {
            let text = e.to_string();
            if let Some(why) = tls::explain(&text, false) {
                return Err(crate::Error::backend(
                    backend,
                    format!("cannot connect to {url}: {why} ({text})"),
                ));
            }
            text
        }
        Err(_) => format!("no answer within {limit:?}"),
    };
    Err(crate::Error::backend(
        backend,
        format!(
            "cannot connect to {url}: {why}; {}",
            diagnose(host, kind).await
        ),
    ))
}

/// Why a server at `hosts` (comma-separated `host:port`) gave no session: each host is tried with
/// a plain TCP connect (off the async workers), so the message can say "refused" or "accepted
/// but did not answer like `kind`" instead of a client's generic error.
#[allow(dead_code)] // used by the networked backends
pub(crate) async fn diagnose(hosts: &str, kind: &'static str) -> String {
    let hosts: Vec<String> = hosts.split(',').map(|h| h.trim().to_owned()).collect();
    let probe = tokio::task::spawn_blocking(move || {
        use std::net::{TcpStream, ToSocketAddrs};
        let notes: Vec<String> = hosts
            .iter()
            .map(|host| {
                let addr = match host.to_socket_addrs().map(|mut a| a.next()) {
                    Ok(Some(addr)) => addr,
                    Ok(None) => return format!("`{host}` does not resolve"),
                    Err(e) => return format!("`{host}` does not resolve: {e}"),
                };
                match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                    Ok(_) => format!(
                        "{host} accepts connections but did not answer like a {kind} server \
                         (is it a {kind} port? a TLS one, needing the TLS form of the URL?)"
                    ),
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        format!("connection refused at {host} (is {kind} running there?)")
                    }
                    Err(e) => format!("{host}: {e}"),
                }
            })
            .collect();
        notes.join("; ")
    });
    probe
        .await
        .unwrap_or_else(|_| format!("is {kind} running there?"))
}

#[allow(dead_code)] // used by the networked backends
/// A random duration in `[lo, hi]` for retry jitter (uses the uuid RNG already in the tree).
pub(crate) fn jitter(lo: Duration, hi: Duration) -> Duration {
    if hi <= lo {
        return lo;
    }
    let r = (uuid::Uuid::new_v4().as_u128() & 0xffff_ffff) as u64;
    let span = (hi - lo).as_nanos() as u64;
    lo + Duration::from_nanos(r % span.max(1))
}

/// A shared backend is a backend: keep an `Arc` to read backend-specific counters while a
/// [`Locker`](crate::Locker) uses it.
impl<B: Backend> Backend for std::sync::Arc<B> {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn acquire<'a>(
        &'a self,
        key: &'a str,
        kind: Kind,
        token: &'a str,
        ttl: Duration,
        deadline: Option<Instant>,
    ) -> BoxFuture<'a, Result<Option<Grant>>> {
        (**self).acquire(key, kind, token, ttl, deadline)
    }

    fn release<'a>(
        &'a self,
        key: &'a str,
        kind: Kind,
        token: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        (**self).release(key, kind, token)
    }

    fn extend<'a>(
        &'a self,
        key: &'a str,
        kind: Kind,
        token: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        (**self).extend(key, kind, token, ttl)
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        (**self).close()
    }

    fn inspect<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<LockInfo>>> {
        (**self).inspect(key)
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<LockInfo>>> {
        (**self).list(prefix)
    }

    fn force_release<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        (**self).force_release(key)
    }
}
