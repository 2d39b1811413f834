//! Redlock: one lock over N independent Redis masters, held while a majority agrees.
//!
//! `redlock://host:port,host:port,host:port[,...]` names N independent masters (N odd, at
//! least 3; `redlock://user:pass@h1:p1,h2:p2,...` applies the credentials to every node). The
//! algorithm is the one of the [Redlock description](https://redis.io/docs/latest/develop/use/patterns/distributed-locks/):
//!
//! 1. Send `SET key token NX PX ttl` to every node at once, all bounded by a short per-node
//!    timeout (`ttl / 10`, between 10 ms and 250 ms), so a paused, killed or refusing node costs
//!    at most that timeout and never stalls the acquire.
//! 2. The lock is won when a quorum of `N/2 + 1` nodes said yes and the validity time
//!    `ttl − elapsed − drift` (drift = `ttl × 0.01 + 2 ms`) is still positive. The client counts
//!    its lease (and each renewal) from the moment the requests were sent, less the same drift,
//!    so it never believes it holds the lock longer than the quorum does. The acquire returns as
//!    soon as a quorum said yes: the other nodes' answers cannot change that, their `SET`s are
//!    on the wire all the same, and the release goes to every node after them on the same
//!    connection.
//! 3. Otherwise (every node having answered or timed out) the token is released on every node
//!    at once and the attempt is retried after a random delay, until the wait runs out.
//!
//! Release and extend (and so the watchdog's renewal) run token-checked scripts on every node at
//! once (compare-and-`DEL`, compare-and-`PEXPIRE`; no release notice as in the Redis backend:
//! nobody waits for one) and wait for every node's answer; extend needs a quorum, and a renewal
//! that loses it fires [`lost()`](crate::LockGuard::lost). Keys map to Redis names exactly as in
//! [the Redis backend](super::redis).
//!
//! Each node has one multiplexed connection, shared by every request to it and opened in the
//! background from the start; a connection that breaks (a node killed or restarted) is
//! reopened by the next request, and a node that refuses is tried again after 50 ms, doubling
//! up to 1 s. A request is bounded by its round's single timer, not by one per node.
//!
//! # No fencing tokens
//! [`fence()`](crate::LockGuard::fence) is `None` here. A fence must strictly increase across
//! holders; over N independent masters there is no single counter to increment, and counting on
//! a quorum of counters can go backwards when nodes restart or a minority was partitioned,
//! which needs consensus to fix (see Martin Kleppmann,
//! [How to do distributed locking](https://martin.kleppmann.com/2016/02/08/how-to-do-distributed-locking.html)).
//! When the protected resource must reject late writers, use a backend that gives fences:
//! `redis` (one master), `zookeeper` (the node's czxid) or `mysql` (an AUTO_INCREMENT id).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError, Weak};
use std::task::Poll;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Cmd, Value};

use super::redis::{open_client, ttl_ms, RedisKeys};
use super::{jitter, remaining, token_parts, Backend, BoxFuture, Grant, Kind, LockInfo};
use crate::backend::url_params::mask_password;
use crate::{Error, Result};

const NAME: &str = "redlock";
/// The bound of opening one node's connection (TCP, TLS, authentication).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// After a failed connect a node is left alone this long before the next, doubling up to
/// [`RECONNECT_MAX`]; a connection that breaks is reopened by the next call at once.
const RECONNECT_MIN: Duration = Duration::from_millis(50);
const RECONNECT_MAX: Duration = Duration::from_secs(1);
/// The bound of each node's answer to a release, an extend or a read.
const ANSWER_TIME: Duration = Duration::from_millis(500);

/// A token-checked script, sent as `EVALSHA` and loaded on a node that answers `NOSCRIPT`.
struct Lua {
    code: &'static str,
    sha: String,
}

impl Lua {
    fn new(code: &'static str) -> Self {
        let sha = redis::Script::new(code).get_hash().to_owned();
        Lua { code, sha }
    }
}

/// `DEL` when the lock holds `ARGV[1]`. No release notice as in the Redis backend: nobody
/// listens for one (a Redlock acquire retries after a random pause).
static RELEASE: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end \
         return 0",
    )
});

/// `PEXPIRE` to `ARGV[2]` ms when the lock holds `ARGV[1]`.
static EXTEND: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then \
         return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0",
    )
});

