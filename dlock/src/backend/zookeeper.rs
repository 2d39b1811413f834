//! The zookeeper backend (being written).

use std::time::{Duration, Instant};

use super::{Backend, BoxFuture, Grant};
use crate::{Error, Result};

/// The zookeeper [`Backend`] (being written).
#[derive(Debug)]
pub struct ZookeeperBackend;

impl ZookeeperBackend {
    /// Connects to `url`.
    ///
    /// # Errors
    /// Always, for now.
    pub async fn connect(url: &str) -> Result<Self> {
        Err(Error::backend(
            "zookeeper",
            format!("not implemented yet: {url}"),
        ))
    }
}

impl Backend for ZookeeperBackend {
    fn name(&self) -> &'static str {
        "zookeeper"
    }
    fn acquire<'a>(
        &'a self,
        _key: &'a str,
        _token: &'a str,
        _ttl: Duration,
        _deadline: Option<Instant>,
    ) -> BoxFuture<'a, Result<Option<Grant>>> {
        Box::pin(async { Err(Error::backend("zookeeper", "not implemented yet")) })
    }
    fn release<'a>(&'a self, _key: &'a str, _token: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async { Err(Error::backend("zookeeper", "not implemented yet")) })
    }
    fn extend<'a>(
        &'a self,
        _key: &'a str,
        _token: &'a str,
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async { Err(Error::backend("zookeeper", "not implemented yet")) })
    }
}
