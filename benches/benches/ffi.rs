//! The C ABI's cost: get, incr and publish+receive through the `extern "C"` functions of
//! libhornbeam (the same code a C program calls), beside the same operations on `hornbeam-core`.

use std::hint::black_box;
use std::ptr;

use criterion::{criterion_group, criterion_main, Criterion};
use hornbeam::bus::*;
use hornbeam::engine::*;
use hornbeam::status::HbStatus;
use hornbeam::store::*;
use hornbeam_core::{Config, Engine, Value};

fn ok(s: HbStatus) {
    assert_eq!(s, HbStatus::HB_OK);
}

fn ffi(c: &mut Criterion) {
    let engine = Engine::new(Config::default());
    engine
        .store()
        .set("user:1", Value::encode("ann").unwrap(), None)
        .unwrap();
    let mut h: *mut HbEngine = ptr::null_mut();
    // SAFETY: valid out-pointer; the handle is freed at the end.
    unsafe { ok(hb_engine_new(&mut h)) };
    // SAFETY: live handle, key and value valid for their lengths.
    unsafe { ok(hb_set_str(h, b"user:1".as_ptr(), 6, b"ann".as_ptr(), 3, 0)) };

    let mut g = c.benchmark_group("ffi/get");
    g.bench_function("rust", |b| {
        b.iter(|| {
            black_box(
                engine
                    .store()
                    .get("user:1")
                    .unwrap()
                    .map(|v| v.to_msgpack()),
            )
        })
    });
    g.bench_function("c_abi", |b| {
        b.iter(|| {
            let mut out: *mut HbBytes = ptr::null_mut();
            // SAFETY: live handle; valid key and out-pointer; the bytes are freed right after.
            unsafe {
                ok(hb_get(h, b"user:1".as_ptr(), 6, &mut out));
                black_box(hb_bytes_len(out));
                hb_bytes_free(out);
            }
        })
    });
    g.finish();

    // The same read into a caller's buffer: no allocation on either side.
    let mut g = c.benchmark_group("ffi/get_into_buffer");
    let mut buf = [0u8; 64];
    g.bench_function("rust", |b| {
        b.iter(|| {
            let v = engine.store().get("user:1").unwrap().unwrap();
            let Value::Bytes(bytes) = &v else {
                unreachable!()
            };
            buf[..bytes.len()].copy_from_slice(bytes);
            black_box(bytes.len())
        })
    });
    g.bench_function("c_abi", |b| {
        b.iter(|| {
            let mut n = 0usize;
            // SAFETY: live handle; valid key, buffer and out-pointer.
            unsafe {
                ok(hb_get_into(
                    h,
                    b"user:1".as_ptr(),
                    6,
                    buf.as_mut_ptr(),
                    buf.len(),
                    &mut n,
                ))
            };
            black_box(n)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("ffi/incr");
    g.bench_function("rust", |b| {
        b.iter(|| black_box(engine.store().incr("hits", 1).unwrap()))
    });
    g.bench_function("c_abi", |b| {
        b.iter(|| {
            let mut n = 0i64;
            // SAFETY: live handle; valid key and out-pointer.
            unsafe { ok(hb_incr(h, b"hits".as_ptr(), 4, 1, &mut n)) };
            black_box(n)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("ffi/publish_receive_64B");
    let payload = [7u8; 64];
    let mb = engine.bus().mailbox();
    mb.subscribe("t:x").unwrap();
    g.bench_function("rust", |b| {
        b.iter(|| {
            engine.bus().publish("t:x", payload).unwrap();
            black_box(mb.try_recv().unwrap())
        })
    });
    let mut cmb: *mut HbMailbox = ptr::null_mut();
    // SAFETY: live engine handle, valid out-pointer and topic.
    unsafe {
        ok(hb_mailbox_new(h, &mut cmb));
        ok(hb_mailbox_subscribe(cmb, b"t:x".as_ptr(), 3));
    }
    g.bench_function("c_abi", |b| {
        b.iter(|| {
            let mut m: *mut HbMessage = ptr::null_mut();
            let (mut p, mut n) = (ptr::null(), 0usize);
            // SAFETY: live handles; valid pointers; the message is freed right after.
            unsafe {
                ok(hb_publish(
                    h,
                    b"t:x".as_ptr(),
                    3,
                    payload.as_ptr(),
                    payload.len(),
                    ptr::null_mut(),
                ));
                ok(hb_mailbox_try_recv(cmb, &mut m));
                ok(hb_message_payload(m, &mut p, &mut n));
                black_box(n);
                hb_message_free(m);
            }
        })
    });
    g.finish();
    // SAFETY: handles made above, freed once.
    unsafe {
        hb_mailbox_free(cmb);
        hb_engine_free(h);
    }
}

criterion_group!(benches, ffi);
criterion_main!(benches);
