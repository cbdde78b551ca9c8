//! A readiness file descriptor: readable while a mailbox may hold messages.
//!
//! On Linux it is an `eventfd`; elsewhere a non-blocking pipe. Writers signal at most once per
//! batch (the mailbox keeps a flag), and the consumer clears it before re-checking the queue.

use std::io;

/// An owned, non-blocking readiness descriptor.
#[derive(Debug)]
pub(crate) struct Notifier {
    read_fd: i32,
    write_fd: i32,
}

impl Notifier {
    #[cfg(target_os = "linux")]
    pub(crate) fn new() -> io::Result<Notifier> {
        // SAFETY: eventfd takes no pointers; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Notifier {
            read_fd: fd,
            write_fd: fd,
        })
    }

    #[cfg(not(target_os = "linux"))]
    pub(crate) fn new() -> io::Result<Notifier> {
        let mut fds = [0i32; 2];
        // SAFETY: `fds` is a valid array of two ints, as pipe(2) requires.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        for fd in fds {
            // SAFETY: fd was just returned by pipe(2) and is owned here.
            unsafe {
                libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK);
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
        Ok(Notifier {
            read_fd: fds[0],
            write_fd: fds[1],
        })
    }

    /// The descriptor to wait on for readability.
    pub(crate) fn fd(&self) -> i32 {
        self.read_fd
    }

    /// Makes the descriptor readable.
    pub(crate) fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to a descriptor owned by self. A full pipe or a
        // saturated eventfd (EAGAIN) already reads as ready, so the result can be ignored.
        unsafe {
            libc::write(
                self.write_fd,
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
    }

    /// Makes the descriptor unreadable again (drains it).
    pub(crate) fn clear(&self) {
        let mut buf = [0u8; 64];
        // Bounded: an eventfd drains in one read; a pipe holds at most a few signals.
        for _ in 0..64 {
            // SAFETY: reads into a live local buffer of the given length from an owned descriptor.
            let n = unsafe { libc::read(self.read_fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 || self.read_fd == self.write_fd {
                break;
            }
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        // SAFETY: both descriptors are owned by self and closed exactly once, here.
        unsafe {
            libc::close(self.read_fd);
            if self.write_fd != self.read_fd {
                libc::close(self.write_fd);
            }
        }
    }
}
