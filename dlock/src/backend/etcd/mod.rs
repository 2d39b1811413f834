//! The etcd v3 backend: a key per acquisition attached to its own lease, created only if
//! absent; the lowest creation revision under the lock's prefix holds the lock, and each waiter
//! watches only the key just ahead of it (etcd's own lock recipe, as `concurrency.Mutex`).
//!
//! Enabled by the cargo feature `etcd` (crate [`etcd_client`], gRPC over tonic; building it
//! needs `protoc`, which `scripts/services.sh up` installs).
//!
//! # URL
//! `etcd://host:port[,host:port...]/root` (root default `/dlock`). Several hosts form one cluster;
//! the client balances over them.
//!
//! # Recipe
//! - acquire: grant a lease of the lock's `ttl` (whole seconds, rounded up; the server may raise
//!   it to its minimum), then one transaction: *if* `create_revision(<root>/<key>/<id>) == 0`
//!   *then* put it with that lease, where `<id>` is the token's random id (the 32 hex digits
//!   before the owner, see [`token_parts`]) and the value records the owner (see "Values").
//!   Then list `<root>/<key>/`: the key with the lowest `create_revision` holds the lock.
//! - wait: wait for the deletion of the key just ahead (the highest `create_revision` below
//!   ours), then read that key once more, for a deletion between the listing and the wait; once
//!   it is gone, list again. One release wakes one waiter, FIFO. The deletions come through one
//!   watch of the lock's prefix (deletions only, from the server's current revision) per
//!   Locker, shared by its waiters on that lock and kept open while they wait and a second
//!   after: etcd now and then leaves a new watch behind its store, and catches such a watch up
//!   only every 100 ms, so a watch per wait made some hand-offs up to 100 ms late.
//!   Meanwhile the waiter keeps its key's lease alive (a keep-alive every third of its length,
//!   shared with the read-write and semaphore waits), since a wait may outlast the lease.
//! - release: delete our key and revoke its lease (which would delete it too).
//! - lease: the watchdog's renewal is a keep-alive of the lease (`TTL 0` back: the lease expired
//!   or was revoked, the lock is lost), then a check that the key is still there (it may have
//!   been deleted by a force-release or by hand); an `extend` to another length moves the key to a new lease (an update of
//!   the key, so its `create_revision`, the fence, stays).
//!
//! # Connection
//! HTTP/2 pings (while a request or watch is open) find a connection that hangs dead within
//! 9 s (a ping 6 s after the last frame read, unanswered for 3 s), and the client opens a new
//! one for the next request. Requests on it meanwhile time out after 5 s and are tried again
//! (until the caller's deadline; without one, for 5 s from an acquire's first failure or from
//! the start of any other operation) by the operations for which a second try is safe (all but
//! `force_release`).
//!
//! An acquire tried again finds the key an earlier try made (its path holds the token) and
//! keeps it, on that try's lease: it renews that lease at once and counts the grant's lease
//! from that renewal, not from its own start. Every lease an acquire granted is remembered
//! until the hold ends and revoked by its release, since a put of an earlier try may still
//! land after the release deleted the key (a put on a revoked lease fails).
//!
//! # Fence
//! The key's `create_revision`: etcd's revision grows with every write to the cluster and never
//! goes back, also across a restart or a leader change, and holders are served in creation
//! order, so fences strictly increase per key.
//!
//! # Keys
//! The user key is percent-encoded (`%` and `/` only) into one path segment, so no lock's prefix
//! is a prefix of another's; etcd keys are bytes, so nothing else needs mapping. Each character
//! is encoded on its own, and an escape is always `%` and two characters, so a key starts with
//! `p` exactly when its encoding starts with `p`'s: a prefix of keys is a range of etcd keys.
//!
//! # Values
//! The value of an acquisition's key is UTF-8 text: the line `dlock1`, then the owner (the part
//! of the token after its id; empty when the token carries none; newlines made `?`). A value
//! that does not start with `dlock1` and a newline (an older dlock's empty value, another
//! client's) gives an unknown owner (`None`). A renewal that moves the key to a longer lease
//! keeps the value.
//!
//! # Inspection
//! The holder of a key is the lowest `create_revision` under `<root>/<key>/` (one range read,
//! sorted by create revision, limit 1); its value gives the owner, its create revision the
//! fence, and a `LeaseTimeToLive` of its lease the time left, in whole seconds rounded down as
//! etcd reports it. `list(prefix)` reads the range `<root>/<encoded prefix>`, in pages of 500
//! keys (waiters' keys included, so the cost is the locks under the prefix and their queues),
//! groups by lock, and asks the lease of each holder, a few dozen at a time. `force_release`
//! deletes the holder's key in a transaction on its `create_revision` (only the key read: one
//! released meanwhile is not taken for its successor), which fires its waiter's watch as a
//! release does, and revokes
//! its lease: the old holder's next renewal finds the lease gone (`TTL 0`) or its key missing,
//! and fires `lost()`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
};

