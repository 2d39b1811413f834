//! Redis managed by Sentinel: `redis+sentinel://[user:pass@]s1:26379[,s2:26379...]/service`
//! (`rediss+sentinel://` for TLS to the primary).
//!
//! The primary is the one the Sentinels name (`SENTINEL get-master-addr-by-name service`, asked
//! of every Sentinel: the address most of them name); everything else is the [Redis backend](super) on that primary,
//! with the URL's user, password and parameters (`?replicas=N`, `?restart_delay=`, `tls_*`).
//!
//! # Following a failover
//! When a request fails (the primary died, or came back as a replica and answers `READONLY`),
//! the Sentinels are asked again; if one of them names another server (some lag behind during a
//! failover) and that server says it is a primary (`ROLE`), a Redis backend is opened on it,
//! the highest fence seen so far carried over (so the fence check of the Redis backend still
//! refuses a lower fence), and the request is made once more there. A request that failed while
//! the Sentinels still name the same primary fails as it would on a single server.
//!
//! What a failover keeps is what the new primary has: with `?replicas=1` a grant counts only
//! once a replica has it, so the promoted replica has every granted lock and its fence; without
//! it, replication is asynchronous and a grant just before the failover can be lost (a second
//! holder may get in; its fence is still higher, see the Redis backend's "Fences").
//!
//! The Sentinels are asked without credentials (Sentinel's own `requirepass` is not supported).

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::RedisBackend;
use crate::backend::url_params::mask_password;
use crate::backend::{Backend, BoxFuture, Grant, Kind, LockInfo};
use crate::{Error, Result};

const NAME: &str = "redis";
/// How long one Sentinel may take to answer.
const SENTINEL_TIMEOUT: Duration = Duration::from_secs(1);

/// The Redis [`Backend`] behind Sentinel; see the [module docs](self).
pub struct SentinelBackend {
    sentinels: Vec<String>,
    service: String,
    /// `redis` or `rediss`.
    scheme: &'static str,
    /// `user:pass@` or empty.
    userinfo: String,
    /// `?...` or empty: the parameters for the primary's URL.
    query: String,
    /// The URL as given, masked, for messages.
    shown: String,
    current: RwLock<Primary>,
    switching: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
struct Primary {
    addr: String,
    backend: Arc<RedisBackend>,
}

impl std::fmt::Debug for SentinelBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelBackend")
            .field("sentinels", &self.sentinels)
            .field("service", &self.service)
            .field("primary", &self.primary().addr)
            .finish_non_exhaustive()
    }
}

impl SentinelBackend {
    /// Connects to the primary the Sentinels of `url` name.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for a URL without Sentinels or service name; [`Error::Backend`]
    /// when no Sentinel answers or knows the service, or the primary cannot be reached.
    pub async fn connect(url: &str) -> Result<Self> {
        let shown = mask_password(url);
        let bad = |reason: &str| Error::InvalidUrl {
            url: shown.clone(),
            reason: format!(
                "{reason}; expected redis+sentinel://[user:password@]host:26379[,host:26379...]/\
                 service_name[?replicas=N]"
            ),
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let scheme = if scheme.eq_ignore_ascii_case("rediss+sentinel") {
            "rediss"
        } else {
            "redis"
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, format!("?{q}")),
            None => (rest, String::new()),
        };
        let (authority, service) = rest
            .split_once('/')
            .ok_or_else(|| bad("no service name (the name Sentinel monitors, e.g. `mymaster`)"))?;
        let service = service.trim_matches('/');
        if service.is_empty() || service.contains('/') {
            return Err(bad(
                "the path must be the one service name Sentinel monitors",
            ));
        }
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((user, hosts)) => (format!("{user}@"), hosts),
            None => (String::new(), authority),
        };
        let sentinels: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| {
                if h.contains(':') {
                    h.to_owned()
                } else {
                    format!("{h}:26379")
                }
            })
            .collect();
        if sentinels.is_empty() {
            return Err(bad("no Sentinel host"));
        }
        let addr = ask_sentinels(&sentinels, service, &shown, None).await?;
        let primary_url = |addr: &str| format!("{scheme}://{userinfo}{addr}{query}");
        let redis = RedisBackend::connect(&primary_url(&addr)).await?;
        Ok(SentinelBackend {
            sentinels,
            service: service.to_owned(),
            scheme,
            userinfo,
            query,
            shown,
            current: RwLock::new(Primary {
                addr,
                backend: Arc::new(redis),
            }),
            switching: tokio::sync::Mutex::new(()),
        })
    }

    fn primary(&self) -> Primary {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn primary_url(&self, addr: &str) -> String {
        format!("{}://{}{addr}{}", self.scheme, self.userinfo, self.query)
    }

    /// After a failed request on `failed_on`: whether there is now another primary to try
    /// (switched to by this call or a concurrent one).
    async fn follow(&self, failed_on: &str) -> bool {
        let _one_at_a_time = self.switching.lock().await;
        let now = self.primary();
        if now.addr != failed_on {
            return true;
        }
        let Ok(addr) =
            ask_sentinels(&self.sentinels, &self.service, &self.shown, Some(failed_on)).await
        else {
            return false;
        };
        if addr == now.addr {
            return false;
        }
        let started = Instant::now();
        let next = match RedisBackend::connect(&self.primary_url(&addr)).await {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(target: "dlock", backend = NAME, primary = %addr, error = %e, "the primary Sentinel names cannot be reached yet");
                return false;
            }
        };
        if !is_primary(&next).await {
            // A Sentinel that is behind may name a server that is a replica now.
            tracing::debug!(target: "dlock", backend = NAME, named = %addr, "the server a Sentinel names is not a primary (yet)");
            return false;
        }
        next.raise_highest_fence(now.backend.highest_fence());
        tracing::warn!(target: "dlock", backend = NAME, from = %now.addr, to = %addr, took_ms = started.elapsed().as_millis() as u64, "following a Sentinel failover to a new primary");
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Primary {
            addr,
            backend: Arc::new(next),
        };
        let old = now.backend;
        crate::runtime::spawn_background(async move { old.close().await });
        true
    }
}

