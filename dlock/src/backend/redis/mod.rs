//! The Redis backend: `SET NX PX` with a fence in one transaction, token-checked release and renewal,
//! pub/sub wake-ups that wake one local waiter per release.
//!
//! Read-write locks and semaphores (`src/backend/redis/shared/`) keep their holders in sorted
//! sets scored by server-time lease ends under `dlock:rw:{key}` and `dlock:sem:{key}` (the same
//! hash tag, so Cluster serves a key from one node), with writer preference (a waiting writer's
//! short-lived mark holds new readers back), the mutex's fence rule and floor, and the same notice
//! queue: a grant that leaves room passes the wake-up on.
//!
//! # Commands and scripts
//! Every state change is atomic on the server; no step can interleave with another client's in
//! a way that breaks the lock:
//!
//! - **acquire**: one round trip, one Lua script (`EVALSHA`): unless other Lockers are queued
//!   for the key (see "Waiting"), `SET lock token NX PX ttl`; when that wins, the fence by the
//!   rule below, stored back as the key's fence counter. A lost attempt answers how long the
//!   holder's lease has left, which bounds the waiter's fallback.
//! - Scripts run with `EVALSHA` (loaded on first use, reloaded when the server answers
//!   `NOSCRIPT`); the two token-checked steps:
//! - **release**: if `GET lock == token` then `DEL lock` and `PUBLISH released`; returns 1 or 0.
//!   Never `GET` then `DEL` from the client: the lease could expire and another client take the
//!   lock between the two, and the `DEL` would free *their* lock.
//! - **extend** (also the watchdog's renewal): if `GET lock == token` then `PEXPIRE lock ttl`.
//!
//! # Waiting
//! Within one Locker, waiters of a key queue FIFO: a release hands the lock straight to the
//! front waiter (one script, the key never free) or, when the key went free, its notice wakes
//! the front waiter only; a newcomer queues behind waiters already there.
//!
//! Across Lockers (other processes), the order is kept on the server, in the key's queue of
//! waiting Lockers (`dlock:{E(k)}:queue`, a list of `<place ends, server ms>:<locker id>`): a
//! waiting acquire whose attempt loses takes a place at the back, or renews the place it has.
//! While a queue exists, the key goes only to the Locker first in it, also when the key is free
//! (no barging past the queue, also not by `try_lock`); a grant takes the Locker out. A
//! release that could hand the lock to a local waiter does so only while no other Locker is
//! queued; otherwise it frees the key, puts its own Locker at the back and its notice names
//! the Locker now first, whose front waiter alone attempts. So Lockers take turns, one grant
//! each, and every task gets its share (the bench's 16 tasks over 4 Lockers: per-task counts
//! equal to within one).
//!
//! A place lasts 3 s unless renewed; a waiting Locker's front waiter attempts (and so renews
//! it) at least every second, and a Locker whose last waiter gives up leaves the queue at once.
//! A Locker that dies or freezes while queued therefore holds a free key back for at most 3 s.
//!
//! # Fences
//! A fence must never repeat or go back for a key, also when the server loses or rolls back its
//! counter: a restart that kept nothing, a `FLUSHALL`/`FLUSHDB`, a failover to a replica that
//! had not received the last writes (replication is asynchronous). A counter that starts again,
//! or continues from an older value, would let a stale holder's writes through once the new
//! fences catch up with the old ones. So every grant (acquire or hand-off) draws
//!
//! ```text
//! fence = max(counter + 1, now)      now = the server's clock (TIME), in µs since 1970
//! ```
//!
//! and stores it back as the counter, in the same script, atomically.
//!
//! - **Why a fence cannot repeat or go back.** Assume (A) the servers' clocks do not go back
//!   (across a restart, or from a primary to the replica that replaces it: NTP-synchronized
//!   clocks) and (B) a key gets fewer than one grant per microsecond on average (each grant is a
//!   round trip to one single-threaded server, far below 10^6 per second). Then a fence issued
//!   at time `t` is at most `t` plus the grants within the same microsecond, so below any later
//!   `now`; and every fence is at least the `now` of its grant. Whatever the counter holds after
//!   a restart, flush or failover (nothing, or an older value), the next fence is at least the
//!   new `now`, above every fence issued before. Without a loss, `counter + 1` only grows.
//! - **When (A) breaks**, the client notices what it can: each backend remembers the highest
//!   fence it handed out, and a grant whose fence would not be above it is refused (an
//!   [`Error::Backend`] that says why, the lock given back) rather than hand out a lower fence.
//!   Another process that never saw the higher fences cannot tell; that is the assumption.
//! - Fences are therefore large numbers (about 1.8 × 10^15); compare them, do not count on them
//!   being dense. They fit in an `i64`/`BIGINT` column.
//! - The price: the acquire is a Lua script (it reads the clock) rather than a `MULTI`
//!   transaction, which the bench measured at 1.1–1.2x the throughput; safety across a failover
//!   is worth it (the chaos suite's `failover` fault gave out repeated and lower fences with the
//!   counter-only scheme).
//!
//! # Restarts
//! A Redis restart that kept nothing (no AOF/RDB) frees every lock at once, while their holders
//! may still be inside their leases. The Redis documentation's answer is a *delayed restart*:
//! keep the restarted server out of use for longer than the longest lease. dlock does it from
//! the client: when a grant finds the key's state lost (its fence counter missing), it asks the
//! server's uptime (`INFO server`, only on that rare path); if the
//! server has been up for less than `?restart_delay=` (default 30 s, the default watchdog lease;
//! set it to your longest `ttl`), the grant is given back and acquires wait (within their
//! `.wait`) until the server has been up that long. A fresh server looks the same as a
//! restarted one, so locks wait during its first 30 s too; `?restart_delay=0` turns it off
//! (for servers with persistence, or tests). A `FLUSHALL` is not a restart: fences still grow
//! across it, but mutual exclusion is not kept.
//!
//! # Replicas
//! `?replicas=N` on the URL: a grant (and each renewal) counts only once N replicas have it —
//! `WAIT N` after it on the same connection, for at most a quarter of the lease and a second (a
//! grant confirmed later would come back with little of its lease left). A grant not confirmed is
//! withdrawn (token-checked release) and the acquire fails with [`Error::Backend`]; a renewal
//! not confirmed is a failed renewal (the watchdog retries until the lease deadline). So a
//! failover to a replica that had confirmed keeps the lock and its fence. Without it,
//! replication is asynchronous: a failover right after a grant can lose the lock (a second
//! holder gets in), but fences still grow (each is at least the server's clock: see "Fences").
//!
//! # Eviction
//! `connect` refuses a server with a `maxmemory` limit and any `maxmemory-policy` other than
//! `noeviction`: under `volatile-*` Redis may evict a lock key (it has a TTL) before its lease
//! ends, and under `allkeys-*` a fence counter, so fences would start again from 1. A server
//! whose `CONFIG` is not readable is accepted with a warning.

