//! Redis-only behaviour: several engines on one Redis, the key index, the data layout, faults.
//!
//! Run with a Redis: `tests/with-redis.sh cargo test -p hornbeam-core --test redis`. Without
//! `HORNBEAM_TEST_REDIS_URL` every test here fails, saying how to run it; the fault test also
//! needs `redis-server` (it runs a private one it can stop and restart).

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{require_redis_url, unique_prefix, with_prefix};
use hornbeam_core::{Config, Engine, Error, RecvError, Ttl, Value};

/// The test Redis URL with a fresh prefix (a missing Redis fails the test, saying how to run it).
fn url() -> (String, String) {
    let base = require_redis_url();
    let prefix = unique_prefix();
    (with_prefix(&base, &prefix), prefix)
}

fn open(url: &str) -> Engine {
    Engine::open(url, Config::default()).unwrap_or_else(|e| panic!("open {url}: {e}"))
}

/// A plain Redis connection, to look at what the engine stored.
fn raw() -> redis::Connection {
    let base = require_redis_url();
    redis::Client::open(base.as_str())
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap()
}

fn s(v: &str) -> Value {
    Value::encode(v).unwrap()
}

#[test]
fn two_engines_share_keys() {
    let (url, _) = url();
    let (a, b) = (open(&url), open(&url));
    assert_eq!(a.backend_name(), "redis");
    a.store().set("room:1:name", s("lobby"), None).unwrap();
    a.store().set("room:2:name", s("garden"), None).unwrap();
    b.store().set("user:ada", Value::Int(7), None).unwrap();
    assert_eq!(b.store().get("room:1:name").unwrap(), Some(s("lobby")));
    assert_eq!(a.store().get("user:ada").unwrap(), Some(Value::Int(7)));
    assert_eq!(
        b.store().keys("room:").unwrap(),
        ["room:1:name", "room:2:name"]
    );
    assert_eq!(a.store().len(), 3);
    assert!(b.store().delete("room:1:name").unwrap());
    assert_eq!(a.store().get("room:1:name").unwrap(), None);
    assert!(a.store().set_if_absent("lock", s("a"), None).unwrap());
    assert!(!b.store().set_if_absent("lock", s("b"), None).unwrap());
    // Another prefix on the same Redis sees nothing of this one.
    let (other_url, _) = self::url();
    let other = open(&other_url);
    assert_eq!(other.store().get("user:ada").unwrap(), None);
    assert!(other.store().keys("").unwrap().is_empty());
    a.store().clear();
    assert!(b.store().is_empty());
}

#[test]
fn two_engines_share_messages_with_local_pattern_semantics() {
    let (url, _) = url();
    let (a, b) = (open(&url), open(&url));
    let on_a = a.bus().mailbox();
    let on_b = b.bus().mailbox();
    on_a.subscribe("room:>").unwrap();
    on_b.subscribe("room:*").unwrap();
    // Local delivery on A plus one other process (B) reached.
    assert_eq!(a.bus().publish("room:lobby", b"hello").unwrap(), 2);
    let got = on_b.recv_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!((got.topic(), got.payload()), ("room:lobby", &b"hello"[..]));
    assert_eq!(on_a.try_recv().unwrap().payload(), b"hello");
    // `*` is one segment, as in the embedded bus (Redis' glob would match this).
    b.bus().publish("room:a:b", b"deep").unwrap();
    let got = on_a.recv_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(got.topic(), "room:a:b");
    // Order per publisher is kept across processes.
    for i in 0..200 {
        a.bus().publish("room:seq", i.to_string()).unwrap();
    }
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < 200 && Instant::now() < deadline {
        match on_b.recv_timeout(Some(Duration::from_millis(200))) {
            Ok(m) => seen.push(String::from_utf8(m.payload().to_vec()).unwrap()),
            Err(RecvError::Lagged(n)) => panic!("lagged {n}"),
            Err(_) => {}
        }
    }
    let want: Vec<String> = (0..200).map(|i| i.to_string()).collect();
    assert_eq!(seen, want);
    // A's own messages come back from Redis but are not delivered twice.
    std::thread::sleep(Duration::from_millis(200));
    let mut own = 0;
    while on_a.try_recv().is_ok() {
        own += 1;
    }
    assert_eq!(own, 200, "each of A's own messages exactly once");
    assert_eq!(
        on_b.try_recv(),
        Err(RecvError::Empty),
        "B does not get room:a:b"
    );
}

