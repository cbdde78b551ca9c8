//! Fan-out benchmarks: publish a 64-byte payload to 1, 16, 100 and 10,000 mailboxes while a
//! consumer drains them on the other core, beside a bare `crossbeam_channel::bounded` per
//! subscriber carrying `Arc<[u8]>` and `tokio::sync::broadcast` (whose losses are printed).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hornbeam_core::{Config, Engine, MailboxConfig, RecvError};

const DELIVERIES: usize = 400_000;

fn per_round(n: usize) -> usize {
    (DELIVERIES / n).max(20)
}

fn ours(c: &mut Group<'_>, n: usize) {
    let engine = Engine::new(Config::default());
    let m = per_round(n);
    let cap = MailboxConfig {
        capacity: m + 1,
        max_bytes: usize::MAX,
    };
    let boxes: Vec<_> = (0..n)
        .map(|_| {
            let mb = engine.bus().mailbox_with(cap);
            mb.subscribe("bench:topic").unwrap();
            mb
        })
        .collect();
    let payload = [7u8; 64];
    c.bench_function("hornbeam", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                std::thread::scope(|s| {
                    s.spawn(|| {
                        let mut got = 0;
                        // Bounded: every message was accepted (room for all), so `m * n` arrive.
                        while got < m * n {
                            for mb in &boxes {
                                loop {
                                    match mb.try_recv() {
                                        Ok(msg) => {
                                            black_box(msg);
                                            got += 1;
                                        }
                                        Err(RecvError::Empty) => break,
                                        Err(e) => panic!("{e:?}"),
                                    }
                                }
                            }
                        }
                    });
                    for _ in 0..m {
                        let delivered = engine.bus().publish("bench:topic", payload).unwrap();
                        assert_eq!(delivered, n);
                    }
                });
            }
            start.elapsed()
        })
    });
}

fn crossbeam(c: &mut Group<'_>, n: usize) {
    let m = per_round(n);
    let chans: Vec<_> = (0..n)
        .map(|_| crossbeam_channel::bounded::<Arc<[u8]>>(m + 1))
        .collect();
    c.bench_function("crossbeam_bounded_per_subscriber", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                std::thread::scope(|s| {
                    s.spawn(|| {
                        let mut got = 0;
                        while got < m * n {
                            for (_, rx) in &chans {
                                while let Ok(msg) = rx.try_recv() {
                                    black_box(msg);
                                    got += 1;
                                }
                            }
                        }
                    });
                    for _ in 0..m {
                        let payload: Arc<[u8]> = Arc::from(&[7u8; 64][..]);
                        for (tx, _) in &chans {
                            tx.try_send(payload.clone()).unwrap();
                        }
                    }
                });
            }
            start.elapsed()
        })
    });
}

fn tokio_broadcast(c: &mut Group<'_>, n: usize, lost: &AtomicU64, sent: &AtomicU64) {
    let m = per_round(n);
    let (tx, _) = tokio::sync::broadcast::channel::<Arc<[u8]>>(1024);
    let mut rxs: Vec<_> = (0..n).map(|_| tx.subscribe()).collect();
    c.bench_function("tokio_broadcast", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                std::thread::scope(|s| {
                    let rxs = &mut rxs;
                    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let d2 = done.clone();
                    s.spawn(move || {
                        let mut seen = 0u64;
                        let mut dropped = 0u64;
                        // Bounded: ends once the publisher is done and every receiver is empty.
                        loop {
                            let finished = d2.load(Ordering::Acquire);
                            let mut idle = true;
                            for rx in rxs.iter_mut() {
                                loop {
                                    match rx.try_recv() {
                                        Ok(msg) => {
                                            black_box(msg);
                                            seen += 1;
                                            idle = false;
                                        }
                                        Err(
                                            tokio::sync::broadcast::error::TryRecvError::Lagged(k),
                                        ) => {
                                            dropped += k;
                                            idle = false;
                                        }
                                        Err(_) => break,
                                    }
                                }
                            }
                            if finished && idle {
                                break;
                            }
                        }
                        lost.fetch_add(dropped, Ordering::Relaxed);
                        sent.fetch_add(seen + dropped, Ordering::Relaxed);
                    });
                    for _ in 0..m {
                        let payload: Arc<[u8]> = Arc::from(&[7u8; 64][..]);
                        let _ = tx.send(payload);
                    }
                    done.store(true, Ordering::Release);
                });
            }
            start.elapsed()
        })
    });
}

fn fanout(c: &mut Criterion) {
    for n in [1usize, 16, 100, 10_000] {
        let mut g = c.benchmark_group(format!("bus/publish_64B/{n}_mailboxes"));
        g.throughput(Throughput::Elements((per_round(n) * n) as u64));
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3));
        ours(&mut g, n);
        crossbeam(&mut g, n);
        let (lost, sent) = (AtomicU64::new(0), AtomicU64::new(0));
        tokio_broadcast(&mut g, n, &lost, &sent);
        let (l, s) = (
            lost.load(Ordering::Relaxed),
            sent.load(Ordering::Relaxed).max(1),
        );
        println!(
            "tokio_broadcast loss at {n} mailboxes: {:.1}% ({l} of {s} deliveries)",
            100.0 * l as f64 / s as f64
        );
        std::fs::create_dir_all("../target/criterion").ok();
        let _ = std::fs::write(
            format!("../target/criterion/tokio_loss_{n}.txt"),
            format!("{:.1}\n", 100.0 * l as f64 / s as f64),
        );
        g.finish();
    }
}

type Group<'a> = criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>;

criterion_group!(benches, fanout);
criterion_main!(benches);
