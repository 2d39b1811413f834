//! Named lockers for the `#[distributed_lock]` attribute: registered at start-up, or connected
//! lazily from the environment variable `DLOCK_URL_<NAME>`.

use std::collections::HashMap;
use std::sync::{LazyLock, RwLock};

use crate::{runtime, Error, Locker, Result};

/// The name used when none is given.
pub const DEFAULT_NAME: &str = "default";

static REGISTRY: LazyLock<RwLock<HashMap<String, Locker>>> = LazyLock::new(Default::default);

/// Registers `locker` under `name` (replacing and returning any previous one).
///
/// ```
/// dlock::register("default", dlock::Locker::memory());
/// ```
///
/// Names are matched as their environment variables are: `"order-db"` and `"order_db"` are one
/// name (both `DLOCK_URL_ORDER_DB`).
pub fn register(name: impl Into<String>, locker: Locker) -> Option<Locker> {
    REGISTRY
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(env_var_for(&name.into()), locker)
}

/// The environment variable that configures `name`: `DLOCK_URL_` + the name upper-cased, with
/// every character other than ASCII letters and digits turned into `_` (`"order-db"` →
/// `DLOCK_URL_ORDER_DB`).
pub fn env_var_for(name: &str) -> String {
    let suffix: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("DLOCK_URL_{suffix}")
}

fn registered(name: &str) -> Option<Locker> {
    REGISTRY
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&env_var_for(name))
        .cloned()
}

/// Keeps the first locker registered under `name`, so concurrent lazy connections agree.
fn register_if_absent(name: &str, locker: Locker) -> Locker {
    REGISTRY
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .entry(env_var_for(name))
        .or_insert(locker)
        .clone()
}

/// How to obtain the locker named `name` when it is not registered yet.
enum Source {
    Memory,
    Url(String),
}

fn source_of(name: &str) -> Result<Source> {
    let var = env_var_for(name);
    match std::env::var(&var) {
        Ok(url) if !url.trim().is_empty() => Ok(Source::Url(url.trim().to_owned())),
        _ if name == "memory" => Ok(Source::Memory),
        _ => Err(Error::NotConfigured {
            name: name.to_owned(),
            env_var: var,
        }),
    }
}

/// The locker named `name`: a registered one, else one connected from `DLOCK_URL_<NAME>` (and
/// registered), else for `"memory"` the process-wide in-memory lock space.
///
/// # Errors
/// [`Error::NotConfigured`] when `name` is neither registered nor in the environment; the errors
/// of [`Locker::connect`] for a bad or unreachable URL.
pub async fn lookup(name: &str) -> Result<Locker> {
    if let Some(locker) = registered(name) {
        return Ok(locker);
    }
    let locker = match source_of(name)? {
        Source::Memory => Locker::memory(),
        Source::Url(url) => Locker::connect(&url).await?,
    };
    Ok(register_if_absent(name, locker))
}

/// Connects and registers every locker configured in the environment (`DLOCK_URL_<NAME>`) that
/// is not registered yet, and returns the names registered (lower-case, as `<name>` in the
/// variable). Call it at start-up, so a bad URL or an unreachable server is an error there and
/// not at the first call of a nightly job.
///
/// ```no_run
/// # async fn f() -> Result<(), dlock::Error> {
/// // DLOCK_URL_REDIS=redis://127.0.0.1:6379 DLOCK_URL_ORDERS=mysql://root@db/orders
/// let names = dlock::connect_configured().await?;
/// println!("lock services: {names:?}"); // ["orders", "redis"]
/// # Ok(()) }
/// ```
///
/// # Errors
/// The first error of [`Locker::connect`] among the configured URLs (the message names the URL).
pub async fn connect_configured() -> Result<Vec<String>> {
    let mut configured: Vec<(String, String)> = std::env::vars()
        .filter_map(|(var, url)| {
            let name = var.strip_prefix("DLOCK_URL_")?.to_ascii_lowercase();
            (!name.is_empty() && !url.trim().is_empty()).then(|| (name, url.trim().to_owned()))
        })
        .collect();
    configured.sort();
    for (name, url) in &configured {
        if registered(name).is_none() {
            register_if_absent(name, Locker::connect(url).await?);
        }
    }
    Ok(configured.into_iter().map(|(name, _)| name).collect())
}

/// [`lookup`] for sync code (callable where [`LockRequest::blocking`](crate::LockRequest::blocking) is).
///
/// # Errors
/// As [`lookup`], plus [`Error::BlockingInAsync`] when a connection would have to be made from
/// an async task of a current-thread runtime.
pub fn lookup_blocking(name: &str) -> Result<Locker> {
    if let Some(locker) = registered(name) {
        return Ok(locker);
    }
    let name = name.to_owned();
    runtime::block_on(async move { lookup(&name).await })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_var_names() {
        assert_eq!(env_var_for("redis"), "DLOCK_URL_REDIS");
        assert_eq!(env_var_for("order-db.1"), "DLOCK_URL_ORDER_DB_1");
    }
}
