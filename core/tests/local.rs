//! `local://` across real processes: each test starts `hornbeam-local` (`core/src/bin`, built by
//! cargo for these tests) as separate processes on one directory, and stops every one by its PID.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::local_dir;
use hornbeam_core::{Config, Engine, Value};

fn worker() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hornbeam-local"))
}

/// A worker process, killed and reaped on drop.
struct Worker {
    child: Child,
    lines: BufReader<ChildStdout>,
}

impl Worker {
    fn start(args: &[&str]) -> Worker {
        let mut child = Command::new(worker())
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap());
        Worker { child, lines }
    }

    fn line(&mut self) -> String {
        let mut s = String::new();
        self.lines.read_line(&mut s).unwrap();
        s.trim_end().to_owned()
    }

    fn wait_ok(&mut self) {
        let status = self.child.wait().unwrap();
        assert!(status.success(), "worker failed: {status}");
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn open(dir: &Path) -> Engine {
    Engine::open(&format!("local://{}", dir.display()), Config::default()).unwrap()
}

#[test]
fn four_processes_increment_one_key_without_losing_any() {
    let dir = local_dir();
    let d = dir.to_str().unwrap();
    let mut workers: Vec<Worker> = (0..4)
        .map(|_| Worker::start(&["incr", d, "hits", "10000"]))
        .collect();
    for w in &mut workers {
        w.wait_ok();
    }
    assert_eq!(
        open(&dir).store().get("hits").unwrap(),
        Some(Value::Int(40_000))
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_publish_reaches_three_other_processes_in_order() {
    let dir = local_dir();
    let d = dir.to_str().unwrap();
    let mut subs: Vec<Worker> = (0..3)
        // 201: a subscriber that exited after the 200th could close its doorbell before a slow
        // publisher rings it for that one; the 201st is not counted.
        .map(|_| Worker::start(&["sub", d, "room:*", "201"]))
        .collect();
    for s in &mut subs {
        assert_eq!(s.line(), "ready");
    }
    let engine = open(&dir);
    for i in 0..200 {
        let reached = engine
            .bus()
            .publish("room:lobby", format!("m{i}").as_bytes())
            .unwrap();
        assert_eq!(reached, 3, "three other processes were rung");
    }
    engine.bus().publish("room:lobby", b"end").unwrap();
    let want: Vec<String> = (0..200).map(|i| format!("room:lobby m{i}")).collect();
    for s in &mut subs {
        let got: Vec<String> = (0..200).map(|_| s.line()).collect();
        assert_eq!(got, want);
        assert_eq!(s.line(), "room:lobby end");
        s.wait_ok();
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_thread_blocked_in_recv_is_served_when_the_thread_reading_the_log_leaves() {
    // In the worker, thread a waits on x and reads the shared log for the process; b waits on
    // y. After a got its message and left, b's must still come: with tick_ms=60000, nothing but
    // the relay thread taking over at once brings it within b's 30 s wait.
    let dir = local_dir();
    let url = format!("{}?tick_ms=60000", dir.display());
    let mut w = Worker::start(&["two_threads", &url]);
    assert_eq!(w.line(), "ready");
    let engine = open(&dir);
    let bus = engine.bus();
    // For nobody: a reads it in, and the relay thread leaves the doorbell to a.
    bus.publish("w", b"for nobody").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    bus.publish("x", b"for a").unwrap();
    assert_eq!(w.line(), "a for a");
    std::thread::sleep(Duration::from_millis(200));
    bus.publish("y", b"for b").unwrap();
    assert_eq!(w.line(), "b for b", "b's wait ended without its message");
    w.wait_ok();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_killed_subscriber_is_forgotten_and_the_others_go_on() {
    let dir = local_dir();
    let d = dir.to_str().unwrap();
    let mut doomed = Worker::start(&["sub", d, "t", "1000"]);
    // The live one waits for two messages: after one it would exit, and a publisher slower than
    // it (valgrind) could then find its doorbell closed before ringing it.
    let mut alive = Worker::start(&["sub", d, "t", "2"]);
    assert_eq!(doomed.line(), "ready");
    assert_eq!(alive.line(), "ready");
    doomed.kill();
    let engine = open(&dir);
    // The first publish finds the dead doorbell and removes its member; the live one still gets
    // the message.
    assert_eq!(engine.bus().publish("t", b"after").unwrap(), 1);
    assert_eq!(alive.line(), "t after");
    engine.bus().publish("t", b"last").unwrap();
    assert_eq!(alive.line(), "t last");
    alive.wait_ok();
    // The second one has exited too (without a word, as a killed one would): the next publish
    // reaches nobody and removes its doorbell as well.
    assert_eq!(engine.bus().publish("t", b"nobody").unwrap(), 0);
    let bells = std::fs::read_dir(dir.join("bells")).unwrap().count();
    assert_eq!(
        bells, 0,
        "dead members' doorbells are removed by the publisher"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_process_killed_inside_set_many_leaves_whole_batches_and_no_lock() {
    let dir = local_dir();
    let d = dir.to_str().unwrap();
    let engine = open(&dir);
    let store = engine.store();
    let keys: Vec<String> = (0..10).map(|k| format!("batch:{k}")).collect();
    for round in 0..5 {
        let mut w = Worker::start(&["set_many_forever", d]);
        assert_eq!(w.line(), "writing");
        // Let it write for a while (bounded), then kill it wherever it is.
        let until = Instant::now() + Duration::from_millis(20 + 15 * round);
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        w.kill();
        let values = store.get_many(&keys).unwrap();
        assert!(values[0].is_some(), "round {round}: some batch was written");
        assert!(
            values.iter().all(|v| v == &values[0]),
            "round {round}: a half-written batch: {values:?}"
        );
        // The writer lock was not left behind: writes go on at once.
        store.set("after", Value::Int(round as i64), None).unwrap();
        assert_eq!(store.incr("after", 1).unwrap(), round as i64 + 1);
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn data_survives_every_process_stopping() {
    let dir = local_dir();
    let d = dir.to_str().unwrap();
    Worker::start(&["set", d, "greeting", "hello from a process that exited"]).wait_ok();
    let mut reader = Worker::start(&["get", d, "greeting"]);
    assert_eq!(reader.line(), "hello from a process that exited");
    reader.wait_ok();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_directories_are_clear_errors_naming_the_path() {
    let err = Engine::open("local://relative/dir", Config::default()).unwrap_err();
    assert!(err.to_string().contains("must be absolute"), "{err}");
    let file = local_dir().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = Engine::open(&format!("local://{}", file.display()), Config::default()).unwrap_err();
    assert!(err.to_string().contains(file.to_str().unwrap()), "{err}");
    let other = local_dir();
    std::fs::write(other.join("data.mdb"), vec![7u8; 65536]).unwrap();
    let err = Engine::open(&format!("local://{}", other.display()), Config::default()).unwrap_err();
    assert!(err.to_string().contains(other.to_str().unwrap()), "{err}");
    assert!(err.to_string().contains("not an LMDB environment"), "{err}");
}

#[test]
fn a_full_store_is_a_clear_error_and_stays_readable_and_deletable() {
    let dir = local_dir();
    let engine = Engine::open(
        &format!("local://{}?map_size=1m", dir.display()),
        Config::default(),
    )
    .unwrap();
    let st = engine.store();
    let big = Value::encode(&vec![7u8; 64 * 1024]).unwrap();
    let mut written = 0;
    let err = loop {
        // Bounded: a 1 MiB map holds fewer than 16 of these.
        assert!(written < 64, "the map never filled up");
        match st.set(&format!("big:{written}"), big.clone(), None) {
            Ok(()) => written += 1,
            Err(e) => break e,
        }
    };
    assert!(err.to_string().contains("the store is full"), "{err}");
    assert!(written > 0);
    assert_eq!(st.get("big:0").unwrap(), Some(big.clone()));
    assert!(st.delete("big:0").unwrap());
    st.set("small", Value::Int(1), None).unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_watcher_in_another_process_sees_every_change_in_order() {
    let dir = local_dir();
    let d = dir.to_str().unwrap();
    let mut watcher = Worker::start(&["watch", d, "room:", "5"]);
    assert_eq!(watcher.line(), "ready");
    let engine = open(&dir);
    let st = engine.store();
    st.set("room:a", Value::Int(1), None).unwrap();
    st.set("elsewhere", Value::Int(9), None).unwrap();
    assert_eq!(st.incr("room:a", 4).unwrap(), 5);
    assert!(st.delete("room:a").unwrap());
    st.set_many(
        vec![("room:b", Value::Int(2)), ("room:c", Value::Int(3))],
        None,
    )
    .unwrap();
    let got: Vec<String> = (0..5).map(|_| watcher.line()).collect();
    assert_eq!(
        got,
        [
            "set room:a 1",
            "incr room:a 5",
            "delete room:a",
            "set room:b 2",
            "set room:c 3"
        ]
    );
    watcher.wait_ok();
    let _ = std::fs::remove_dir_all(dir);
}
