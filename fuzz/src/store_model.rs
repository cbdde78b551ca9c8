//! The store against a `BTreeMap` model, operation by operation, with a manual clock.
//!
//! The input is a sequence of operations (set, set-if-absent, get, delete, incr, expire, persist,
//! ttl, prefix scans, batches, clear, reaping, and moving the clock). After each, the store's
//! answer must equal the model's: same values, same errors (key and value limits, non-integer,
//! overflow), TTLs to the millisecond, sorted prefix scans, and live counts.

use std::collections::BTreeMap;
use std::time::Duration;

use arbitrary::Arbitrary;
use hornbeam_core::{Clock, Config, Error, Limits, ManualClock, Store, Ttl, Value};

const MAX_KEY: usize = 6;
const MAX_VALUE: usize = 16;
const KEYS: [&str; 8] = ["", "a", "ab", "abc", "b", "ba", "bab", "toolong!"];

/// A key from a small set (so operations collide), one of them over the key limit.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Key(u8);

impl Key {
    fn name(self) -> &'static str {
        KEYS[self.0 as usize % KEYS.len()]
    }
}

/// A value: a counter, or a MessagePack string of 0-20 bytes (some over the value limit).
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Val {
    /// A counter.
    Int(i64),
    /// A string of this many `x`.
    Str(u8),
}

impl Val {
    fn value(self) -> Value {
        match self {
            Val::Int(i) => Value::Int(i),
            Val::Str(n) => {
                let n = (n % 21) as usize;
                let mut b = vec![0xa0 | n as u8];
                b.resize(n + 1, b'x');
                Value::from_msgpack(&b, "k").expect("a fixstr")
            }
        }
    }
}

/// One store operation.
#[derive(Arbitrary, Debug)]
pub enum Op {
    /// `set`, with a TTL in milliseconds when given.
    Set(Key, Val, Option<u8>),
    /// `set_if_absent`.
    SetIfAbsent(Key, Val, Option<u8>),
    /// `get`.
    Get(Key),
    /// `delete`.
    Delete(Key),
    /// `incr`.
    Incr(Key, i64),
    /// `expire`.
    Expire(Key, u8),
    /// `persist`.
    Persist(Key),
    /// `ttl`.
    Ttl(Key),
    /// `keys(prefix)`.
    Keys(Key),
    /// `get_many`.
    GetMany(Vec<Key>),
    /// `set_many`.
    SetMany(Vec<(Key, Val)>, Option<u8>),
    /// Move the clock forward.
    Advance(u8),
    /// `reap_expired`, then `len` must equal the live count.
    Reap,
    /// `live_len`.
    Len,
    /// `clear`.
    Clear,
}

/// The model: key → (value, deadline in the clock's milliseconds; 0 = never).
#[derive(Default)]
struct Model {
    now: u64,
    map: BTreeMap<String, (Value, u64)>,
}

impl Model {
    fn live(&self, key: &str) -> Option<&(Value, u64)> {
        self.map
            .get(key)
            .filter(|(_, d)| *d == 0 || *d > self.now + 1)
    }

    fn deadline(&self, ttl: Option<u8>) -> u64 {
        ttl.map_or(0, |ms| self.now + 1 + u64::from(ms.max(1)))
    }

    fn key_ok(key: &str) -> bool {
        key.len() <= MAX_KEY
    }

    fn value_ok(v: &Value) -> bool {
        v.encoded_len() <= MAX_VALUE
    }

    fn keys(&self, prefix: &str) -> Vec<String> {
        self.map
            .keys()
            .filter(|k| k.starts_with(prefix) && self.live(k).is_some())
            .cloned()
            .collect()
    }
}

/// Whether the model refuses a write of `value` (or a read, with `None`) at `key`; if so, checks
/// that the store refused it with the right error.
fn refused<T: std::fmt::Debug>(
    r: &Result<T, Error>,
    key: &str,
    value: Option<&Value>,
    op: &Op,
) -> bool {
    if !Model::key_ok(key) {
        assert!(matches!(r, Err(Error::InvalidKey { .. })), "{op:?}: {r:?}");
        true
    } else if value.is_some_and(|v| !Model::value_ok(v)) {
        assert!(
            matches!(r, Err(Error::ValueTooLarge { .. })),
            "{op:?}: {r:?}"
        );
        true
    } else {
        false
    }
}

/// Runs one input (see the module docs).
pub fn check(data: &[u8]) {
    let Ok(ops) = arbitrary::Unstructured::new(data).arbitrary::<Vec<Op>>() else {
        return;
    };
    let clock = ManualClock::new();
    let store = Store::new(Config {
        shards: 4,
        limits: Limits {
            max_key_len: MAX_KEY,
            max_value_len: MAX_VALUE,
            ..Limits::default()
        },
        clock: Clock::Manual(clock.clone()),
        ..Config::default()
    });
    let mut m = Model::default();
    for op in ops.iter().take(256) {
        apply(&store, &clock, &mut m, op);
    }
    // Whatever happened, a full scan agrees with the model.
    assert_eq!(store.keys("").expect("scan"), m.keys(""));
}

