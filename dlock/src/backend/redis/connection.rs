//! Connections of the Redis backend: one server or a Redis Cluster behind one
//! [`ConnectionLike`](redis::aio::ConnectionLike), TLS clients, and the checks and messages of
//! connecting.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Value;

use super::{backend_err, CONNECT_TIMEOUT, NAME, RESPONSE_TIMEOUT};
use crate::backend::tls::{TlsFiles, TlsParams};
use crate::backend::url_params::mask_password;
use crate::{Error, Result};

/// What a backend connects to.
pub(super) enum Target {
    Single(redis::Client),
    /// A Redis Cluster: the seed nodes (`host:port`, for `Debug`), and how to build a client
    /// (for the notice connection, which needs RESP3 and a push sender of its own).
    Cluster {
        seeds: Vec<String>,
        builder: Arc<dyn Fn() -> redis::cluster::ClusterClientBuilder + Send + Sync>,
    },
}

/// The command (or notice) connection: one server, or a Redis Cluster, where each key's
/// commands go to the primary of its slot (the keys of one lock share a hash tag, one slot).
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Conn {
    /// `cmd` on the server, or in a cluster on the primary serving `key` (for commands that
    /// name no key: `WAIT` must follow the grant to its node, `INFO` must describe that node).
    pub(super) async fn on_node_of<T: redis::FromRedisValue>(
        &mut self,
        key: &[u8],
        cmd: redis::Cmd,
    ) -> redis::RedisResult<T> {
        match self {
            Conn::Single(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::with_key(key, SlotAddr::Master),
                ));
                let value = c.route_command(cmd, route).await?;
                Ok(redis::from_redis_value(value)?)
            }
        }
    }

    /// `SUBSCRIBE` (`SSUBSCRIBE` in a cluster: the release script's notice is sharded there).
    pub(super) async fn subscribe(&mut self, channel: &[u8]) -> redis::RedisResult<()> {
        match self {
            Conn::Single(c) => c.subscribe(channel).await,
            Conn::Cluster(c) => c.ssubscribe(channel).await,
        }
    }

    pub(super) async fn unsubscribe(&mut self, channel: &[u8]) -> redis::RedisResult<()> {
        match self {
            Conn::Single(c) => c.unsubscribe(channel).await,
            Conn::Cluster(c) => c.sunsubscribe(channel).await,
        }
    }
}

/// Whether `url` is a TLS URL (`rediss://`, `redlocks://`); the TLS parameters of a plaintext
/// URL are an [`Error::InvalidUrl`] (they would be ignored), and so is a TLS URL without the `tls`
/// feature. Reads the files the parameters name.
pub(crate) async fn tls_files(url: &str, tls: &TlsParams) -> Result<Option<TlsFiles>> {
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    let wants = ["rediss", "redlocks", "rediss+cluster"]
        .iter()
        .any(|tls| scheme.eq_ignore_ascii_case(tls));
    if tls.any() && !wants {
        return Err(Error::InvalidUrl {
            url: mask_password(url),
            reason: "`tls_ca`/`tls_cert`/`tls_key` apply to TLS connections; write `rediss://` \
                     (`redlocks://` for Redlock) to connect with TLS"
                .into(),
        });
    }
    crate::backend::tls::require_feature(url, wants)?;
    if !wants {
        return Ok(None);
    }
    #[cfg(feature = "tls")]
    crate::backend::tls::install_crypto_provider();
    Ok(Some(tls.read(url).await?))
}

/// A client for `url` (`redis://` or `rediss://`, dlock's own parameters taken out), trusting
/// the CA and presenting the client certificate of `tls` when given.
pub(crate) fn open_client(url: &str, tls: Option<&TlsFiles>) -> redis::RedisResult<redis::Client> {
    #[cfg(feature = "tls")]
    if let Some(files) = tls.filter(|f| f.ca.is_some() || f.identity.is_some()) {
        return redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: files.identity.clone().map(|(client_cert, client_key)| {
                    redis::ClientTlsConfig {
                        client_cert,
                        client_key,
                    }
                }),
                root_cert: files.ca.clone(),
            },
        );
    }
    #[cfg(not(feature = "tls"))]
    let _ = tls;
    redis::Client::open(url)
}

/// A connect failure in one line that says what went wrong: refused, timed out, a server that
/// is not Redis (its reply did not parse), a TLS mistake, or what the server said (auth, ...).
pub(super) fn connect_error(url: &str, e: &redis::RedisError) -> Error {
    let tls = url
        .get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("rediss:"));
    let url = mask_password(url);
    let detail = e.to_string().replace('\n', " ");
    if let Some(why) = crate::backend::tls::explain(&detail, tls).filter(|_| tls) {
        return backend_err(format!("cannot connect to {url}: {why} ({detail})"));
    }
    if e.code() == Some("WRONGPASS")
        || e.code() == Some("NOAUTH")
        || detail.contains("AuthenticationFailed")
    {
        return backend_err(format!(
            "cannot connect to {url}: bad credentials: check the user and password in the URL \
             ({detail})"
        ));
    }
    if e.is_connection_refusal() {
        backend_err(format!(
            "cannot connect to {url}: connection refused (is Redis running there?)"
        ))
    } else if e.code().is_none() && !e.is_io_error() && !e.is_timeout() {
        backend_err(format!(
            "cannot connect to {url}: the server did not answer like Redis (is it a Redis port?): {detail}"
        ))
    } else if e.is_io_error() && !e.is_timeout() {
        backend_err(format!(
            "cannot connect to {url}: {detail} (the server closed the connection: is it a Redis \
             port? if it expects TLS, use `rediss://`)"
        ))
    } else {
        backend_err(format!("cannot connect to {url}: {detail}"))
    }
}

/// Refuses a server that may evict lock state: under `volatile-*` a lock key (it has a TTL) can
/// be evicted before its lease ends, so a second holder gets in; under `allkeys-*` a fence
/// counter (no TTL) can be evicted, so fences start again from 1. Without a `maxmemory` limit
/// nothing is ever evicted, whatever the policy. A server that does not let us read its config
/// (managed services often rename `CONFIG`) is accepted with a warning.
pub(super) async fn refuse_evicting_server(con: &mut Conn, url: &str) -> Result<()> {
    let reply: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory*")
        .query_async(con)
        .await;
    let pairs = match reply {
        Ok(pairs) => pairs,
        Err(e) => {
            tracing::warn!(target: "dlock", backend = NAME, error = %e, "cannot read the server's maxmemory-policy; make sure it is `noeviction` (or maxmemory 0): an evicting policy can drop lock keys or fence counters");
            return Ok(());
        }
    };
    let setting = |name: &str| {
        pairs
            .chunks(2)
            .find(|pair| pair[0].eq_ignore_ascii_case(name))
            .and_then(|pair| pair.get(1).cloned())
    };
    let limit = setting("maxmemory").and_then(|v| v.parse::<u64>().ok());
    let policy = setting("maxmemory-policy").unwrap_or_default();
    if limit.is_some_and(|l| l > 0) && !policy.eq_ignore_ascii_case("noeviction") {
        let what = if policy.starts_with("volatile") {
            "lock keys before their lease ends (a second holder gets in)"
        } else {
            "fence counters (fences start again from 1) and lock keys"
        };
        return Err(backend_err(format!(
            "the Redis server at {} has maxmemory-policy `{policy}` with a maxmemory limit, so it \
             may evict {what}; set `maxmemory-policy noeviction` \
             (CONFIG SET maxmemory-policy noeviction, and in redis.conf), or remove the limit",
            mask_password(url)
        )));
    }
    Ok(())
}

pub(crate) fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(1))
}