#[test]
fn incr_is_atomic_across_engines() {
    let (url, _) = url();
    let engines = [open(&url), open(&url)];
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let st = engines[i % 2].store().clone();
            std::thread::spawn(move || {
                for _ in 0..250 {
                    st.incr("hits", 1).unwrap();
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(
        engines[1].store().get("hits").unwrap(),
        Some(Value::Int(1000))
    );
    assert_eq!(engines[0].store().keys("").unwrap(), ["hits"]);
}

#[test]
fn counters_and_errors_are_the_embedded_ones() {
    let (url, prefix) = url();
    let e = open(&url);
    let st = e.store();
    st.set("max", Value::Int(i64::MAX), None).unwrap();
    assert_eq!(
        st.incr("max", 1).unwrap_err(),
        Error::Overflow { key: "max".into() }
    );
    assert_eq!(st.get("max").unwrap(), Some(Value::Int(i64::MAX)));
    st.set("text", s("hi"), None).unwrap();
    assert_eq!(
        st.incr("text", 1).unwrap_err(),
        Error::NotAnInteger { key: "text".into() }
    );
    st.set("float", Value::encode(&2.5f64).unwrap(), None)
        .unwrap();
    assert!(matches!(
        st.incr("float", 1),
        Err(Error::NotAnInteger { .. })
    ));
    // Layout: an integer is a Redis decimal string (INCRBY works from any client), anything else
    // MessagePack bytes.
    let mut raw = raw();
    let stored: Vec<u8> = redis::cmd("GET")
        .arg(format!("{prefix}k:max"))
        .query(&mut raw)
        .unwrap();
    assert_eq!(stored, i64::MAX.to_string().into_bytes());
    let stored: Vec<u8> = redis::cmd("GET")
        .arg(format!("{prefix}k:text"))
        .query(&mut raw)
        .unwrap();
    assert_eq!(stored, b"\xa2hi");
    let _: i64 = redis::cmd("INCRBY")
        .arg(format!("{prefix}k:max"))
        .arg(-7)
        .query(&mut raw)
        .unwrap();
    assert_eq!(st.get("max").unwrap(), Some(Value::Int(i64::MAX - 7)));
    // Limits are checked before any I/O.
    let long = "k".repeat(st.limits().max_key_len + 1);
    assert!(matches!(st.get(&long), Err(Error::InvalidKey { .. })));
    st.clear();
}

#[test]
fn keys_index_drops_expired_keys() {
    let (url, prefix) = url();
    let e = open(&url);
    let st = e.store();
    for i in 0..20 {
        st.set(
            &format!("session:{i:02}"),
            Value::Int(i),
            Some(Duration::from_millis(100)),
        )
        .unwrap();
    }
    st.set("session:keep", Value::Int(1), None).unwrap();
    st.set("other", Value::Int(1), Some(Duration::from_secs(60)))
        .unwrap();
    assert!(matches!(st.ttl("other").unwrap(), Ttl::Expires(d) if d > Duration::from_secs(50)));
    assert_eq!(st.ttl("session:keep").unwrap(), Ttl::Persistent);
    assert_eq!(st.keys("session:").unwrap().len(), 21);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(st.ttl("session:00").unwrap(), Ttl::Missing);
    assert_eq!(st.get("session:00").unwrap(), None);
    assert_eq!(st.keys("session:").unwrap(), ["session:keep"]);
    let mut raw = raw();
    let zcard = |raw: &mut redis::Connection, name: &str| -> usize {
        redis::cmd("ZCARD")
            .arg(format!("{prefix}{name}"))
            .query(raw)
            .unwrap()
    };
    assert_eq!(
        zcard(&mut raw, "index"),
        2,
        "expired entries met by keys() are gone"
    );
    // Expired keys nobody scans are dropped by len() (through the expiry set).
    for i in 0..20 {
        st.set(
            &format!("temp:{i}"),
            Value::Int(i),
            Some(Duration::from_millis(50)),
        )
        .unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(st.len(), 2);
    assert_eq!(zcard(&mut raw, "index"), 2);
    assert_eq!(zcard(&mut raw, "expiry"), 1, "only `other` still has a TTL");
    // expire / persist.
    assert!(st
        .expire("session:keep", Duration::from_millis(50))
        .unwrap());
    assert!(st.persist("session:keep").unwrap());
    std::thread::sleep(Duration::from_millis(120));
    assert_eq!(st.get("session:keep").unwrap(), Some(Value::Int(1)));
    assert!(!st.expire("missing", Duration::from_secs(1)).unwrap());
    assert!(!st.persist("missing").unwrap());
    // incr keeps the TTL, as in the embedded store.
    st.set("c", Value::Int(1), Some(Duration::from_secs(60)))
        .unwrap();
    assert_eq!(st.incr("c", 1).unwrap(), 2);
    assert!(matches!(st.ttl("c").unwrap(), Ttl::Expires(_)));
    st.clear();
    assert_eq!(zcard(&mut raw, "index"), 0);
}

#[test]
fn bulk_calls_and_odd_keys() {
    let (url, _) = url();
    let e = open(&url);
    let st = e.store();
    let keys = ["a", "ä:ö", "with space", "x\u{0}y", ":", "room:*"];
    st.set_many(
        keys.iter()
            .enumerate()
            .map(|(i, k)| (*k, Value::Int(i as i64)))
            .collect(),
        None,
    )
    .unwrap();
    let got = st.get_many(&["a", "missing", "x\u{0}y", "ä:ö"]).unwrap();
    assert_eq!(
        got,
        [
            Some(Value::Int(0)),
            None,
            Some(Value::Int(3)),
            Some(Value::Int(1))
        ]
    );
    let mut sorted: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    sorted.sort();
    assert_eq!(st.keys("").unwrap(), sorted);
    assert_eq!(st.keys("ä").unwrap(), ["ä:ö"]);
    assert_eq!(st.keys("room:").unwrap(), ["room:*"]);
    // More matches than one chunk of the index scan (1000).
    let many: Vec<(String, Value)> = (0..2500)
        .map(|i| (format!("many:{i:05}"), Value::Int(i)))
        .collect();
    st.set_many(many, Some(Duration::from_secs(60))).unwrap();
    let found = st.keys("many:").unwrap();
    assert_eq!(found.len(), 2500);
    assert!(found.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
    assert_eq!(st.keys("many:01").unwrap().len(), 1000);
    let big = Value::encode(&"x".repeat(1 << 20)).unwrap();
    st.set("big", big.clone(), None).unwrap();
    assert_eq!(st.get("big").unwrap(), Some(big));
    assert!(st.value_bytes() > 1 << 20);
    st.clear();
}

#[test]
fn the_subscriber_leaves_when_the_engine_is_dropped() {
    let (url, prefix) = url();
    let numsub = || -> i64 {
        let (_, n): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(format!("{prefix}bus:0"))
            .query(&mut raw())
            .unwrap();
        n
    };
    let e = open(&url);
    assert_eq!(numsub(), 0, "no subscription before the first subscribe");
    let mb = e.bus().mailbox();
    mb.subscribe("t").unwrap();
    assert_eq!(numsub(), 1);
    drop(mb);
    drop(e);
    let deadline = Instant::now() + Duration::from_secs(5);
    while numsub() != 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(numsub(), 0, "the subscriber thread closed its connection");
}

#[test]
fn bad_urls_and_unreachable_servers_are_clear_errors() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = Engine::open(
        &format!("redis://127.0.0.1:{port}/0?timeout_ms=500"),
        Config::default(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Backend(_)), "{err}");
    assert!(err.to_string().contains("connection refused"), "{err}");
    assert!(matches!(
        Engine::open("redis://127.0.0.1:1/0?timeout_ms=x", Config::default()),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        Engine::open("mongodb://x", Config::default()),
        Err(Error::InvalidArgument(_))
    ));
}

/// A private redis-server on a fixed port, stopped by its PID when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(port: u16) -> Server {
        let bin = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (set REDIS_SERVER to its path)");
        let server = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    fn stop(mut self) {
        self.signal("-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::forget(self);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn redis_going_away_fails_fast_and_subscriptions_come_back_with_a_lag_notice() {
    require_redis_url();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let server = Server::start(port);
    let url = format!("redis://127.0.0.1:{}/0?timeout_ms=500", server.port);
    let a = open(&url);
    let mb = Arc::new(a.bus().mailbox());
    mb.subscribe("chat:>").unwrap();
    // A mailbox nobody publishes to: after the outage its descriptor must turn readable for the
    // lag notice alone.
    let quiet = a.bus().mailbox();
    quiet.subscribe("quiet").unwrap();
    let quiet_fd = quiet.fd().unwrap();
    assert_eq!(quiet.try_recv_arm(), Err(RecvError::Empty));
    assert!(!readable(quiet_fd, 0), "nothing to read before the outage");
    a.store().set("k", Value::Int(1), None).unwrap();

    // Hung server (SIGSTOP): calls fail with the timeout's error instead of hanging (a hang would
    // run into the test harness' own limit).
    server.signal("-STOP");
    let err = a.store().get("k").unwrap_err();
    assert!(matches!(err, Error::Backend(_)), "{err}");
    assert!(
        err.to_string().contains("no answer within 0.500 s"),
        "{err}"
    );
    server.signal("-CONT");
    assert_eq!(a.store().get("k").unwrap(), Some(Value::Int(1)));

    // Stopped server: every call fails fast with a backend error.
    server.stop();
    for _ in 0..3 {
        assert!(matches!(a.store().get("k"), Err(Error::Backend(_))));
        assert!(matches!(a.store().incr("n", 1), Err(Error::Backend(_))));
        assert!(matches!(
            a.bus().publish("chat:x", b"lost"),
            Err(Error::Backend(_))
        ));
    }
    // Subscribing locally still works while the connection is down.
    mb.subscribe("other").unwrap();

    // Started again on the same port: calls work again, the subscription comes back.
    let server = Server::start(port);
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.store().set("k", Value::Int(2), None).is_err() {
        assert!(Instant::now() < deadline, "store did not come back");
        std::thread::sleep(Duration::from_millis(50));
    }
    let b = open(&url);
    // Wait until A's subscriber is back (B's publish then reaches one other process).
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.bus().publish("chat:probe", b"p").unwrap() == 0 {
        assert!(Instant::now() < deadline, "subscription did not come back");
        std::thread::sleep(Duration::from_millis(50));
    }
    b.bus().publish("chat:after", b"back").unwrap();
    assert!(
        readable(quiet_fd, 5000),
        "a mailbox waiting on its descriptor is woken for the notice"
    );
    assert_eq!(quiet.try_recv_arm(), Err(RecvError::Lagged(1)));
    assert_eq!(quiet.try_recv_arm(), Err(RecvError::Empty));
    let first = mb.recv_timeout(Some(Duration::from_secs(5)));
    assert_eq!(
        first.unwrap_err(),
        RecvError::Lagged(1),
        "the gap is reported first"
    );
    let mut rest = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !rest.iter().any(|t: &String| t == "chat:after") && Instant::now() < deadline {
        if let Ok(m) = mb.recv_timeout(Some(Duration::from_millis(200))) {
            rest.push(m.topic().to_owned());
        }
    }
    assert_eq!(
        rest.last().map(String::as_str),
        Some("chat:after"),
        "{rest:?}"
    );
    assert!(rest.iter().all(|t| t.starts_with("chat:")), "{rest:?}");
    drop(server);
}

/// Whether `fd` turns readable within `timeout_ms` (poll(2)).
fn readable(fd: i32, timeout_ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `p` is one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    n == 1 && p.revents & libc::POLLIN != 0
}

/// The `hornbeam-local` tool as a separate process on `url` (a real second process).
fn worker(args: &[&str]) -> (Child, std::io::BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hornbeam-local"))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    (child, out)
}

fn line(r: &mut impl std::io::BufRead) -> String {
    let mut s = String::new();
    r.read_line(&mut s).unwrap();
    s.trim_end().to_owned()
}

#[test]
fn a_watcher_in_another_process_sees_every_change_in_commit_order() {
    let (url, _) = url();
    let (mut child, mut out) = worker(&["watch", &url, "room:", "6"]);
    assert_eq!(line(&mut out), "ready");
    let engine = open(&url);
    let st = engine.store();
    st.set("room:a", Value::Int(1), None).unwrap();
    st.set("elsewhere", Value::Int(9), None).unwrap();
    assert_eq!(st.incr("room:a", 4).unwrap(), 5);
    assert!(st.delete("room:a").unwrap());
    st.set_many(vec![("room:b", s("two")), ("room:c", Value::Int(3))], None)
        .unwrap();
    st.clear();
    let got: Vec<String> = (0..6).map(|_| line(&mut out)).collect();
    assert_eq!(
        got,
        [
            "set room:a 1",
            "incr room:a 5",
            "delete room:a",
            "set room:b two",
            "set room:c 3",
            "clear"
        ]
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn writes_publish_change_events_only_while_someone_watches() {
    let (url, prefix) = url();
    let engine = open(&url);
    let st = engine.store();
    let mut con = raw();
    let watchers = format!("{prefix}watchers");
    // A raw subscriber on the bus channel sees what the writes publish.
    let mut sub = raw();
    let mut ps = sub.as_pubsub();
    ps.subscribe(format!("{prefix}bus:0")).unwrap();
    ps.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    st.set("k", Value::Int(1), None).unwrap();
    assert!(
        ps.get_message().is_err(),
        "nobody watches: nothing published"
    );

    let mb = engine.bus().mailbox();
    assert!(mb.watch("k").unwrap());
    let n: usize = redis::cmd("ZCARD").arg(&watchers).query(&mut con).unwrap();
    assert_eq!(n, 1, "this process is registered as a watcher");
    st.set("k", Value::Int(2), None).unwrap();
    let m = ps.get_message().expect("a change event");
    assert!(m.get_payload_bytes().starts_with(b"HB\x021"), "{m:?}");
    let ev = mb.recv_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!((ev.topic(), ev.payload()), ("k", &[2u8][..]));

    assert!(mb.unwatch("k").unwrap());
    let n: usize = redis::cmd("ZCARD").arg(&watchers).query(&mut con).unwrap();
    assert_eq!(n, 0, "the last unwatch removes the registration");
    st.set("k", Value::Int(3), None).unwrap();
    assert!(
        ps.get_message().is_err(),
        "nobody watches again: nothing published"
    );

    // A registration that lapsed (a process that died without unwatching) costs nothing.
    let _: () = redis::cmd("ZADD")
        .arg(&watchers)
        .arg(1)
        .arg("dead")
        .query(&mut con)
        .unwrap();
    st.set("k", Value::Int(4), None).unwrap();
    assert!(
        ps.get_message().is_err(),
        "a lapsed registration: nothing published"
    );
}

#[test]
fn counters_past_two_to_the_53_keep_every_digit_in_values_and_events() {
    let (url, _) = url();
    let engine = open(&url);
    let mb = engine.bus().mailbox();
    mb.watch("big").unwrap();
    let st = engine.store();
    let near = i64::MAX - 1;
    assert_eq!(st.incr("big", near).unwrap(), near);
    assert_eq!(st.incr("big", 1).unwrap(), i64::MAX);
    assert!(matches!(st.incr("big", 1), Err(Error::Overflow { .. })));
    for want in [near, i64::MAX] {
        let ev = mb.recv_timeout(Some(Duration::from_secs(10))).unwrap();
        let got = Value::from_msgpack(ev.payload(), "big").unwrap().as_int();
        assert_eq!(got, Some(want));
    }
    assert_eq!(
        mb.try_recv().unwrap_err(),
        RecvError::Empty,
        "no event for the overflow"
    );
}
