//! The one error type of dlock.

use std::time::Duration;

/// A boxed error from a backend's client crate.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong when taking, keeping or giving back a lock.
///
/// The enum is `#[non_exhaustive]`: match the variants you handle and keep a `_` arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The lock was held by someone else for the whole wait.
    #[error("lock `{key}` is busy: not acquired within {waited:?}; raise `.wait(..)` or try again later")]
    Busy {
        /// The key asked for.
        key: String,
        /// How long the request waited before giving up.
        waited: Duration,
    },
    /// The lease is gone: it expired, a renewal was refused, or the session holding it ended.
    /// Token-checked release and extend return this instead of touching the next holder's lock.
    #[error(
        "lease on lock `{key}` is lost: it expired or was taken over; the lock is no longer held"
    )]
    Lost {
        /// The key of the lost lock.
        key: String,
    },
    /// The calling task (or thread) already holds `key` through this [`Locker`](crate::Locker),
    /// or is acquiring it: a lock is not reentrant, and waiting would wait for itself forever.
    #[error(
        "this task already holds (or is acquiring) lock `{key}` through this Locker; dlock locks \
         are not reentrant: use the guard you have (pass `&LockGuard` down), or do not lock the \
         same key again in nested calls (nested #[distributed_lock] functions on one key)"
    )]
    AlreadyHeld {
        /// The key already held.
        key: String,
    },
    /// A lock service name that is neither registered nor configured in the environment.
    #[error(
        "no lock service named `{name}`: call `dlock::register(\"{name}\", locker)` at start-up, \
         or set the environment variable `{env_var}` to its URL (for example `redis://127.0.0.1:6379`)"
    )]
    NotConfigured {
        /// The name looked up.
        name: String,
        /// The environment variable that would configure it (`DLOCK_URL_<NAME>`).
        env_var: String,
    },
    /// A key the backend cannot lock (for example the empty string).
    #[error("invalid lock key {key:?}: {reason}")]
    InvalidKey {
        /// The key given.
        key: String,
        /// Why it is refused and what to do instead.
        reason: String,
    },
    /// A lock service URL that cannot be used.
    #[error("invalid lock service URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL given (passwords masked).
        url: String,
        /// What is wrong and what is accepted.
        reason: String,
    },
    /// An argument that cannot be used (for example a zero `ttl`).
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// What is wrong and what is accepted.
        reason: String,
    },
    /// The backend's server or client failed (connection refused, timeout, protocol error, ...).
    #[error("{backend} backend error: {source}")]
    Backend {
        /// The backend's name (`"redis"`, `"mysql"`, ...).
        backend: &'static str,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// The backend cannot do what was asked (for example a primitive it cannot offer soundly, or
    /// inspection on a custom backend that does not implement it).
    #[error("the {backend} backend does not support {what}")]
    Unsupported {
        /// The backend's name.
        backend: &'static str,
        /// What it cannot do, and which backends can.
        what: String,
    },
    /// A blocking call (`.blocking()`, `Locker::connect_blocking`, a lock on a plain `fn`) was made
    /// from an async task of a current-thread runtime, where blocking its only thread could
    /// deadlock. (From a `spawn_blocking` thread, a plain thread or a multi-thread runtime's task
    /// blocking calls work.)
    #[error(
        "blocking dlock call made from an async task of a current-thread runtime, where it would \
         block the runtime's only thread; use the async API (`.await`) there, or run the call in \
         `tokio::task::spawn_blocking(..)` or on a plain thread"
    )]
    BlockingInAsync,
}

impl Error {
    /// Wraps a client error as [`Error::Backend`].
    pub fn backend(backend: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Backend {
            backend,
            source: source.into(),
        }
    }

    /// True for [`Error::Busy`].
    pub fn is_busy(&self) -> bool {
        matches!(self, Error::Busy { .. })
    }

    /// True for [`Error::Lost`].
    pub fn is_lost(&self) -> bool {
        matches!(self, Error::Lost { .. })
    }
}

/// `Result<T, dlock::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Lets functions returning `std::io::Result<T>` use `?` on dlock calls and
/// `#[distributed_lock]`: `Busy` becomes `WouldBlock`, `Lost` `ConnectionAborted`, bad input
/// `InvalidInput`, `NotConfigured` `NotFound`, the rest `Other`; the dlock error is the source.
impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        use std::io::ErrorKind;
        let kind = match &e {
            Error::Busy { .. } => ErrorKind::WouldBlock,
            Error::Lost { .. } => ErrorKind::ConnectionAborted,
            Error::NotConfigured { .. } => ErrorKind::NotFound,
            Error::InvalidKey { .. } | Error::InvalidUrl { .. } | Error::InvalidArgument { .. } => {
                ErrorKind::InvalidInput
            }
            _ => ErrorKind::Other,
        };
        std::io::Error::new(kind, e)
    }
}
