//! The ZooKeeper backend: Curator's `InterProcessMutex` recipe on ephemeral sequential nodes, a
//! watch on the immediate predecessor only, and the ZooKeeper session as the lease.
//!
//! Enabled by the cargo feature `zookeeper` (crate [`zookeeper_client`], async on tokio).
//!
//! Read-write locks and semaphores (`src/backend/zookeeper/shared.rs`) are Curator's
//! `InterProcessReadWriteLock` and a semaphore on the same kind of queue, in directories of
//! their own beside the mutexes' (`/<root>/%rw-<key>`, `/<root>/%sem-<key>`): readers and
//! writers are served in arrival order (a reader behind a waiting writer waits, so writers are
//! not starved), the first `n` nodes of a semaphore's queue hold, and a release wakes only the
//! waiters it can admit.
//!
//! # URL
//!
//! ```text
//! zookeeper://host:port[,host:port...]/root[?session_timeout=10s]      (or zk://...)
//! ```
//!
//! Several hosts form one ensemble connect string (the port defaults to 2181). The root (default
//! `/dlock`, also for a bare `/`) is created with its parents if missing. `session_timeout`
//! (`10s`, `500ms`, `1m`, ...; default 10 s) is what the client asks for; the server clamps it to
//! its own bounds (by default 2 to 20 ticks, i.e. 4 s to 40 s with `tickTime=2000`). Connecting is
//! bounded (by the session timeout, clamped to 2..10 s): a server that does not answer gives an
//! [`Error::Backend`] instead of a hang.
//!
//! **The session timeout bounds how long a crashed holder blocks others**: the lock node is
//! ephemeral, so when a holder process dies (or is partitioned away) the server expires its session
//! `session_timeout` after it last heard from it (rounded up to the server's expiry tick) and deletes
//! the node, which wakes the next waiter. A short timeout frees crashed holders sooner but makes a
//! live holder lose its lock after a shorter network hiccup.
//!
//! # Recipe
//!
//! A key's queue is the directory `/<root>/<encoded key>`, a *container* node (which the server
//! deletes by itself once its last child is gone; a persistent node on servers older than 3.5.3).
//! To acquire:
//!
//! 1. create the EPHEMERAL_SEQUENTIAL node `/<root>/<encoded key>/<id>-` (the server appends a
//!    10-digit sequence number), where `<id>` is the token's random id (the 32 hex digits before
//!    the owner, see [`token_parts`]; the owner may contain `/` and stays out of names). The id
//!    in the name ("protection mode" in Curator) lets `release` find a node whose `create` was
//!    sent by an acquire that was then cancelled, and lets a create retried after a connection
//!    loss find the node the first attempt made. The node's data records the owner (see "Node
//!    data"), written by the same `create`;
//! 2. list the children and sort them by sequence number: the lowest holds the lock;
//! 3. otherwise set a watch on the **immediate predecessor only** (`getData` + watch) and wait for
//!    it to go away, or for the deadline, or for the session to end; then go back to 2.
//!
//! Each node is watched by exactly one successor, so one release wakes exactly one waiter (no herd),
//! and waiters are served in the order their nodes were created (arrival order). A waiter that gives
//! up (its wait ran out, or its future was dropped: the locker then calls `release`) deletes its
//! node, which wakes its own successor; that successor re-checks and watches the next predecessor.
//! With a wait of zero (one attempt) the node is created, checked, and deleted if not lowest.
//!
//! # Keys
//!
//! Any UTF-8 key maps to exactly one path segment, distinct for distinct keys:
//!
//! - printable ASCII (space included) and the Unicode BMP outside ZooKeeper's forbidden ranges
//!   (U+00A0..U+D7FF, U+F900..U+FFEF) are kept as they are, so keys stay readable in `zkCli`;
//! - `/`, `%`, control characters, U+D800..U+F8FF, U+FFF0..U+FFFF and every character outside the
//!   BMP (which Java sees as surrogate pairs, refused in paths) are percent-escaped byte by byte in
//!   UTF-8 (`/` → `%2F`, `\n` → `%0A`, `🔑` → `%F0%9F%94%91`);
//! - the whole segments `.` and `..` become `%2E` and `%2E%2E`;
//! - an escaped key longer than 200 bytes becomes its first ~120 bytes, then `%~`, then the 64 hex
//!   digits of the SHA-256 of the whole key. `%~` never occurs in an escaped key (an escape is
//!   always `%` and two upper-case hex digits), so a digested key never equals a short one; two
//!   long keys collide only if their SHA-256 digests do.
//!
//! # Node data
//!
//! A lock node's data is UTF-8 text: the line `dlock1`, then the owner (the part of the token
//! after its id; an empty line when the token carries none), and for a digested key (one whose
//! segment has `%~`) a third line with the whole key, so that [`Backend::list`] can report it
//! (it may contain newlines: it runs to the end of the data; keys over 64 KiB are not stored
//! and such locks are not listed, though [`Backend::inspect`] still finds them by key):
//!
//! ```text
//! dlock1
//! billing-7f9c
//! order:42/…a very long key…
//! ```
//!
//! Data that does not start with `dlock1` and a newline (a node of an older dlock, which wrote
//! none, or of another client) gives an unknown owner (`None`) and no stored key.
//!
//! # Inspection
//!
//! The holder of a key is the lowest node of its queue: `inspect` lists the queue and reads that
//! node (its data gives the owner, its `czxid` the fence; `expires_in` is always `None`, the lease
//! being the holder's session). `force_release` deletes that node, which wakes the successor's
//! watch as a release does; the old holder's next watchdog renewal finds its node gone and fires
//! `lost()`, and its `release` gives [`Error::Lost`]. `list(prefix)` lists the root's children
//! once (names only: ZooKeeper has no range query, so this one request grows with every queue
//! under the root), decodes each name, and reads the queue and holder only of those whose key
//! starts with `prefix` (a digested name is read when its readable part agrees with `prefix`; its
//! key then comes from the holder's data), a few dozen queues at a time.
//!
//! # Fence
//!
//! [`LockGuard::fence`](crate::LockGuard::fence) is the lock node's `czxid`, the id of the
//! transaction that created it. Zxids grow strictly across the whole ensemble, holders are served in
//! node-creation order, so fences strictly increase across holders of a key.
//!
//! # Lease
//!
//! ZooKeeper has no per-lock expiry: **the session is the lease**. Without `.ttl(d)`, or with
//! `.ttl(d).watchdog(true)`, the lock is held as long as the session lives; renewals only check that
//! the node still exists in a live session. With a fixed `.ttl(d)` the guard gives the lock up by
//! itself after `d` (the locker deletes the node and fires `lost()`), so a fixed lease means the same
//! as on the other backends. The lease of a lock that had to wait counts from the check that found
//! it lowest, not from when its node was queued.
//!
//! Every `Locker` keeps one session. When that session expires, is closed, fails authentication, or
//! stays disconnected long enough that the server may already have expired it (3/5 of the session
//! timeout after the client noticed the disconnection: the client notices after 2/5 of silence),
//! every guard of that session fires `lost()` and reports `is_held() == false`; release and extend
//! on them give [`Error::Lost`]. The next call opens a new session. A
//! connection that drops and comes back while the session is still alive loses nothing. A lock
//! node deleted by someone else (an operator) is noticed by the next watchdog renewal, which
//! checks that the node still exists in this session. (A watch on the holder's own node would
//! tell at once, but costs ~20% of uncontended throughput; it is left out.)

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use zookeeper_client as zk;

