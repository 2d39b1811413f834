//! [`Locker`]: a handle on one lock service.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use crate::backend::memory::MemoryBackend;
use crate::backend::url_params::mask_password;
use crate::backend::{Backend, Kind};
use crate::lease::LeaseState;
use crate::reopen::Reopening;
use crate::{runtime, Error, LockGuard, LockRequest, Result};

/// The URL schemes [`Locker::connect`] accepts, for error messages.
const SCHEMES: &str = "memory://, redis://, rediss://, redis+cluster://, rediss+cluster://, \
                       redis+sentinel://, rediss+sentinel://, redlock://, redlocks://, mysql://, \
                       mariadb://, postgres://, postgresql://, zookeeper://, etcd://, etcds://";

/// A handle on one lock service; cheap to clone (an `Arc`). The URL scheme picks the backend.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), dlock::Error> {
/// use std::time::Duration;
/// let locker = dlock::Locker::memory();
/// let guard = locker.lock("order:42").wait(Duration::from_secs(5)).await?;
/// assert!(locker.try_lock("order:42").await?.is_none());
/// guard.release().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Locker {
    backend: Arc<dyn Backend>,
    shared: Arc<Shared>,
    /// Recorded with every lock this handle takes (see [`Locker::with_owner`]).
    owner: Arc<str>,
}

/// How long [`Locker::close`] waits for background releases.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Who is taking or holding a lock: the tokio task, or the thread for a blocking call made
/// outside any task. Used to refuse re-locking a key the caller already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Holder {
    Task(tokio::task::Id),
    Thread(std::thread::ThreadId),
}

impl Holder {
    /// The caller: its task if it runs in one, else its thread.
    pub(crate) fn current() -> Holder {
        tokio::task::try_id()
            .map(Holder::Task)
            .unwrap_or_else(|| Holder::Thread(std::thread::current().id()))
    }
}

/// State every clone of a [`Locker`] and its guards share.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Keys being acquired or held, by whom.
    claims: Mutex<HashMap<(Arc<str>, Holder), ClaimEntry, foldhash::fast::RandomState>>,
    /// Numbers claims, so a stale claim's drop never removes the one that replaced it.
    claim_ids: AtomicU64,
    /// Releases running in the background (dropped guards, cancelled acquires).
    pending: AtomicUsize,
    idle: Notify,
    closed: AtomicBool,
}

impl Shared {
    /// Claims `key` for `holder` for the duration of an acquire and then of the guard. A claim
    /// whose guard was forgotten (`mem::forget`) and whose lease has run out is stale and
    /// replaced: only a lock the holder really still has (or is acquiring) refuses.
    pub(crate) fn claim(self: &Arc<Self>, key: &Arc<str>, holder: Holder) -> Result<Claim> {
        let mut claims = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        let id = self.claim_ids.fetch_add(1, Ordering::Relaxed);
        let entry = ClaimEntry {
            id,
            lease: Weak::new(),
            acquiring: true,
        };
        match claims.entry((key.clone(), holder)) {
            Entry::Occupied(mut held) => {
                let live =
                    held.get().acquiring || held.get().lease.upgrade().is_some_and(|l| l.is_held());
                if live {
                    return Err(Error::AlreadyHeld {
                        key: key.to_string(),
                    });
                }
                held.insert(entry);
            }
            Entry::Vacant(free) => {
                free.insert(entry);
            }
        }
        Ok(Claim {
            shared: self.clone(),
            key: key.clone(),
            holder,
            id,
        })
    }

