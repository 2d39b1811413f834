//! Redlock: one lock over N independent Redis masters, held while a majority agrees.
//!
//! `redlock://host:port,host:port,host:port[,...]` names N independent masters (N odd, at
//! least 3; `redlock://user:pass@h1:p1,h2:p2,...` applies the credentials to every node). The
//! algorithm is the one of the [Redlock description](https://redis.io/docs/latest/develop/use/patterns/distributed-locks/):
//!
//! 1. Send `SET key token NX PX ttl` to every node at once, each bounded by a short per-node
//!    timeout (`ttl / 10`, between 10 ms and 250 ms), so a paused, killed or refusing node costs
//!    at most that timeout and never stalls the acquire.
//! 2. The lock is won when a quorum of `N/2 + 1` nodes said yes and the validity time
//!    `ttl − elapsed − drift` (drift = `ttl × 0.01 + 2 ms`) is still positive. The client counts
//!    its lease (and each renewal) from the moment the requests were sent, less the same drift,
//!    so it never believes it holds the lock longer than the quorum does.
//! 3. Otherwise the token is released on every node at once and the attempt is retried after a
//!    random delay, until the wait runs out.
//!
//! Release and extend (and so the watchdog's renewal) run the Redis backend's token-checked
//! scripts on every node at once; extend needs a quorum, and a renewal that loses it fires
//! [`lost()`](crate::LockGuard::lost). Keys map to Redis names exactly as in
//! [the Redis backend](super::redis).
//!
//! # No fencing tokens
//! [`fence()`](crate::LockGuard::fence) is `None` here. A fence must strictly increase across
//! holders; over N independent masters there is no single counter to increment, and counting on
//! a quorum of counters can go backwards when nodes restart or a minority was partitioned,
//! which needs consensus to fix (see Martin Kleppmann,
//! [How to do distributed locking](https://martin.kleppmann.com/2016/02/08/how-to-do-distributed-locking.html)).
//! When the protected resource must reject late writers, use a backend that gives fences:
//! `redis` (one master), `zookeeper` (the node's czxid) or `mysql` (an AUTO_INCREMENT id).

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;

use super::redis::{manager_config, ttl_ms, RedisKeys, EXTEND, RELEASE};
use super::{jitter, remaining, token_parts, Backend, BoxFuture, Grant, LockInfo};
use crate::backend::url_params::mask_password;
use crate::{Error, Result};

const NAME: &str = "redlock";

/// The Redlock [`Backend`]. Made by [`Locker::connect`](crate::Locker::connect) for
/// `redlock://` URLs.
pub struct RedlockBackend {
    nodes: Arc<[ConnectionManager]>,
    names: Vec<String>,
}

impl std::fmt::Debug for RedlockBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedlockBackend")
            .field("nodes", &self.names)
            .finish()
    }
}

/// What one node said to one command.
enum Answer {
    Yes,
    No,
    Failed,
}

impl RedlockBackend {
    /// Connects (lazily: down nodes are tolerated) to `redlock://h1:p1,h2:p2,h3:p3[,...]`
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
        let mut nodes = Vec::with_capacity(hosts.len());
        for host in &hosts {
            let node_url = format!("{node_scheme}://{userinfo}{host}");
            let client = super::redis::open_client(&node_url, tls.as_ref())
                .map_err(|e| bad(format!("node `{host}`: {e}")))?;
            let con = ConnectionManager::new_lazy_with_config(client, manager_config())
                .map_err(|e| Error::backend(NAME, e))?;
            nodes.push(con);
        }
        Ok(RedlockBackend {
            nodes: nodes.into(),
            names: hosts.iter().map(|h| h.to_string()).collect(),
        })
    }

    fn quorum(&self) -> usize {
        self.nodes.len() / 2 + 1
    }

    /// Runs `op` on every node at once, each bounded by `timeout`.
    async fn on_all(
        &self,
        op: Op,
        keys: &Arc<RedisKeys>,
        token: &Arc<str>,
        timeout: Duration,
    ) -> Vec<Answer> {
        // Polled together in this task (no task spawned per node and request: that cost a
        // measurable share of the cycle); each call is bounded by its own timeout.
        let calls = self.nodes.iter().map(|node| {
            let (mut con, keys, token) = (node.clone(), keys.clone(), token.clone());
            Box::pin(async move {
                match tokio::time::timeout(timeout, op.run(&mut con, &keys, &token)).await {
                    Ok(Ok(redis::Value::Okay)) | Ok(Ok(redis::Value::Int(1))) => Answer::Yes,
                    Ok(Ok(_)) => Answer::No,
                    Ok(Err(_)) | Err(_) => Answer::Failed,
                }
            })
        });
        super::join_all(calls.collect()).await
    }

    /// A token-checked script on every node: `Ok(true)` with a quorum of yes, `Ok(false)` when
    /// a quorum answered and too few said yes, an error when too few answered to tell.
    async fn quorum_of(&self, op: Op, key: &str, token: &str) -> Result<bool> {
        let (keys, token) = (Arc::new(RedisKeys::new(key)), Arc::from(token));
        let answers = self
            .on_all(op, &keys, &token, Duration::from_millis(500))
            .await;
        let yes = answers.iter().filter(|a| matches!(a, Answer::Yes)).count();
        let no = answers.iter().filter(|a| matches!(a, Answer::No)).count();
        if yes >= self.quorum() {
            Ok(true)
        } else if no > self.nodes.len() - self.quorum() {
            // Enough nodes said no that a quorum of yes is impossible: the lock is not ours.
            Ok(false)
        } else {
            // Silent nodes might hold our token: we cannot tell, so it is an error (the
            // watchdog retries until the lease deadline) rather than a loss.
            Err(self.no_quorum(op.name(), yes + no))
        }
    }

    /// The token a quorum of nodes hold for `key` and the lease left on that quorum (the
    /// quorum-th longest); `None` when no token has a quorum. An error when too few nodes
    /// answered to tell.
    async fn holder(&self, key: &str) -> Result<Option<(String, LockInfo)>> {
        let keys = RedisKeys::new(key);
        let reads = self.nodes.iter().map(|node| {
            let mut con = node.clone();
            let name = keys.lock.clone();
            Box::pin(async move {
                let mut pipe = redis::pipe();
                pipe.get(&name).pttl(&name);
                let read = pipe.query_async::<(Option<String>, i64)>(&mut con);
                tokio::time::timeout(Duration::from_millis(500), read).await
            })
        });
        let answers = super::join_all(reads.collect()).await;
        let mut held: Vec<(String, i64)> = Vec::new();
        let mut answered = 0;
        for answer in answers {
            if let Ok(Ok((value, pttl))) = answer {
                answered += 1;
                if let Some(token) = value {
                    held.push((token, pttl));
                }
            }
        }
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
        Error::backend(
            NAME,
            format!(
                "{what}: only {answered} of {} nodes ({}) answered; a quorum of {} is needed",
                self.nodes.len(),
                self.names.join(", "),
                self.quorum()
            ),
        )
    }
}

