//! The Lua scripts of the Redis backend: every state change of a lock is one of them, atomic on
//! the server (see the backend's module docs for why each step must be one script).

use std::sync::LazyLock;

use redis::{Cmd, FromRedisValue, Script};

/// `EVALSHA <script> <numkeys>`, for the caller to add keys and arguments to: one command built
/// in place, where `Script::key(..).arg(..)` first copies every argument into a vector of its
/// own and then into the command (the hot path's scripts; callgrind counted those copies).
pub(crate) fn evalsha(script: &Script, numkeys: usize) -> Cmd {
    let mut cmd = Cmd::with_capacity(8, 160);
    cmd.arg("EVALSHA").arg(script.get_hash()).arg(numkeys);
    cmd
}

/// Runs an [`evalsha`] command of `script`; a server that does not know the script yet
/// (`NOSCRIPT`: a restart, a failover, a new cluster node) is sent it and asked again, as
/// `Script::invoke_async` does.
pub(crate) async fn run<T: FromRedisValue>(
    con: &mut (impl redis::aio::ConnectionLike + Send),
    script: &Script,
    cmd: &Cmd,
) -> redis::RedisResult<T> {
    match cmd.query_async(con).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            script.load_async(con).await?;
            cmd.query_async(con).await
        }
        done => done,
    }
}

/// Token-checked release: `DEL` if the lock holds `ARGV[1]`, then a notice on `ARGV[2]` with
/// `publish` (`PUBLISH`, or `SPUBLISH` in a cluster).
fn release_script(publish: &str) -> Script {
    Script::new(&format!(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('{publish}', ARGV[2], '1')
  return 1
end
return 0"
    ))
}

pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| release_script("PUBLISH"));

/// [`RELEASE`] for a Redis Cluster: the notice is sharded (`SPUBLISH`), published on the node
/// that holds the key (the channel shares the key's hash tag) to that shard's subscribers.
pub(crate) static RELEASE_SHARDED: LazyLock<Script> = LazyLock::new(|| release_script("SPUBLISH"));

/// The fence rule every grant follows: `max(counter + 1, server time in µs)`, stored back as the
/// counter (see the module docs, "Fences"). `ARGV[h]` is the highest fence the client has seen:
/// a fence not above it is refused (`-1`).
const FENCE_RULE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local stored = redis.call('GET', KEYS[2])
local f = math.max(tonumber(stored or '0') + 1, now)";

/// [`FENCE_RULE`] with the counter in `counter` (a Lua expression such as `KEYS[4]`), for the
/// scripts of read-write locks and semaphores: it leaves `f` (the fence) and `stored` (the
/// counter before, `false` when missing) in scope.
pub(super) fn fence_rule(counter: &str) -> String {
    FENCE_RULE.replace("KEYS[2]", counter)
}

/// Acquire: `SET lock token NX PX ttl`; when won, the fence by [`FENCE_RULE`]. Returns
/// `{1, fence, counter_was_missing}`, `{0, 0, 0}` when busy, `{-1, fence, 0}` when the fence
/// would not be above `ARGV[3]` (the lock is then given back). A key already holding `ARGV[1]`
/// (this acquisition's own token: an unannounced hand-off, or an earlier try of this acquire
/// whose answer was lost) counts as won: its lease is set afresh and the fence it drew returned.
pub(super) static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {{1, tonumber(redis.call('GET', KEYS[2]) or '0'), 0}}
  end
  return {{0, 0, 0}}
end
{FENCE_RULE}
if f <= tonumber(ARGV[3]) then
  redis.call('DEL', KEYS[1])
  return {{-1, f, 0}}
end
redis.call('SET', KEYS[2], string.format('%d', f))
if stored then return {{1, f, 0}} end
return {{1, f, 1}}"
    ))
});

/// Gives back a grant made during a restart delay: deletes the lock if `ARGV[1]` holds it, and
/// the fence counter if it still holds the fence that grant drew (`ARGV[2]`).
pub(super) static GIVE_BACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
if redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('DEL', KEYS[2])
end
return 1",
    )
});

/// Release straight to a local waiter: the lock goes from `old` to `new` token with a fresh
/// lease and a fence by [`FENCE_RULE`], without ever being free (no notice, no second round
/// trip). Returns the fence, or 0 when `old` no longer holds the lock.
pub(super) static HANDOFF: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
{FENCE_RULE}
redis.call('SET', KEYS[2], string.format('%d', f))
return f"
    ))
});

pub(crate) static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0",
    )
});
