//! Inspection on Redis: who holds a key, every lock under a prefix (`SCAN` with a pattern, on
//! every primary of a cluster), and force-release (the holder's own release, found by reading
//! its token first, so a new holder that won in between is never removed).

use std::sync::LazyLock;
use std::time::Duration;

use redis::{Script, Value};

use super::{backend_err, Conn, RedisBackend, RedisKeys};
use crate::backend::{token_parts, LockInfo};
use crate::Result;

/// The holder's token, lease left and fence counter in one atomic read; `false` when free.
/// (The counter holds the fence of the last grant: the holder's, while the key is held.)
static INSPECT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local v = redis.call('GET', KEYS[1])
if not v then return false end
return {v, redis.call('PTTL', KEYS[1]), redis.call('GET', KEYS[2]) or '0'}",
    )
});

/// Keys asked of `SCAN` per round trip.
const SCAN_COUNT: usize = 1000;

/// The holder of `keys` with its token (to release it by), or `None` when free.
pub(super) async fn holder(
    backend: &RedisBackend,
    key: &str,
    keys: &RedisKeys,
) -> Result<Option<(String, LockInfo)>> {
    let mut con = backend.commands.clone();
    let reply: Value = INSPECT
        .key(keys.lock())
        .key(keys.fence())
        .invoke_async(&mut con)
        .await
        .map_err(backend_err)?;
    let Value::Array(parts) = reply else {
        return Ok(None);
    };
    let text = |v: Option<&Value>| match v {
        Some(Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        Some(Value::SimpleString(s)) => Some(s.clone()),
        Some(Value::Int(i)) => Some(i.to_string()),
        _ => None,
    };
    let Some(token) = text(parts.first()) else {
        return Ok(None);
    };
    let pttl = text(parts.get(1)).and_then(|p| p.parse::<i64>().ok());
    let fence = text(parts.get(2))
        .and_then(|f| f.parse::<u64>().ok())
        .filter(|f| *f > 0);
    let info = LockInfo {
        key: key.to_owned(),
        owner: token_parts(&token).1.map(str::to_owned),
        fence,
        // -1: a key without expiry (not set by dlock); -2: gone since the GET (not reached).
        expires_in: pttl
            .and_then(|p| u64::try_from(p).ok())
            .map(Duration::from_millis),
    };
    Ok(Some((token, info)))
}

/// The `SCAN` pattern of every lock key whose user key starts with `prefix`: `dlock:{E(p)*}`,
/// glob characters escaped. Fence counters (`dlock:{..}:fence`) do not end in `}`, so they do
/// not match.
pub(crate) fn pattern(prefix: &str) -> Vec<u8> {
    let keys = RedisKeys::new(prefix);
    let escaped = keys.lock();
    // `dlock:{E(p)}` without its closing brace.
    let inner = &escaped[..escaped.len() - 1];
    let mut pattern = Vec::with_capacity(inner.len() * 2 + 2);
    for (i, &b) in inner.iter().enumerate() {
        if i >= "dlock:{".len() && matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            pattern.push(b'\\');
        }
        pattern.push(b);
    }
    pattern.extend_from_slice(b"*}");
    pattern
}

/// The user key of a lock key `dlock:{E(k)}`, or `None` for a name that is not one.
pub(crate) fn user_key(name: &[u8]) -> Option<String> {
    let inner = name.strip_prefix(b"dlock:{")?.strip_suffix(b"}")?;
    if inner.contains(&b'}') {
        return None;
    }
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        match &inner[i..] {
            [b'%', b'2', b'5', ..] => (out.push(b'%'), i += 3),
            [b'%', b'7', b'B', ..] => (out.push(b'{'), i += 3),
            [b'%', b'7', b'D', ..] => (out.push(b'}'), i += 3),
            [b'%', ..] => return None,
            [b, ..] => (out.push(*b), i += 1),
            [] => break,
        };
    }
    String::from_utf8(out).ok()
}

fn scan_cmd(cursor: u64, pattern: &[u8]) -> redis::Cmd {
    let mut cmd = redis::cmd("SCAN");
    cmd.arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(SCAN_COUNT);
    cmd
}

