//! The store on Redis: values under `P k:key`, the sorted key index `P index`, TTL hints in
//! `P expiry` (see the module docs of [`super`] for the layout).
//!
//! Every write changes the value and the index together, in one `MULTI`/`EXEC` or one Lua
//! script. The index can still hold keys that expired in Redis: [`RedisStore::keys`] drops those
//! it meets, and `reap` drops those the expiry set says are due (bounded batches, run by
//! `len`, `reap_expired`, and at most once a second by a write with a TTL).

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::{Connection, Script};

use super::{ttl_ms, unix_ms, Redis};
use crate::backend::Ttl;
use crate::error::{shorten, Error, Result};
use crate::value::{decode_int, Value};

/// The start of every script that writes: `KEYS[1]` is the set of watching processes (scored by
/// the deadline of their registration, Unix ms), `ARGV[1]` the bus channel, `ARGV[2]` now (Unix
/// ms). `ev(kind, key, value)` publishes a change event (see [`super::relay::open_change`]) when a
/// process watches; with nobody watching a write pays one `ZCOUNT`.
const WATCHED_LUA: &str = r#"
local W = redis.call('ZCOUNT', KEYS[1], ARGV[2], '+inf') > 0
local function ev(kind, k, v)
  if W then redis.call('PUBLISH', ARGV[1], 'HB\2' .. kind .. #k .. ':' .. k .. v) end
end
"#;

/// Sets pairs `ARGV[7..]` (key, value); `KEYS[2]` the index, `KEYS[3]` the expiry set,
/// `ARGV[3]` the value prefix, `ARGV[4]` the TTL in ms (`0`: none), `ARGV[5]` its deadline in
/// Unix ms, `ARGV[6]` `1` for set-if-absent. Returns how many were set.
const SET_LUA: &str = r#"
local ttl, nx = ARGV[4], ARGV[6] == '1'
local n = 0
for i = 7, #ARGV, 2 do
  local k = ARGV[i]
  local vk = ARGV[3] .. k
  local ok
  if ttl == '0' then
    if nx then ok = redis.call('SET', vk, ARGV[i + 1], 'NX')
    else ok = redis.call('SET', vk, ARGV[i + 1]) end
  else
    if nx then ok = redis.call('SET', vk, ARGV[i + 1], 'PX', ttl, 'NX')
    else ok = redis.call('SET', vk, ARGV[i + 1], 'PX', ttl) end
  end
  if ok then
    n = n + 1
    redis.call('ZADD', KEYS[2], 0, k)
    if ttl == '0' then redis.call('ZREM', KEYS[3], k)
    else redis.call('ZADD', KEYS[3], ARGV[5], k) end
    ev('1', k, ARGV[i + 1])
  end
end
return n
"#;

/// Deletes key `ARGV[4]` (value `KEYS[4]`) from the value, the index `KEYS[2]` and the expiry
/// set `KEYS[3]`; returns how many values were deleted.
const DELETE_LUA: &str = r#"
local n = redis.call('DEL', KEYS[4])
redis.call('ZREM', KEYS[2], ARGV[4])
redis.call('ZREM', KEYS[3], ARGV[4])
if n > 0 then ev('2', ARGV[4], '') end
return n
"#;

/// Adds `ARGV[5]` to key `ARGV[4]` (value `KEYS[4]`, index `KEYS[2]`); returns the new value as
/// Redis' decimal string (a Lua number would round counters past 2^53).
const INCR_LUA: &str = r#"
redis.call('INCRBY', KEYS[4], ARGV[5])
local v = redis.call('GET', KEYS[4])
redis.call('ZADD', KEYS[2], 'NX', 0, ARGV[4])
ev('3', ARGV[4], v)
return v
"#;

/// Live keys of the index from `ARGV[2]` to `ARGV[3]` (ZRANGEBYLEX bounds), at most `ARGV[4]`
/// entries looked at; entries whose value is gone (expired) are removed on the way. Returns
/// {last entry looked at, or '' when the range is exhausted, live keys...}.
const KEYS_LUA: &str = r#"
local limit = tonumber(ARGV[4])
local ks = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[2], ARGV[3], 'LIMIT', 0, limit)
local out = {''}
if #ks == limit then out[1] = ks[#ks] end
for _, k in ipairs(ks) do
  if redis.call('EXISTS', ARGV[1] .. k) == 1 then
    out[#out + 1] = k
  else
    redis.call('ZREM', KEYS[1], k)
    redis.call('ZREM', KEYS[2], k)
  end
end
return out
"#;

/// Looks at up to `ARGV[4]` keys whose deadline (`KEYS[3]`) is at or before now: a gone key
/// leaves the index (`KEYS[2]`) with an expiry event, a key without TTL leaves the expiry set, a
/// key with a later deadline is re-scored. `ARGV[3]` is the value prefix. Returns {removed,
/// looked at, index size}.
const REAP_LUA: &str = r#"
local now = tonumber(ARGV[2])
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
local removed = 0
for _, k in ipairs(due) do
  local p = redis.call('PTTL', ARGV[3] .. k)
  if p == -2 then
    redis.call('ZREM', KEYS[2], k)
    redis.call('ZREM', KEYS[3], k)
    removed = removed + 1
    ev('4', k, '')
  elseif p == -1 then
    redis.call('ZREM', KEYS[3], k)
  else
    redis.call('ZADD', KEYS[3], now + p, k)
  end
end
return {removed, #due, redis.call('ZCARD', KEYS[2])}
"#;

/// Deletes up to `ARGV[4]` keys of the index (`KEYS[2]`) with their values (prefix `ARGV[3]`);
/// returns how many are left. The batch that empties the store reports the clear.
const CLEAR_LUA: &str = r#"
local ks = redis.call('ZRANGE', KEYS[2], 0, tonumber(ARGV[4]) - 1)
for _, k in ipairs(ks) do
  redis.call('DEL', ARGV[3] .. k)
  redis.call('ZREM', KEYS[3], k)
end
if #ks > 0 then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, #ks - 1) end
local left = redis.call('ZCARD', KEYS[2])
if left == 0 then
  redis.call('DEL', KEYS[3])
  ev('5', '', '')
end
return left
"#;

/// `PEXPIRE` that also records the deadline (`ARGV[3]`) in the expiry set.
const EXPIRE_LUA: &str = r#"
if redis.call('PEXPIRE', KEYS[1], ARGV[2]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
"#;

/// `PERSIST` that answers whether the key exists and forgets its deadline.
const PERSIST_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('PERSIST', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"#;

/// Bytes held by the values of every indexed key.
const BYTES_LUA: &str = r#"
local total = 0
for _, k in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  total = total + redis.call('STRLEN', ARGV[1] .. k)
end
return total
"#;

/// Keys looked at per reap or clear batch (each batch is one short script).
const BATCH: usize = 1000;
/// Most batches one `len` or `clear` runs (bounded loops; far above any real store).
const MAX_BATCHES: usize = 1 << 20;

struct Scripts {
    set: Script,
    delete: Script,
    incr: Script,
    keys: Script,
    reap: Script,
    clear: Script,
    expire: Script,
    persist: Script,
    bytes: Script,
}

/// The Redis half of a [`crate::Store`].
pub(crate) struct RedisStore {
    r: Arc<Redis>,
    /// `P k:`: put before a key to name its value.
    value_prefix: String,
    index: String,
    expiry: String,
    /// `P watchers`: the processes watching changes, scored by their registration's deadline.
    pub(crate) watchers: String,
    /// The bus channel, where change events go.
    channel: String,
    scripts: Scripts,
    /// When a write with a TTL last reaped (Unix ms), so it reaps at most once a second.
    last_reap: AtomicU64,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("redis", &self.r)
            .finish()
    }
}

/// A value as stored in Redis: an integer as a decimal string, anything else as MessagePack.
fn encode(v: &Value) -> Cow<'_, [u8]> {
    match v {
        Value::Int(i) => Cow::Owned(i.to_string().into_bytes()),
        Value::Bytes(b) => match decode_int(b) {
            Some(i) => Cow::Owned(i.to_string().into_bytes()),
            None => Cow::Borrowed(b),
        },
    }
}

/// A script that writes, with [`WATCHED_LUA`] before it.
fn watched(body: &str) -> Script {
    Script::new(&format!("{WATCHED_LUA}{body}"))
}

/// A value read from Redis (see [`encode`]).
pub(crate) fn decode(key: &str, bytes: &[u8]) -> Result<Value> {
    match bytes.first() {
        Some(&b) if b >= 0x80 => Value::from_msgpack(bytes, key),
        Some(_) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .map(Value::Int)
            .ok_or_else(|| Error::InvalidValue {
                key: shorten(key),
                reason: String::from(
                    "the Redis value is neither an integer nor MessagePack (written by another client?)",
                ),
            }),
        None => Err(Error::InvalidValue {
            key: shorten(key),
            reason: String::from("the Redis value is empty (written by another client?)"),
        }),
    }
}

impl RedisStore {
    pub(crate) fn new(r: Arc<Redis>) -> RedisStore {
        let p = r.prefix.clone();
        RedisStore {
            value_prefix: format!("{p}k:"),
            index: format!("{p}index"),
            expiry: format!("{p}expiry"),
            watchers: format!("{p}watchers"),
            channel: super::bus_channel(&r),
            r,
            scripts: Scripts {
                set: watched(SET_LUA),
                delete: watched(DELETE_LUA),
                incr: watched(INCR_LUA),
                keys: Script::new(KEYS_LUA),
                reap: watched(REAP_LUA),
                clear: watched(CLEAR_LUA),
                expire: Script::new(EXPIRE_LUA),
                persist: Script::new(PERSIST_LUA),
                bytes: Script::new(BYTES_LUA),
            },
            last_reap: AtomicU64::new(0),
        }
    }

    /// An invocation of a writing script with its common keys and arguments (see
    /// [`WATCHED_LUA`]): `KEYS[1..3]` watchers, index, expiry; `ARGV[1..3]` channel, now, value
    /// prefix.
    fn writing<'a>(&'a self, script: &'a Script) -> redis::ScriptInvocation<'a> {
        let mut inv = script.key(&self.watchers);
        inv.key(&self.index)
            .key(&self.expiry)
            .arg(&self.channel)
            .arg(unix_ms())
            .arg(&self.value_prefix);
        inv
    }

    fn vkey(&self, key: &str) -> String {
        let mut s = String::with_capacity(self.value_prefix.len() + key.len());
        s.push_str(&self.value_prefix);
        s.push_str(key);
        s
    }

    /// Runs `f` and maps any error reply to a backend error.
    fn call<T>(&self, f: impl FnMut(&mut Connection) -> redis::RedisResult<T>) -> Result<T> {
        self.r.run(f)?.map_err(|e| self.r.server_error(e))
    }

    pub(crate) fn get(&self, key: &str) -> Result<Option<Value>> {
        let vk = self.vkey(key);
        let got: Option<Vec<u8>> = self.call(|c| redis::cmd("GET").arg(&vk).query(c))?;
        got.map(|b| decode(key, &b)).transpose()
    }

    /// Sets items; with `nx`, only those that are missing. Returns how many were set.
    pub(crate) fn set_items(
        &self,
        items: &[(&str, &Value)],
        ttl: Option<Duration>,
        nx: bool,
    ) -> Result<usize> {
        if items.is_empty() {
            return Ok(0);
        }
        let (ttl_arg, deadline) = match ttl {
            Some(t) => {
                let ms = ttl_ms(t);
                (ms, unix_ms() + ms)
            }
            None => (0, 0),
        };
        let mut inv = self.writing(&self.scripts.set);
        inv.arg(ttl_arg)
            .arg(deadline)
            .arg(if nx { "1" } else { "0" });
        for (k, v) in items {
            inv.arg(*k).arg(&*encode(v));
        }
        let n: usize = self.call(|c| inv.invoke(c))?;
        if ttl.is_some() {
            self.maybe_reap();
        }
        Ok(n)
    }

    pub(crate) fn delete(&self, key: &str) -> Result<bool> {
        let vk = self.vkey(key);
        let mut inv = self.writing(&self.scripts.delete);
        inv.key(&vk).arg(key);
        let n: i64 = self.call(|c| inv.invoke(c))?;
        Ok(n > 0)
    }

    pub(crate) fn incr(&self, key: &str, delta: i64) -> Result<i64> {
        let vk = self.vkey(key);
        let mut inv = self.writing(&self.scripts.incr);
        inv.key(&vk).arg(key).arg(delta);
        match self.r.run(|c| inv.invoke::<String>(c))? {
            Ok(n) => n
                .parse()
                .map_err(|_| Error::NotAnInteger { key: shorten(key) }),
            // Redis' own texts: "increment or decrement would overflow", "value is not an integer
            // or out of range". In both cases the value is unchanged.
            Err(e) => {
                let text = e.to_string();
                Err(if text.contains("would overflow") {
                    Error::Overflow { key: shorten(key) }
                } else if text.contains("not an integer") {
                    Error::NotAnInteger { key: shorten(key) }
                } else {
                    self.r.server_error(e)
                })
            }
        }
    }

    pub(crate) fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Value>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let vks: Vec<String> = keys.iter().map(|k| self.vkey(k)).collect();
        let got: Vec<Option<Vec<u8>>> = self.call(|c| redis::cmd("MGET").arg(&vks).query(c))?;
        keys.iter()
            .zip(got)
            .map(|(k, v)| v.map(|b| decode(k, &b)).transpose())
            .collect()
    }

    pub(crate) fn keys(&self, prefix: &str) -> Result<Vec<String>> {
        let (min, max): (Vec<u8>, Vec<u8>) = if prefix.is_empty() {
            (b"-".to_vec(), b"+".to_vec())
        } else {
            // No UTF-8 string holds the byte 0xff, so `prefix + 0xff` bounds every key that starts
            // with `prefix`.
            let mut min = Vec::with_capacity(prefix.len() + 1);
            min.push(b'[');
            min.extend_from_slice(prefix.as_bytes());
            let mut max = Vec::with_capacity(prefix.len() + 2);
            max.push(b'(');
            max.extend_from_slice(prefix.as_bytes());
            max.push(0xff);
            (min, max)
        };
        // In chunks, so no single script holds Redis for long however many keys match.
        let mut found = Vec::new();
        let mut from = min;
        for _ in 0..MAX_BATCHES {
            let mut inv = self.scripts.keys.key(&self.index);
            inv.key(&self.expiry)
                .arg(&self.value_prefix)
                .arg(&from)
                .arg(&max)
                .arg(BATCH);
            let mut chunk: Vec<String> = self.call(|c| inv.invoke(c))?;
            if chunk.is_empty() {
                break;
            }
            let last = chunk.remove(0);
            found.append(&mut chunk);
            if last.is_empty() {
                break;
            }
            from = Vec::with_capacity(last.len() + 1);
            from.push(b'(');
            from.extend_from_slice(last.as_bytes());
        }
        Ok(found)
    }

    pub(crate) fn expire(&self, key: &str, ttl: Duration) -> Result<bool> {
        let ms = ttl_ms(ttl);
        let vk = self.vkey(key);
        let mut inv = self.scripts.expire.key(&vk);
        inv.key(&self.expiry).arg(key).arg(ms).arg(unix_ms() + ms);
        let n: i64 = self.call(|c| inv.invoke(c))?;
        Ok(n == 1)
    }

    pub(crate) fn persist(&self, key: &str) -> Result<bool> {
        let vk = self.vkey(key);
        let mut inv = self.scripts.persist.key(&vk);
        inv.key(&self.expiry).arg(key);
        let n: i64 = self.call(|c| inv.invoke(c))?;
        Ok(n == 1)
    }

    pub(crate) fn ttl(&self, key: &str) -> Result<Ttl> {
        let vk = self.vkey(key);
        let ms: i64 = self.call(|c| redis::cmd("PTTL").arg(&vk).query(c))?;
        Ok(match ms {
            -1 => Ttl::Persistent,
            ms if ms >= 0 => Ttl::Expires(Duration::from_millis(ms as u64)),
            _ => Ttl::Missing,
        })
    }

    /// Drops index entries of expired keys (all that are due); returns (removed, index size).
    pub(crate) fn reap(&self) -> Result<(usize, usize)> {
        let mut removed = 0;
        for _ in 0..MAX_BATCHES {
            let (n, seen, size) = self.reap_batch(BATCH)?;
            removed += n;
            if seen < BATCH {
                return Ok((removed, size));
            }
        }
        Ok((
            removed,
            self.call(|c| redis::cmd("ZCARD").arg(&self.index).query(c))?,
        ))
    }

    /// One reap script over at most `limit` due keys: (removed, looked at, index size). The
    /// relay of a watching process runs one about once a second, so expiries become events
    /// without waiting for a write.
    pub(crate) fn reap_batch(&self, limit: usize) -> Result<(usize, usize, usize)> {
        let mut inv = self.writing(&self.scripts.reap);
        inv.arg(limit);
        self.call(|c| inv.invoke(c))
    }

    /// A small reap, at most once a second, after writes with a TTL: keeps the index from
    /// growing with keys that expired and were never met again.
    fn maybe_reap(&self) {
        let now = unix_ms();
        let last = self.last_reap.load(Ordering::Relaxed);
        if now.saturating_sub(last) < 1000
            || self
                .last_reap
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        // Best effort: the write itself succeeded.
        let _ = self.reap_batch(100);
    }

    /// Number of keys, after dropping the index entries of expired keys.
    pub(crate) fn len(&self) -> Result<usize> {
        Ok(self.reap()?.1)
    }

    pub(crate) fn value_bytes(&self) -> Result<usize> {
        let mut inv = self.scripts.bytes.key(&self.index);
        inv.arg(&self.value_prefix);
        self.call(|c| inv.invoke(c))
    }

    pub(crate) fn clear(&self) -> Result<()> {
        for _ in 0..MAX_BATCHES {
            let mut inv = self.writing(&self.scripts.clear);
            inv.arg(BATCH);
            let left: usize = self.call(|c| inv.invoke(c))?;
            if left == 0 {
                return Ok(());
            }
        }
        Err(Error::Backend(format!(
            "redis at {}: clear did not finish (keys keep being added)",
            self.r.place()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_unambiguously() {
        for v in [
            Value::Int(0),
            Value::Int(-1),
            Value::Int(i64::MAX),
            Value::Int(i64::MIN),
            Value::encode("5").unwrap(),
            Value::encode(&1.5f64).unwrap(),
            Value::encode(&vec![1, 2]).unwrap(),
            Value::encode(&u64::MAX).unwrap(),
        ] {
            assert_eq!(decode("k", &encode(&v)).unwrap(), v);
        }
        // A counter written as MessagePack bytes is stored as a decimal string.
        assert_eq!(
            &*encode(&Value::Bytes(Arc::from(&[0xcd, 1, 0][..]))),
            b"256"
        );
        assert!(decode("k", b"hello").is_err());
        assert!(decode("k", b"").is_err());
    }
}
