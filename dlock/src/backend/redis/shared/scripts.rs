//! The Lua scripts of read-write locks and semaphores on Redis: each decision (prune the expired
//! holders, look, grant or mark) is one script, atomic on the server. Holders' expiries are
//! server milliseconds from `TIME`, so no client clock is trusted.

use std::sync::LazyLock;

use redis::Script;

use super::super::scripts::fence_rule;

/// The server's clock in milliseconds (`now_ms`), and two helpers over a sorted set of holders
/// scored by expiry: `first_expiry(k)` (ms until its earliest holder expires, or `nil`) and
/// `keep_until_last(k, ...)` (the set, and the other keys named, expire with its last holder).
const CLOCK: &str = r"
local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local now_arg = string.format('%d', now_ms)
local function first_expiry(k)
  local first = redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')
  if first[2] then return tonumber(first[2]) - now_ms end
  return nil
end
local function keep_until_last(k, ...)
  local last = redis.call('ZRANGE', k, -1, -1, 'WITHSCORES')
  if not last[2] then return end
  redis.call('PEXPIREAT', k, last[2])
  for _, other in ipairs({...}) do redis.call('PEXPIREAT', other, last[2]) end
end";

/// Read or write acquire. KEYS: readers (zset token -> expiry ms), writer (string token, PX),
/// waiting writers (zset token -> mark expiry ms), fence counter (the last write's fence).
/// ARGV: `r`|`w`, token, ttl ms, highest fence the client has seen, waiting mark ms (`0`: do
/// not mark).
///
/// Returns `{1, fence, counter_was_missing}` when granted (a reader's fence is the last write's,
/// `0` when none), `{0, ms, 0}` when busy (`ms`: until the earliest blocking lease or mark
/// ends, `-1` unknown), `{-1, fence, 0}` when a write fence would not be above `ARGV[4]`
/// (nothing granted). A hold already under this token (a retried attempt whose answer was lost)
/// counts as granted, its lease set afresh.
pub(super) static RW_ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{CLOCK}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_arg)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now_arg)
local token = ARGV[2]
local until_arg = string.format('%d', now_ms + tonumber(ARGV[3]))
local writer = redis.call('GET', KEYS[2])
if ARGV[1] == 'r' then
  if not redis.call('ZSCORE', KEYS[1], token) then
    if writer then return {{0, redis.call('PTTL', KEYS[2]), 0}} end
    local marked = first_expiry(KEYS[3])
    if marked then return {{0, marked, 0}} end
  end
  redis.call('ZADD', KEYS[1], until_arg, token)
  keep_until_last(KEYS[1])
  local last_write = redis.call('GET', KEYS[4])
  if last_write then return {{1, tonumber(last_write), 0}} end
  redis.call('SET', KEYS[4], '0')
  return {{1, 0, 1}}
end
if writer == token then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return {{1, tonumber(redis.call('GET', KEYS[4]) or '0'), 0}}
end
if writer or redis.call('ZCARD', KEYS[1]) > 0 then
  if ARGV[5] ~= '0' then
    redis.call('ZADD', KEYS[3], string.format('%d', now_ms + tonumber(ARGV[5])), token)
    keep_until_last(KEYS[3])
  end
  local wait = first_expiry(KEYS[1])
  if writer then
    local pttl = redis.call('PTTL', KEYS[2])
    if pttl >= 0 and (not wait or pttl < wait) then wait = pttl end
  end
  return {{0, wait or -1, 0}}
end
{rule}
if f <= tonumber(ARGV[4]) then return {{-1, f, 0}} end
redis.call('SET', KEYS[2], token, 'PX', ARGV[3])
redis.call('ZREM', KEYS[3], token)
redis.call('SET', KEYS[4], string.format('%d', f))
if stored then return {{1, f, 0}} end
return {{1, f, 1}}",
        rule = fence_rule("KEYS[4]")
    ))
});

/// Permit acquire. KEYS: holders (zset token -> expiry ms), permits (the count the holders
/// named), fence counter. ARGV: token, ttl ms, highest fence seen, permits.
///
/// Returns `{1, fence, counter_was_missing}` when granted, `{0, ms, 0}` when all permits are
/// held (`ms` until the earliest lease ends), `{-2, held, 0}` when the holders named another
/// count, `{-1, fence, 0}` as [`RW_ACQUIRE`]. A permit already under this token is granted again
/// with a new fence (the first answer was lost: its fence was never seen).
pub(super) static SEM_ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{CLOCK}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_arg)
local held = redis.call('ZCARD', KEYS[1])
if held > 0 then
  local named = redis.call('GET', KEYS[2])
  if named and named ~= ARGV[4] then return {{-2, tonumber(named), 0}} end
end
if held >= tonumber(ARGV[4]) and not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return {{0, first_expiry(KEYS[1]) or -1, 0}}
end
{rule}
if f <= tonumber(ARGV[3]) then return {{-1, f, 0}} end
redis.call('ZADD', KEYS[1], string.format('%d', now_ms + tonumber(ARGV[2])), ARGV[1])
redis.call('SET', KEYS[2], ARGV[4])
keep_until_last(KEYS[1], KEYS[2])
redis.call('SET', KEYS[3], string.format('%d', f))
if stored then return {{1, f, 0}} end
return {{1, f, 1}}",
        rule = fence_rule("KEYS[3]")
    ))
});

/// Token-checked release of a reader or permit holder. KEYS: holders zset, then keys that go
/// with the last holder (the permit count). ARGV: token, notice channel, `PUBLISH`|`SPUBLISH`,
/// `1` to notify only when no holder is left (readers: only a writer waits on them). Returns 1
/// when the token held a live lease.
pub(super) static RELEASE_HOLD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{CLOCK}
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_arg)
local left = redis.call('ZCARD', KEYS[1])
if left == 0 then
  for i = 2, #KEYS do redis.call('DEL', KEYS[i]) end
end
if tonumber(score) <= now_ms then return 0 end
if ARGV[4] == '1' and left > 0 then return 1 end
redis.call(ARGV[3], ARGV[2], '1')
return 1"
    ))
});

/// Token-checked release of a write hold, which also withdraws the token's waiting mark (a
/// writer that gave up or whose acquire was dropped). KEYS: writer, waiting writers. ARGV: token,
/// notice channel, `PUBLISH`|`SPUBLISH`. Notifies when the writer left, or when the last
/// waiting mark went (readers held back by it may go). Returns 1 when the token held the lock.
pub(super) static RELEASE_WRITE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{CLOCK}
local released = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  released = 1
end
local withdrew = redis.call('ZREM', KEYS[2], ARGV[1])
if withdrew == 1 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_arg) end
if released == 1 or (withdrew == 1 and redis.call('ZCARD', KEYS[2]) == 0) then
  redis.call(ARGV[3], ARGV[2], '1')
end
return released"
    ))
});

/// Token-checked renewal of a reader or permit holder: its expiry moves to now + ttl. KEYS:
/// holders zset, then keys that expire with it (the permit count). ARGV: token, ttl ms.
pub(super) static EXTEND_HOLD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{CLOCK}
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) <= now_ms then return 0 end
redis.call('ZADD', KEYS[1], 'XX', string.format('%d', now_ms + tonumber(ARGV[2])), ARGV[1])
keep_until_last(KEYS[1], unpack(KEYS, 2))
return 1"
    ))
});

/// Deletes a fence counter if it still holds `ARGV[1]` (a grant given back during a restart
/// delay re-created it: the next grant must find the state lost again).
pub(super) static FORGET_COUNTER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0",
    )
});
