//! `local://` against the storage engine under it: an `incr` through `hornbeam-core` on a
//! `local://` directory, beside the same read-modify-write done directly on LMDB (through `heed`,
//! with the flags `local://` opens with: `WRITE_MAP | NO_SYNC | NO_META_SYNC`) and beside the
//! embedded engine's `incr`. The bare LMDB row is the floor a `local://` write cannot go under:
//! one write transaction (the robust writer mutex, a B-tree read and write, the commit).

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use heed::types::Bytes;
use heed::{CommitOrAbort, Database, EnvFlags, EnvOpenOptions};
use hornbeam_core::{Config, Engine};

/// A fresh directory under the system's temporary directory, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("hb-bench-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create a temporary directory");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn local(c: &mut Criterion) {
    let mut g = c.benchmark_group("local/incr");

    let embedded = Engine::new(Config::default());
    g.bench_function("embedded", |b| {
        b.iter(|| black_box(embedded.store().incr(black_box("hits"), 1).unwrap()))
    });

    let dir = TempDir::new("local");
    let url = format!("local://{}", dir.0.display());
    let engine = Engine::open(&url, Config::default()).expect("open local://");
    assert_eq!(engine.store().backend_name(), "local");
    g.bench_function("hornbeam", |b| {
        b.iter(|| black_box(engine.store().incr(black_box("hits"), 1).unwrap()))
    });

    let raw = TempDir::new("lmdb");
    let mut options = EnvOpenOptions::new().read_txn_without_tls();
    options.map_size(256 << 20).max_dbs(8);
    // SAFETY: the same flags `local://` opens with; nothing else writes to this fresh map.
    unsafe { options.flags(EnvFlags::WRITE_MAP | EnvFlags::NO_SYNC | EnvFlags::NO_META_SYNC) };
    // SAFETY: a fresh directory, opened once in this process.
    let env = unsafe { options.open(&raw.0) }.expect("open LMDB");
    let wtxn = env.write_txn().unwrap();
    let db: Database<Bytes, Bytes> = env
        .create_databases_and_commit(wtxn, |o, wtxn| -> heed::Result<_> {
            Ok(CommitOrAbort::<_, ()>::Commit(
                o.create_database::<Bytes, Bytes>(wtxn, Some("kv"))?,
            ))
        })
        .unwrap()
        .unwrap_commit();
    g.bench_function("lmdb_read_modify_write", |b| {
        b.iter(|| {
            let mut wtxn = env.write_txn().unwrap();
            let cur = db
                .get(&wtxn, black_box(b"hits"))
                .unwrap()
                .map_or(0, |v| i64::from_be_bytes(v.try_into().unwrap()));
            let new = cur + 1;
            db.put(&mut wtxn, b"hits", &new.to_be_bytes()).unwrap();
            wtxn.commit().unwrap();
            black_box(new)
        })
    });
    g.finish();
}

criterion_group!(benches, local);
criterion_main!(benches);