use super::digest::sha256_hex;
use super::{diagnose, jitter, token_parts, Backend, BoxFuture, Grant, Kind, LockInfo};
use crate::backend::tls::{TlsFiles, TlsParams};
use crate::backend::url_params::{mask_password, percent_decode};
use crate::{Error, Result};

mod inspect;
mod shared;

#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub use shared::hooks as test_hooks;

const NAME: &str = "zookeeper";
const DEFAULT_ROOT: &str = "/dlock";
const DEFAULT_PORT: u16 = 2181;
const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// Escaped keys up to this many bytes are used as they are; longer ones are digested.
const MAX_PLAIN_KEY: usize = 200;
/// How much of a digested key's escaped form is kept, for readability.
const DIGESTED_PREFIX: usize = 120;
/// What separates that kept part from the digest in a digested key's path segment.
const DIGEST_MARK: &str = "%~";
/// How many times an acquire starts over in a new session after its session ended.
const SESSION_RETRIES: u32 = 3;

/// Nodes of a Locker without credentials: open to every client, as ZooKeeper's default.
const OPEN: NodeOptions = NodeOptions {
    lock: zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all()),
    container: zk::CreateMode::Container.with_acls(zk::Acls::anyone_all()),
    persistent: zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all()),
};

/// Directories of a Locker with credentials: everything for the user that made them (ZooKeeper
/// expands `auth` to the session's digest id), reading for others. A node is deleted under its
/// parent's `delete` right, so others can neither delete nor add lock nodes.
static OWNER_ALL_OTHERS_READ: [zk::Acl; 2] = [
    zk::Acl::new_const(zk::Permission::ALL, "auth", ""),
    zk::Acl::new_const(zk::Permission::READ, "world", "anyone"),
];

/// How this Locker creates its nodes.
#[derive(Debug)]
struct NodeOptions {
    lock: zk::CreateOptions<'static>,
    container: zk::CreateOptions<'static>,
    persistent: zk::CreateOptions<'static>,
}

impl NodeOptions {
    fn for_config(cfg: &Config) -> NodeOptions {
        if cfg.auth.is_none() {
            return OPEN;
        }
        let dirs = zk::Acls::new(&OWNER_ALL_OTHERS_READ);
        NodeOptions {
            lock: zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::creator_all()),
            container: zk::CreateMode::Container.with_acls(dirs),
            persistent: zk::CreateMode::Persistent.with_acls(dirs),
        }
    }
}

/// What went wrong, with the node or host it concerns (wrapped in [`Error::Backend`]).
#[derive(Debug, thiserror::Error)]
enum Fail {
    #[error("{op} `{path}`: {source}{}", no_auth_hint(source))]
    Op {
        op: &'static str,
        path: String,
        #[source]
        source: zk::Error,
    },
    #[error("cannot connect to ZooKeeper at `{hosts}`: {why}")]
    Connect { hosts: String, why: String },
    #[error("no ZooKeeper session established with `{hosts}` within {limit:?}: {why}")]
    ConnectTimeout {
        hosts: String,
        limit: Duration,
        why: String,
    },
    #[error("the ZooKeeper session {session:#x} ended (expired, closed, or disconnected for longer than the server keeps it)")]
    SessionLost { session: i64 },
    #[error("lock node `{path}` was deleted by another client while it was queued")]
    Vanished { path: String },
}

