//! Happens-before annotations for valgrind's thread checkers (helgrind and DRD).
//!
//! Both tools see only pthread synchronisation; the atomics under crossbeam's channels are
//! invisible to them, so a message written by a publisher and read by a receiver on another
//! thread looks like a data race. With the `valgrind` feature, the mailbox tells them about the
//! hand-off: [`happens_before`] on the message before it is queued, [`happens_after`] once it is
//! taken (valgrind's `ANNOTATE_HAPPENS_BEFORE`/`_AFTER`). Without the feature, or off x86-64,
//! both are empty. Outside valgrind the request is a sequence of no-op instructions.

/// `_VG_USERREQ__HG_USERSO_SEND_PRE` (helgrind.h); DRD takes the same code.
#[cfg(all(feature = "valgrind", target_arch = "x86_64"))]
const SEND_PRE: usize = 0x4847_0121;
/// `_VG_USERREQ__HG_USERSO_RECV_POST` (helgrind.h); DRD takes the same code.
#[cfg(all(feature = "valgrind", target_arch = "x86_64"))]
const RECV_POST: usize = 0x4847_0122;

#[cfg(all(feature = "valgrind", target_arch = "x86_64"))]
#[inline(always)]
fn request(code: usize, tag: *const u8) {
    let args: [usize; 6] = [code, tag as usize, 0, 0, 0, 0];
    // SAFETY: valgrind's client-request sequence for amd64 (valgrind.h): four rotations of rdi by
    // 128 bits in all (rdi is unchanged) and `xchg rbx, rbx` (a no-op). Under valgrind it reads
    // the six words at rax and writes a result to rdx; nothing else is touched.
    unsafe {
        core::arch::asm!(
            "rol rdi, 3",
            "rol rdi, 13",
            "rol rdi, 61",
            "rol rdi, 51",
            "xchg rbx, rbx",
            in("rax") args.as_ptr(),
            inout("rdx") 0usize => _,
            out("rdi") _,
            options(nostack, readonly),
        );
    }
}

/// Everything this thread wrote before this call happens before whatever a thread does after
/// [`happens_after`] with the same `tag`.
#[inline(always)]
pub(crate) fn happens_before(_tag: *const u8) {
    #[cfg(all(feature = "valgrind", target_arch = "x86_64"))]
    request(SEND_PRE, _tag);
}

/// See [`happens_before`].
#[inline(always)]
pub(crate) fn happens_after(_tag: *const u8) {
    #[cfg(all(feature = "valgrind", target_arch = "x86_64"))]
    request(RECV_POST, _tag);
}