    /// Counts a background release until the returned value is dropped.
    pub(crate) fn background_release(self: &Arc<Self>) -> PendingRelease {
        self.pending.fetch_add(1, Ordering::AcqRel);
        PendingRelease(self.clone())
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// What a claim is doing: acquiring, or held under a lease.
#[derive(Debug)]
struct ClaimEntry {
    id: u64,
    lease: Weak<LeaseState>,
    acquiring: bool,
}

/// A key claimed by a holder (see [`Shared::claim`]); unclaimed on drop.
#[derive(Debug)]
pub(crate) struct Claim {
    shared: Arc<Shared>,
    key: Arc<str>,
    holder: Holder,
    id: u64,
}

impl Claim {
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The acquire succeeded: the claim lasts while `lease` is held.
    pub(crate) fn held_under(&self, lease: &Arc<LeaseState>) {
        let mut claims = self.shared.claims.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = claims.get_mut(&(self.key.clone(), self.holder)) {
            if entry.id == self.id {
                entry.lease = Arc::downgrade(lease);
                entry.acquiring = false;
            }
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut claims = self.shared.claims.lock().unwrap_or_else(|p| p.into_inner());
        if let Entry::Occupied(entry) = claims.entry((self.key.clone(), self.holder)) {
            if entry.get().id == self.id {
                entry.remove();
            }
        }
    }
}

/// A background release in flight; [`Locker::close`] waits for these.
pub(crate) struct PendingRelease(Arc<Shared>);

impl Drop for PendingRelease {
    fn drop(&mut self) {
        if self.0.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl std::fmt::Debug for Locker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Locker")
            .field("backend", &self.backend.name())
            .field("owner", &self.owner)
            .finish()
    }
}

impl Locker {
    /// Connects to the lock service at `url`; the scheme picks the backend:
    ///
    /// | URL | backend | cargo feature |
    /// |---|---|---|
    /// | `memory://` | a new in-process lock space | (always) |
    /// | `redis://[user:pass@]host:port[/db][?replicas=N]` | Redis; with `replicas`, a grant or renewal counts once N replicas have it | `redis` |
    /// | `redlock://host:port,host:port,host:port` | Redlock over N masters | `redlock` |
    /// | `mysql://user[:pass]@host:port/db[?table=distributed_lock]` (`mariadb://` too) | MySQL / MariaDB table | `mysql` |
    /// | `postgres://user[:pass]@host:port/db[?table=dlock_locks]` (`postgresql://` too) | PostgreSQL table | `postgres` |
    /// | `zookeeper://host:port[,host:port]/root[?session_timeout=10s]` (`zk://` too) | ZooKeeper | `zookeeper` |
    /// | `etcd://[user:pass@]host:port[,host:port]/root` | etcd v3 | `etcd` |
    ///
    /// With the cargo feature `tls`: `rediss://`, `redlocks://`, `etcds://`, MySQL's `ssl-mode=`
    /// and PostgreSQL's `sslmode=`, and on every backend `tls_ca=PATH` (trust this CA),
    /// `tls_cert=PATH` and `tls_key=PATH` (client certificate); ZooKeeper speaks TLS when
    /// `tls_ca` is given. A ZooKeeper URL's `user:pass@` is a `digest` identity that owns the
    /// nodes dlock creates. The README's "Security" section has the least rights each backend
    /// needs.
    ///
    /// Fences are per backend (and per key): a fence from one service says nothing about a fence
    /// from another, so a resource that checks fences must be guarded through one backend.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), dlock::Error> {
    /// let locker = dlock::Locker::connect("redis://127.0.0.1:6379").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for a malformed URL, an unknown scheme, or a scheme whose cargo
    /// feature is not enabled; [`Error::Backend`] when the server cannot be reached.
    pub async fn connect(url: &str) -> Result<Locker> {
        if scheme_of(url)? == "memory" {
            return Ok(Locker::memory());
        }
        Ok(Locker {
            backend: Arc::new(Reopening::connect(url).await?),
            shared: Arc::default(),
            owner: crate::inspect::default_owner(),
        })
    }

    /// [`connect`](Self::connect) for sync code (the connection is served by dlock's background
    /// runtime thread); where it may be called is as for
    /// [`LockRequest::blocking`](crate::LockRequest::blocking).
    ///
    /// # Errors
    /// As [`connect`](Self::connect), plus [`Error::BlockingInAsync`] from a current-thread
    /// runtime's async task.
    pub fn connect_blocking(url: &str) -> Result<Locker> {
        let url = url.to_owned();
        runtime::block_on(async move { Locker::connect(&url).await })?
    }

    /// A new in-process lock space, independent of every other `Locker::memory()`. (The
    /// registry's `"memory"` name is one process-wide space.)
    pub fn memory() -> Locker {
        Locker::from_backend(MemoryBackend::new())
    }

    /// A locker over a custom [`Backend`].
    pub fn from_backend(backend: impl Backend) -> Locker {
        Locker {
            backend: Arc::new(backend),
            shared: Arc::default(),
            owner: crate::inspect::default_owner(),
        }
    }

    /// This handle with `owner` recorded beside every lock it takes, instead of the default
    /// `"<hostname>:<pid>"`; what [`inspect`](Self::inspect), [`list`](Self::list) and the
    /// `dlock` command show as the holder. Shares the connections (and everything else) of
    /// `self`. Control characters become `?`; more than [`MAX_OWNER_LEN`](crate::MAX_OWNER_LEN)
    /// characters are cut; an empty owner means the default.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dlock::Error> {
    /// let locker = dlock::Locker::memory().with_owner("billing-7f9c");
    /// let _guard = locker.lock("invoice:7").await?;
    /// let info = locker.inspect("invoice:7").await?.expect("held");
    /// assert_eq!(info.owner.as_deref(), Some("billing-7f9c"));
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn with_owner(&self, owner: impl AsRef<str>) -> Locker {
        Locker {
            backend: self.backend.clone(),
            shared: self.shared.clone(),
            owner: crate::inspect::clean_owner(owner.as_ref()),
        }
    }

    /// The owner recorded with this handle's locks (see [`with_owner`](Self::with_owner)).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Who holds `key` now: its owner, fence and the time left on its lease; `None` when it is
    /// free. Takes no lock and changes nothing.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), dlock::Error> {
    /// let locker = dlock::Locker::connect("redis://127.0.0.1:6379").await?;
    /// if let Some(info) = locker.inspect("order:42").await? {
    ///     println!("{} held by {:?}, fence {:?}, {:?} left", info.key, info.owner, info.fence, info.expires_in);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidKey`] for an empty key; [`Error::Backend`] when the server fails;
    /// [`Error::Unsupported`] from a custom backend without inspection.
    pub async fn inspect(&self, key: &str) -> Result<Option<crate::LockInfo>> {
        crate::request::validate_key(key)?;
        self.backend.inspect(key).await
    }

    /// Every held lock whose key starts with `prefix` (`""`: all of dlock's locks on this
    /// service), sorted by key. The cost grows with the locks under the prefix, not with
    /// everything the server stores: Redis `SCAN` with a pattern, an index range on
    /// MySQL/PostgreSQL, a key range on etcd, the children of the lock root on ZooKeeper.
    ///
    /// # Errors
    /// [`Error::Backend`] when the server fails; [`Error::Unsupported`] from a custom backend
    /// without inspection.
    pub async fn list(&self, prefix: &str) -> Result<Vec<crate::LockInfo>> {
        let mut held = self.backend.list(prefix).await?;
        held.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(held)
    }

    /// Frees `key` whoever holds it: `true` when a holder was removed, `false` when it was
    /// free. Waiters are woken as by a release. The old holder is not told at once: its next
    /// renewal (a watchdog lease renews every third of its ttl) or release finds the lock gone,
    /// then its [`LockGuard::lost`](crate::LockGuard::lost) fires and
    /// [`release`](crate::LockGuard::release) returns [`Error::Lost`]. Its fence is what keeps a
    /// resource safe if it still writes: use this for a holder that is stuck, not one that works.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] for an empty key; [`Error::Backend`] when the server fails;
    /// [`Error::Unsupported`] from a custom backend without it.
    pub async fn force_release(&self, key: &str) -> Result<bool> {
        crate::request::validate_key(key)?;
        let freed = self.backend.force_release(key).await?;
        if freed {
            crate::telemetry::force_release(self.backend.name());
            tracing::warn!(target: "dlock", key, backend = self.backend.name(), "lock force-released");
        }
        Ok(freed)
    }

    /// The backend's name (`"memory"`, `"redis"`, ...).
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    pub(crate) fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Waits (up to 5 s) for the releases of guards this Locker (or a clone) dropped in the
    /// background, then closes its connections; later calls on it (and its clones) fail.
    ///
    /// Call it before a program ends: a guard dropped just before `main` returns is released by
    /// a background task, which dies with the process, and its lock would then stay held until
    /// its lease runs out (30 s by default).
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), dlock::Error> {
    /// let locker = dlock::Locker::connect("redis://127.0.0.1:6379").await?;
    /// let guard = locker.lock("nightly").await?;
    /// // ... work; the guard is dropped here, its release runs in the background
    /// drop(guard);
    /// locker.close().await?; // the release has reached the server
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Backend`] when background releases were still running after 5 s (their leases
    /// then run out on the server).
    pub async fn close(&self) -> Result<()> {
        self.shared.closed.store(true, Ordering::Release);
        let drained = tokio::time::timeout(CLOSE_WAIT, async {
            while self.shared.pending.load(Ordering::Acquire) > 0 {
                tokio::select! {
                    _ = self.shared.idle.notified() => {}
                    // notify_waiters wakes only registered waiters: look again now and then.
                    _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
            }
        })
        .await
        .is_ok();
        self.backend.close().await;
        if drained {
            Ok(())
        } else {
            Err(Error::backend(
                self.backend.name(),
                format!(
                    "{} background release(s) still running after {CLOSE_WAIT:?}; their leases \
                     will run out on the server",
                    self.shared.pending.load(Ordering::Acquire)
                ),
            ))
        }
    }

    /// A request for the lock on `key`; set `.ttl`, `.wait`, `.watchdog`, then `.await` it.
    pub fn lock(&self, key: impl Into<String>) -> LockRequest {
        LockRequest::new(self.clone(), key.into(), Kind::Exclusive)
    }

    /// A request for a shared (read) hold of the read-write lock `key`: held together with other
    /// readers, never with a writer. Read-write locks have their own key space (`lock("a")` and
    /// `read_lock("a")` do not exclude each other).
    ///
    /// Writers are preferred: once a writer waits, new readers wait behind it, so a steady stream
    /// of readers cannot starve writers (readers already holding finish first). A reader's
    /// [`fence`](LockGuard::fence) is the fence of the last write hold of the key (`None` if
    /// there was none yet, or on backends whose readers cannot see it); writers' fences grow.
    ///
    /// Offered by memory, Redis (single, Cluster, Sentinel), MySQL/MariaDB, PostgreSQL, ZooKeeper
    /// and etcd; Redlock answers [`Error::Unsupported`]. Memory, Redis, MySQL and PostgreSQL
    /// prefer writers as above; ZooKeeper and etcd serve readers and writers in arrival order (a
    /// reader behind a waiting writer waits), which keeps writers from starving too.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dlock::Error> {
    /// use std::time::Duration;
    /// let locker = dlock::Locker::memory();
    /// let r1 = locker.read_lock("doc:7").await?;
    /// // Another task (or process) reads at the same time; a writer has to wait.
    /// let r2 = tokio::spawn(locker.read_lock("doc:7").acquire()).await.unwrap()?;
    /// let w = tokio::spawn(locker.write_lock("doc:7").wait(Duration::ZERO).acquire());
    /// assert!(matches!(w.await.unwrap(), Err(dlock::Error::Busy { .. })));
    /// drop((r1, r2));
    /// # Ok(()) }
    /// ```
    pub fn read_lock(&self, key: impl Into<String>) -> LockRequest {
        LockRequest::new(self.clone(), key.into(), Kind::Read)
    }

    /// A request for the exclusive (write) hold of the read-write lock `key`: no reader and no
    /// other writer holds it meanwhile; see [`read_lock`](Self::read_lock).
    pub fn write_lock(&self, key: impl Into<String>) -> LockRequest {
        LockRequest::new(self.clone(), key.into(), Kind::Write)
    }

    /// One attempt at the write hold of `key`: `None` when a reader or writer has it.
    ///
    /// # Errors
    /// As awaiting [`write_lock`](Self::write_lock).
    pub async fn try_write_lock(&self, key: impl Into<String>) -> Result<Option<LockGuard>> {
        attempt(self.write_lock(key)).await
    }

    /// A request for one of `permits` permits of the semaphore `key`: at most `permits` guards
    /// of it are held at once, each with its own lease, so a crashed holder's permit frees after
    /// its lease while the others stay. Every holder must name the same `permits`: a different
    /// count while the semaphore is held is [`Error::InvalidArgument`], not a second semaphore.
    /// Semaphores have their own key space. The guard's fence grows with every permit granted.
    ///
    /// Offered where [`read_lock`](Self::read_lock) is.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dlock::Error> {
    /// use std::time::Duration;
    /// let locker = dlock::Locker::memory();
    /// let a = locker.semaphore("crawler", 2).await?;
    /// // A task holds one permit of a semaphore at a time; other tasks take the others.
    /// let b = tokio::spawn(locker.semaphore("crawler", 2).acquire()).await.unwrap()?;
    /// let third = tokio::spawn(locker.semaphore("crawler", 2).wait(Duration::ZERO).acquire());
    /// assert!(matches!(third.await.unwrap(), Err(dlock::Error::Busy { .. })));
    /// # drop((a, b));
    /// # Ok(()) }
    /// ```
    pub fn semaphore(&self, key: impl Into<String>, permits: u32) -> LockRequest {
        LockRequest::new(self.clone(), key.into(), Kind::Permit(permits))
    }

    /// Campaigns for the leadership of `name`: resolves when this Locker's
    /// [`owner`](Self::owner) leads, with a guard whose lease a watchdog renews (30 s, renewed
    /// every 10 s, unless `.ttl(..)` says otherwise). Drop or
    /// [`release`](LockGuard::release) the guard to resign (the next candidate is elected at
    /// once); [`lost`](LockGuard::lost) fires when leadership is gone. A leader whose process
    /// dies is replaced once its lease runs out (at most the ttl, 30 s by default; on ZooKeeper
    /// when its session expires), plus the wake-up of a waiting candidate (a notice: well under a
    /// second on loopback).
    ///
    /// An election is a lock on the key [`LEADER_KEY_PREFIX`]` + name`, so `dlock list
    /// dlock-leader:` shows every leader. Offered by every backend (on Redlock without a fence).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dlock::Error> {
    /// let locker = dlock::Locker::memory().with_owner("node-a");
    /// let leading = locker.campaign("scheduler").await?;
    /// assert_eq!(locker.leader("scheduler").await?.as_deref(), Some("node-a"));
    /// leading.release().await?; // resign
    /// assert_eq!(locker.leader("scheduler").await?, None);
    /// # Ok(()) }
    /// ```
    pub fn campaign(&self, name: &str) -> LockRequest {
        LockRequest::new(
            self.clone(),
            format!("{LEADER_KEY_PREFIX}{name}"),
            Kind::Exclusive,
        )
    }

    /// The owner leading `name` now, or `None` when nobody leads it.
    ///
    /// # Errors
    /// [`Error::Backend`] when the server fails.
    pub async fn leader(&self, name: &str) -> Result<Option<String>> {
        let info = self.inspect(&format!("{LEADER_KEY_PREFIX}{name}")).await?;
        Ok(info.and_then(|info| info.owner))
    }

    /// Runs `work` while this Locker leads `name`: `self.campaign(name).lead(work)`; see
    /// [`LockRequest::lead`] (and use it directly to set the lease, e.g.
    /// `locker.campaign(name).ttl(Duration::from_secs(6)).watchdog(true).lead(work)`).
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), dlock::Error> {
    /// let locker = dlock::Locker::connect("redis://127.0.0.1:6379").await?;
    /// locker
    ///     .lead("scheduler", |fence| async move {
    ///         loop {
    ///             println!("leading, term {fence:?}: scheduling");
    ///             tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    ///         }
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`LockRequest::lead`].
    pub async fn lead<F, Fut, T>(&self, name: &str, work: F) -> Result<T>
    where
        F: FnMut(Option<u64>) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        self.campaign(name).lead(work).await
    }

    /// One attempt at the lock on `key` with the default watchdog lease: `None` when another
    /// holder has it (on Redis also while waiters of other Lockers are queued for the key: one
    /// attempt does not barge past them, see the backend's "Waiting").
    ///
    /// # Errors
    /// [`Error::InvalidKey`] for an empty key; [`Error::Backend`] when the server fails.
    pub async fn try_lock(&self, key: impl Into<String>) -> Result<Option<LockGuard>> {
        attempt(self.lock(key)).await
    }
}

/// The key prefix of leader elections: [`Locker::campaign`]`("scheduler")` locks
/// `"dlock-leader:scheduler"`. Keys starting with it are reserved for elections.
pub const LEADER_KEY_PREFIX: &str = "dlock-leader:";

/// One attempt: `None` when busy.
async fn attempt(request: LockRequest) -> Result<Option<LockGuard>> {
    match request.wait(Duration::ZERO).await {
        Ok(guard) => Ok(Some(guard)),
        Err(Error::Busy { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Opens the networked backend `url` names, on the current runtime (see [`crate::reopen`]).
pub(crate) async fn open_backend(url: &str) -> Result<Arc<dyn Backend>> {
    let scheme = scheme_of(url)?;
    match scheme.as_str() {
        "memory" => Ok(Arc::new(MemoryBackend::new())),
        #[cfg(feature = "redis")]
        "redis" | "rediss" | "redis+cluster" | "rediss+cluster" => Ok(Arc::new(
            crate::backend::redis::RedisBackend::connect(url).await?,
        )),
        #[cfg(feature = "redis")]
        "redis+sentinel" | "rediss+sentinel" => Ok(Arc::new(
            crate::backend::redis::sentinel::SentinelBackend::connect(url).await?,
        )),
        #[cfg(not(feature = "redis"))]
        "redis" | "rediss" | "redis+sentinel" | "rediss+sentinel" | "redis+cluster"
        | "rediss+cluster" => Err(not_compiled(url, "redis")),
        #[cfg(feature = "redlock")]
        "redlock" | "redlocks" => Ok(Arc::new(
            crate::backend::redlock::RedlockBackend::connect(url).await?,
        )),
        #[cfg(not(feature = "redlock"))]
        "redlock" | "redlocks" => Err(not_compiled(url, "redlock")),
        #[cfg(feature = "mysql")]
        "mysql" | "mariadb" => Ok(Arc::new(
            crate::backend::mysql::MysqlBackend::connect(url).await?,
        )),
        #[cfg(not(feature = "mysql"))]
        "mysql" | "mariadb" => Err(not_compiled(url, "mysql")),
        #[cfg(feature = "zookeeper")]
        "zookeeper" | "zk" => Ok(Arc::new(
            crate::backend::zookeeper::ZookeeperBackend::connect(url).await?,
        )),
        #[cfg(not(feature = "zookeeper"))]
        "zookeeper" | "zk" => Err(not_compiled(url, "zookeeper")),
        #[cfg(feature = "etcd")]
        "etcd" | "etcds" => Ok(Arc::new(
            crate::backend::etcd::EtcdBackend::connect(url).await?,
        )),
        #[cfg(not(feature = "etcd"))]
        "etcd" | "etcds" => Err(not_compiled(url, "etcd")),
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => Ok(Arc::new(
            crate::backend::postgres::PostgresBackend::connect(url).await?,
        )),
        #[cfg(not(feature = "postgres"))]
        "postgres" | "postgresql" => Err(not_compiled(url, "postgres")),
        other => Err(Error::InvalidUrl {
            url: mask_password(url),
            reason: format!("unknown scheme `{other}`; accepted schemes: {SCHEMES}"),
        }),
    }
}

/// The lower-cased scheme of `url`, or [`Error::InvalidUrl`].
fn scheme_of(url: &str) -> Result<String> {
    let bad = |reason: String| Error::InvalidUrl {
        url: mask_password(url),
        reason,
    };
    let (scheme, _) = url.split_once("://").ok_or_else(|| {
        bad(format!(
            "expected `scheme://...`, e.g. `redis://127.0.0.1:6379`; accepted schemes: {SCHEMES}"
        ))
    })?;
    let valid = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !valid {
        return Err(bad(format!(
            "`{scheme}` is not a URL scheme; accepted schemes: {SCHEMES}"
        )));
    }
    Ok(scheme.to_ascii_lowercase())
}

#[allow(dead_code)] // unused when every backend feature is on
fn not_compiled(url: &str, feature: &str) -> Error {
    Error::InvalidUrl {
        url: mask_password(url),
        reason: format!(
            "the {feature} backend is not compiled in; enable the cargo feature `{feature}` of dlock \
             (dlock = {{ version = \"0.1\", features = [\"{feature}\"] }})"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        assert_eq!(scheme_of("REDIS://x").unwrap(), "redis");
        assert!(scheme_of("127.0.0.1:6379").is_err());
        assert!(scheme_of("://x").is_err());
        assert!(scheme_of("re dis://x").is_err());
    }
}
