//! The mysql backend (being written).

use std::time::{Duration, Instant};

use super::{Backend, BoxFuture, Grant};
use crate::{Error, Result};

/// The mysql [`Backend`] (being written).
#[derive(Debug)]
pub struct MysqlBackend;

impl MysqlBackend {
    /// Connects to `url`.
    ///
    /// # Errors
    /// Always, for now.
    pub async fn connect(url: &str) -> Result<Self> {
        Err(Error::backend(
            "mysql",
            format!("not implemented yet: {url}"),
        ))
    }
}

impl Backend for MysqlBackend {
    fn name(&self) -> &'static str {
        "mysql"
    }
    fn acquire<'a>(
        &'a self,
        _key: &'a str,
        _token: &'a str,
        _ttl: Duration,
        _deadline: Option<Instant>,
    ) -> BoxFuture<'a, Result<Option<Grant>>> {
        Box::pin(async { Err(Error::backend("mysql", "not implemented yet")) })
    }
    fn release<'a>(&'a self, _key: &'a str, _token: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async { Err(Error::backend("mysql", "not implemented yet")) })
    }
    fn extend<'a>(
        &'a self,
        _key: &'a str,
        _token: &'a str,
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async { Err(Error::backend("mysql", "not implemented yet")) })
    }
}