mod connection;
pub(crate) mod inspect;
mod notices;
mod scripts;
pub mod sentinel;
mod shared;
mod waiting;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::Script;
use tokio::sync::OnceCell;

use super::{Backend, BoxFuture, Grant, Kind, LockInfo, MIN_ANSWER_TIME};
use crate::backend::tls::{TlsFiles, TlsParams};
use crate::backend::waiters::{Handoff, SettleOnDrop, Waiter};

use crate::backend::url_params::mask_password;
use crate::{Error, Result};
use connection::{connect_error, refuse_evicting_server, Target};
pub(crate) use connection::{manager_config, open_client, tls_files, Conn};
use notices::{NoticeConnection, Notices};
use scripts::{AcquireReply, ACQUIRE, FENCE_REFUSED, GIVE_BACK, HANDOFF, RELEASE_SHARDED};
pub(crate) use scripts::{EXTEND, RELEASE};
use waiting::Attempt;

/// The acquire and release scripts of an uncontended cycle, for the benchmark's floor of dlock's
/// own shape (the same server work issued raw). `ACQUIRE`: keys lock, fence counter, queue;
/// arguments token, ttl in ms, highest fence seen, Locker id, `1` when waiting; returns `2 *
/// (fence + 1) + counter_was_missing` when won (an integer of at least 2). `RELEASE`: keys lock,
/// queue; arguments token, notice channel, Locker id; returns 1 when released.
#[doc(hidden)]
pub fn cycle_scripts() -> (&'static Script, &'static Script) {
    (&ACQUIRE, &RELEASE)
}

const NAME: &str = "redis";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
/// How many times in a row a key may be handed from holder to local waiter before a release
/// lets it go free (a queued Locker ends the run at once: see the module docs, "Waiting").
const MAX_HANDOFFS_IN_A_ROW: u32 = 16;

/// The Redis names of one user key (see the module docs): the lock `dlock:{E(k)}` and the
/// names beside it, all under the key's hash tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisKeys {
    /// The four names back to back, in one allocation (built twice per lock cycle: four
    /// vectors were a measurable share of the client's own work in callgrind).
    names: Vec<u8>,
    /// The length of the lock's name, the prefix of every other name.
    lock_len: usize,
}

