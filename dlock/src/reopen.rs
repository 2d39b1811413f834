//! [`Reopening`]: a networked backend that follows its callers across runtimes.
//!
//! Wraps the backend a URL connected to, with the [`Home`] its connections live on. Every call is
//! polled with that home entered; when the home runtime has shut down, the first call to notice
//! opens the backend again from the URL (homed from the caller's side, see [`crate::runtime`])
//! and every later call uses the new one. Locks live on the server, not in the connection, so a
//! held lock stays held: its guard's renewals and release reach the same key or row through the
//! new connection. (A ZooKeeper session is the exception: it dies with its connection, and its
//! guards' `lost()` fires.)
//!
//! Why this and not "every connection on dlock's background runtime": a connection driven from
//! another thread costs two thread hops per request, a large share of an uncontended Redis cycle
//! on loopback; here the cost is one atomic load and a handle entered per poll.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::backend::{Backend, BoxFuture, Grant, Kind, LockInfo};
use crate::runtime::Home;
use crate::Result;

/// The backend in use and the runtime its connections live on.
struct Live {
    backend: Arc<dyn Backend>,
    home: Home,
}

/// A backend opened from `url`, reopened when the runtime it lived on shuts down.
pub(crate) struct Reopening {
    url: String,
    name: &'static str,
    live: RwLock<Arc<Live>>,
    /// One reopen at a time; the others wait for it and use its result.
    reopening: tokio::sync::Mutex<()>,
}

impl Reopening {
    /// Opens the backend for `url` (homed by the caller's context).
    ///
    /// # Errors
    /// Those of [`Locker::connect`](crate::Locker::connect).
    pub(crate) async fn connect(url: &str) -> Result<Reopening> {
        let live = open(url).await?;
        Ok(Reopening {
            url: url.to_owned(),
            name: live.backend.name(),
            live: RwLock::new(Arc::new(live)),
            reopening: tokio::sync::Mutex::new(()),
        })
    }

    fn current(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The backend to use now: the current one, or a new one when its home has shut down.
    async fn live(&self) -> Result<Arc<Live>> {
        let live = self.current();
        if live.home.is_alive() {
            return Ok(live);
        }
        // Boxed: the connect futures of every backend are large, and the fast path above must
        // not carry (and copy) their state on each call.
        self.reopen().await
    }

    fn reopen(&self) -> BoxFuture<'_, Result<Arc<Live>>> {
        Box::pin(async move {
            let _one = self.reopening.lock().await;
            let live = self.current();
            if live.home.is_alive() {
                return Ok(live);
            }
            let new = Arc::new(open(&self.url).await?);
            tracing::debug!(target: "dlock", backend = self.name, "the runtime a connection lived on shut down; reconnected");
            *self.live.write().unwrap_or_else(|p| p.into_inner()) = new.clone();
            Ok(new)
        })
    }
}

async fn open(url: &str) -> Result<Live> {
    let home = Home::here()?;
    let backend = home.run(crate::locker::open_backend(url)).await?;
    Ok(Live { backend, home })
}

impl Backend for Reopening {
    fn name(&self) -> &'static str {
        self.name
    }

    fn acquire<'a>(
        &'a self,
        key: &'a str,
        kind: Kind,
        token: &'a str,
        ttl: Duration,
        deadline: Option<Instant>,
    ) -> BoxFuture<'a, Result<Option<Grant>>> {
        Box::pin(async move {
            let live = self.live().await?;
            let acquire = live.backend.acquire(key, kind, token, ttl, deadline);
            live.home.run(acquire).await
        })
    }

    fn release<'a>(
        &'a self,
        key: &'a str,
        kind: Kind,
        token: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let live = self.live().await?;
            live.home.run(live.backend.release(key, kind, token)).await
        })
    }

    fn extend<'a>(
        &'a self,
        key: &'a str,
        kind: Kind,
        token: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let live = self.live().await?;
            live.home
                .run(live.backend.extend(key, kind, token, ttl))
                .await
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let live = self.current();
            let close = async {
                live.backend.close().await;
                Ok(())
            };
            let _ = live.home.run(close).await;
        })
    }

    fn inspect<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<LockInfo>>> {
        Box::pin(async move {
            let live = self.live().await?;
            live.home.run(live.backend.inspect(key)).await
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<LockInfo>>> {
        Box::pin(async move {
            let live = self.live().await?;
            live.home.run(live.backend.list(prefix)).await
        })
    }

    fn force_release<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let live = self.live().await?;
            live.home.run(live.backend.force_release(key)).await
        })
    }
}