use super::{
    diagnose, remaining, token_parts, within_wait, Backend, BoxFuture, Grant, Kind, LockInfo,
};
use crate::backend::tls::TlsParams;
use crate::backend::url_params::{mask_password, percent_decode};
use crate::{Error, Result};

mod hold;
mod inspect;
mod retry;

use retry::{AfterTimeout, UNREACHABLE_RETRY_FOR};
mod shared;
mod watches;

const NAME: &str = "etcd";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings this long after the last frame read while a request or watch is open, so a
/// connection that hangs (a network that silently drops it) is found dead and replaced by a
/// new one: without them the client keeps sending into it, and every request times out. Not
/// more often than etcd's `--grpc-keepalive-min-time` (default 5 s): it counts closer pings as
/// abuse and closes the connection (`too_many_pings`). Not while idle either (etcd's own
/// client's default too): etcd allows no pings without an open stream, and closes an idle
/// client's connection after a few (seen here: an idle Locker's connection replaced within a
/// minute); a hung idle connection is found by the next request's ping instead.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(6);
/// A ping unanswered this long closes the connection.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(3);

fn backend_err(e: impl Into<crate::BoxError>) -> Error {
    Error::backend(NAME, e)
}

/// What this backend knows of a key it created.
#[derive(Debug, Clone)]
struct Held {
    path: Vec<u8>,
    lease: i64,
    /// The lease's length as granted, in seconds.
    ttl_s: i64,
    /// Leases granted by earlier tries of this hold's acquire (one retried after a timed-out
    /// request): a put of such a try may still be on its way and land later, even after a
    /// release deleted the key, so every removal revokes them too (a put on a revoked lease
    /// fails).
    earlier: Vec<i64>,
}

/// The etcd [`Backend`]; see the [module docs](self).
pub struct EtcdBackend {
    client: Client,
    root: String,
    hosts: String,
    held: Mutex<HashMap<String, Held>>,
    /// The watches waiters wait on, one per queue (see the `watches` module).
    watches: std::sync::Arc<watches::Hubs>,
    /// User and password from the URL, kept to log in again: etcd's auth token expires after
    /// `--auth-token-ttl` (default 300 s) without use, and the client does not renew it.
    credentials: Option<(String, String)>,
    /// When the token was last used (or fetched).
    auth_used: Mutex<Instant>,
    /// Set when the server said the token is no longer valid.
    auth_stale: std::sync::atomic::AtomicBool,
}

/// Log in again before a request when the token has not been used for this long: well inside
/// etcd's default token lifetime (300 s of disuse), so an idle Locker's next request does not
/// fail first.
const AUTH_REFRESH: Duration = Duration::from_secs(60);

impl std::fmt::Debug for EtcdBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdBackend")
            .field("hosts", &self.hosts)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// A failed connect or first request, said plainly: a TLS mistake, bad credentials, a role
/// without rights on the root, or (otherwise) what the TCP probe finds.
async fn connect_error<F>(
    e: etcd_client::Error,
    secure: bool,
    unreachable: impl FnOnce(String) -> F,
) -> Error
where
    F: std::future::Future<Output = Error>,
{
    let text = format!("{e}");
    let detail = match &e {
        // tonic's transport error hides the cause (the TLS alert) in its source chain.
        etcd_client::Error::TransportError(t) => {
            let mut all = text.clone();
            let mut source = std::error::Error::source(t);
            while let Some(s) = source {
                all.push_str(": ");
                all.push_str(&s.to_string());
                source = s.source();
            }
            all
        }
        _ => text,
    };
    let lower = detail.to_ascii_lowercase();
    if let Some(why) = super::tls::explain(&detail, secure) {
        return backend_err(format!("cannot connect to etcd: {why} ({detail})"));
    }
    if lower.contains("authentication failed") || lower.contains("invalid user id or password") {
        return backend_err(format!(
            "cannot connect to etcd: bad credentials: check the user and password in the URL \
             ({detail})"
        ));
    }
    if lower.contains("permission denied") {
        return backend_err(format!(
            "cannot connect to etcd: the user has no rights on the lock root; grant its role \
             readwrite on the root prefix (etcdctl role grant-permission ROLE --prefix=true \
             readwrite /ROOT/) ({detail})"
        ));
    }
    unreachable(detail).await
}