/// `host:port` of the primary, as the Sentinels name it. Every Sentinel is asked: during a
/// failover some are behind and still name the primary that failed. The address most of them
/// name wins; after a failure on `failed`, any other address a Sentinel names wins over it.
async fn ask_sentinels(
    sentinels: &[String],
    service: &str,
    shown: &str,
    failed: Option<&str>,
) -> Result<String> {
    let mut named: Vec<(String, usize)> = Vec::new();
    let mut why = Vec::new();
    for sentinel in sentinels {
        match ask(sentinel, service).await {
            Ok(Some(addr)) => match named.iter_mut().find(|(a, _)| *a == addr) {
                Some((_, votes)) => *votes += 1,
                None => named.push((addr, 1)),
            },
            Ok(None) => why.push(format!("{sentinel} does not know `{service}`")),
            Err(e) => why.push(format!("{sentinel}: {e}")),
        }
    }
    let rank = |(addr, votes): &(String, usize)| (Some(addr.as_str()) != failed, *votes);
    named.sort_by_key(|named| std::cmp::Reverse(rank(named)));
    named
        .into_iter()
        .next()
        .map(|(addr, _)| addr)
        .ok_or_else(|| {
            Error::backend(
                NAME,
                format!(
                    "no Sentinel of {shown} names a primary for `{service}`: {}",
                    why.join("; ")
                ),
            )
        })
}

/// Whether the server behind `backend` says it is a primary (`ROLE`); a server that does not
/// let us ask (an ACL without `ROLE`) is taken at the Sentinels' word.
async fn is_primary(backend: &RedisBackend) -> bool {
    let mut con = backend.commands.clone();
    match redis::cmd("ROLE")
        .query_async::<Vec<redis::Value>>(&mut con)
        .await
    {
        Ok(role) => matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master"),
        Err(_) => true,
    }
}

/// `SENTINEL get-master-addr-by-name service` on one Sentinel.
async fn ask(sentinel: &str, service: &str) -> std::result::Result<Option<String>, String> {
    let client = redis::Client::open(format!("redis://{sentinel}")).map_err(|e| e.to_string())?;
    let question = async {
        let mut con = client.get_multiplexed_async_connection().await?;
        redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(service)
            .query_async::<Option<(String, String)>>(&mut con)
            .await
    };
    match tokio::time::timeout(SENTINEL_TIMEOUT, question).await {
        Ok(Ok(answer)) => Ok(answer.map(|(host, port)| {
            if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            }
        })),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {SENTINEL_TIMEOUT:?}")),
    }
}

impl SentinelBackend {
    /// `op` on the current primary; after a failure, once more on the primary the Sentinels
    /// name now, if that is another one.
    async fn on_primary<'a, T>(
        &'a self,
        op: impl Fn(Arc<RedisBackend>) -> BoxFuture<'a, Result<T>>,
    ) -> Result<T> {
        let primary = self.primary();
        match op(primary.backend).await {
            Err(e @ Error::Backend { .. }) => {
                if self.follow(&primary.addr).await {
                    op(self.primary().backend).await
                } else {
                    Err(e)
                }
            }
            done => done,
        }
    }
}

impl Backend for SentinelBackend {
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
        Box::pin(self.on_primary(move |b| {
            Box::pin(async move { b.acquire(key, kind, token, ttl, deadline).await })
        }))
    }

    fn release<'a>(
        &'a self,
        key: &'a str,
        kind: Kind,
        token: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(
            self.on_primary(move |b| Box::pin(async move { b.release(key, kind, token).await })),
        )
    }

    fn extend<'a>(
        &'a self,
        key: &'a str,
        kind: Kind,
        token: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(
            self.on_primary(move |b| {
                Box::pin(async move { b.extend(key, kind, token, ttl).await })
            }),
        )
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.primary().backend.close().await })
    }

    fn inspect<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<LockInfo>>> {
        Box::pin(self.on_primary(move |b| Box::pin(async move { b.inspect(key).await })))
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<LockInfo>>> {
        Box::pin(self.on_primary(move |b| Box::pin(async move { b.list(prefix).await })))
    }

    fn force_release<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.on_primary(move |b| Box::pin(async move { b.force_release(key).await })))
    }
}
