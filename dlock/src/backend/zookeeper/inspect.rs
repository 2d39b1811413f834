//! Inspection on ZooKeeper: what a lock node's data says ("Node data" in the
//! [module docs](super)), the holder of a queue, and `inspect`, `list`, `force_release`
//! ("Inspection" there).

use zookeeper_client as zk;

use super::{encode_key, sequence_of, token_parts, Fail, LockInfo, Session, ZookeeperBackend};
use super::{DIGEST_MARK, NAME};
use crate::backend::join_all;

/// The first line of a lock node's data written by this version of dlock.
const DATA_MAGIC: &str = "dlock1\n";
/// Longer keys are not stored in a digested lock node's data (such locks are not listed).
const MAX_STORED_KEY: usize = 64 * 1024;
/// How many queues `list` reads at once.
const LIST_CONCURRENCY: usize = 32;

/// The data of the lock node of `token` for `key`, queued under `dir` (the key's queue
/// directory): the magic line, the owner, and the whole key when `dir`'s name is digested.
pub(super) fn node_data(token: &str, key: &str, dir: &str) -> Vec<u8> {
    let owner = token_parts(token).1.unwrap_or("");
    let digested = dir
        .rsplit('/')
        .next()
        .is_some_and(|segment| segment.contains(DIGEST_MARK));
    let stored_key = (digested && key.len() <= MAX_STORED_KEY).then_some(key);
    let mut data =
        String::with_capacity(DATA_MAGIC.len() + owner.len() + 1 + stored_key.map_or(0, str::len));
    data.push_str(DATA_MAGIC);
    // The Locker's owners have no control characters; a custom token's might.
    data.extend(
        owner
            .chars()
            .map(|c| if c == '\n' || c == '\r' { '?' } else { c }),
    );
    if let Some(key) = stored_key {
        data.push('\n');
        data.push_str(key);
    }
    data.into_bytes()
}

/// What a lock node's data says; both `None` for data this version did not write.
#[derive(Debug, Default, PartialEq, Eq)]
struct NodeData {
    owner: Option<String>,
    key: Option<String>,
}

/// Reads [`node_data`]'s format; anything else (an older dlock's empty data, another client's
/// bytes) gives nothing, never a panic.
fn parse_node_data(data: &[u8]) -> NodeData {
    let Some(rest) = std::str::from_utf8(data)
        .ok()
        .and_then(|text| text.strip_prefix(DATA_MAGIC))
    else {
        return NodeData::default();
    };
    let (owner, key) = match rest.split_once('\n') {
        Some((owner, key)) => (owner, Some(key)),
        None => (rest, None),
    };
    NodeData {
        owner: (!owner.is_empty()).then(|| owner.to_owned()),
        key: key.map(str::to_owned),
    }
}

/// A queue directory's name, decoded.
#[derive(Debug, PartialEq, Eq)]
enum Segment {
    /// The whole key.
    Plain(String),
    /// A digested key: the bytes of its beginning kept in the name (which may end inside a
    /// UTF-8 character); the key itself is in the holder's data.
    Digested(Vec<u8>),
}

/// Decodes a child of the root made by [`encode_key`]; `None` for any other name.
fn decode_segment(segment: &str) -> Option<Segment> {
    if let Some((kept, digest)) = segment.split_once(DIGEST_MARK) {
        let hex = digest.len() == 64
            && digest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        return hex.then(|| unescape(kept)).flatten().map(Segment::Digested);
    }
    let key = String::from_utf8(unescape(segment)?).ok()?;
    // Only the canonical form: a name another client made is not taken for a key.
    (encode_key(&key) == segment).then_some(Segment::Plain(key))
}