impl Fail {
    fn op<'p>(op: &'static str, path: &'p str) -> impl FnOnce(zk::Error) -> Fail + 'p {
        move |source| Fail::Op {
            op,
            path: path.to_owned(),
            source,
        }
    }

    /// The session this failed in is gone: starting over in a new one may succeed.
    fn session_ended(&self) -> bool {
        match self {
            Fail::SessionLost { .. } => true,
            Fail::Op { source, .. } => is_session_error(source),
            _ => false,
        }
    }
}

impl From<Fail> for Error {
    fn from(f: Fail) -> Error {
        Error::backend(NAME, f)
    }
}

fn is_session_error(e: &zk::Error) -> bool {
    matches!(
        e,
        zk::Error::SessionExpired | zk::Error::ClientClosed | zk::Error::SessionMoved
    )
}

/// What a refused operation means for a user of dlock.
fn no_auth_hint(e: &zk::Error) -> &'static str {
    match e {
        zk::Error::NoAuth => {
            " (the lock nodes belong to another ZooKeeper user: check the user and password in \
             the URL; nodes made by a Locker with `user:password@` are writable by that user \
             only)"
        }
        zk::Error::InvalidAcl => " (the URL gives no user, but the node needs one)",
        _ => "",
    }
}

/// Parsed `zookeeper://` URL.
#[derive(Clone, PartialEq, Eq)]
struct Config {
    /// `host:port,host:port`, for the client's connect string.
    hosts: String,
    /// Absolute, without a trailing slash, never `/`.
    root: String,
    session_timeout: Duration,
    /// `user:password` for ZooKeeper's digest scheme, from the URL's user info.
    auth: Option<String>,
    /// `tls_ca` (required for TLS: the client has no system roots), `tls_cert`, `tls_key`.
    tls: TlsParams,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("hosts", &self.hosts)
            .field("root", &self.root)
            .field("session_timeout", &self.session_timeout)
            .field("auth", &self.auth.as_ref().map(|_| "***"))
            .field("tls", &self.tls)
            .finish()
    }
}

impl Config {
    fn parse(url: &str) -> Result<Config> {
        let bad = |reason: String| Error::InvalidUrl {
            url: mask_password(url),
            reason,
        };
        let form = "expected `zookeeper://[user:password@]host:port[,host:port...]/root\
                    [?session_timeout=10s][&tls_ca=PATH[&tls_cert=PATH&tls_key=PATH]]`";
        let (without_tls, tls) = TlsParams::take(url)?;
        let rest = without_tls
            .split_once("://")
            .filter(|(s, _)| s.eq_ignore_ascii_case("zookeeper") || s.eq_ignore_ascii_case("zk"))
            .map(|(_, r)| r)
            .ok_or_else(|| bad(format!("not a zookeeper:// URL; {form}")))?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (auth, authority) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => {
                let (user, password) = userinfo.split_once(':').ok_or_else(|| {
                    bad(format!(
                        "give both user and password (`user:password@`) for ZooKeeper's digest \
                         scheme; {form}"
                    ))
                })?;
                let (user, password) = (percent_decode(user), percent_decode(password));
                if user.is_empty() || user.contains(':') {
                    return Err(bad(format!(
                        "the digest user must be non-empty and without `:`; {form}"
                    )));
                }
                (Some(format!("{user}:{password}")), hosts)
            }
            None => (None, authority),
        };
        let mut hosts = Vec::new();
        for host in authority.split(',') {
            let host = host.trim();
            if host.is_empty() {
                return Err(bad(format!("empty host in `{authority}`; {form}")));
            }
            // `[v6]:port`, `host:port`, or a bare host (port 2181).
            let has_port = match host.rfind(']') {
                Some(i) => host[i..].contains(':'),
                None => host.contains(':'),
            };
            if has_port {
                let port = &host[host.rfind(':').unwrap_or(0) + 1..];
                if port.parse::<u16>().is_err() {
                    return Err(bad(format!("`{port}` in `{host}` is not a port; {form}")));
                }
                hosts.push(host.to_owned());
            } else {
                hosts.push(format!("{host}:{DEFAULT_PORT}"));
            }
        }
        let root = path.trim_end_matches('/');
        let root = if root.is_empty() { DEFAULT_ROOT } else { root };
        for segment in root[1..].split('/') {
            if segment.is_empty() || segment == "." || segment == ".." {
                return Err(bad(format!(
                    "root `{root}` has an empty, `.` or `..` segment; {form}"
                )));
            }
            if let Some(c) = segment.chars().find(|&c| !plain_char(c) || c == '%') {
                return Err(bad(format!(
                    "root `{root}` contains {c:?}, which is not allowed in a ZooKeeper path; {form}"
                )));
            }
        }
        if root == "/zookeeper" || root.starts_with("/zookeeper/") {
            return Err(bad(
                "`/zookeeper` is reserved by the server; pick another root such as `/dlock`".into(),
            ));
        }
        let mut session_timeout = DEFAULT_SESSION_TIMEOUT;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "session_timeout" => {
                    session_timeout = super::url_params::parse_duration(value)
                        .filter(|d| !d.is_zero())
                        .ok_or_else(|| {
                            bad(format!(
                                "session_timeout `{value}` is not a positive duration such as `10s` or `500ms`"
                            ))
                        })?;
                }
                other => {
                    return Err(bad(format!(
                        "unknown parameter `{other}`; the accepted ones are `session_timeout` (e.g. `?session_timeout=10s`) and `tls_ca`, `tls_cert`, `tls_key`"
                    )))
                }
            }
        }
        if tls.any() && tls.ca.is_none() {
            return Err(bad(format!(
                "ZooKeeper over TLS needs `tls_ca=PATH` (the CA that signed the server's \
                 certificate; the client has no system roots); {form}"
            )));
        }
        super::tls::require_feature(url, tls.any())?;
        Ok(Config {
            hosts: hosts.join(","),
            root: root.to_owned(),
            session_timeout,
            auth,
            tls,
        })
    }

    /// How long a connect may take before it is reported as a failure.
    fn connect_limit(&self) -> Duration {
        self.session_timeout
            .clamp(Duration::from_secs(2), Duration::from_secs(10))
    }
}

