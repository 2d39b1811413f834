//! Inspection on etcd: the value of an acquisition's key ("Values" in the
//! [module docs](super)), and `inspect`, `list`, `force_release` ("Inspection" there).

use std::collections::HashMap;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, GetOptions, KeyValue, SortOrder, SortTarget, Txn, TxnOp};

use super::{encode_key, token_parts, EtcdBackend, LockInfo};
use crate::backend::join_all;
use crate::Result;

/// The first line of a value written by this version of dlock.
const VALUE_MAGIC: &str = "dlock1\n";
/// Keys per range read of `list`.
const PAGE: i64 = 500;
/// How many lease lookups `list` has in flight at once.
const LEASE_CONCURRENCY: usize = 32;
/// How often `inspect` looks again when the holder it read went before its lease was read.
const INSPECT_TRIES: usize = 3;

/// The value of `token`'s key: the magic line and the owner.
pub(super) fn key_value(token: &str) -> Vec<u8> {
    let owner = token_parts(token).1.unwrap_or("");
    let mut value = String::with_capacity(VALUE_MAGIC.len() + owner.len());
    value.push_str(VALUE_MAGIC);
    // The Locker's owners have no control characters; a custom token's might.
    value.extend(
        owner
            .chars()
            .map(|c| if c == '\n' || c == '\r' { '?' } else { c }),
    );
    value.into_bytes()
}

/// The owner [`key_value`] recorded; `None` for any other value (an older dlock's empty one,
/// another client's), never a panic.
fn owner_of(value: &[u8]) -> Option<String> {
    let rest = std::str::from_utf8(value).ok()?.strip_prefix(VALUE_MAGIC)?;
    // Later lines, should a later version add any, are not the owner.
    let owner = rest.split('\n').next().unwrap_or_default();
    (!owner.is_empty()).then(|| owner.to_owned())
}

