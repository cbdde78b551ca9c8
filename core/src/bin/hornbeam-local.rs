//! `hornbeam-local`: a process on a `local://` directory, for trying the backend from a shell
//! (a CLI script reading an app's state) and for the multi-process tests (`core/tests/local.rs`),
//! which start it as separate processes:
//!
//! ```sh
//! cargo run -p hornbeam-core --bin hornbeam-local -- incr /dev/shm/demo hits 10000
//! cargo run -p hornbeam-core --bin hornbeam-local -- sub /dev/shm/demo 'room:*' 3   # then:
//! cargo run -p hornbeam-core --bin hornbeam-local -- pub /dev/shm/demo room:lobby hello
//! ```
//!
//! Roles: `incr DIR KEY N`, `set DIR KEY TEXT`, `get DIR KEY`, `pub DIR TOPIC TEXT`,
//! `sub DIR PATTERN COUNT` (prints `ready`, then one line per message, then exits),
//! `watch DIR PREFIX COUNT` (prints `ready`, then `op key value` per change, then exits),
//! `set_many_forever DIR` (writes batches of 10 keys with one value each until killed),
//! `two_threads DIR` (thread `a` waits on topic `x`, then thread `b` on `y`, a mailbox on `w`
//! waits for nobody; prints `ready`, then `a TEXT` and `b TEXT` as they arrive). DIR may
//! also be a whole backend URL (`redis://127.0.0.1:6379/0?prefix=t:`).

use std::io::Write;
use std::time::Duration;

use hornbeam_core::{Config, Engine, RecvError, Value};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_default();
    // DIR is a directory, or any backend URL (`redis://...`, for the Redis tests).
    let url = if arg(1).contains("://") {
        arg(1).to_owned()
    } else {
        format!("local://{}", arg(1))
    };
    let engine =
        Engine::open(&url, Config::default()).unwrap_or_else(|e| fail(&format!("open: {e}")));
    let store = engine.store();
    let mut out = std::io::stdout().lock();
    match arg(0) {
        "incr" => {
            let n: u64 = arg(3).parse().unwrap_or(0);
            for _ in 0..n {
                store
                    .incr(arg(2), 1)
                    .unwrap_or_else(|e| fail(&e.to_string()));
            }
        }
        "set" => store
            .set(arg(2), Value::encode(arg(3)).unwrap(), None)
            .unwrap_or_else(|e| fail(&e.to_string())),
        "get" => {
            let v = store.get(arg(2)).unwrap_or_else(|e| fail(&e.to_string()));
            let text = v.and_then(|v| v.decode::<String>().ok());
            writeln!(out, "{}", text.as_deref().unwrap_or("<missing>")).unwrap();
        }
        "pub" => {
            let n = engine
                .bus()
                .publish(arg(2), arg(3).as_bytes())
                .unwrap_or_else(|e| fail(&e.to_string()));
            writeln!(out, "{n}").unwrap();
        }
        "sub" => {
            let mb = engine.bus().mailbox();
            mb.subscribe(arg(2))
                .unwrap_or_else(|e| fail(&e.to_string()));
            writeln!(out, "ready").unwrap();
            out.flush().unwrap();
            let count: usize = arg(3).parse().unwrap_or(0);
            let mut got = 0;
            // Bounded: each wait is at most 30 s, and the loop ends after `count` messages.
            while got < count {
                match mb.recv_timeout(Some(Duration::from_secs(30))) {
                    Ok(m) => {
                        writeln!(
                            out,
                            "{} {}",
                            m.topic(),
                            String::from_utf8_lossy(m.payload())
                        )
                        .unwrap();
                        got += 1;
                    }
                    Err(RecvError::Lagged(n)) => writeln!(out, "lagged {n}").unwrap(),
                    Err(e) => fail(&format!("receive: {e}")),
                }
                out.flush().unwrap();
            }
        }
        "two_threads" => {
            let bus = engine.bus();
            let (x, y, w) = (bus.mailbox(), bus.mailbox(), bus.mailbox());
            for (mb, topic) in [(&x, "x"), (&y, "y"), (&w, "w")] {
                mb.subscribe(topic).unwrap_or_else(|e| fail(&e.to_string()));
            }
            let wait = |name: &'static str, mb: hornbeam_core::Mailbox| {
                move || {
                    // One wait of at most 30 s, not sliced: what reaches it comes through a ring.
                    let text = match mb.recv_timeout(Some(Duration::from_secs(30))) {
                        Ok(m) => String::from_utf8_lossy(m.payload()).into_owned(),
                        Err(e) => format!("<{e}>"),
                    };
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{name} {text}").unwrap();
                    out.flush().unwrap();
                }
            };
            let a = std::thread::spawn(wait("a", x));
            std::thread::sleep(Duration::from_millis(200)); // a blocks first: it reads the log
            let b = std::thread::spawn(wait("b", y));
            std::thread::sleep(Duration::from_millis(200));
            writeln!(out, "ready").unwrap();
            out.flush().unwrap();
            drop(out);
            let _ = a.join();
            let _ = b.join();
            drop(w);
        }
        "watch" => {
            let mb = engine.bus().mailbox();
            mb.watch(arg(2)).unwrap_or_else(|e| fail(&e.to_string()));
            writeln!(out, "ready").unwrap();
            out.flush().unwrap();
            let count: usize = arg(3).parse().unwrap_or(0);
            // Bounded: at most `count` events, each waited for at most 30 s.
            for _ in 0..count {
                match mb.recv_timeout(Some(Duration::from_secs(30))) {
                    Ok(m) => {
                        let op = m.change_kind().map_or("message", |k| k.name());
                        let value = Value::from_msgpack(m.payload(), m.topic())
                            .ok()
                            .and_then(|v| {
                                v.as_int()
                                    .map(|i| i.to_string())
                                    .or_else(|| v.decode::<String>().ok())
                            })
                            .unwrap_or_default();
                        writeln!(out, "{op} {} {value}", m.topic()).unwrap();
                    }
                    Err(e) => fail(&format!("receive: {e}")),
                }
                out.flush().unwrap();
            }
        }
        "set_many_forever" => {
            // Bounded by the test killing it (and by i64's range).
            for i in 0i64.. {
                let items: Vec<(String, Value)> = (0..10)
                    .map(|k| (format!("batch:{k}"), Value::Int(i)))
                    .collect();
                store
                    .set_many(items, None)
                    .unwrap_or_else(|e| fail(&e.to_string()));
                if i == 0 {
                    writeln!(out, "writing").unwrap();
                    out.flush().unwrap();
                }
            }
        }
        other => fail(&format!("unknown role {other:?}")),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("hornbeam-local: {msg}");
    std::process::exit(1)
}