/// The lease length to ask for: whole seconds, rounded up, at least 1.
fn lease_secs(ttl: Duration) -> i64 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
}

/// `%` and `/` percent-encoded: one path segment, distinct for distinct keys.
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for c in key.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
    out
}

impl EtcdBackend {
    /// Connects to `etcd://host:port[,host:port...]/root`.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for a malformed URL; [`Error::Backend`] when no endpoint answers
    /// within 5 s (the message says whether the connection was refused or the server did not
    /// answer like etcd).
    pub async fn connect(url: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidUrl {
            url: mask_password(url),
            reason: format!(
                "{reason}; expected etcd://[user:password@]host:port[,host:port...]/root \
                 (etcds:// for TLS)"
            ),
        };
        let (without_tls, tls) = TlsParams::take(url)?;
        let (scheme, rest) = without_tls
            .split_once("://")
            .ok_or_else(|| bad("no scheme"))?;
        let secure = scheme.eq_ignore_ascii_case("etcds");
        if tls.any() && !secure {
            return Err(bad(
                "`tls_ca`/`tls_cert`/`tls_key` apply to TLS connections; write `etcds://`",
            ));
        }
        super::tls::require_feature(url, secure)?;
        if let Some((_, query)) = rest.split_once('?') {
            return Err(bad(&format!(
                "unknown parameter(s) `{query}`; etcd URLs take `tls_ca`, `tls_cert` and `tls_key`"
            )));
        }
        let (hosts, root) = rest.split_once('/').unwrap_or((rest, ""));
        let (user, hosts) = match hosts.rsplit_once('@') {
            Some((userinfo, hosts)) => {
                let (name, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                (
                    Some((percent_decode(name), percent_decode(password))),
                    hosts,
                )
            }
            None => (None, hosts),
        };
        if hosts.is_empty() || hosts.split(',').any(|h| h.trim().is_empty()) {
            return Err(bad("no host"));
        }
        let endpoints: Vec<String> = hosts
            .split(',')
            .map(|h| {
                let h = h.trim();
                if h.contains(':') {
                    h.to_owned()
                } else {
                    format!("{h}:2379")
                }
            })
            .collect();
        for e in &endpoints {
            let port = e.rsplit_once(':').map(|(_, p)| p).unwrap_or("");
            if port.parse::<u16>().is_err() {
                return Err(bad(&format!("`{e}` has no valid port")));
            }
        }
        let root = match root.trim_matches('/') {
            "" => "/dlock".to_owned(),
            r => format!("/{r}"),
        };
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT)
            .with_keep_alive_while_idle(false);
        if let Some((name, password)) = &user {
            options = options.with_user(name.clone(), password.clone());
        }
        let hosts = endpoints.join(",");
        let mut endpoints = endpoints;
        if secure {
            #[cfg(feature = "tls")]
            {
                use etcd_client::{Certificate, Identity, TlsOptions};
                let files = tls.read(url).await?;
                let mut config = TlsOptions::new();
                config = match files.ca {
                    Some(ca) => config.ca_certificate(Certificate::from_pem(ca)),
                    None => config.with_native_roots(),
                };
                if let Some((cert, key)) = files.identity {
                    config = config.identity(Identity::from_pem(cert, key));
                }
                options = options.with_tls(config);
            }
            for e in &mut endpoints {
                *e = format!("https://{e}");
            }
        }
        let unreachable = |e: String| {
            let hosts = hosts.clone();
            async move {
                backend_err(format!(
                    "cannot connect to etcd at {hosts}: {e}; {}",
                    diagnose(&hosts, "etcd").await
                ))
            }
        };
        let client = match tokio::time::timeout(
            CONNECT_TIMEOUT,
            Client::connect(endpoints.clone(), Some(options)),
        )
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(connect_error(e, secure, unreachable).await),
            Err(_) => return Err(unreachable("no answer within 5s".into()).await),
        };
        // The connection is lazy: ask something, so a dead endpoint fails here.
        let mut probe = client.clone();
        // Under the root, not the root itself: a role granted the prefix `/root/` may read
        // nothing else.
        let under_root = format!("{root}/");
        match tokio::time::timeout(CONNECT_TIMEOUT, probe.get(under_root.as_bytes(), None)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(connect_error(e, secure, unreachable).await),
            Err(_) => return Err(unreachable("no answer within 5s".into()).await),
        }
        Ok(EtcdBackend {
            client,
            root,
            hosts,
            held: Mutex::new(HashMap::new()),
            watches: std::sync::Arc::default(),
            credentials: user,
            auth_used: Mutex::new(Instant::now()),
            auth_stale: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// A client error as a dlock error; notes an expired auth token, so the next request logs
    /// in again first.
    fn err(&self, e: etcd_client::Error) -> Error {
        if let etcd_client::Error::GRpcStatus(status) = &e {
            // gRPC code 16 (Unauthenticated), "etcdserver: invalid auth token".
            if format!("{:?}", status.code()) == "Unauthenticated"
                || status.message().contains("invalid auth token")
            {
                self.auth_stale
                    .store(true, std::sync::atomic::Ordering::Release);
            }
        }
        backend_err(e)
    }

    /// With credentials: logs in again when the token was refused or has not been used for
    /// [`AUTH_REFRESH`]; otherwise nothing.
    async fn logged_in(&self) -> Result<()> {
        let Some((name, password)) = &self.credentials else {
            return Ok(());
        };
        let stale = self.auth_stale.load(std::sync::atomic::Ordering::Acquire);
        {
            let mut used = self.auth_used.lock().unwrap_or_else(|p| p.into_inner());
            if !stale && used.elapsed() < AUTH_REFRESH {
                *used = Instant::now();
                return Ok(());
            }
        }
        let mut client = self.client.clone();
        if stale {
            // The server refuses a login that carries the expired token.
            client.remove_client_auth();
        }
        client
            .set_client_auth(name.clone(), password.clone())
            .await
            .map_err(|e| backend_err(format!("logging in to etcd again failed: {e}")))?;
        self.auth_stale
            .store(false, std::sync::atomic::Ordering::Release);
        *self.auth_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        Ok(())
    }

    /// Whether a failed request failed for an expired token (then it is worth one more try).
    fn token_expired(&self) -> bool {
        self.credentials.is_some() && self.auth_stale.load(std::sync::atomic::Ordering::Acquire)
    }

    fn prefix(&self, key: &str) -> String {
        format!("{}/{}/", self.root, encode_key(key))
    }

    /// The etcd key of `token`'s acquisition under a lock's `prefix`: the token's id only (its
    /// owner, which may contain `/`, goes into the value).
    fn lock_path(prefix: &str, token: &str) -> Vec<u8> {
        format!("{prefix}{}", token_parts(token).0).into_bytes()
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates our key (once) and returns it, its create revision, and when its lease was
    /// last renewed (sent): the lease of the grant counts from there.
    async fn create(
        &self,
        path: &[u8],
        ttl: Duration,
        token: &str,
    ) -> Result<(Held, i64, Instant)> {
        let mut client = self.client.clone();
        let (held, lease_from) = self.new_lease(path, ttl, token).await?;
        let txn = Txn::new()
            .when([Compare::create_revision(path, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                path,
                inspect::key_value(token),
                Some(PutOptions::new().with_lease(held.lease)),
            )])
            .or_else([TxnOp::get(path, None)]);
        let done = client.txn(txn).await.map_err(|e| self.err(e))?;
        if !done.succeeded() {
            // The key of this token exists: made by an earlier try of this same acquire (one
            // retried after a timed-out request or an expired auth token); it is ours, with
            // that try's lease.
            let existing = done.op_responses().into_iter().find_map(|op| match op {
                TxnOpResponse::Get(get) => get
                    .kvs()
                    .first()
                    .map(|kv| (kv.create_revision(), kv.lease())),
                _ => None,
            });
            let Some((revision, lease)) = existing else {
                return Err(backend_err(
                    "the lock key of this token vanished while being made",
                ));
            };
            let (held, lease_from) = self.adopt(held, lease, token).await?;
            return Ok((held, revision, lease_from));
        }
        let revision = done
            .header()
            .map(|h| h.revision())
            .ok_or_else(|| backend_err("transaction without a header"))?;
        Ok((held, revision, lease_from))
    }

    /// Deletes our key and revokes its lease; `true` when the key was there.
    async fn remove(&self, held: &Held) -> Result<bool> {
        let mut client = self.client.clone();
        let deleted = client
            .delete(held.path.clone(), None)
            .await
            .map_err(|e| self.err(e))?
            .deleted();
        // Best effort: the leases expire by themselves otherwise.
        for lease in held.leases() {
            let _ = client.lease_revoke(lease).await;
        }
        Ok(deleted > 0)
    }

    async fn acquire_inner(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
        deadline: Option<Instant>,
    ) -> Result<Option<Grant>> {
        let prefix = self.prefix(key);
        let path = Self::lock_path(&prefix, token);
        // When the lease was last renewed (sent): its grant (or, for a key adopted from an
        // earlier try, a keep-alive) at first, then each keep-alive while queued.
        let (held, mine, mut lease_from) =
            within_wait(NAME, deadline, self.create(&path, ttl, token)).await?;
        let mut client = self.client.clone();
        loop {
            let listing = within_wait(NAME, deadline, async {
                client
                    .get(
                        prefix.as_bytes(),
                        Some(GetOptions::new().with_prefix().with_keys_only()),
                    )
                    .await
                    .map_err(|e| self.err(e))
            })
            .await?;
            let ahead = listing
                .kvs()
                .iter()
                .filter(|kv| kv.create_revision() < mine)
                .max_by_key(|kv| kv.create_revision())
                .map(|kv| kv.key().to_vec());
            if !listing.kvs().iter().any(|kv| kv.key() == path.as_slice()) {
                // Our key is gone: its lease expired or it was deleted while we queued.
                self.forget(token).await;
                return Err(backend_err(
                    "the lock key vanished while queued (its lease expired?)",
                ));
            }
            let Some(ahead) = ahead else {
                return Ok(Some(Grant::new(u64::try_from(mine).ok(), lease_from)));
            };
            if remaining(deadline).is_some_and(|l| l.is_zero()) {
                let held = self.held().remove(token).unwrap_or(held);
                self.remove(&held).await?;
                return Ok(None);
            }
            // The deletion of the key just ahead (or our lease running out) is our turn to look
            // again; the same wait as read-write and semaphore waiters'.
            let ahead = shared::Watch::Key(ahead);
            self.wait_turn(ahead, &held, mine, deadline, &mut lease_from)
                .await?;
        }
    }
}

impl Backend for EtcdBackend {
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
        // Without a deadline: a few seconds from the first failure (see `retrying`).
        let until = deadline;
        if kind != Kind::Exclusive {
            // Read, write and permit holds: see the `shared` module.
            return Box::pin(self.retrying(until, AfterTimeout::Retry, move || {
                self.acquire_shared(key, kind, token, ttl, deadline)
            }));
        }
        // Again after an expired token or an election: the key made by an earlier try, if
        // any, is found and kept (its path holds this token).
        Box::pin(self.retrying(until, AfterTimeout::Retry, move || {
            self.acquire_inner(key, token, ttl, deadline)
        }))
    }

    fn release<'a>(
        &'a self,
        key: &'a str,
        kind: Kind,
        token: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        let until = Some(Instant::now() + UNREACHABLE_RETRY_FOR);
        Box::pin(async move {
            let path = self.hold_path(key, kind, token);
            self.retrying(until, AfterTimeout::Retry, || {
                self.release_inner(&path, token)
            })
            .await
        })
    }

    fn extend<'a>(
        &'a self,
        key: &'a str,
        kind: Kind,
        token: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        let until = Some(Instant::now() + UNREACHABLE_RETRY_FOR);
        Box::pin(async move {
            let path = self.hold_path(key, kind, token);
            self.retrying(until, AfterTimeout::Retry, || {
                self.extend_inner(&path, token, ttl)
            })
            .await
        })
    }