/// The suffixes of the names beside the lock, in their order in [`RedisKeys::names`].
const FENCE_SUFFIX: &[u8] = b":fence";
const CHANNEL_SUFFIX: &[u8] = b":released";
const QUEUE_SUFFIX: &[u8] = b":queue";

impl RedisKeys {
    /// Maps a user key to its Redis names.
    pub fn new(key: &str) -> Self {
        let escapes = key
            .bytes()
            .filter(|b| matches!(b, b'%' | b'{' | b'}'))
            .count();
        let lock_len = "dlock:{".len() + key.len() + 2 * escapes + 1;
        let total = 4 * lock_len + FENCE_SUFFIX.len() + CHANNEL_SUFFIX.len() + QUEUE_SUFFIX.len();
        let mut names = Vec::with_capacity(total);
        names.extend_from_slice(b"dlock:{");
        if escapes == 0 {
            names.extend_from_slice(key.as_bytes());
        } else {
            for &b in key.as_bytes() {
                match b {
                    b'%' => names.extend_from_slice(b"%25"),
                    b'{' => names.extend_from_slice(b"%7B"),
                    b'}' => names.extend_from_slice(b"%7D"),
                    _ => names.push(b),
                }
            }
        }
        names.push(b'}');
        for suffix in [FENCE_SUFFIX, CHANNEL_SUFFIX, QUEUE_SUFFIX] {
            names.extend_from_within(..lock_len);
            names.extend_from_slice(suffix);
        }
        RedisKeys { names, lock_len }
    }

    /// The lock itself: `dlock:{E(k)}`.
    pub fn lock(&self) -> &[u8] {
        &self.names[..self.lock_len]
    }

    /// The fence counter: `dlock:{E(k)}:fence`.
    pub fn fence(&self) -> &[u8] {
        let start = self.lock_len;
        &self.names[start..start + self.lock_len + FENCE_SUFFIX.len()]
    }

    /// The release-notice channel: `dlock:{E(k)}:released`.
    pub fn channel(&self) -> &[u8] {
        let start = 2 * self.lock_len + FENCE_SUFFIX.len();
        &self.names[start..start + self.lock_len + CHANNEL_SUFFIX.len()]
    }

    /// The queue of Lockers waiting for the lock: `dlock:{E(k)}:queue`.
    pub fn queue(&self) -> &[u8] {
        let start = 3 * self.lock_len + FENCE_SUFFIX.len() + CHANNEL_SUFFIX.len();
        &self.names[start..]
    }
}

/// The Redis [`Backend`]. Made by [`Locker::connect`](crate::Locker::connect) for `redis://`
/// and `rediss://` URLs.
pub struct RedisBackend {
    target: Target,
    commands: Conn,
    /// This Locker's name in the queues of waiting Lockers (random, 16 hex digits).
    id: Arc<str>,
    notices: Arc<Notices>,
    /// The highest fence this backend has handed out: a re-seeded counter must start above it.
    highest_fence: AtomicU64,
    /// `?replicas=N`: a grant or renewal counts once N replicas have it (`WAIT`).
    replicas: u32,
    /// `?restart_delay=`: no grant of a key whose state the server lost until it has been up
    /// this long (see the module docs, "Restarts").
    restart_delay: Duration,
    /// Set when the server was found restarted less than `restart_delay` ago: no grants before.
    grants_from: Mutex<Option<Instant>>,
    /// `grants_from` is set (checked without the lock on every acquire).
    delayed: AtomicBool,
    /// The pub/sub connection, opened on the first wait.
    pubsub: OnceCell<Arc<NoticeConnection>>,
    attempts: AtomicU64,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("RedisBackend");
        match &self.target {
            Target::Single(client) => d.field("server", &client.get_connection_info().addr()),
            Target::Cluster { seeds, .. } => d.field("cluster", seeds),
        };
        d.finish_non_exhaustive()
    }
}

fn backend_err(e: impl Into<crate::BoxError>) -> Error {
    Error::backend(NAME, e)
}

