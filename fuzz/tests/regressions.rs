//! Replays the seed inputs (`seeds/<target>/`) and every input a fuzzer found
//! (`regressions/<target>/`) through the fuzz targets' checks, so a fixed bug stays fixed.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        let mut paths: Vec<_> = entries.map(|e| e.expect("dir entry").path()).collect();
        paths.sort();
        for path in paths {
            let data = std::fs::read(&path).expect("readable input");
            eprintln!("{target}: {}", path.display());
            // libFuzzer runs on the main thread's 8 MiB stack; the references (rmpv on 512
            // levels of nesting, in a debug build) need more than a test thread's 2 MiB.
            std::thread::Builder::new()
                .stack_size(64 << 20)
                .spawn(move || check(&data))
                .expect("a thread")
                .join()
                .unwrap_or_else(|_| panic!("{target} failed on {}", path.display()));
            n += 1;
        }
    }
    assert!(n > 0, "no inputs for {target}: the seeds are missing");
}

#[test]
fn msgpack_value() {
    replay("msgpack_value", hornbeam_fuzz::msgpack_value::check);
}

#[test]
fn topics() {
    replay("topics", hornbeam_fuzz::topics::check);
}

#[test]
fn store_model() {
    replay("store_model", hornbeam_fuzz::store_model::check);
}

#[test]
fn mailbox_model() {
    replay("mailbox_model", hornbeam_fuzz::mailbox_model::check);
}