    /// The lowest `create_revision` under the lock's prefix: owner from its value, that
    /// revision as fence, time left on its lease. See "Inspection" in the module docs.
    fn inspect<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<LockInfo>>> {
        let until = Some(Instant::now() + UNREACHABLE_RETRY_FOR);
        Box::pin(self.retrying(until, AfterTimeout::Retry, move || self.inspect_inner(key)))
    }

    /// One key range read (in pages) and one lease lookup per holder. See "Inspection" in
    /// the module docs.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<LockInfo>>> {
        let until = Some(Instant::now() + UNREACHABLE_RETRY_FOR);
        Box::pin(self.retrying(until, AfterTimeout::Retry, move || self.list_inner(prefix)))
    }

    /// Deletes the holder's key (its waiter's watch fires) and revokes its lease. See
    /// "Inspection" in the module docs.
    fn force_release<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        let until = Some(Instant::now() + UNREACHABLE_RETRY_FOR);
        Box::pin(self.retrying(until, AfterTimeout::Fail, move || {
            self.force_release_inner(key)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_leases() {
        assert_eq!(encode_key("a/b%c"), "a%2Fb%25c");
        assert_ne!(encode_key("a/b"), encode_key("a%2Fb"));
        assert_eq!(lease_secs(Duration::from_millis(1)), 1);
        assert_eq!(lease_secs(Duration::from_millis(1500)), 2);
        assert_eq!(lease_secs(Duration::from_secs(30)), 30);
    }
}