/// True for characters kept as they are in a path segment (see the module docs); `/` and `%` are
/// plain here but always escaped by [`encode_key`].
fn plain_char(c: char) -> bool {
    matches!(c, '\u{20}'..='\u{7e}' | '\u{a0}'..='\u{d7ff}' | '\u{f900}'..='\u{ffef}')
}

/// The one path segment of `key` (see the module docs).
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 8);
    for c in key.chars() {
        if plain_char(c) && c != '/' && c != '%' {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    if out.is_empty() {
        // Never reached through the locker (empty keys are refused), but keep the map total:
        // a lone `%` is not a valid escape, so no other key maps here.
        out.push('%');
    } else if out == "." || out == ".." {
        out = out.replace('.', "%2E");
    }
    if out.len() > MAX_PLAIN_KEY {
        let mut cut = DIGESTED_PREFIX;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        // Do not split a `%XX` escape.
        if let Some(p) = out[..cut].rfind('%') {
            if cut - p < 3 {
                cut = p;
            }
        }
        out.truncate(cut);
        out.push_str(DIGEST_MARK);
        out.push_str(&sha256_hex(key.as_bytes()));
    }
    out
}

/// Whether the lock node `name` belongs to the token with id `id` (`<id>-<digits>`).
fn node_of(name: &str, id: &str) -> bool {
    name.strip_prefix(id).is_some_and(|r| r.starts_with('-'))
}

/// The sequence number of a lock node name `<id>-<digits>`.
fn sequence_of(name: &str) -> Option<i64> {
    let (_, digits) = name.rsplit_once('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// One ZooKeeper session and the signal that it ended.
struct Session {
    client: zk::Client,
    id: i64,
    /// Becomes `true` once the session is known (or must be assumed) gone; also resolves when
    /// the monitor task is gone (this session dropped).
    dead: watch::Receiver<bool>,
    monitor: tokio::task::AbortHandle,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.monitor.abort();
    }
}

impl Session {
    fn alive(&self) -> bool {
        !*self.dead.borrow() && !self.client.state().is_terminated()
    }

    /// Resolves when the session ends.
    fn ended(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.dead.clone();
        async move {
            let _ = rx.wait_for(|dead| *dead).await;
        }
    }

    fn lost(&self) -> Fail {
        Fail::SessionLost { session: self.id }
    }
}

/// Watches the session state: terminal states, and a disconnection that lasts longer than the
/// server may keep the session, mark the session dead.
async fn monitor(
    mut states: zk::StateWatcher,
    timeout: Duration,
    dead: watch::Sender<bool>,
    id: i64,
) {
    // The client notices silence 2/5 of the session timeout after its last reply (checked every
    // 1/20); the server may expire the session a whole timeout after it last heard from us,
    // which can be slightly earlier. Giving up after half the timeout more leaves a margin of
    // about a tenth of it, so `lost()` fires before another client can be granted the lock.
    let grace = timeout / 2;
    let mut state = states.state();
    loop {
        if state.is_terminated() {
            tracing::warn!(target: "dlock", backend = NAME, session = %format!("{id:#x}"), state = %state, "ZooKeeper session ended; its locks are lost");
            dead.send_replace(true);
            return;
        }
        if state == zk::SessionState::Disconnected {
            tracing::debug!(target: "dlock", backend = NAME, session = %format!("{id:#x}"), "ZooKeeper connection lost; waiting for it to come back");
            let back = tokio::time::timeout(grace, async {
                loop {
                    let s = states.changed().await;
                    if s != zk::SessionState::Disconnected {
                        return s;
                    }
                }
            })
            .await;
            match back {
                Ok(s) => state = s,
                Err(_) => {
                    tracing::warn!(target: "dlock", backend = NAME, session = %format!("{id:#x}"), grace_ms = grace.as_millis() as u64, "ZooKeeper connection stayed down longer than the session may live; its locks are lost");
                    dead.send_replace(true);
                    return;
                }
            }
            continue;
        }
        state = states.changed().await;
    }
}

/// A lock node this backend created, by token.
#[derive(Clone)]
struct Node {
    dir: String,
    path: String,
    session: Arc<Session>,
    /// Its create was retried after a lost reply: another node of the token (a "ghost" of the
    /// first try) may exist, so a release removes every node of the token.
    ghost_possible: bool,
}

struct Inner {
    cfg: Config,
    current: RwLock<Option<Arc<Session>>>,
    connecting: tokio::sync::Mutex<()>,
    nodes: Mutex<HashMap<String, Node>>,
    wakeups: AtomicU64,
    /// Cleared when the server refuses container nodes (older than 3.5.3).
    containers: AtomicBool,
    /// The ACLs nodes are created with (open, or the URL's user's).
    node_options: NodeOptions,
    /// The CA and client certificate, read at connect; `None` without TLS.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    tls: Option<TlsFiles>,
}

/// The ZooKeeper [`Backend`]; see the [module docs](self) for the recipe, keys, fence and lease.
///
/// Cheap to clone: clones share the session.
#[derive(Clone)]
pub struct ZookeeperBackend {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ZookeeperBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZookeeperBackend")
            .field("hosts", &self.inner.cfg.hosts)
            .field("root", &self.inner.cfg.root)
            .field("session_timeout", &self.inner.cfg.session_timeout)
            .finish_non_exhaustive()
    }
}

impl ZookeeperBackend {
    /// Connects to `zookeeper://host:port[,host:port...]/root[?session_timeout=10s]` and creates
    /// the root if missing.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for a malformed URL; [`Error::Backend`] when no session can be
    /// established within the connect limit, or the root cannot be created.
    pub async fn connect(url: &str) -> Result<Self> {
        let cfg = Config::parse(url)?;
        let tls = if cfg.tls.any() {
            Some(cfg.tls.read(url).await?)
        } else {
            None
        };
        let backend = ZookeeperBackend {
            inner: Arc::new(Inner {
                node_options: NodeOptions::for_config(&cfg),
                tls,
                cfg,
                current: RwLock::new(None),
                connecting: tokio::sync::Mutex::new(()),
                nodes: Mutex::new(HashMap::new()),
                wakeups: AtomicU64::new(0),
                containers: AtomicBool::new(true),
            }),
        };
        let session = backend.session().await?;
        let root = &backend.inner.cfg.root;
        session
            .client
            .mkdir(root, &backend.inner.node_options.persistent)
            .await
            .map_err(Fail::op("create root", root))?;
        Ok(backend)
    }

    /// The session timeout the server granted to the current session (what bounds how long a
    /// crashed holder of this locker would block others).
    ///
    /// # Errors
    /// [`Error::Backend`] when no session can be established.
    pub async fn session_timeout(&self) -> Result<Duration> {
        Ok(self.session().await?.client.session_timeout())
    }

    /// The full path of the queue directory of `key`: `/<root>/<encoded key>`.
    pub fn key_path(&self, key: &str) -> String {
        format!("{}/{}", self.inner.cfg.root, encode_key(key))
    }

    /// The path segment `key` maps to (see the module docs).
    #[doc(hidden)]
    pub fn encode_key(key: &str) -> String {
        encode_key(key)
    }

    /// How many times a waiter was woken by its predecessor's watch (tests and diagnostics).
    #[doc(hidden)]
    pub fn watch_wakeups(&self) -> u64 {
        self.inner.wakeups.load(Ordering::Relaxed)
    }

    /// The current session's id and password (tests use them to close the session from a second
    /// client, forcing an expiry).
    ///
    /// # Errors
    /// [`Error::Backend`] when no session can be established.
    #[doc(hidden)]
    pub async fn session_info(&self) -> Result<zk::SessionInfo> {
        Ok(self.session().await?.client.session().clone())
    }

    fn nodes(&self) -> MutexGuard<'_, HashMap<String, Node>> {
        // Every update is one insert or remove: a poisoned map is still consistent.
        self.inner.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live session, opening a new one when there is none or it ended.
    async fn session(&self) -> Result<Arc<Session>, Fail> {
        if let Some(s) = self.live_session() {
            return Ok(s);
        }
        let _connecting = self.inner.connecting.lock().await;
        if let Some(s) = self.live_session() {
            return Ok(s);
        }
        let session = Arc::new(self.open().await?);
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(session.clone());
        Ok(session)
    }

    fn live_session(&self) -> Option<Arc<Session>> {
        let current = self.inner.current.read().unwrap_or_else(|p| p.into_inner());
        current.as_ref().filter(|s| s.alive()).cloned()
    }

    async fn open(&self) -> Result<Session, Fail> {
        let cfg = &self.inner.cfg;
        let limit = cfg.connect_limit();
        let mut connector = zk::Client::connector()
            .with_session_timeout(cfg.session_timeout)
            .with_fail_eagerly();
        if let Some(auth) = &cfg.auth {
            connector = connector.with_auth("digest", auth.as_bytes());
        }
        #[cfg(feature = "tls")]
        if let Some(files) = &self.inner.tls {
            connector = connector.with_tls(self.tls_options(files)?);
        }
        let secure = self.inner.tls.is_some();
        let connect = async {
            #[cfg(feature = "tls")]
            if secure {
                return connector.secure_connect(&cfg.hosts).await;
            }
            let _ = secure;
            connector.connect(&cfg.hosts).await
        };
        let client = match tokio::time::timeout(limit, connect).await {
            Ok(Ok(client)) => client,
            Ok(Err(source)) => {
                return Err(Fail::Connect {
                    hosts: cfg.hosts.clone(),
                    why: format!("{source}; {}", self.why_no_session().await),
                })
            }
            Err(_) => {
                return Err(Fail::ConnectTimeout {
                    hosts: cfg.hosts.clone(),
                    limit,
                    why: self.why_no_session().await,
                })
            }
        };
        let id = client.session_id().0;
        let (tx, rx) = watch::channel(false);
        let monitor = tokio::spawn(monitor(
            client.state_watcher(),
            client.session_timeout(),
            tx,
            id,
        ))
        .abort_handle();
        tracing::debug!(target: "dlock", backend = NAME, session = %format!("{id:#x}"), timeout_ms = client.session_timeout().as_millis() as u64, "ZooKeeper session opened");
        Ok(Session {
            client,
            id,
            dead: rx,
            monitor,
        })
    }

    /// The client's TLS options from the files read at connect.
    #[cfg(feature = "tls")]
    fn tls_options(&self, files: &TlsFiles) -> Result<zk::TlsOptions, Fail> {
        super::tls::install_crypto_provider();
        let hosts = &self.inner.cfg.hosts;
        let bad = |why: String| Fail::Connect {
            hosts: hosts.clone(),
            why,
        };
        let text = |bytes: &[u8], what: &str| {
            std::str::from_utf8(bytes)
                .map(str::to_owned)
                .map_err(|_| bad(format!("the {what} file is not PEM text")))
        };
        let ca = text(files.ca.as_deref().unwrap_or_default(), "tls_ca")?;
        let mut options = zk::TlsOptions::new()
            .with_pem_ca(&ca)
            .map_err(|e| bad(format!("the tls_ca file: {e}")))?;
        if let Some((cert, key)) = &files.identity {
            options = options
                .with_pem_identity(&text(cert, "tls_cert")?, &text(key, "tls_key")?)
                .map_err(|e| bad(format!("the client certificate (tls_cert, tls_key): {e}")))?;
        }
        Ok(options)
    }

    /// Why no session came (the client says only "timeout" or "no hosts"): a TCP probe, and
    /// with TLS a handshake of our own with the same certificates, against the first host.
    async fn why_no_session(&self) -> String {
        let hosts = &self.inner.cfg.hosts;
        #[cfg(feature = "tls")]
        if let Some(files) = &self.inner.tls {
            let first = hosts.split(',').next().unwrap_or_default();
            return super::tls::probe(first, files.ca.clone(), files.identity.clone()).await;
        }
        diagnose(hosts, "ZooKeeper").await
    }

    /// Retries `op` after connection losses while the session lives (idempotent operations only).
    async fn retry<T, F, Fut>(session: &Session, mut op: F) -> Result<T, zk::Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, zk::Error>>,
    {
        let mut delay = Duration::from_millis(20);
        loop {
            match op().await {
                Err(zk::Error::ConnectionLoss) if session.alive() => {
                    tokio::time::sleep(jitter(delay, delay * 2)).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }

    /// Creates the queue directory `dir` (a container where supported), and the root if missing.
    async fn make_dir(&self, session: &Session, dir: &str) -> Result<(), Fail> {
        loop {
            let container = self.inner.containers.load(Ordering::Relaxed);
            let made = &self.inner.node_options;
            let options = if container {
                &made.container
            } else {
                &made.persistent
            };
            match Self::retry(session, || session.client.create(dir, &[], options)).await {
                Ok(_) | Err(zk::Error::NodeExists) => return Ok(()),
                Err(zk::Error::Unimplemented) if container => {
                    self.inner.containers.store(false, Ordering::Relaxed);
                }
                Err(zk::Error::NoNode) => {
                    let root = &self.inner.cfg.root;
                    Self::retry(session, || session.client.mkdir(root, &made.persistent))
                        .await
                        .map_err(Fail::op("create root", root))?;
                }
                Err(e) => return Err(Fail::op("create lock directory", dir)(e)),
            }
        }
    }

    /// Creates the lock node of the token with id `id` under `dir`, holding `data` (see
    /// "Node data" in the module docs); returns its name, its czxid, when the create that made
    /// it was sent, and whether a create was retried after a lost reply (a ghost node of the
    /// token may exist).
    async fn create_node(
        &self,
        session: &Session,
        dir: &str,
        id: &str,
        data: &[u8],
    ) -> Result<(String, i64, Instant, bool), Fail> {
        let prefix = format!("{dir}/{id}-");
        let mut delay = Duration::from_millis(20);
        let mut attempt = 0;
        let mut retried = false;
        loop {
            attempt += 1;
            let sent_at = Instant::now();
            #[cfg(feature = "test-hooks")]
            if attempt == 1 && crate::test_hooks::take_ghost_create(dir) {
                // The first create happens but its reply is "lost", and the listing that would
                // find it is skipped (as on a lagging server): a ghost node of the token.
                let _ = session
                    .client
                    .create(&prefix, data, &self.inner.node_options.lock)
                    .await;
                retried = true;
                continue;
            }
            match session
                .client
                .create(&prefix, data, &self.inner.node_options.lock)
                .await
            {
                Ok((stat, seq)) => {
                    return Ok((format!("{id}-{seq}"), stat.czxid, sent_at, retried))
                }
                Err(zk::Error::NoNode) if attempt < 10 => self.make_dir(session, dir).await?,
                Err(zk::Error::ConnectionLoss) if session.alive() && attempt < 10 => {
                    retried = true;
                    // The create may have happened: look for our node before trying again.
                    tokio::time::sleep(jitter(delay, delay * 2)).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                    let found = Self::retry(session, || session.client.list_children(dir)).await;
                    if let Some(name) = found
                        .unwrap_or_default()
                        .into_iter()
                        .find(|c| node_of(c, id))
                    {
                        let path = format!("{dir}/{name}");
                        let stat = Self::retry(session, || session.client.check_stat(&path))
                            .await
                            .map_err(Fail::op("stat lock node", &path))?;
                        if let Some(stat) = stat {
                            return Ok((name, stat.czxid, sent_at, retried));
                        }
                    }
                }
                Err(e) => return Err(Fail::op("create lock node", &prefix)(e)),
            }
        }
    }

    /// Deletes `path`; `Ok(false)` when it was already gone.
    async fn delete(session: &Session, path: &str) -> Result<bool, Fail> {
        // A retried delete that finds no node most likely removed it itself the first time (its
        // reply was lost with the connection): our node, in our live session, cannot have been
        // removed by anyone else but an operator.
        let mut retried = false;
        let deleted = Self::retry(session, || {
            let first = !std::mem::replace(&mut retried, true);
            let delete = session.client.delete(path, None);
            async move {
                match delete.await {
                    Err(zk::Error::NoNode) if !first => Ok(()),
                    other => other,
                }
            }
        })
        .await;
        match deleted {
            Ok(()) => Ok(true),
            Err(zk::Error::NoNode) => Ok(false),
            Err(e) => Err(Fail::op("delete lock node", path)(e)),
        }
    }

    /// Creates `token`'s node `<stem>-<seq>` in the queue `dir` and records it, so a release
    /// (also of a cancelled acquire) finds it: its name, path, czxid and when its create was
    /// sent.
    async fn enqueue(
        &self,
        session: &Arc<Session>,
        dir: &str,
        token: &str,
        stem: &str,
        data: &[u8],
    ) -> Result<(String, String, i64, Instant), Fail> {
        let (name, czxid, created_at, ghost_possible) =
            self.create_node(session, dir, stem, data).await?;
        let path = format!("{dir}/{name}");
        self.nodes().insert(
            token.to_owned(),
            Node {
                dir: dir.to_owned(),
                path: path.clone(),
                session: session.clone(),
                ghost_possible,
            },
        );
        #[cfg(feature = "test-hooks")]
        crate::test_hooks::after_create(dir).await;
        Ok((name, path, czxid, created_at))
    }

    /// One acquire in one session: queue, wait, and either hold or leave.
    async fn queue(
        &self,
        session: &Arc<Session>,
        dir: &str,
        token: &str,
        data: &[u8],
        deadline: Option<Instant>,
    ) -> Result<Option<Grant>, Fail> {
        let id = token_parts(token).0;
        let (name, path, czxid, created_at) = self.enqueue(session, dir, token, id, data).await?;
        let mut first = true;
        loop {
            let checked_at = Instant::now();
            let children = Self::retry(session, || session.client.list_children(dir)).await;
            let children = match children {
                Ok(c) => c,
                // The directory is only removed when empty, so our node is gone too.
                Err(zk::Error::NoNode) => Vec::new(),
                Err(e) => return Err(Fail::op("list lock queue", dir)(e)),
            };
            // Another node of our token (a create retried after a lost reply, whose first try
            // showed up late) would block us from ahead or be left behind us: remove it.
            for ghost in children.iter().filter(|c| **c != name && node_of(c, id)) {
                Self::delete(session, &format!("{dir}/{ghost}")).await?;
            }
            let mut queue: Vec<(i64, &str)> = children
                .iter()
                .filter(|c| **c == name || !node_of(c, id))
                .filter_map(|c| sequence_of(c).map(|n| (n, c.as_str())))
                .collect();
            queue.sort_unstable();
            let Some(place) = queue.iter().position(|(_, c)| *c == name) else {
                self.nodes().remove(token);
                return Err(if session.alive() {
                    Fail::Vanished { path }
                } else {
                    session.lost()
                });
            };
            if place == 0 {
                let sent_at = if first { created_at } else { checked_at };
                return Ok(Some(Grant {
                    fence: u64::try_from(czxid).ok(),
                    lost: Some(Box::pin(session.ended())),
                    sent_at,
                }));
            }
            first = false;
            if deadline.is_some_and(|d| d <= Instant::now()) {
                return self.give_up(session, token, &path).await;
            }
            let predecessor = format!("{dir}/{}", queue[place - 1].1);
            let watched =
                Self::retry(session, || session.client.get_and_watch_data(&predecessor)).await;
            let watcher = match watched {
                Ok((_, _, watcher)) => watcher,
                Err(zk::Error::NoNode) => continue,
                Err(e) => return Err(Fail::op("watch predecessor", &predecessor)(e)),
            };
            let until = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = watcher.changed() => {
                    self.inner.wakeups.fetch_add(1, Ordering::Relaxed);
                }
                _ = until => return self.give_up(session, token, &path).await,
                _ = session.ended() => return Err(session.lost()),
            }
        }
    }

    /// Leaves the queue after the wait ran out.
    async fn give_up(
        &self,
        session: &Session,
        token: &str,
        path: &str,
    ) -> Result<Option<Grant>, Fail> {
        // On failure the entry stays, so the locker's release of this token finds the node.
        Self::delete(session, path).await?;
        self.nodes().remove(token);
        Ok(None)
    }

    async fn acquire_inner(
        &self,
        key: &str,
        token: &str,
        deadline: Option<Instant>,
    ) -> Result<Option<Grant>, Fail> {
        let dir = self.key_path(key);
        let data = inspect::node_data(token, key, &dir);
        let mut retries = 0;
        loop {
            let session = self.session().await?;
            match self.queue(&session, &dir, token, &data, deadline).await {
                Err(f)
                    if f.session_ended()
                        && !session.alive()
                        && retries < SESSION_RETRIES
                        && deadline.is_none_or(|d| d > Instant::now()) =>
                {
                    // The node went (or will go) with the session: queue again in a new one.
                    tracing::debug!(target: "dlock", key, backend = NAME, error = %f, "session ended while acquiring; queueing again");
                    self.nodes().remove(token);
                    retries += 1;
                }
                other => return other,
            }
        }
    }

    async fn release_inner(&self, key: &str, token: &str) -> Result<bool, Fail> {
        self.release_in(self.key_path(key), token).await
    }

    /// Deletes the node(s) of `token` in the queue `dir` (a mutex's, or a read-write lock's or
    /// semaphore's); `true` when there was one.
    async fn release_in(&self, dir: String, token: &str) -> Result<bool, Fail> {
        let id = token_parts(token).0;
        let node = self.nodes().remove(token).filter(|n| n.dir == dir);
        if let Some(node) = node {
            let session = if node.session.alive() {
                node.session.clone()
            } else {
                // Ephemeral nodes of an ended session are gone; one whose session was only
                // presumed dead may not be, and any session may delete it.
                self.session().await?
            };
            let deleted = Self::delete(&session, &node.path).await?;
            if node.ghost_possible {
                Self::delete_all_of(&session, &dir, id).await?;
            }
            return Ok(deleted);
        }
        // Not (or no longer) known here: the acquire of this token may have been cancelled after
        // sending its create. Requests of one session are processed in order, so the listing
        // sees that node (and any ghost of a retried create).
        let session = self.session().await?;
        Self::delete_all_of(&session, &dir, id).await
    }

    /// Deletes every node of the token with id `id` under `dir`; `true` when there was one.
    async fn delete_all_of(session: &Session, dir: &str, id: &str) -> Result<bool, Fail> {
        let children = match Self::retry(session, || session.client.list_children(dir)).await {
            Ok(c) => c,
            Err(zk::Error::NoNode) => return Ok(false),
            Err(e) => return Err(Fail::op("list lock queue", dir)(e)),
        };
        let mut deleted = false;
        for name in children.iter().filter(|c| node_of(c, id)) {
            deleted |= Self::delete(session, &format!("{dir}/{name}")).await?;
        }
        Ok(deleted)
    }

    async fn extend_inner(&self, key: &str, token: &str) -> Result<bool, Fail> {
        self.extend_in(self.key_path(key), token).await
    }

    /// Whether `token`'s node in the queue `dir` still exists in its live session.
    async fn extend_in(&self, dir: String, token: &str) -> Result<bool, Fail> {
        let node = self.nodes().get(token).filter(|n| n.dir == dir).cloned();
        let Some(node) = node else {
            return Ok(false);
        };
        if !node.session.alive() {
            return Ok(false);
        }
        let session = &node.session;
        match Self::retry(session, || session.client.check_stat(&node.path)).await {
            Ok(Some(stat)) => Ok(stat.ephemeral_owner == session.id),
            Ok(None) => Ok(false),
            Err(e) if is_session_error(&e) => Ok(false),
            Err(e) => Err(Fail::op("check lock node", &node.path)(e)),
        }
    }
}

impl Backend for ZookeeperBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn acquire<'a>(
        &'a self,
        key: &'a str,
        kind: Kind,
        token: &'a str,
        _ttl: Duration,
        deadline: Option<Instant>,
    ) -> BoxFuture<'a, Result<Option<Grant>>> {
        // The ttl is kept by the locker's lease task (see "Lease" in the module docs).
        if kind != Kind::Exclusive {
            return Box::pin(self.acquire_shared(key, kind, token, deadline));
        }
        Box::pin(async move { Ok(self.acquire_inner(key, token, deadline).await?) })
    }

    fn release<'a>(
        &'a self,
        key: &'a str,
        kind: Kind,
        token: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        if kind != Kind::Exclusive {
            return Box::pin(self.release_shared(key, kind, token));
        }
        Box::pin(async move { Ok(self.release_inner(key, token).await?) })
    }

    fn extend<'a>(
        &'a self,
        key: &'a str,
        kind: Kind,
        token: &'a str,
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        if kind != Kind::Exclusive {
            return Box::pin(self.extend_shared(key, kind, token));
        }
        Box::pin(async move { Ok(self.extend_inner(key, token).await?) })
    }

    /// The owner of the lowest node in the key's queue (from its data), its czxid as fence;
    /// `expires_in` is `None`: the lease is the holder's session. See "Inspection" in the
    /// module docs.
    fn inspect<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<LockInfo>>> {
        Box::pin(async move { Ok(self.inspect_inner(key).await?) })
    }

    /// One listing of the root's children, then the holder of each queue whose key starts
    /// with `prefix`. See "Inspection" in the module docs.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<LockInfo>>> {
        Box::pin(async move { Ok(self.list_inner(prefix).await?) })
    }

    /// Deletes the lowest node of the key's queue, which wakes its successor's watch as a
    /// release does; the old holder's next renewal finds its node gone.
    fn force_release<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move { Ok(self.force_release_inner(key).await?) })
    }

    /// Drops the sessions: once the last handle on a session is gone, the client sends
    /// `CloseSession`, and the server deletes its ephemeral nodes at once.
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.nodes().clear();
            self.inner
                .current
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .take();
        })
    }
}