fn apply(store: &Store, clock: &ManualClock, m: &mut Model, op: &Op) {
    match *op {
        Op::Set(k, v, ttl) => {
            let (k, v) = (k.name(), v.value());
            let r = store.set(k, v.clone(), ttl.map(|ms| Duration::from_millis(ms.into())));
            if !refused(&r, k, Some(&v), op) {
                r.expect("set");
                let d = m.deadline(ttl);
                m.map.insert(k.into(), (v, d));
            }
        }
        Op::SetIfAbsent(k, v, ttl) => {
            let (k, v) = (k.name(), v.value());
            let r =
                store.set_if_absent(k, v.clone(), ttl.map(|ms| Duration::from_millis(ms.into())));
            if !refused(&r, k, Some(&v), op) {
                let absent = m.live(k).is_none();
                assert_eq!(r.expect("set_if_absent"), absent, "{op:?}");
                if absent {
                    let d = m.deadline(ttl);
                    m.map.insert(k.into(), (v, d));
                }
            }
        }
        Op::Get(k) => {
            let k = k.name();
            let r = store.get(k);
            if !refused(&r, k, None, op) {
                assert_eq!(r.expect("get"), m.live(k).map(|(v, _)| v.clone()), "{op:?}");
            }
        }
        Op::Delete(k) => {
            let k = k.name();
            let r = store.delete(k);
            if !refused(&r, k, None, op) {
                assert_eq!(r.expect("delete"), m.live(k).is_some(), "{op:?}");
                m.map.remove(k);
            }
        }
        Op::Incr(k, delta) => {
            let k = k.name();
            let r = store.incr(k, delta);
            if refused(&r, k, None, op) {
                return;
            }
            match m.live(k).cloned() {
                None => {
                    assert_eq!(r.expect("incr from 0"), delta, "{op:?}");
                    m.map.insert(k.into(), (Value::Int(delta), 0));
                }
                Some((Value::Int(cur), d)) => match cur.checked_add(delta) {
                    Some(new) => {
                        assert_eq!(r.expect("incr"), new, "{op:?}");
                        m.map.insert(k.into(), (Value::Int(new), d));
                    }
                    None => assert!(matches!(r, Err(Error::Overflow { .. })), "{op:?}: {r:?}"),
                },
                Some((Value::Bytes(_), _)) => {
                    assert!(
                        matches!(r, Err(Error::NotAnInteger { .. })),
                        "{op:?}: {r:?}"
                    )
                }
            }
        }
        Op::Expire(k, ms) => {
            let k = k.name();
            let r = store.expire(k, Duration::from_millis(ms.into()));
            if refused(&r, k, None, op) {
                return;
            }
            let live = m.live(k).is_some();
            assert_eq!(r.expect("expire"), live, "{op:?}");
            if live {
                let d = m.deadline(Some(ms));
                m.map.get_mut(k).expect("live").1 = d;
            }
        }
        Op::Persist(k) => {
            let k = k.name();
            let r = store.persist(k);
            if refused(&r, k, None, op) {
                return;
            }
            let live = m.live(k).is_some();
            assert_eq!(r.expect("persist"), live, "{op:?}");
            if live {
                m.map.get_mut(k).expect("live").1 = 0;
            }
        }
        Op::Ttl(k) => {
            let k = k.name();
            let r = store.ttl(k);
            if refused(&r, k, None, op) {
                return;
            }
            let expected = match m.live(k) {
                None => Ttl::Missing,
                Some((_, 0)) => Ttl::Persistent,
                Some((_, d)) => Ttl::Expires(Duration::from_millis(d - (m.now + 1))),
            };
            assert_eq!(r.expect("ttl"), expected, "{op:?}");
        }
        Op::Keys(prefix) => {
            let p = prefix.name();
            let r = store.keys(p);
            if !refused(&r, p, None, op) {
                assert_eq!(r.expect("keys"), m.keys(p), "{op:?}");
            }
        }
        Op::GetMany(ref keys) => {
            let names: Vec<&str> = keys.iter().take(8).map(|k| k.name()).collect();
            let r = store.get_many(&names);
            if !names.iter().any(|k| refused(&r, k, None, op)) {
                let expected: Vec<Option<Value>> = names
                    .iter()
                    .map(|k| m.live(k).map(|(v, _)| v.clone()))
                    .collect();
                assert_eq!(r.expect("get_many"), expected, "{op:?}");
            }
        }
        Op::SetMany(ref items, ttl) => {
            let items: Vec<(&str, Value)> = items
                .iter()
                .take(8)
                .map(|(k, v)| (k.name(), v.value()))
                .collect();
            let all_ok = items
                .iter()
                .all(|(k, v)| Model::key_ok(k) && Model::value_ok(v));
            let r = store.set_many(
                items.clone(),
                ttl.map(|ms| Duration::from_millis(ms.into())),
            );
            // Every key and value is checked first: on error nothing is written.
            assert_eq!(r.is_ok(), all_ok, "{op:?}: {r:?}");
            if all_ok {
                let d = m.deadline(ttl);
                for (k, v) in items {
                    m.map.insert(k.into(), (v, d));
                }
            }
        }
        Op::Advance(ms) => {
            clock.advance(Duration::from_millis(ms.into()));
            m.now += u64::from(ms);
        }
        Op::Reap => {
            store.reap_expired();
            let live = m.keys("").len();
            assert_eq!(store.len(), live, "after reaping, every key held is live");
            m.map.retain(|_, (_, d)| *d == 0 || *d > m.now + 1);
        }
        Op::Len => assert_eq!(store.live_len(), m.keys("").len(), "{op:?}"),
        Op::Clear => {
            store.clear();
            m.map.clear();
            assert_eq!(store.len(), 0);
        }
    }
}