impl RedisBackend {
    /// Connects to `redis://[user:pass@]host:port[/db]` (or `rediss://` when the `redis` crate
    /// is built with TLS).
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for a URL the `redis` crate rejects; [`Error::Backend`] when the
    /// server does not answer within the connect timeout.
    pub async fn connect(url: &str) -> Result<Self> {
        let (url_for_client, replicas) = super::url_params::take_param(url, "replicas");
        let (url_for_client, restart_delay) =
            super::url_params::take_param(&url_for_client, "restart_delay");
        let restart_delay = match restart_delay {
            None => DEFAULT_RESTART_DELAY,
            Some(d) => super::url_params::parse_duration(&d).ok_or_else(|| Error::InvalidUrl {
                url: mask_password(url),
                reason: format!(
                    "`restart_delay={d}` is not a duration; write it like `30s`, `500ms`, or `0` \
                     to turn the delay off"
                ),
            })?,
        };
        let replicas = match replicas {
            None => 0,
            Some(n) => n.parse::<u32>().map_err(|_| Error::InvalidUrl {
                url: mask_password(url),
                reason: format!(
                    "`replicas={n}` is not a number; `?replicas=1` makes a grant count once one \
                     replica has it"
                ),
            })?,
        };
        let (url_for_client, tls) = TlsParams::take(&url_for_client)?;
        let tls = tls_files(url, &tls).await?;
        let scheme = url.split_once("://").map_or("", |(s, _)| s);
        if scheme.eq_ignore_ascii_case("redis+cluster")
            || scheme.eq_ignore_ascii_case("rediss+cluster")
        {
            return Self::connect_cluster(url, &url_for_client, tls, replicas, restart_delay).await;
        }
        let client = open_client(&url_for_client, tls.as_ref()).map_err(|e| Error::InvalidUrl {
            url: mask_password(url),
            reason: format!("{e}; expected redis://[user:pass@]host:port[/db] (rediss:// for TLS)"),
        })?;
        let commands = match tokio::time::timeout(
            CONNECT_TIMEOUT * 2,
            ConnectionManager::new_with_config(client.clone(), manager_config()),
        )
        .await
        {
            Ok(Ok(commands)) => commands,
            Ok(Err(e)) => return Err(connect_error(url, &e)),
            Err(_) => {
                #[allow(unused_mut)]
                let mut why = String::new();
                #[cfg(feature = "tls")]
                if let Some(files) = tls {
                    let host = client.get_connection_info().addr().to_string();
                    why = format!(
                        ": {}",
                        super::tls::probe(&host, files.ca, files.identity).await
                    );
                }
                return Err(backend_err(format!(
                    "connect to {} timed out{why}",
                    mask_password(url)
                )));
            }
        };
        let mut commands = Conn::Single(commands);
        refuse_evicting_server(&mut commands, url).await?;
        Ok(Self::with(
            Target::Single(client),
            commands,
            replicas,
            restart_delay,
        ))
    }

    fn with(target: Target, commands: Conn, replicas: u32, restart_delay: Duration) -> Self {
        let id: Arc<str> = format!("{:016x}", uuid::Uuid::new_v4().as_u64_pair().0).into();
        RedisBackend {
            target,
            commands,
            notices: Arc::new(Notices::new(id.clone())),
            id,
            highest_fence: AtomicU64::new(0),
            replicas,
            restart_delay,
            grants_from: Mutex::new(None),
            delayed: AtomicBool::new(false),
            pubsub: OnceCell::new(),
            attempts: AtomicU64::new(0),
        }
    }