/// The Redlock [`Backend`]. Made by [`Locker::connect`](crate::Locker::connect) for
/// `redlock://` URLs.
pub struct RedlockBackend {
    nodes: Vec<Arc<Node>>,
}

impl std::fmt::Debug for RedlockBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hosts: Vec<&str> = self.nodes.iter().map(|n| n.host.as_str()).collect();
        f.debug_struct("RedlockBackend")
            .field("nodes", &hosts)
            .finish()
    }
}

/// What one node said to one command.
enum Answer {
    Yes,
    No,
    Failed,
}

/// How many nodes said what.
#[derive(Default)]
struct Tally {
    yes: usize,
    no: usize,
    failed: usize,
}

impl Tally {
    fn answered(&self) -> usize {
        self.yes + self.no
    }
}

/// One master: the client for it and one multiplexed connection, opened in the background
/// (from [`RedlockBackend::connect`] on, and again after it breaks).
struct Node {
    host: String,
    client: redis::Client,
    link: Mutex<Link>,
    /// Wakes the calls waiting for a connect to finish.
    changed: tokio::sync::Notify,
    /// Connections opened so far: tells a broken connection from its replacement.
    opened: AtomicU64,
}

enum Link {
    Up {
        con: MultiplexedConnection,
        id: u64,
    },
    /// A connect is under way.
    Connecting,
    /// No connection: the first call at or after `retry_at` opens one.
    Down {
        retry_at: Instant,
        backoff: Duration,
    },
}

impl Node {
    fn new(host: &str, client: redis::Client) -> Arc<Node> {
        let node = Arc::new(Node {
            host: host.to_owned(),
            client,
            link: Mutex::new(Link::Connecting),
            changed: tokio::sync::Notify::new(),
            opened: AtomicU64::new(0),
        });
        // Connect now, without waiting: the first acquire finds the connection open, and a
        // node that is down is tolerated.
        node.start_connect(RECONNECT_MIN);
        node
    }

