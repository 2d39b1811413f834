//! The redis backend (being written).

use std::time::{Duration, Instant};

use super::{Backend, BoxFuture, Grant};
use crate::{Error, Result};

/// The redis [`Backend`] (being written).
#[derive(Debug)]
pub struct RedisBackend;

impl RedisBackend {
    /// Connects to `url`.
    ///
    /// # Errors
    /// Always, for now.
    pub async fn connect(url: &str) -> Result<Self> {
        Err(Error::backend(
            "redis",
            format!("not implemented yet: {url}"),
        ))
    }
}

impl Backend for RedisBackend {
    fn name(&self) -> &'static str {
        "redis"
    }
    fn acquire<'a>(
        &'a self,
        _key: &'a str,
        _token: &'a str,
        _ttl: Duration,
        _deadline: Option<Instant>,
    ) -> BoxFuture<'a, Result<Option<Grant>>> {
        Box::pin(async { Err(Error::backend("redis", "not implemented yet")) })
    }
    fn release<'a>(&'a self, _key: &'a str, _token: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async { Err(Error::backend("redis", "not implemented yet")) })
    }
    fn extend<'a>(
        &'a self,
        _key: &'a str,
        _token: &'a str,
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async { Err(Error::backend("redis", "not implemented yet")) })
    }
}