/// Every lock key matching `pattern` on one server (`SCAN`, [`SCAN_COUNT`] per round trip).
pub(crate) async fn scan<C: redis::aio::ConnectionLike + Send>(
    con: &mut C,
    pattern: &[u8],
) -> redis::RedisResult<Vec<Vec<u8>>> {
    let (mut found, mut cursor) = (Vec::new(), 0u64);
    loop {
        let (next, names): (u64, Vec<Vec<u8>>) = scan_cmd(cursor, pattern).query_async(con).await?;
        found.extend(names);
        cursor = next;
        if cursor == 0 {
            return Ok(found);
        }
    }
}

/// [`scan`] on the cluster node at `host:port`.
async fn scan_node(
    con: &mut redis::cluster_async::ClusterConnection,
    (host, port): (String, u16),
    pattern: &[u8],
) -> redis::RedisResult<Vec<Vec<u8>>> {
    use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
    let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
    let (mut found, mut cursor) = (Vec::new(), 0u64);
    loop {
        let value = con
            .route_command(scan_cmd(cursor, pattern), route.clone())
            .await?;
        let (next, names): (u64, Vec<Vec<u8>>) = redis::from_redis_value(value)?;
        found.extend(names);
        cursor = next;
        if cursor == 0 {
            return Ok(found);
        }
    }
}

/// The primaries of a cluster (`CLUSTER SLOTS`: each slot range names its primary first).
async fn primaries(con: &mut Conn) -> Result<Vec<(String, u16)>> {
    let slots: Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(con)
        .await
        .map_err(backend_err)?;
    let mut nodes: Vec<(String, u16)> = Vec::new();
    let Value::Array(ranges) = slots else {
        return Err(backend_err(
            "CLUSTER SLOTS did not answer with a list of ranges",
        ));
    };
    for range in ranges {
        let Value::Array(range) = range else { continue };
        let Some(Value::Array(primary)) = range.get(2) else {
            continue;
        };
        let host = match primary.first() {
            Some(Value::BulkString(h)) => String::from_utf8_lossy(h).into_owned(),
            Some(Value::SimpleString(h)) => h.clone(),
            _ => continue,
        };
        let Some(Value::Int(port)) = primary.get(1) else {
            continue;
        };
        let Ok(port) = u16::try_from(*port) else {
            continue;
        };
        if !nodes.iter().any(|(h, p)| *h == host && *p == port) {
            nodes.push((host, port));
        }
    }
    Ok(nodes)
}

/// The held locks under `prefix`: `SCAN` with the prefix's pattern (on every primary of a
/// cluster), then one atomic read per lock found.
pub(super) async fn list(backend: &RedisBackend, prefix: &str) -> Result<Vec<LockInfo>> {
    let pattern = pattern(prefix);
    let mut con = backend.commands.clone();
    let names = match &mut con {
        Conn::Single(single) => scan(single, &pattern).await.map_err(backend_err)?,
        Conn::Cluster(cluster) => {
            let nodes = primaries(&mut Conn::Cluster(cluster.clone())).await?;
            let mut names = Vec::new();
            for node in nodes {
                let found = scan_node(cluster, node, &pattern).await;
                names.extend(found.map_err(backend_err)?);
            }
            names
        }
    };
    let mut held = Vec::with_capacity(names.len());
    for name in names {
        let Some(key) = user_key(&name) else { continue };
        if !key.starts_with(prefix) {
            continue;
        }
        if let Some((_, info)) = holder(backend, &key, &RedisKeys::new(&key)).await? {
            held.push(info);
        }
    }
    held.sort_by(|a, b| a.key.cmp(&b.key));
    held.dedup_by(|a, b| a.key == b.key);
    Ok(held)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_lock_keys_under_the_prefix_only() {
        assert_eq!(pattern("order:"), b"dlock:{order:*}".to_vec());
        assert_eq!(
            pattern("a*b?[c]\\{"),
            b"dlock:{a\\*b\\?\\[c\\]\\\\%7B*}".to_vec()
        );
        assert_eq!(pattern(""), b"dlock:{*}".to_vec());
    }

    #[test]
    fn lock_keys_map_back_to_user_keys() {
        for key in ["order:42", "a}b{c%", "%7D", "ü/x y*"] {
            assert_eq!(user_key(RedisKeys::new(key).lock()).as_deref(), Some(key));
        }
        assert_eq!(user_key(RedisKeys::new("k").fence()), None);
        assert_eq!(user_key(b"other"), None);
        assert_eq!(user_key(b"dlock:{%zz}"), None);
    }
}