    fn link(&self) -> MutexGuard<'_, Link> {
        self.link.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The open connection (and its id), waiting for a connect under way (the caller bounds
    /// the wait); `None` while the node cannot be reached.
    async fn connection(self: &Arc<Self>) -> Option<(MultiplexedConnection, u64)> {
        let changed = {
            let mut link = self.link();
            let start = match &*link {
                Link::Up { con, id } => return Some((con.clone(), *id)),
                Link::Down { retry_at, .. } if Instant::now() < *retry_at => return None,
                Link::Down { backoff, .. } => Some(*backoff),
                Link::Connecting => None,
            };
            // Made under the lock, so the connect's end (which takes it) cannot be missed.
            let changed = self.changed.notified();
            if let Some(backoff) = start {
                *link = Link::Connecting;
                drop(link);
                self.start_connect(backoff);
            }
            changed
        };
        changed.await;
        match &*self.link() {
            Link::Up { con, id } => Some((con.clone(), *id)),
            _ => None,
        }
    }

    /// Opens a connection in a task of its own (the link is [`Link::Connecting`]), so a caller
    /// that stops waiting does not stop it; if it fails, the next waits `backoff`.
    fn start_connect(self: &Arc<Self>, backoff: Duration) {
        let mut attempt = Attempt {
            node: Arc::downgrade(self),
            backoff,
            done: false,
        };
        // Outside a runtime (or on one shutting down) the attempt is dropped unfinished, which
        // leaves the node down.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let client = self.client.clone();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            // Every request is bounded by the caller (per-node timeouts); a second timer per
            // request in the connection would only cost time.
            .set_response_timeout(None);
        runtime.spawn(async move {
            let opened = client
                .get_multiplexed_async_connection_with_config(&config)
                .await;
            attempt.finish(opened);
        });
    }

    /// Forgets connection `id` after it broke (the next call opens a new one).
    fn broke(&self, id: u64) {
        let mut link = self.link();
        if matches!(&*link, Link::Up { id: current, .. } if *current == id) {
            *link = Link::Down {
                retry_at: Instant::now(),
                backoff: RECONNECT_MIN,
            };
        }
    }

    /// Forgets connection `id` if `e` says it is broken.
    fn note_error(&self, id: u64, e: &redis::RedisError) {
        if e.is_unrecoverable_error() || e.is_io_error() {
            self.broke(id);
        }
    }

    /// `cmd` on this node (`script` is loaded first where the node answers `NOSCRIPT`).
    async fn call(self: &Arc<Self>, cmd: &Cmd, script: Option<&Lua>) -> Answer {
        let Some((mut con, id)) = self.connection().await else {
            return Answer::Failed;
        };
        let mut reply = con.send_packed_command(cmd).await;
        if let (Some(lua), Ok(Value::ServerError(e))) = (script, &reply) {
            if e.code() == "NOSCRIPT" {
                let mut load = redis::cmd("SCRIPT");
                load.arg("LOAD").arg(lua.code);
                reply = match con.send_packed_command(&load).await {
                    Ok(Value::ServerError(e)) => Ok(Value::ServerError(e)),
                    Ok(_) => con.send_packed_command(cmd).await,
                    Err(e) => Err(e),
                };
            }
        }
        match reply {
            Ok(Value::Okay | Value::Int(1)) => Answer::Yes,
            Ok(Value::ServerError(_)) => Answer::Failed,
            Ok(_) => Answer::No,
            Err(e) => {
                self.note_error(id, &e);
                Answer::Failed
            }
        }
    }
}

/// A connect under way. Dropped unfinished (its runtime shut down), it leaves the node down, so
/// the next call connects again.
struct Attempt {
    node: Weak<Node>,
    backoff: Duration,
    done: bool,
}

impl Attempt {
    fn finish(&mut self, opened: redis::RedisResult<MultiplexedConnection>) {
        self.done = true;
        let Some(node) = self.node.upgrade() else {
            return;
        };
        let next = match opened {
            Ok(con) => Link::Up {
                con,
                id: node.opened.fetch_add(1, Ordering::Relaxed),
            },
            Err(e) => {
                tracing::debug!(target: "dlock", backend = NAME, node = %node.host, error = %e, "cannot connect to a Redlock node");
                Link::Down {
                    retry_at: Instant::now() + self.backoff,
                    backoff: (self.backoff * 2).min(RECONNECT_MAX),
                }
            }
        };
        *node.link() = next;
        node.changed.notify_waiters();
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.done {
            self.finish(Err(redis::RedisError::from(std::io::Error::from(
                std::io::ErrorKind::Interrupted,
            ))));
        }
    }
}

/// Polls `calls` together in the calling task (no task spawned per node and request), handing
/// each output to `take` as it comes, until all have answered, `take` says the outcome is
/// decided, or `limit` has passed, whichever is first. One timer bounds them all. Calls still
/// waiting are dropped: a request already handed to its connection is still sent (a
/// multiplexed connection writes what it was given and discards the late reply).
async fn join_within<F: Future + Unpin>(
    calls: Vec<F>,
    limit: Duration,
    mut take: impl FnMut(F::Output) -> bool,
) {
    let mut calls: Vec<Option<F>> = calls.into_iter().map(Some).collect();
    let mut timer = std::pin::pin!(tokio::time::sleep(limit));
    std::future::poll_fn(|cx| {
        let mut waiting = false;
        for slot in calls.iter_mut() {
            if let Some(call) = slot {
                match Pin::new(call).poll(cx) {
                    Poll::Ready(value) => {
                        *slot = None;
                        if take(value) {
                            return Poll::Ready(());
                        }
                    }
                    Poll::Pending => waiting = true,
                }
            }
        }
        if !waiting || timer.as_mut().poll(cx).is_ready() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}

impl RedlockBackend {
    /// Connects (in the background: down nodes are tolerated) to `redlock://h1:p1,h2:p2,h3:p3[,...]`
    /// (`redlocks://` for TLS to every node, with the `tls` feature).
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for fewer than 3 nodes, an even number of nodes, or a node address
    /// the `redis` crate rejects.
    pub async fn connect(url: &str) -> Result<Self> {
        let bad = |reason: String| Error::InvalidUrl {
            url: mask_password(url),
            reason,
        };
        let (without_tls, tls) = crate::backend::tls::TlsParams::take(url)?;
        let tls = super::redis::tls_files(url, &tls).await?;
        let node_scheme = if tls.is_some() { "rediss" } else { "redis" };
        let rest = without_tls
            .split_once("://")
            .map(|(_, rest)| rest)
            .ok_or_else(|| bad("expected redlock://host:port,host:port,host:port".into()))?;
        if let Some((_, query)) = rest.split_once('?') {
            return Err(bad(format!(
                "unknown parameter(s) `{query}`; Redlock URLs take `tls_ca`, `tls_cert` and \
                 `tls_key` (with `redlocks://`)"
            )));
        }
        let (userinfo, hosts) = match rest.rsplit_once('@') {
            Some((user, hosts)) => (format!("{user}@"), hosts),
            None => (String::new(), rest),
        };
        let hosts: Vec<&str> = hosts
            .trim_end_matches('/')
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .collect();
        if hosts.len() < 3 {
            return Err(bad(format!(
                "Redlock needs at least 3 independent Redis masters, got {}; list them as \
                 redlock://h1:6379,h2:6379,h3:6379 (or use redis:// for a single server)",
                hosts.len()
            )));
        }
        if hosts.len() % 2 == 0 {
            return Err(bad(format!(
                "Redlock needs an odd number of masters, got {}: an even number tolerates no \
                 more failures than one fewer; add or drop one node",
                hosts.len()
            )));
        }
        let mut clients = Vec::with_capacity(hosts.len());
        for host in &hosts {
            let node_url = format!("{node_scheme}://{userinfo}{host}");
            let client = open_client(&node_url, tls.as_ref())
                .map_err(|e| bad(format!("node `{host}`: {e}")))?;
            clients.push(client);
        }
        // Every address is valid before any connect starts.
        let nodes = hosts
            .iter()
            .zip(clients)
            .map(|(host, client)| Node::new(host, client))
            .collect();
        Ok(RedlockBackend { nodes })
    }

    fn quorum(&self) -> usize {
        self.nodes.len() / 2 + 1
    }

    /// `cmd` on every node at once, all bounded by `timeout` (one timer), until every node has
    /// answered or `decided` says the answers so far settle the outcome (the nodes not heard
    /// from count as failed).
    async fn on_all(
        &self,
        cmd: &Cmd,
        script: Option<&Lua>,
        timeout: Duration,
        decided: impl Fn(&Tally) -> bool,
    ) -> Tally {
        let calls = self
            .nodes
            .iter()
            .map(|node| Box::pin(node.call(cmd, script)))
            .collect();
        let mut tally = Tally::default();
        join_within(calls, timeout, |answer| {
            match answer {
                Answer::Yes => tally.yes += 1,
                Answer::No => tally.no += 1,
                Answer::Failed => {}
            }
            decided(&tally)
        })
        .await;
        // Failed, or not heard from in time.
        tally.failed = self.nodes.len() - tally.answered();
        tally
    }

    /// A token-checked script on every node: `Ok(true)` with a quorum of yes, `Ok(false)` when
    /// a quorum answered and too few said yes, an error when too few answered to tell.
    async fn quorum_of(&self, op: Op, key: &str, token: &str) -> Result<bool> {
        let (cmd, script) = op.command(key, token);
        // Every node's answer is awaited (up to the timeout), though a quorum may have settled
        // the outcome sooner: a script call is not always one request (a node that lost the
        // script is sent it first), and one cut short might never reach its node.
        let tally = self.on_all(&cmd, script, ANSWER_TIME, |_| false).await;
        if tally.yes >= self.quorum() {
            Ok(true)
        } else if tally.no > self.nodes.len() - self.quorum() {
            // Enough nodes said no that a quorum of yes is impossible: the lock is not ours.
            Ok(false)
        } else {
            // Silent nodes might hold our token: we cannot tell, so it is an error (the
            // watchdog retries until the lease deadline) rather than a loss.
            Err(self.no_quorum(op.name(), tally.answered()))
        }
    }

    /// The token a quorum of nodes hold for `key` and the lease left on that quorum (the
    /// quorum-th longest); `None` when no token has a quorum. An error when too few nodes
    /// answered to tell.
    async fn holder(&self, key: &str) -> Result<Option<(String, LockInfo)>> {
        let lock = RedisKeys::new(key).lock().to_vec();
        let reads = self
            .nodes
            .iter()
            .map(|node| {
                let lock = &lock;
                Box::pin(async move {
                    let (mut con, id) = node.connection().await?;
                    let mut pipe = redis::pipe();
                    pipe.get(lock).pttl(lock);
                    let read = pipe.query_async::<(Option<String>, i64)>(&mut con).await;
                    read.map_err(|e| node.note_error(id, &e)).ok()
                })
            })
            .collect();
        let mut held: Vec<(String, i64)> = Vec::new();
        let mut answered = 0;
        join_within(reads, ANSWER_TIME, |read| {
            if let Some((value, pttl)) = read {
                answered += 1;
                if let Some(token) = value {
                    held.push((token, pttl));
                }
            }
            false
        })
        .await;
        let holder = held
            .iter()
            .map(|(t, _)| t)
            .find(|t| held.iter().filter(|(other, _)| other == *t).count() >= self.quorum());
        let Some(token) = holder.cloned() else {
            // Without a quorum answering, a holder on the silent nodes cannot be ruled out.
            if answered < self.quorum() {
                return Err(self.no_quorum("inspect", answered));
            }
            return Ok(None);
        };
        let mut left: Vec<i64> = held
            .iter()
            .filter(|(t, _)| *t == token)
            .map(|(_, pttl)| *pttl)
            .collect();
        left.sort_unstable_by(|a, b| b.cmp(a));
        let quorum_left = left.get(self.quorum() - 1).copied().unwrap_or(-1);
        let info = LockInfo {
            key: key.to_owned(),
            owner: token_parts(&token).1.map(str::to_owned),
            fence: None,
            expires_in: u64::try_from(quorum_left).ok().map(Duration::from_millis),
        };
        Ok(Some((token, info)))
    }

    fn no_quorum(&self, what: &str, answered: usize) -> Error {
        let hosts: Vec<&str> = self.nodes.iter().map(|n| n.host.as_str()).collect();
        Error::backend(
            NAME,
            format!(
                "{what}: only {answered} of {} nodes ({}) answered; a quorum of {} is needed",
                self.nodes.len(),
                hosts.join(", "),
                self.quorum()
            ),
        )
    }
}

/// One command of the algorithm, run on every node.
#[derive(Debug, Clone, Copy)]
enum Op {
    Set(Duration),
    Release,
    Extend(Duration),
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Set(_) => "acquire",
            Op::Release => "release",
            Op::Extend(_) => "extend",
        }
    }

    /// The command for `key` (built once, sent to every node), and the script it runs.
    fn command(self, key: &str, token: &str) -> (Cmd, Option<&'static Lua>) {
        // Sized up front: growing the buffers was a visible share of the client's work.
        let data = "dlock:{}".len() + 3 * key.len() + token.len() + 64;
        let script = |lua: &'static Lua, args: usize| {
            let mut cmd = Cmd::with_capacity(args, data);
            cmd.arg("EVALSHA")
                .arg(lua.sha.as_str())
                .arg(1)
                .arg(LockName(key))
                .arg(token);
            cmd
        };
        match self {
            Op::Set(ttl) => {
                let mut cmd = Cmd::with_capacity(6, data);
                cmd.arg("SET")
                    .arg(LockName(key))
                    .arg(token)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms(ttl));
                (cmd, None)
            }
            Op::Release => (script(&RELEASE, 5), Some(&RELEASE)),
            Op::Extend(ttl) => {
                let mut cmd = script(&EXTEND, 6);
                cmd.arg(ttl_ms(ttl));
                (cmd, Some(&EXTEND))
            }
        }
    }
}