/// One command of the algorithm, run on one node.
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

    async fn run(
        self,
        con: &mut ConnectionManager,
        keys: &RedisKeys,
        token: &str,
    ) -> redis::RedisResult<redis::Value> {
        match self {
            Op::Set(ttl) => {
                redis::cmd("SET")
                    .arg(&keys.lock)
                    .arg(token)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms(ttl))
                    .query_async(con)
                    .await
            }
            // The scripts load themselves on a node that answers NOSCRIPT.
            Op::Release => {
                RELEASE
                    .key(&keys.lock)
                    .arg(token)
                    .arg(&keys.channel)
                    .invoke_async(con)
                    .await
            }
            Op::Extend(ttl) => {
                EXTEND
                    .key(&keys.lock)
                    .arg(token)
                    .arg(ttl_ms(ttl))
                    .invoke_async(con)
                    .await
            }
        }
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
        token: &'a str,
        ttl: Duration,
        deadline: Option<Instant>,
    ) -> BoxFuture<'a, Result<Option<Grant>>> {
        Box::pin(async move {
            let (keys, token) = (Arc::new(RedisKeys::new(key)), Arc::<str>::from(token));
            let node_timeout =
                (ttl / 10).clamp(Duration::from_millis(10), Duration::from_millis(250));
            let drift = drift(ttl);
            let mut silent_rounds = 0;
            loop {
                let sent_at = Instant::now();
                let answers = self.on_all(Op::Set(ttl), &keys, &token, node_timeout).await;
                let yes = answers.iter().filter(|a| matches!(a, Answer::Yes)).count();
                let validity = ttl.checked_sub(sent_at.elapsed() + drift);
                if yes >= self.quorum() && validity.is_some_and(|v| !v.is_zero()) {
                    // The lease (like every backend's) subtracts the same drift allowance.
                    return Ok(Some(Grant::new(None, sent_at)));
                }
                // Not won: undo the minority at once so it blocks nobody (a node that did not
                // answer may have set the key too).
                if answers.iter().any(|a| !matches!(a, Answer::No)) {
                    self.on_all(Op::Release, &keys, &token, node_timeout).await;
                }
                let answered = answers
                    .iter()
                    .filter(|a| !matches!(a, Answer::Failed))
                    .count();
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

    fn release<'a>(&'a self, key: &'a str, token: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.quorum_of(Op::Release, key, token))
    }

    fn extend<'a>(
        &'a self,
        key: &'a str,
        token: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
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
            let scans = self.nodes.iter().map(|node| {
                let (mut con, pattern) = (node.clone(), pattern.clone());
                Box::pin(async move {
                    let scan = super::redis::inspect::scan(&mut con, &pattern);
                    tokio::time::timeout(Duration::from_secs(5), scan).await
                })
            });
            let mut keys: Vec<String> = Vec::new();
            let mut answered = 0;
            for scan in super::join_all(scans.collect()).await {
                if let Ok(Ok(names)) = scan {
                    answered += 1;
                    keys.extend(
                        names
                            .iter()
                            .filter_map(|n| super::redis::inspect::user_key(n))
                            .filter(|k| k.starts_with(prefix)),
                    );
                }
            }
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