    /// Connects to a Redis Cluster through its seed nodes (`redis+cluster://`): the cluster
    /// client finds every primary, follows `MOVED`/`ASK` and a failed-over primary.
    async fn connect_cluster(
        url: &str,
        url_for_client: &str,
        tls: Option<TlsFiles>,
        replicas: u32,
        restart_delay: Duration,
    ) -> Result<Self> {
        let bad = |reason: String| Error::InvalidUrl {
            url: mask_password(url),
            reason: format!(
                "{reason}; expected redis+cluster://[user:password@]host:port[,host:port...]"
            ),
        };
        let rest = url_for_client.split_once("://").map_or("", |(_, r)| r);
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        if !query.is_empty() {
            return Err(bad(format!(
                "unknown parameter(s) `{query}` (a cluster takes `replicas`, `restart_delay` and \
                 the `tls_*` ones)"
            )));
        }
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return Err(bad(
                "a cluster has no database number (it has only database 0)".into(),
            ));
        }
        let (userinfo, hosts) = match rest.rsplit_once('@') {
            Some((user, hosts)) => (format!("{user}@"), hosts),
            None => (String::new(), rest),
        };
        let seeds: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect();
        if seeds.is_empty() {
            return Err(bad("no seed node".into()));
        }
        let scheme = if tls.is_some() { "rediss" } else { "redis" };
        let nodes: Vec<String> = seeds
            .iter()
            .map(|h| format!("{scheme}://{userinfo}{h}"))
            .collect();
        for node in &nodes {
            redis::Client::open(node.as_str())
                .map_err(|e| bad(format!("seed `{}`: {e}", mask_password(node))))?;
        }
        #[cfg(feature = "tls")]
        let certs = tls
            .filter(|f| f.ca.is_some() || f.identity.is_some())
            .map(|files| (files.ca, files.identity));
        #[cfg(not(feature = "tls"))]
        let _ = tls;
        let builder = move || {
            let builder = redis::cluster::ClusterClient::builder(nodes.clone())
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT);
            #[cfg(feature = "tls")]
            if let Some((ca, identity)) = &certs {
                return builder.certs(redis::TlsCertificates {
                    client_tls: identity.clone().map(|(client_cert, client_key)| {
                        redis::ClientTlsConfig {
                            client_cert,
                            client_key,
                        }
                    }),
                    root_cert: ca.clone(),
                });
            }
            builder
        };
        let client = builder().build().map_err(|e| bad(e.to_string()))?;
        let commands =
            match tokio::time::timeout(CONNECT_TIMEOUT * 2, client.get_async_connection()).await {
                Ok(Ok(commands)) => commands,
                Ok(Err(e)) => return Err(connect_error(url, &e)),
                Err(_) => {
                    return Err(backend_err(format!(
                        "connect to the cluster {} timed out; {}",
                        mask_password(url),
                        super::diagnose(&seeds.join(","), "Redis").await
                    )))
                }
            };
        let mut commands = Conn::Cluster(commands);
        refuse_evicting_server(&mut commands, url).await?;
        let target = Target::Cluster {
            seeds,
            builder: Arc::new(builder),
        };
        Ok(Self::with(target, commands, replicas, restart_delay))
    }

    /// The release script for this server: a cluster's notice is sharded (`SPUBLISH`), so it
    /// reaches only the subscribers of the key's shard.
    fn release_script(&self) -> &'static Script {
        match self.commands {
            Conn::Single(_) => &RELEASE,
            Conn::Cluster(_) => &RELEASE_SHARDED,
        }
    }

    /// The publishing command for this server's notices (as in [`Self::release_script`]).
    fn publish_command(&self) -> &'static str {
        match self.commands {
            Conn::Single(_) => "PUBLISH",
            Conn::Cluster(_) => "SPUBLISH",
        }
    }

    /// Token-checked release of `token`'s hold on the lock (see [`RELEASE`]): true when it held.
    async fn release_token(&self, keys: &RedisKeys, token: &str) -> Result<bool> {
        let mut con = self.commands.clone();
        let script = self.release_script();
        let mut cmd = scripts::evalsha(script, 2);
        cmd.arg(keys.lock())
            .arg(keys.queue())
            .arg(token)
            .arg(keys.channel())
            .arg(&*self.id);
        let released: i64 = scripts::run(&mut con, script, &cmd)
            .await
            .map_err(backend_err)?;
        Ok(released == 1)
    }

    /// The highest fence this backend handed out (for a backend that replaces it after a
    /// failover, so its fence check goes on from there).
    pub(crate) fn highest_fence(&self) -> u64 {
        self.highest_fence.load(Ordering::Acquire)
    }

    /// Raises the highest fence seen to at least `fence`.
    pub(crate) fn raise_highest_fence(&self, fence: u64) {
        self.highest_fence.fetch_max(fence, Ordering::AcqRel);
    }

    /// Acquire attempts made so far by this backend (for benchmarks and tests: with a release
    /// notice waking one local waiter, it stays close to one attempt per acquisition).
    #[doc(hidden)]
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// One acquire attempt: the fence and when the lease started when won, or busy with how
    /// long the holder's lease (or the first queued Locker's turn) has left when known. A lost
    /// attempt of a waiting acquire (`waiting`) takes or renews this Locker's place in the
    /// key's queue.
    ///
    /// One round trip, the [`ACQUIRE`] script. A key that already holds this acquisition's
    /// token counts as won: a release may have handed it the lock although the waiter never
    /// heard so (the releaser's reply was lost, or its future dropped after the script was
    /// sent), or an earlier try of this acquire was granted and its answer lost (a failover
    /// retried on the new primary); the script then sets the lease afresh, token-checked, so
    /// the client's deadline never outlasts the server's, and returns the fence drawn then.
    async fn attempt(
        &self,
        keys: &RedisKeys,
        token: &str,
        ttl: Duration,
        waiting: bool,
    ) -> Result<Attempt> {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let mut con = self.commands.clone();
        let seen = self.highest_fence.load(Ordering::Acquire);
        let sent_at = Instant::now();
        let mut cmd = scripts::evalsha(&ACQUIRE, 3);
        cmd.arg(keys.lock())
            .arg(keys.fence())
            .arg(keys.queue())
            .arg(token)
            .arg(ttl_ms(ttl))
            .arg(seen)
            .arg(&*self.id)
            .arg(if waiting { "1" } else { "0" });
        let reply: redis::RedisResult<i64> = scripts::run(&mut con, &ACQUIRE, &cmd).await;
        let (fence, counter_was_missing) = match reply.map(AcquireReply::decode) {
            Ok(AcquireReply::Won {
                fence,
                counter_was_missing,
            }) => (fence, counter_was_missing),
            Ok(AcquireReply::Busy { left_ms }) => {
                let left = left_ms.map(Duration::from_millis);
                return Ok(Attempt::Busy { left });
            }
            Err(e) if e.code() == Some(FENCE_REFUSED) => {
                let fence = e.detail().unwrap_or("?");
                return Err(backend_err(format!(
                    "refusing to hand out a fence: the server's clock ({fence} µs) is not past \
                     the highest fence this client has seen ({seen}); a lower fence would let a \
                     stale holder's writes through. Check the server's clock (a failover to a \
                     server whose clock is behind?)"
                )));
            }
            Err(e) => return Err(backend_err(e)),
        };
        // The common grant: a known key, no restart delay, no replicas to wait for. Nothing
        // left to do, and none of the rare steps is part of this future (they are boxed): it
        // stays small enough to run inline, not boxed, in every acquire.
        if !counter_was_missing && self.replicas == 0 && self.grants_wait().is_none() {
            self.highest_fence.fetch_max(fence, Ordering::AcqRel);
            return Ok(Attempt::Won { fence, sent_at });
        }
        let granted = Box::pin(self.after_grant(keys, token, ttl, fence, counter_was_missing));
        Ok(match granted.await? {
            Some(fence) => Attempt::Won { fence, sent_at },
            None => Attempt::Busy { left: None },
        })
    }

    /// The rare steps after a grant (see [`Self::attempt`]): restart checks and replica waits.
    /// The fence when the grant stands, `None` when it was given back.
    async fn after_grant(
        &self,
        keys: &RedisKeys,
        token: &str,
        ttl: Duration,
        fence: u64,
        counter_was_missing: bool,
    ) -> Result<Option<u64>> {
        // The key's state was lost (or it is new): if the server restarted recently, a holder
        // from before the restart may still be inside its lease. Give the grant back; and so
        // for every key while that delay lasts (this grant stored the key's counter again).
        let delayed = self.grants_wait().is_some()
            || (counter_was_missing && self.restarted_recently(keys).await?);
        if delayed {
            // The counter goes too, so the next grant (from any process) finds the state lost
            // and checks the restart as well; fences stay above it (at least the clock).
            let mut con = self.commands.clone();
            let _: i64 = GIVE_BACK
                .key(keys.lock())
                .key(keys.fence())
                .arg(token)
                .arg(fence)
                .invoke_async(&mut con)
                .await
                .map_err(backend_err)?;
            return Ok(None);
        }
        self.highest_fence.fetch_max(fence, Ordering::AcqRel);
        self.replicated_or_undo(keys, token, ttl).await?;
        Ok(Some(fence))
    }

    /// Whether the server has been up for less than `restart_delay` (asked with `INFO server`
    /// only on the rare path where a key's state was found lost); records until when grants
    /// wait.
    async fn restarted_recently(&self, keys: &RedisKeys) -> Result<bool> {
        if self.restart_delay.is_zero() {
            return Ok(false);
        }
        if self.grants_wait().is_some() {
            return Ok(true);
        }
        let mut con = self.commands.clone();
        let mut ask = redis::cmd("INFO");
        ask.arg("server");
        let info: String = con
            .on_node_of(keys.lock(), ask)
            .await
            .map_err(backend_err)?;
        let uptime = info
            .lines()
            .find_map(|l| l.strip_prefix("uptime_in_seconds:"))
            .and_then(|v| v.trim().parse::<u64>().ok());
        // Unknown uptime: assume a restart, the safe side. Redis subtracts whole seconds of
        // its clock (start time and now both truncated), so the figure can overstate the time
        // up by almost a second: count one second less.
        let up = Duration::from_secs(uptime.unwrap_or(0).saturating_sub(1));
        if up >= self.restart_delay {
            return Ok(false);
        }
        let from = Instant::now() + (self.restart_delay - up);
        *self.grants_from.lock().unwrap_or_else(|p| p.into_inner()) = Some(from);
        self.delayed.store(true, Ordering::Release);
        tracing::warn!(target: "dlock", backend = NAME, up_s = up.as_secs(), delay_ms = self.restart_delay.as_millis() as u64, "the Redis server restarted recently and kept no lock state: no grants until it has been up for the restart delay");
        Ok(true)
    }

    /// When grants may resume after a recent restart; `None` when they may now.
    fn grants_wait(&self) -> Option<Instant> {
        // The common case, on every acquire: no delay known, no lock taken.
        if !self.delayed.load(Ordering::Acquire) {
            return None;
        }
        let mut from = self.grants_from.lock().unwrap_or_else(|p| p.into_inner());
        match *from {
            Some(at) if at > Instant::now() => Some(at),
            Some(_) => {
                *from = None;
                self.delayed.store(false, Ordering::Release);
                None
            }
            None => None,
        }
    }

    /// With `?replicas=N`: whether N replicas have every write this connection made so far
    /// (`WAIT N`, for at most a quarter of the lease `ttl` and [`REPLICA_WAIT`]: a grant
    /// confirmed late would come back with little of its lease left). Always true without it.
    async fn replicated(&self, keys: &RedisKeys, ttl: Duration) -> Result<bool> {
        if self.replicas == 0 {
            return Ok(true);
        }
        let mut con = self.commands.clone();
        let mut wait = redis::cmd("WAIT");
        wait.arg(self.replicas)
            .arg(replica_wait(ttl).as_millis().max(1) as u64);
        let acked: i64 = con
            .on_node_of(keys.lock(), wait)
            .await
            .map_err(backend_err)?;
        Ok(acked >= i64::from(self.replicas))
    }

    /// A grant that the replicas did not confirm is withdrawn (token-checked release) and the
    /// acquire fails: a failover could otherwise lose it.
    async fn replicated_or_undo(&self, keys: &RedisKeys, token: &str, ttl: Duration) -> Result<()> {
        if self.replicated(keys, ttl).await? {
            return Ok(());
        }
        self.release_token(keys, token).await?;
        Err(backend_err(format!(
            "fewer than {} replica(s) confirmed the grant within {:?} (?replicas={}); \
             the grant was withdrawn: a failover could have lost it",
            self.replicas,
            replica_wait(ttl),
            self.replicas
        )))
    }
}

