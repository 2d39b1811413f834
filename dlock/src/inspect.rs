//! What an operator sees of a held lock ([`LockInfo`]), who owns it, and the token format that
//! carries the owner to the server without an extra round trip.
//!
//! A token the [`Locker`](crate::Locker) makes is 32 lowercase hex digits (a random uuid v4),
//! then `.` and the owner: `3f2a…9c1e.billing-7f9c`. Backends that store the token as one value
//! (Redis, Redlock, memory) keep it whole, so the owner costs a few bytes and no request; backends
//! that put the token into a name (a ZooKeeper node, an etcd key, a column sized for 32
//! characters) store the id there and the owner beside it ([`token_parts`]). Inspection shows the
//! owner, never the token.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// A held lock as [`Locker::inspect`](crate::Locker::inspect) and
/// [`Locker::list`](crate::Locker::list) report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    /// The key, as the holder named it.
    pub key: String,
    /// Who holds it: the holder's [`Locker::owner`](crate::Locker::owner) (`"<hostname>:<pid>"`
    /// unless set with [`Locker::with_owner`](crate::Locker::with_owner)); `None` for a lock
    /// taken by a client that records no owner.
    pub owner: Option<String>,
    /// The holder's fence, where the backend has one (see [`LockGuard::fence`](crate::LockGuard::fence)).
    pub fence: Option<u64>,
    /// Time left on the holder's lease as the server counts it; `None` where the lease is a
    /// session rather than a time (ZooKeeper). A watchdog-renewed lease is renewed before this
    /// runs out.
    pub expires_in: Option<Duration>,
}

impl LockInfo {
    /// A held `key` with nothing else known yet (for [`Backend`](crate::backend::Backend)
    /// implementations outside this crate).
    pub fn new(key: impl Into<String>) -> Self {
        LockInfo {
            key: key.into(),
            owner: None,
            fence: None,
            expires_in: None,
        }
    }
}

/// How many hex digits the random part of a token has.
pub(crate) const TOKEN_ID_LEN: usize = 32;

/// The longest owner kept (characters); a longer one is cut.
pub const MAX_OWNER_LEN: usize = 128;

/// Splits a token into its random id and the owner it carries (`None` for a token without one,
/// such as a custom caller's). The id alone identifies the holder.
///
/// ```
/// let (id, owner) = dlock::backend::token_parts("0123456789abcdef0123456789abcdef.web-1:42");
/// assert_eq!(id, "0123456789abcdef0123456789abcdef");
/// assert_eq!(owner, Some("web-1:42"));
/// assert_eq!(dlock::backend::token_parts("opaque"), ("opaque", None));
/// ```
pub fn token_parts(token: &str) -> (&str, Option<&str>) {
    match token.as_bytes().get(TOKEN_ID_LEN) {
        Some(b'.') if token.is_char_boundary(TOKEN_ID_LEN) => {
            (&token[..TOKEN_ID_LEN], Some(&token[TOKEN_ID_LEN + 1..]))
        }
        _ => (token, None),
    }
}

/// A new token for `owner`: a random id, `.`, the owner.
///
/// Assembled in a reused per-thread buffer and allocated once, as the `Arc` (a fresh `String`
/// first would be a second allocation and a copy on every acquire).
pub(crate) fn new_token(owner: &str) -> Arc<str> {
    thread_local! {
        static BUF: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    let mut id = [0u8; uuid::fmt::Simple::LENGTH];
    let id = uuid::Uuid::new_v4().simple().encode_lower(&mut id);
    BUF.try_with(|buf| {
        let mut token = buf.borrow_mut();
        token.clear();
        token.push_str(id);
        token.push('.');
        token.push_str(owner);
        Arc::from(token.as_str())
    })
    // The thread is being torn down (a thread-local destructor locking): no buffer left.
    .unwrap_or_else(|_| [id, ".", owner].concat().into())
}

/// `owner` made safe to store and print: control characters become `?`, at most
/// [`MAX_OWNER_LEN`] characters, never empty.
pub(crate) fn clean_owner(owner: &str) -> Arc<str> {
    let owner = owner.trim();
    if owner.is_empty() {
        default_owner()
    } else {
        clean_owner_raw(owner)
    }
}

/// `"<hostname>:<pid>"`, computed once per process.
pub(crate) fn default_owner() -> Arc<str> {
    static OWNER: OnceLock<Arc<str>> = OnceLock::new();
    OWNER
        .get_or_init(|| {
            let host = hostname().unwrap_or_else(|| "localhost".to_owned());
            clean_owner_raw(&format!("{host}:{}", std::process::id()))
        })
        .clone()
}

fn clean_owner_raw(owner: &str) -> Arc<str> {
    owner
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(MAX_OWNER_LEN)
        .collect::<String>()
        .into()
}

/// The machine's host name: the kernel's (Linux), else `HOSTNAME` / `COMPUTERNAME`.
fn hostname() -> Option<String> {
    let from_file = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    from_file("/proc/sys/kernel/hostname")
        .or_else(|| from_file("/etc/hostname"))
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .or_else(|| std::env::var("COMPUTERNAME").ok().filter(|s| !s.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_their_owner() {
        let token = new_token("web-1:42");
        let (id, owner) = token_parts(&token);
        assert_eq!(id.len(), TOKEN_ID_LEN);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(owner, Some("web-1:42"));
        assert_ne!(token_parts(&new_token("x")).0, id);
        // A multi-byte character where the separator would be is not a separator.
        assert_eq!(token_parts("0123456789abcdef0123456789abcdeé").1, None);
    }

    #[test]
    fn owners_are_cleaned() {
        assert_eq!(&*clean_owner("a\nb"), "a?b");
        assert_eq!(clean_owner(&"x".repeat(500)).chars().count(), MAX_OWNER_LEN);
        assert_eq!(clean_owner("  "), default_owner());
        let default = default_owner();
        let (host, pid) = default.rsplit_once(':').unwrap();
        assert!(!host.is_empty());
        assert_eq!(pid, std::process::id().to_string());
    }
}
