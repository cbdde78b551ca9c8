//! A member's "asleep" flag: one 32-bit word in a small file beside its doorbell
//! (`bells/<node>.flag`), mapped shared by the member and by every process that writes, so a
//! writer can tell whether a reader waits on its doorbell without a lock or a system call.
//!
//! The protocol (see [`super::relay`]) is a Dekker pair: the reader stores 1 and then, after a
//! `SeqCst` fence, looks at the log's end; a writer commits and then, after a `SeqCst` fence,
//! swaps the flag to 0 and rings when it was 1. Either the writer sees the 1 or the reader sees
//! the commit, so no wake-up is lost, and a reader that is busy reading costs writers nothing.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

/// Size of a flag file (one word, padded to the cache line it sits alone on).
const FLAG_FILE_LEN: u64 = 64;

/// A mapped flag word.
pub(crate) struct Flag {
    word: *const AtomicU32,
}

// SAFETY: the pointer refers to a MAP_SHARED mapping that lives as long as the `Flag` and is only
// accessed through atomic operations, which any thread may perform.
unsafe impl Send for Flag {}
// SAFETY: as above: shared access is atomic.
unsafe impl Sync for Flag {}

impl std::fmt::Debug for Flag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flag").field("asleep", &self.get()).finish()
    }
}

impl Flag {
    /// Maps the flag file at `path`; with `create`, makes it (and sizes it) first. `None` when
    /// the file is missing (its member left or died) or cannot be mapped.
    pub(crate) fn open(path: &Path, create: bool) -> Option<Flag> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)
            .ok()?;
        if create {
            file.set_len(FLAG_FILE_LEN).ok()?;
        } else if file.metadata().ok()?.len() < FLAG_FILE_LEN {
            return None; // still being made by its member
        }
        // SAFETY: a fresh shared mapping of the first FLAG_FILE_LEN bytes of a file that holds at
        // least that many; the kernel picks the address. The descriptor may close afterwards.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                FLAG_FILE_LEN as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        let flag = Flag {
            word: p.cast::<AtomicU32>(),
        };
        if create {
            flag.set(false);
        }
        Some(flag)
    }

    fn word(&self) -> &AtomicU32 {
        // SAFETY: `word` points at the start of a live, page-aligned mapping (see `open`).
        unsafe { &*self.word }
    }

    /// Whether the member is marked asleep.
    pub(crate) fn get(&self) -> bool {
        self.word().load(Ordering::SeqCst) != 0
    }

    /// Marks the member asleep or awake; marking asleep is followed by a `SeqCst` fence, so the
    /// reader's next look at the log comes after every writer can see the mark.
    pub(crate) fn set(&self, asleep: bool) {
        self.word().store(u32::from(asleep), Ordering::SeqCst);
        if asleep {
            std::sync::atomic::fence(Ordering::SeqCst);
        }
    }

    /// Takes the mark (a writer, after its commit and a `SeqCst` fence): true when the member was
    /// asleep and this caller is the one to ring it.
    pub(crate) fn take(&self) -> bool {
        let w = self.word();
        w.load(Ordering::SeqCst) != 0 && w.swap(0, Ordering::SeqCst) != 0
    }
}

impl Drop for Flag {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`, of that length, unmapped once.
        unsafe { libc::munmap(self.word as *mut libc::c_void, FLAG_FILE_LEN as usize) };
    }
}