/// `?restart_delay=` when not given: the default watchdog lease, the longest lease most users
/// run (set it to your longest `ttl` if longer).
const DEFAULT_RESTART_DELAY: Duration = Duration::from_secs(30);

/// How long a grant or renewal waits for `?replicas=N` to confirm it.
const REPLICA_WAIT: Duration = Duration::from_secs(1);

/// How long `?replicas=N` waits for a lease of `ttl`: a quarter of it, at most [`REPLICA_WAIT`].
fn replica_wait(ttl: Duration) -> Duration {
    (ttl / 4).min(REPLICA_WAIT)
}

pub(crate) fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// A pause before repeating a request whose connection dropped (the manager reconnects).
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);

/// Whether `e` is a connection that dropped or broke (not a timeout, not a server's answer).
fn connection_dropped(e: &Error) -> bool {
    let Error::Backend { source, .. } = e else {
        return false;
    };
    source.downcast_ref::<redis::RedisError>().is_some_and(|e| {
        (e.is_connection_dropped() || e.is_io_error() || e.is_connection_refusal())
            && !e.is_timeout()
    })
}

impl RedisBackend {
    /// A release straight to the local waiter `waiter` (see [`HANDOFF`]), or, when another
    /// Locker is queued, a release for its turn: true when the lock was ours.
    async fn hand_off(&self, keys: &RedisKeys, token: &str, waiter: Arc<Waiter>) -> Result<bool> {
        let mut con = self.commands.clone();
        let mut settle = SettleOnDrop(Some(waiter.clone()));
        let sent_at = Instant::now();
        let mut cmd = scripts::evalsha(&HANDOFF, 3);
        cmd.arg(keys.lock())
            .arg(keys.fence())
            .arg(keys.queue())
            .arg(token)
            .arg(&waiter.token)
            .arg(ttl_ms(waiter.ttl))
            .arg(&*self.id)
            .arg(keys.channel())
            .arg(self.publish_command());
        let fence: i64 = scripts::run(&mut con, &HANDOFF, &cmd)
            .await
            .map_err(backend_err)?;
        settle.0 = None;
        if fence < 0 {
            // Another Locker was queued: released for its turn; our waiter waits for
            // ours (this Locker went to the back of the key's queue).
            waiter.reopen();
            return Ok(true);
        }
        let mut granted = u64::try_from(fence).ok().filter(|f| *f > 0);
        if let Some(f) = granted {
            self.highest_fence.fetch_max(f, Ordering::AcqRel);
            // Not confirmed by the replicas: withdrawn; the waiter tries again.
            if !self.replicated(keys, waiter.ttl).await? {
                self.release_token(keys, &waiter.token).await?;
                granted = None;
            }
        }
        let abandoned = matches!(*waiter.handoff(), Handoff::Abandoned);
        if abandoned {
            // The waiter's acquire was dropped while the lock was on its way: give the
            // lock up for it (its own cancel-release may have run before the hand-off).
            if granted.is_some() {
                self.release_token(keys, &waiter.token).await?;
            }
        } else {
            let _ = waiter.settle(granted.map(|f| (f, sent_at)));
        }
        Ok(granted.is_some())
    }