/// The user key of an encoded segment; `None` for a segment [`encode_key`] does not make.
fn decode_key(segment: &str) -> Option<String> {
    let mut out = String::with_capacity(segment.len());
    let mut rest = segment;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let escape = rest.get(i..i + 3)?;
        out.push(match escape {
            "%25" => '%',
            "%2F" => '/',
            _ => return None,
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// The end of the etcd range of keys starting with `prefix` (etcd's `--prefix` rule: the last
/// byte below 0xff incremented, what follows it dropped; `\0` for "to the end").
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A lock's holder as read from its key.
struct Holder {
    create_revision: i64,
    lease: i64,
    value: Vec<u8>,
}

impl Holder {
    fn of(kv: &KeyValue) -> Holder {
        Holder {
            create_revision: kv.create_revision(),
            lease: kv.lease(),
            value: kv.value().to_vec(),
        }
    }
}

/// What a lease lookup found.
enum Left {
    /// Seconds left (rounded down), or `None` for a key without a lease.
    Live(Option<Duration>),
    /// The lease is gone: the key went with it (expired, released, revoked).
    Gone,
}

impl EtcdBackend {
    /// Time left on `lease` (0: the key has none).
    async fn lease_left(&self, lease: i64) -> Result<Left> {
        if lease == 0 {
            return Ok(Left::Live(None));
        }
        let mut client = self.client.clone();
        match client.lease_time_to_live(lease, None).await {
            // etcd answers -1 for a lease it does not know.
            Ok(answer) => Ok(u64::try_from(answer.ttl()).map_or(Left::Gone, |secs| {
                Left::Live(Some(Duration::from_secs(secs)))
            })),
            Err(e) if e.to_string().contains("lease not found") => Ok(Left::Gone),
            Err(e) => Err(self.err(e)),
        }
    }

    fn info(key: String, holder: &Holder, expires_in: Option<Duration>) -> LockInfo {
        LockInfo {
            key,
            owner: owner_of(&holder.value),
            fence: u64::try_from(holder.create_revision).ok(),
            expires_in,
        }
    }

    /// The key with the lowest create revision under the lock's prefix.
    async fn holder(&self, key: &str) -> Result<Option<Holder>> {
        let mut client = self.client.clone();
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(1);
        let got = client
            .get(self.prefix(key), Some(options))
            .await
            .map_err(|e| self.err(e))?;
        Ok(got.kvs().first().map(Holder::of))
    }

    /// See [`Backend::inspect`](super::Backend::inspect).
    pub(super) async fn inspect_inner(&self, key: &str) -> Result<Option<LockInfo>> {
        for _ in 0..INSPECT_TRIES {
            let Some(holder) = self.holder(key).await? else {
                return Ok(None);
            };
            match self.lease_left(holder.lease).await? {
                Left::Live(left) => return Ok(Some(Self::info(key.to_owned(), &holder, left))),
                // Released (or expired) since it was read: a waiter may hold it now.
                Left::Gone => continue,
            }
        }
        Ok(None)
    }

    /// See [`Backend::list`](super::Backend::list).
    pub(super) async fn list_inner(&self, prefix: &str) -> Result<Vec<LockInfo>> {
        let under_root = format!("{}/", self.root);
        let start = format!("{under_root}{}", encode_key(prefix)).into_bytes();
        let end = prefix_end(&start);
        let mut client = self.client.clone();
        // Per lock: the lowest create revision seen.
        let mut holders: HashMap<String, Holder> = HashMap::new();
        let mut from = start;
        loop {
            let page = client
                .get(
                    from.clone(),
                    Some(GetOptions::new().with_range(end.clone()).with_limit(PAGE)),
                )
                .await
                .map_err(|e| self.err(e))?;
            for kv in page.kvs() {
                let key = kv
                    .key_str()
                    .ok()
                    .and_then(|path| path.strip_prefix(&under_root))
                    .and_then(|rest| rest.split_once('/'))
                    .and_then(|(segment, _)| decode_key(segment))
                    .filter(|key| key.starts_with(prefix));
                let Some(key) = key else {
                    continue;
                };
                let lower = holders
                    .get(&key)
                    .is_none_or(|h| kv.create_revision() < h.create_revision);
                if lower {
                    holders.insert(key, Holder::of(kv));
                }
            }
            match page.kvs().last() {
                Some(last) if page.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        let holders: Vec<(String, Holder)> = holders.into_iter().collect();
        let mut held = Vec::with_capacity(holders.len());
        for chunk in holders.chunks(LEASE_CONCURRENCY) {
            let lookups = chunk
                .iter()
                .map(|(_, holder)| Box::pin(self.lease_left(holder.lease)))
                .collect();
            for ((key, holder), left) in chunk.iter().zip(join_all(lookups).await) {
                match left? {
                    Left::Live(left) => held.push(Self::info(key.clone(), holder, left)),
                    // Gone since the range was read; a waiter may hold it now.
                    Left::Gone => held.extend(self.inspect_inner(key).await?),
                }
            }
        }
        Ok(held)
    }

    /// See [`Backend::force_release`](super::Backend::force_release).
    pub(super) async fn force_release_inner(&self, key: &str) -> Result<bool> {
        let mut client = self.client.clone();
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(1)
            .with_keys_only();
        let got = client
            .get(self.prefix(key), Some(options))
            .await
            .map_err(|e| self.err(e))?;
        let Some(kv) = got.kvs().first() else {
            return Ok(false);
        };
        let (path, revision, lease) = (kv.key().to_vec(), kv.create_revision(), kv.lease());
        // Only the key read: if it went meanwhile, its holder released it and the lock was free.
        let txn = Txn::new()
            .when([Compare::create_revision(
                path.clone(),
                CompareOp::Equal,
                revision,
            )])
            .and_then([TxnOp::delete(path, None)]);
        let deleted = client.txn(txn).await.map_err(|e| self.err(e))?.succeeded();
        if deleted && lease != 0 {
            // The holder's renewal then answers "expired" at once. Best effort: the key, which
            // is what waiters watch and renewals check, is gone already.
            let _ = client.lease_revoke(lease).await;
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_carry_the_owner() {
        let token = "0123456789abcdef0123456789abcdef.web/1:42";
        assert_eq!(key_value(token), b"dlock1\nweb/1:42");
        assert_eq!(owner_of(&key_value(token)).as_deref(), Some("web/1:42"));
        assert_eq!(owner_of(&key_value("custom-token")), None);
        let odd = "0123456789abcdef0123456789abcdef.a\nb";
        assert_eq!(owner_of(&key_value(odd)).as_deref(), Some("a?b"));
        for foreign in [&b""[..], b"dlock1", b"10.0.0.7", b"\xff\n", b"dlock2\nx"] {
            assert_eq!(owner_of(foreign), None, "{foreign:?}");
        }
        assert_eq!(owner_of(b"dlock1\nowner\nmore").as_deref(), Some("owner"));
    }

    #[test]
    fn segments_decode_and_prefixes_are_ranges() {
        for key in ["order:42", "Order 43 ünïcode/%{x}*?[", "%2F", "a/b%c", ""] {
            assert_eq!(decode_key(&encode_key(key)).as_deref(), Some(key));
            // A key starts with a prefix exactly when its encoding starts with the prefix's.
            for cut in (0..=key.len()).filter(|&i| key.is_char_boundary(i)) {
                assert!(encode_key(key).starts_with(&encode_key(&key[..cut])));
            }
        }
        assert!(!encode_key("a%2F").starts_with(&encode_key("a/")));
        assert!(!encode_key("a/").starts_with(&encode_key("a%")));
        for foreign in ["%", "a%2", "%2f", "%41"] {
            assert_eq!(decode_key(foreign), None, "{foreign:?}");
        }
        assert_eq!(prefix_end(b"/dlock/ab"), b"/dlock/ac");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
    }
}
