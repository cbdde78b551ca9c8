//! Store benchmarks beside `RwLock<HashMap>` and `dashmap`, 1 and 2 threads, 1,000,000 keys,
//! and `keys(prefix)` at 10,000 vs 1,000,000 keys. `make bench-rust`; ratios via benches/report.py.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dashmap::DashMap;
use hornbeam_core::{Config, Engine, Store, Value};

const KEYS: usize = 1_000_000;
const OPS_PER_THREAD: u64 = 200_000;

/// A map under test: the same operations on each contender.
trait Map: Sync {
    fn get(&self, k: &str) -> Option<Arc<[u8]>>;
    fn set(&self, k: &str, v: Arc<[u8]>);
    fn incr(&self, k: &str) -> i64;
}

impl Map for Store {
    fn get(&self, k: &str) -> Option<Arc<[u8]>> {
        // Moves the shared bytes out (one reference count increment, as the baselines' clone).
        match self.get(k).unwrap() {
            Some(Value::Bytes(b)) => Some(b),
            Some(Value::Int(_)) | None => None,
        }
    }
    fn set(&self, k: &str, v: Arc<[u8]>) {
        self.set(k, Value::Bytes(v), None).unwrap()
    }
    fn incr(&self, k: &str) -> i64 {
        Store::incr(self, k, 1).unwrap()
    }
}

/// The baselines hold an enum like ours, so `incr` compares like with like.
#[derive(Clone)]
enum V {
    Int(i64),
    Bytes(Arc<[u8]>),
}

impl Map for RwLock<HashMap<String, V>> {
    fn get(&self, k: &str) -> Option<Arc<[u8]>> {
        match self.read().unwrap().get(k) {
            Some(V::Bytes(b)) => Some(b.clone()),
            Some(V::Int(_)) | None => None,
        }
    }
    fn set(&self, k: &str, v: Arc<[u8]>) {
        let mut m = self.write().unwrap();
        match m.get_mut(k) {
            Some(slot) => *slot = V::Bytes(v),
            None => {
                m.insert(k.to_owned(), V::Bytes(v));
            }
        }
    }
    fn incr(&self, k: &str) -> i64 {
        let mut m = self.write().unwrap();
        match m.get_mut(k) {
            Some(V::Int(i)) => {
                *i += 1;
                *i
            }
            Some(slot) => {
                *slot = V::Int(1);
                1
            }
            None => {
                m.insert(k.to_owned(), V::Int(1));
                1
            }
        }
    }
}

impl Map for DashMap<String, V> {
    fn get(&self, k: &str) -> Option<Arc<[u8]>> {
        match self.get(k).as_deref() {
            Some(V::Bytes(b)) => Some(b.clone()),
            _ => None,
        }
    }
    fn set(&self, k: &str, v: Arc<[u8]>) {
        match self.get_mut(k) {
            Some(mut slot) => *slot = V::Bytes(v),
            None => {
                self.insert(k.to_owned(), V::Bytes(v));
            }
        }
    }
    fn incr(&self, k: &str) -> i64 {
        let mut e = self.entry(k.to_owned()).or_insert(V::Int(0));
        match &mut *e {
            V::Int(i) => {
                *i += 1;
                *i
            }
            slot => {
                *slot = V::Int(1);
                1
            }
        }
    }
}

fn keys() -> Vec<String> {
    (0..KEYS)
        .map(|i| format!("room:{}:user:{i}", i % 1000))
        .collect()
}

fn value() -> Arc<[u8]> {
    Arc::from(&b"\xa9abcdefghi"[..])
}

fn fill(m: &dyn Map, keys: &[String]) {
    for k in keys {
        m.set(k, value());
    }
}

#[derive(Clone, Copy)]
enum Workload {
    Get,
    GetSet90,
    IncrHot,
    IncrRandom,
}

/// xorshift: cheap per-thread randomness that does not dominate the measurement.
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

fn run(
    m: &dyn Map,
    keys: &[String],
    counters: &[String],
    w: Workload,
    threads: usize,
    iters: u64,
) -> Duration {
    let v = value();
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let v = v.clone();
            s.spawn(move || {
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (t as u64 + 1);
                for _ in 0..iters * OPS_PER_THREAD {
                    let r = next(&mut x);
                    let k = &keys[(r % keys.len() as u64) as usize];
                    match w {
                        Workload::Get => {
                            black_box(m.get(k));
                        }
                        Workload::GetSet90 => {
                            if r.is_multiple_of(10) {
                                m.set(k, v.clone());
                            } else {
                                black_box(m.get(k));
                            }
                        }
                        Workload::IncrHot => {
                            black_box(m.incr("hot:counter"));
                        }
                        Workload::IncrRandom => {
                            black_box(m.incr(&counters[(r % counters.len() as u64) as usize]));
                        }
                    }
                }
            });
        }
    });
    start.elapsed()
}

fn store_ops(c: &mut Criterion) {
    let keys = keys();
    let counters: Vec<String> = (0..100_000).map(|i| format!("counter:{i}")).collect();
    let ours = Engine::new(Config::default()).store().clone();
    let rw: RwLock<HashMap<String, V>> = RwLock::new(HashMap::new());
    let dash: DashMap<String, V> = DashMap::new();
    let maps: [(&str, &dyn Map); 3] = [
        ("hornbeam", &ours),
        ("rwlock_hashmap", &rw),
        ("dashmap", &dash),
    ];
    for (_, m) in maps {
        fill(m, &keys);
    }
    for (wname, w) in [
        ("get", Workload::Get),
        ("get90_set10", Workload::GetSet90),
        ("incr_hot", Workload::IncrHot),
        ("incr_random", Workload::IncrRandom),
    ] {
        for threads in [1usize, 2] {
            let mut g = c.benchmark_group(format!("store/{wname}/{threads}t"));
            g.throughput(Throughput::Elements(OPS_PER_THREAD * threads as u64));
            g.sample_size(10)
                .warm_up_time(Duration::from_millis(500))
                .measurement_time(Duration::from_secs(3));
            for (name, m) in maps {
                g.bench_function(name, |b| {
                    b.iter_custom(|iters| run(m, &keys, &counters, w, threads, iters))
                });
            }
            g.finish();
        }
    }
}

fn prefix_scan(c: &mut Criterion) {
    let mut g = c.benchmark_group("store/keys_prefix_100_matches");
    g.sample_size(30);
    for n in [10_000usize, 1_000_000] {
        let ours = Engine::new(Config::default()).store().clone();
        let mut btree = BTreeMap::new();
        for i in 0..n {
            let k = format!("filler:{i:08}");
            ours.set(&k, Value::Int(0), None).unwrap();
            btree.insert(k, 0i64);
        }
        for i in 0..100 {
            let k = format!("room:42:user:{i:03}");
            ours.set(&k, Value::Int(0), None).unwrap();
            btree.insert(k, 0);
        }
        let btree = RwLock::new(btree);
        g.bench_with_input(BenchmarkId::new("hornbeam", n), &n, |b, _| {
            b.iter(|| black_box(ours.keys("room:42:").unwrap()))
        });
        g.bench_with_input(BenchmarkId::new("rwlock_btreemap_range", n), &n, |b, _| {
            b.iter(|| {
                let m = btree.read().unwrap();
                let v: Vec<String> = m
                    .range::<str, _>((
                        std::ops::Bound::Included("room:42:"),
                        std::ops::Bound::Unbounded,
                    ))
                    .take_while(|(k, _)| k.starts_with("room:42:"))
                    .map(|(k, _)| k.clone())
                    .collect();
                black_box(v)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, store_ops, prefix_scan);
criterion_main!(benches);