    async fn extend_once(&self, key: &str, token: &str, ttl: Duration) -> Result<bool> {
        let keys = RedisKeys::new(key);
        let mut con = self.commands.clone();
        let extended: i64 = EXTEND
            .key(keys.lock())
            .arg(token)
            .arg(ttl_ms(ttl))
            .invoke_async(&mut con)
            .await
            .map_err(backend_err)?;
        if extended == 1 && !self.replicated(&keys, ttl).await? {
            return Err(backend_err(format!(
                "fewer than {} replica(s) confirmed the renewal within {:?}",
                self.replicas,
                replica_wait(ttl)
            )));
        }
        Ok(extended == 1)
    }
}

impl Backend for RedisBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn acquire<'a>(
        &'a self,
        key: &'a str,
        kind: Kind,
        token: &'a str,
        ttl: Duration,
        deadline: Option<Instant>,
    ) -> BoxFuture<'a, Result<Option<Grant>>> {
        if kind != Kind::Exclusive {
            // Read-write locks and semaphores (shared.rs); repeated once after a dropped
            // connection as below (an attempt under a token that already holds counts as won).
            return Box::pin(async move {
                match shared::acquire(self, key, kind, token, ttl, deadline).await {
                    Err(e) if connection_dropped(&e) => {
                        tokio::time::sleep(RECONNECT_PAUSE).await;
                        shared::acquire(self, key, kind, token, ttl, deadline).await
                    }
                    done => done,
                }
            });
        }
        // Once more after a dropped connection: the connection manager reconnects after the
        // first command that fails (a server restart, a killed connection); an acquire is
        // safe to repeat (a key already holding its token counts as won).
        Box::pin(async move {
            match self.acquire_once(key, token, ttl, deadline).await {
                Err(e) if connection_dropped(&e) => {
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    self.acquire_once(key, token, ttl, deadline).await
                }
                done => done,
            }
        })
    }

    fn release<'a>(
        &'a self,
        key: &'a str,
        kind: Kind,
        token: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        if kind != Kind::Exclusive {
            return Box::pin(shared::release(self, key, kind, token));
        }
        Box::pin(async move {
            let keys = RedisKeys::new(key);
            if let Some(waiter) = self.notices.waiters.claim_front(keys.channel()) {
                // Boxed: the hand-off's state is most of this future's size, copied into the
                // box of every release if inline.
                return Box::pin(self.hand_off(&keys, token, waiter)).await;
            }
            self.release_token(&keys, token).await
        })
    }

    fn extend<'a>(
        &'a self,
        key: &'a str,
        kind: Kind,
        token: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        // Token-checked, so safe to repeat after a dropped connection (see `acquire`).
        Box::pin(async move {
            let once = || async {
                if kind == Kind::Exclusive {
                    self.extend_once(key, token, ttl).await
                } else {
                    shared::extend(self, key, kind, token, ttl).await
                }
            };
            match once().await {
                Err(e) if connection_dropped(&e) => {
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    once().await
                }
                done => done,
            }
        })
    }

    fn inspect<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<LockInfo>>> {
        Box::pin(async move {
            let keys = RedisKeys::new(key);
            Ok(inspect::holder(self, key, &keys)
                .await?
                .map(|(_, info)| info))
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<LockInfo>>> {
        Box::pin(inspect::list(self, prefix))
    }

    fn force_release<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let keys = RedisKeys::new(key);
            // The holder's own release (its notice or hand-off wakes waiters as usual). A
            // holder that changed between the read and the release is read again.
            for _ in 0..3 {
                let Some((token, _)) = inspect::holder(self, key, &keys).await? else {
                    return Ok(false);
                };
                if self.release(key, Kind::Exclusive, &token).await? {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag_and_stay_distinct() {
        let k = RedisKeys::new("a}b{c%");
        assert_eq!(k.lock(), b"dlock:{a%7Db%7Bc%25}");
        assert_eq!(k.fence(), b"dlock:{a%7Db%7Bc%25}:fence");
        assert_eq!(k.channel(), b"dlock:{a%7Db%7Bc%25}:released");
        assert_eq!(k.queue(), b"dlock:{a%7Db%7Bc%25}:queue");
        assert_ne!(RedisKeys::new("%7D").lock(), RedisKeys::new("}").lock());
        assert_ne!(RedisKeys::new("a").lock(), RedisKeys::new("a}").lock());
    }
}
