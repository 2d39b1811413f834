//! Distributed locks with fencing tokens and a first-class "lease lost" signal, over Redis,
//! Redlock, MySQL/MariaDB, PostgreSQL, ZooKeeper and etcd, behind one API.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), dlock::Error> {
//! use std::time::Duration;
//! use dlock::Locker;
//!
//! // `Locker::connect("redis://127.0.0.1:6379")` for Redis; the in-memory backend needs no server.
//! let locker = Locker::memory();
//! let guard = locker
//!     .lock("order:42")
//!     .ttl(Duration::from_secs(30)) // fixed lease; omit it for a watchdog-renewed one
//!     .wait(Duration::from_secs(5)) // give up with Error::Busy after 5 s
//!     .await?;
//! println!("holding {} with fence {:?}", guard.key(), guard.fence());
//! assert!(locker.try_lock("order:42").await?.is_none());
//! guard.release().await?; // dropping the guard releases too
//! # Ok(()) }
//! ```
//!
//! # Pieces
//! - [`Locker`]: one handle per lock service, picked by URL scheme; [`Locker::memory`] in-process.
//! - [`LockRequest`]: `.ttl(d)`, `.wait(d)`, `.watchdog(bool)`, then `.await` or `.blocking()`.
//! - [`LockGuard`]: `key()`, `fence()`, `is_held()`, `lost()`, `extend(d)`, `release()`.
//! - [`Locker::read_lock`] / [`Locker::write_lock`] (read-write locks), [`Locker::semaphore`]
//!   (`n` permits), [`Locker::campaign`] / [`Locker::leader`] / [`LockRequest::lead`] (leader
//!   election): the same request and guard, each in its own key space ([`Kind`]).
//! - [`register`] / [`lookup`]: named lockers, also from `DLOCK_URL_<NAME>`.
//! - [`Locker::inspect`] / [`Locker::list`] / [`Locker::force_release`]: who holds what
//!   ([`LockInfo`]), and freeing a lock whose holder is stuck; [`Locker::with_owner`] names holders.
//! - [`Backend`](backend::Backend): the trait a lock service implements.
//!
//! # Features
//! One cargo feature per backend: `redis`, `redlock`, `mysql`, `postgres`, `zookeeper`, `etcd`; `macros` for
//! `#[distributed_lock]`; `tls` for TLS (rustls) on every backend compiled in (see
//! [`Locker::connect`] for the URL forms). The in-memory backend is always compiled.
//!
//! # Metrics
//! With the cargo feature `metrics`, dlock reports through the [`metrics`](https://docs.rs/metrics)
//! facade to whatever recorder the program installs: `dlock_acquisitions_total` and
//! `dlock_wait_seconds` (labels `backend`, `outcome` = `acquired`/`busy`/`error`),
//! `dlock_hold_seconds`, `dlock_renewals_total` (`outcome` = `renewed`/`failed`),
//! `dlock_losses_total`, `dlock_force_releases_total`. Labels never include the key.
//! `examples/metrics.rs` serves them to Prometheus.
//!
//! # Tracing
//! Every acquire, busy wait, renewal, release and loss emits a `tracing` event with target
//! `dlock` and fields `key`, `backend`, `fence`, `waited_ms` (losses at `WARN`, renewals at
//! `TRACE`, the rest at `DEBUG`).

#![warn(missing_docs)]

pub mod backend;
mod error;
mod guard;
mod inspect;
mod lease;
mod locker;
#[cfg(feature = "macros")]
#[doc(hidden)]
pub mod macro_support;
mod registry;
mod reopen;
mod request;
mod runtime;
mod telemetry;
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub mod test_hooks;

pub use backend::url_params::mask_password;
pub use backend::Kind;
pub use error::{BoxError, Error, Result};
pub use guard::LockGuard;
pub use inspect::{LockInfo, MAX_OWNER_LEN};
pub use locker::{Locker, LEADER_KEY_PREFIX};
pub use registry::{
    connect_configured, env_var_for, lookup, lookup_blocking, register, DEFAULT_NAME,
};
pub use request::{LockRequest, DEFAULT_WATCHDOG_TTL, MAX_TTL};

/// `#[distributed_lock(key = "...", ...)]`: hold a lock while a function runs (feature `macros`).
#[cfg(feature = "macros")]
pub use dlock_macros::distributed_lock;