/// `%XX` escapes back to bytes; `None` for a stray `%`.
fn unescape(escaped: &str) -> Option<Vec<u8>> {
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

/// The lowest node of a queue, as read.
struct Holder {
    path: String,
    data: NodeData,
    czxid: i64,
}

impl Holder {
    fn info(self, key: String) -> LockInfo {
        LockInfo {
            key,
            owner: self.data.owner,
            fence: u64::try_from(self.czxid).ok(),
            // The lease is the holder's session, not a time.
            expires_in: None,
        }
    }
}

impl ZookeeperBackend {
    /// The holder of the queue `dir`: its lowest node still there when read (a node that went
    /// between the listing and the read was released, and its successor is next).
    async fn holder(session: &Session, dir: &str) -> Result<Option<Holder>, Fail> {
        let children = match Self::retry(session, || session.client.list_children(dir)).await {
            Ok(children) => children,
            Err(zk::Error::NoNode) => return Ok(None),
            Err(e) => return Err(Fail::op("list lock queue", dir)(e)),
        };
        let mut queue: Vec<(i64, String)> = children
            .into_iter()
            .filter_map(|name| sequence_of(&name).map(|n| (n, name)))
            .collect();
        queue.sort_unstable();
        for (_, name) in queue {
            let path = format!("{dir}/{name}");
            match Self::retry(session, || session.client.get_data(&path)).await {
                Ok((data, stat)) => {
                    return Ok(Some(Holder {
                        data: parse_node_data(&data),
                        czxid: stat.czxid,
                        path,
                    }))
                }
                Err(zk::Error::NoNode) => continue,
                Err(e) => return Err(Fail::op("read lock node", &path)(e)),
            }
        }
        Ok(None)
    }

    /// See [`Backend::inspect`](super::Backend::inspect).
    pub(super) async fn inspect_inner(&self, key: &str) -> Result<Option<LockInfo>, Fail> {
        let session = self.session().await?;
        let holder = Self::holder(&session, &self.key_path(key)).await?;
        Ok(holder.map(|h| h.info(key.to_owned())))
    }

    /// See [`Backend::list`](super::Backend::list).
    pub(super) async fn list_inner(&self, prefix: &str) -> Result<Vec<LockInfo>, Fail> {
        let session = self.session().await?;
        let root = &self.inner.cfg.root;
        let names = match Self::retry(&session, || session.client.list_children(root)).await {
            Ok(names) => names,
            Err(zk::Error::NoNode) => return Ok(Vec::new()),
            Err(e) => return Err(Fail::op("list lock root", root)(e)),
        };
        // (name, key when the name gives it)
        let wanted: Vec<(String, Option<String>)> = names
            .into_iter()
            .filter_map(|name| match decode_segment(&name)? {
                Segment::Plain(key) => key.starts_with(prefix).then_some((name, Some(key))),
                Segment::Digested(kept) => {
                    let p = prefix.as_bytes();
                    (kept.starts_with(p) || p.starts_with(&kept)).then_some((name, None))
                }
            })
            .collect();
        let mut held = Vec::new();
        for chunk in wanted.chunks(LIST_CONCURRENCY) {
            let reads = chunk
                .iter()
                .map(|(name, _)| {
                    let session = &session;
                    Box::pin(async move { Self::holder(session, &format!("{root}/{name}")).await })
                })
                .collect();
            for ((name, key), holder) in chunk.iter().zip(join_all(reads).await) {
                let Some(holder) = holder? else {
                    continue;
                };
                let key = match (key, &holder.data.key) {
                    (Some(key), _) => key.clone(),
                    // The stored key must be the one the name was made of.
                    (None, Some(stored)) if encode_key(stored) == *name => {
                        if !stored.starts_with(prefix) {
                            continue;
                        }
                        stored.clone()
                    }
                    (None, _) => {
                        tracing::debug!(target: "dlock", backend = NAME, node = %holder.path, "held lock with a digested name and no key in its data (an older dlock's?); not listed");
                        continue;
                    }
                };
                held.push(holder.info(key));
            }
        }
        Ok(held)
    }

    /// See [`Backend::force_release`](super::Backend::force_release).
    pub(super) async fn force_release_inner(&self, key: &str) -> Result<bool, Fail> {
        let session = self.session().await?;
        let Some(holder) = Self::holder(&session, &self.key_path(key)).await? else {
            return Ok(false);
        };
        // Gone since it was read: its holder released it, the key was free.
        Self::delete(&session, &holder.path).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef.web/1:42";

    #[test]
    fn node_data_round_trips() {
        let data = node_data(TOKEN, "order:42", "/dlock/order:42");
        assert_eq!(data, b"dlock1\nweb/1:42");
        let parsed = parse_node_data(&data);
        assert_eq!(parsed.owner.as_deref(), Some("web/1:42"));
        assert_eq!(parsed.key, None);

        let long = format!("a\nb/{}", "x".repeat(300));
        let dir = format!("/dlock/{}", encode_key(&long));
        let parsed = parse_node_data(&node_data(TOKEN, &long, &dir));
        assert_eq!(parsed.owner.as_deref(), Some("web/1:42"));
        assert_eq!(parsed.key.as_deref(), Some(long.as_str()));

        let parsed = parse_node_data(&node_data("custom\ntoken", &long, &dir));
        assert_eq!(parsed.owner, None, "a token without an owner");
        assert_eq!(parsed.key.as_deref(), Some(long.as_str()));
        let odd = "0123456789abcdef0123456789abcdef.a\nb";
        assert_eq!(
            parse_node_data(&node_data(odd, "k", "/dlock/k")).owner,
            Some("a?b".into())
        );
    }

    #[test]
    fn foreign_data_gives_no_owner() {
        for data in [
            &b""[..],
            b"dlock1",
            b"10.0.0.7",
            b"\xff\xfe\n",
            b"dlock2\nowner",
        ] {
            assert_eq!(parse_node_data(data), NodeData::default(), "{data:?}");
        }
        assert_eq!(parse_node_data(b"dlock1\n").owner, None);
    }

    #[test]
    fn names_decode_to_their_keys() {
        for key in [
            "order:42",
            "Order 43 ünïcode/%{x}*?[",
            ".",
            "..",
            "a\nb",
            "🔑",
            "%2F",
        ] {
            assert_eq!(
                decode_segment(&encode_key(key)),
                Some(Segment::Plain(key.to_owned())),
                "{key:?}"
            );
        }
        let long = format!("ops/{}🔑{}", "long-".repeat(23), "x".repeat(200));
        match decode_segment(&encode_key(&long)) {
            Some(Segment::Digested(kept)) => {
                assert!(!kept.is_empty() && long.as_bytes().starts_with(&kept))
            }
            other => panic!("{other:?}"),
        }
        for foreign in ["%", "a%2", "a%zz", "%2f", "a%~123", "lock-0000000001%"] {
            assert_eq!(decode_segment(foreign), None, "{foreign:?}");
        }
    }
}
