//! # hornbeam-ffi: the C ABI of the Hornbeam engine
//!
//! Built as `libhornbeam` (shared and static); the header `include/hornbeam.h` is generated from
//! this crate by cbindgen. Conventions (as rustls-ffi's): one `hb_` prefix; opaque handles, each
//! `_new` paired with a `_free` that accepts NULL; every fallible call returns an [`HbStatus`],
//! writes its outputs only on success, and records a message for [`hb_last_error`]. No panic,
//! NULL pointer or invalid UTF-8 crosses the boundary: each has its status.
//!
//! Modules: [`status`] (codes, last error), `boundary` (the panic/NULL guard and handle helper),
//! [`engine`] (engines, byte buffers), [`store`] (keys and values), [`bus`] (publish, mailboxes),
//! [`calls`] (functions registered by name, callable from C, Python and Rust).

pub mod api;
pub mod bus;
pub mod calls;
pub mod engine;
pub mod status;
pub mod store;

mod boundary;

pub use bus::{HbMailbox, HbMessage};
pub use calls::{HbCallResult, HbFreeFn, HbFunction};
pub use engine::{HbBytes, HbEngine};
pub use status::{hb_last_error, hb_status_str, HbStatus};
pub use store::HbKeyList;