/// The Redis name of the lock on `key`, `dlock:{E(key)}` exactly as [`RedisKeys::new`] makes
/// it, written straight into a command (no name built per request).
struct LockName<'a>(&'a str);

impl redis::ToRedisArgs for LockName<'_> {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        use std::io::Write;
        let mut name = out.writer_for_next_arg();
        let key = self.0.as_bytes();
        // Writing into a command's buffer cannot fail.
        let _ = name.write_all(b"dlock:{");
        let mut plain = 0;
        for (i, b) in key.iter().enumerate() {
            let escaped: &[u8] = match b {
                b'%' => b"%25",
                b'{' => b"%7B",
                b'}' => b"%7D",
                _ => continue,
            };
            let _ = name.write_all(&key[plain..i]);
            let _ = name.write_all(escaped);
            plain = i + 1;
        }
        let _ = name.write_all(&key[plain..]);
        let _ = name.write_all(b"}");
    }
}

/// Clock drift allowance of the Redlock description: 1 % of the ttl plus 2 ms.
fn drift(ttl: Duration) -> Duration {
    ttl / 100 + Duration::from_millis(2)
}

impl Backend for RedlockBackend {
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
            return Box::pin(async move { Err(kind.unsupported(self.name())) });
        }
        Box::pin(async move {
            let (set, _) = Op::Set(ttl).command(key, token);
            let node_timeout =
                (ttl / 10).clamp(Duration::from_millis(10), Duration::from_millis(250));
            let drift = drift(ttl);
            let quorum = self.quorum();
            let won = |t: &Tally| t.yes >= quorum;
            let mut silent_rounds = 0;
            loop {
                let sent_at = Instant::now();
                // Won once a quorum said yes: the rest cannot change that (their SETs are sent
                // all the same, and the release goes to every node). A round not won waits for
                // every answer, to know which nodes to undo.
                let tally = self.on_all(&set, None, node_timeout, won).await;
                let validity = ttl.checked_sub(sent_at.elapsed() + drift);
                if tally.yes >= self.quorum() && validity.is_some_and(|v| !v.is_zero()) {
                    // The lease (like every backend's) subtracts the same drift allowance.
                    return Ok(Some(Grant::new(None, sent_at)));
                }
                // Not won: undo the minority at once so it blocks nobody (a node that did not
                // answer may have set the key too).
                if tally.yes + tally.failed > 0 {
                    let (release, script) = Op::Release.command(key, token);
                    self.on_all(&release, script, node_timeout, |_| false).await;
                }
                let answered = tally.answered();
                // Without a quorum of nodes answering, refuse cleanly instead of retrying for
                // ever (a few rounds ride out a blip).
                silent_rounds = if answered < self.quorum() {
                    silent_rounds + 1
                } else {
                    0
                };
                let left = remaining(deadline);
                if silent_rounds >= 3 || (silent_rounds > 0 && left.is_some_and(|l| l.is_zero())) {
                    return Err(self.no_quorum("acquire", answered));
                }
                if left.is_some_and(|l| l.is_zero()) {
                    return Ok(None);
                }
                let mut pause = jitter(Duration::from_millis(5), Duration::from_millis(50));
                if let Some(left) = left {
                    pause = pause.min(left);
                }
                tokio::time::sleep(pause).await;
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
            return Box::pin(async { Ok(false) });
        }
        Box::pin(self.quorum_of(Op::Release, key, token))
    }

    fn extend<'a>(
        &'a self,
        key: &'a str,
        kind: Kind,
        token: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        if kind != Kind::Exclusive {
            return Box::pin(async { Ok(false) });
        }
        Box::pin(self.quorum_of(Op::Extend(ttl), key, token))
    }

    fn inspect<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<LockInfo>>> {
        Box::pin(async move { Ok(self.holder(key).await?.map(|(_, info)| info)) })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<LockInfo>>> {
        Box::pin(async move {
            // The keys under the prefix on any node (a lock held by a quorum is on a majority),
            // then each one's quorum holder.
            let pattern = super::redis::inspect::pattern(prefix);
            let scans = self
                .nodes
                .iter()
                .map(|node| {
                    let pattern = &pattern;
                    Box::pin(async move {
                        let (mut con, id) = node.connection().await?;
                        let scan = super::redis::inspect::scan(&mut con, pattern).await;
                        scan.map_err(|e| node.note_error(id, &e)).ok()
                    })
                })
                .collect();
            let mut keys: Vec<String> = Vec::new();
            let mut answered = 0;
            join_within(scans, Duration::from_secs(5), |scan| {
                if let Some(names) = scan {
                    answered += 1;
                    keys.extend(
                        names
                            .iter()
                            .filter_map(|n| super::redis::inspect::user_key(n))
                            .filter(|k| k.starts_with(prefix)),
                    );
                }
                false
            })
            .await;
            if answered < self.quorum() {
                return Err(self.no_quorum("list", answered));
            }
            keys.sort();
            keys.dedup();
            let mut held = Vec::new();
            for key in keys {
                if let Some((_, info)) = self.holder(&key).await? {
                    held.push(info);
                }
            }
            Ok(held)
        })
    }

    fn force_release<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            // The quorum holder's own release, on every node.
            match self.holder(key).await? {
                Some((token, _)) => self.quorum_of(Op::Release, key, &token).await,
                None => Ok(false),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_names_match_the_redis_backend() {
        for key in [
            "k",
            "",
            "a:b",
            "{x}",
            "%7B",
            "50%",
            "}{",
            "é{ü}%",
            "orders/42",
        ] {
            let (cmd, _) = Op::Set(Duration::from_secs(1)).command(key, "t");
            let name = cmd.args_iter().nth(1).map(|arg| match arg {
                redis::Arg::Simple(bytes) => bytes.to_vec(),
                _ => Vec::new(),
            });
            assert_eq!(name, Some(RedisKeys::new(key).lock().to_vec()), "{key}");
        }
    }
}
