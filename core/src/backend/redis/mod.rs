//! The Redis flavor: the same [`crate::Store`] and [`crate::Bus`] API, shared by every process
//! (on any machine) that opens the same Redis URL.
//!
//! # URL
//!
//! `redis://[user:password@]host:port/db?prefix=myapp:&timeout_ms=2000` (also `redis+unix://`,
//! as the `redis` crate reads them). Our own query parameters are removed before the URL reaches
//! the client:
//!
//! - `prefix` (default `hb:`): put before every Redis key and channel name, so several apps share
//!   one Redis without seeing each other's data. `prefix=` (empty) is allowed.
//! - `timeout_ms` (default 3000; `timeout` in seconds is accepted too): the connect, read and
//!   write timeout of every call. A call on an unreachable or hung server fails with
//!   [`Error::Backend`] within about twice this time, never hangs.
//!
//! # Layout in Redis (with prefix `P`)
//!
//! - `P` + `k:` + key: the value. Integers are stored as Redis decimal strings (so `INCRBY`
//!   works, atomically across processes); any other value as its MessagePack bytes. A
//!   non-integer MessagePack value always starts with a byte >= 0x80 and a decimal string never
//!   does, so reading back is unambiguous. TTLs are Redis' own (`PX`, `PEXPIRE`, `PTTL`).
//! - `P` + `index`: a sorted set of every key (all scores 0), read with `ZRANGEBYLEX` by
//!   [`crate::Store::keys`], so a prefix scan costs what its matches cost. Every write updates it
//!   in the same `MULTI`/`EXEC` or Lua script as the value.
//! - `P` + `expiry`: a sorted set of the keys that have a TTL, scored by deadline (Unix ms), so
//!   index entries of expired keys are found without a scan (see `reap`).
//! - `P` + `bus:` + db: the one pub/sub channel of the bus (pub/sub ignores database numbers, so
//!   the number is part of the name). Store change events go there too, published by the write's
//!   own script, so they are ordered with the writes (see [`relay`]).
//! - `P` + `watchers`: a sorted set of the processes that watch store changes, scored by the
//!   deadline of their registration (Unix ms; each renews it every few seconds, so a crashed
//!   process stops costing writes within [`relay::WATCH_LEASE`]). A write publishes change events
//!   only when a registration is live: with nobody watching it pays one `ZCOUNT`.
//!
//! Scripts touch keys they compute from the prefix, so the backend needs a single Redis server
//! (or a replica set), not Redis Cluster.
//!
//! # Connections
//!
//! Calls take a connection from a small pool (opening one when none is idle) and give it back
//! afterwards; a connection that saw an I/O error or a timeout is dropped, never reused, so a late
//! reply can never be read by the next caller. When a reused connection turns out closed by the
//! server (a restart), every idle connection is dropped and the call is tried once more on a new
//! connection. The bus has one more connection, for its subscription (see [`relay`]).

pub(crate) mod relay;
pub(crate) mod store;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::{Connection, ErrorKind, RedisError};

use crate::error::{Error, Result};

/// Default prefix of every Redis key and channel name.
pub(crate) const DEFAULT_PREFIX: &str = "hb:";
/// Default connect/read/write timeout.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_millis(3000);
/// Most idle connections kept in the pool.
const MAX_IDLE: usize = 16;

/// A Redis server as the backend sees it: where it is, the prefix, the timeout, and a pool of
/// connections.
pub(crate) struct Redis {
    client: redis::Client,
    /// Prefix of every key and channel name.
    pub(crate) prefix: String,
    /// Connect, read and write timeout.
    pub(crate) timeout: Duration,
    /// The database number (part of the bus channel's name).
    pub(crate) db: i64,
    /// `host:port/db`, for error messages (never the password).
    place: String,
    pool: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("at", &self.place)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Decodes `%XX` escapes of a URL query value (and `+` as a space).
fn percent_decode(s: &str) -> std::result::Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad %-escape in {s:?}"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

/// Our settings taken out of a URL, and the URL left for the `redis` crate.
#[derive(Debug, PartialEq)]
pub(crate) struct Settings {
    pub(crate) client_url: String,
    pub(crate) prefix: String,
    pub(crate) timeout: Duration,
}

/// Splits our query parameters (`prefix`, `timeout_ms`, `timeout`) from a Redis URL.
pub(crate) fn parse_url(url: &str) -> Result<Settings> {
    let bad = |msg: String| Error::InvalidArgument(format!("redis URL: {msg}"));
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut prefix = DEFAULT_PREFIX.to_owned();
    let mut timeout = DEFAULT_TIMEOUT;
    let mut rest = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "prefix" => prefix = percent_decode(value).map_err(bad)?,
            "timeout_ms" | "timeout" => {
                let v: f64 = percent_decode(value)
                    .map_err(bad)?
                    .parse()
                    .map_err(|_| bad(format!("{name}={value:?} is not a number")))?;
                let secs = if name == "timeout_ms" { v / 1000.0 } else { v };
                if !(secs.is_finite() && (0.001..=3600.0).contains(&secs)) {
                    return Err(bad(format!(
                        "{name}={value} is out of range (1 ms to 1 hour)"
                    )));
                }
                timeout = Duration::from_secs_f64(secs);
            }
            _ => rest.push(pair),
        }
    }
    let client_url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok(Settings {
        client_url,
        prefix,
        timeout,
    })
}

/// Whether an error means the connection can no longer be trusted (I/O, timeout, protocol).
fn is_broken(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
        || matches!(e.kind(), ErrorKind::ParseError)
}

impl Redis {
    /// Opens the server a URL names and checks that it answers (`PING`) within the timeout.
    pub(crate) fn open(url: &str) -> Result<Arc<Redis>> {
        let settings = parse_url(url)?;
        let client = redis::Client::open(settings.client_url.as_str()).map_err(|e| {
            Error::InvalidArgument(format!("redis URL {:?}: {e}", hide_password(url)))
        })?;
        let info = client.get_connection_info();
        let place = format!("{}/{}", info.addr, info.redis.db);
        let redis = Redis {
            db: info.redis.db,
            client,
            prefix: settings.prefix,
            timeout: settings.timeout,
            place,
            pool: Mutex::new(Vec::new()),
        };
        redis
            .run(|c| redis::cmd("PING").query::<String>(c))?
            .map_err(|e| redis.server_error(e))?;
        Ok(Arc::new(redis))
    }

    /// A new connection with the timeouts set.
    pub(crate) fn connect(&self) -> Result<Connection> {
        let con = self
            .client
            .get_connection_with_timeout(self.timeout)
            .map_err(|e| self.io_error(&e))?;
        con.set_read_timeout(Some(self.timeout))
            .and_then(|_| con.set_write_timeout(Some(self.timeout)))
            .map_err(|e| self.io_error(&e))?;
        Ok(con)
    }

    /// Runs `f` on a pooled connection. The outer error is a backend failure (already mapped,
    /// the connection dropped); the inner one is an error reply from the server, for the caller
    /// to map.
    pub(crate) fn run<T>(
        &self,
        mut f: impl FnMut(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<std::result::Result<T, RedisError>> {
        for attempt in 0..2 {
            let pooled = self.pool.lock().pop();
            let reused = pooled.is_some();
            let mut con = match pooled {
                Some(c) => c,
                None => self.connect()?,
            };
            match f(&mut con) {
                Ok(v) => {
                    self.put_back(con);
                    return Ok(Ok(v));
                }
                Err(e) if is_broken(&e) => {
                    drop(con);
                    if e.is_timeout() {
                        // The command may still run: never retry it, never reuse this connection.
                        return Err(self.io_error(&e));
                    }
                    // Closed under us (a server restart closes them all): drop the idle ones too,
                    // and try once more on a fresh connection when this one had sat in the pool.
                    self.pool.lock().clear();
                    if reused && attempt == 0 {
                        continue;
                    }
                    return Err(self.io_error(&e));
                }
                Err(e) => {
                    self.put_back(con);
                    return Ok(Err(e));
                }
            }
        }
        Err(Error::Backend(format!(
            "redis at {}: no connection",
            self.place
        )))
    }

    fn put_back(&self, con: Connection) {
        let mut pool = self.pool.lock();
        if pool.len() < MAX_IDLE {
            pool.push(con);
        }
    }

    /// A backend error for a failed connection, saying where and why.
    pub(crate) fn io_error(&self, e: &RedisError) -> Error {
        let why = if e.is_timeout() {
            format!(
                "no answer within {:.3} s (the timeout; set it with ?timeout_ms=)",
                self.timeout.as_secs_f64()
            )
        } else if e.is_connection_refusal() {
            String::from("connection refused (is redis-server running?)")
        } else if e.is_connection_dropped() {
            format!("connection lost ({e})")
        } else {
            e.to_string()
        };
        Error::Backend(format!("redis at {}: {why}", self.place))
    }

    /// A backend error for an error reply the caller did not expect.
    pub(crate) fn server_error(&self, e: RedisError) -> Error {
        Error::Backend(format!("redis at {}: {e}", self.place))
    }

    /// Where the server is, for messages.
    pub(crate) fn place(&self) -> &str {
        &self.place
    }
}

/// The URL with any password replaced by `***`, for error messages.
pub(crate) fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}:***{}", &rest[at..])
        }
        None => url.to_owned(),
    }
}

/// The bus's one pub/sub channel, `P bus:db` (pub/sub ignores database numbers, so the number is
/// part of the name); store change events go there too.
pub(crate) fn bus_channel(r: &Redis) -> String {
    format!("{}bus:{}", r.prefix, r.db)
}

/// Milliseconds since the Unix epoch (deadlines in the expiry set; only hints, see `reap`).
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A TTL in whole milliseconds, at least 1 (Redis refuses `PX 0`).
pub(crate) fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis())
        .unwrap_or(u64::MAX / 4)
        .clamp(1, 1 << 52)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_parameters_are_taken_out_of_the_url() {
        let s = parse_url("redis://127.0.0.1:6379/2?prefix=my%20app:&timeout_ms=250").unwrap();
        assert_eq!(s.client_url, "redis://127.0.0.1:6379/2");
        assert_eq!(s.prefix, "my app:");
        assert_eq!(s.timeout, Duration::from_millis(250));
        let s = parse_url("redis://h/0?protocol=resp3&prefix=&timeout=1.5").unwrap();
        assert_eq!(s.client_url, "redis://h/0?protocol=resp3");
        assert_eq!(s.prefix, "");
        assert_eq!(s.timeout, Duration::from_millis(1500));
        let s = parse_url("redis://h").unwrap();
        // The documented defaults (README, module docs), not the constants themselves.
        assert_eq!(
            (s.prefix.as_str(), s.timeout),
            ("hb:", Duration::from_millis(3000))
        );
        assert!(parse_url("redis://h?timeout_ms=0").is_err());
        assert!(parse_url("redis://h?timeout_ms=abc").is_err());
        assert!(parse_url("redis://h?prefix=%zz").is_err());
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            hide_password("redis://user:secret@h:1/0"),
            "redis://user:***@h:1/0"
        );
        assert_eq!(hide_password("redis://h:1/0"), "redis://h:1/0");
    }
}
