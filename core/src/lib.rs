//! # hornbeam-core
//!
//! The Hornbeam engine: an embeddable key/value store ([`Store`]) and topic pub/sub bus ([`Bus`])
//! with bounded mailboxes, the same API from Rust, Python (`hornbeam_erlang`) and C
//! (`hornbeam.h`). Values are MessagePack, so every language reads every other's data.
//!
//! ```
//! use hornbeam_core::{Engine, Value, RecvError};
//!
//! let engine = Engine::new(Default::default());
//! let store = engine.store();
//! assert_eq!(store.incr("room:lobby:user_count", 1).unwrap(), 1);
//!
//! let mailbox = engine.bus().mailbox();
//! mailbox.subscribe("chat:*").unwrap();
//! assert_eq!(engine.bus().publish("chat:lobby", b"\xa2hi").unwrap(), 1);
//! let msg = mailbox.try_recv().unwrap();
//! assert_eq!((msg.topic(), msg.payload()), ("chat:lobby", &b"\xa2hi"[..]));
//! assert_eq!(mailbox.try_recv(), Err(RecvError::Empty));
//! ```
//!
//! Module map: [`store`] (the store's front: limits, one dispatch per call), [`bus`] (topic trie,
//! mailboxes, the relay to other processes), `backend` (the closed set of flavors: embedded,
//! `local://` on LMDB, Redis), [`value`] (MessagePack values), [`error`] (the one error enum),
//! [`config`] (limits), [`calls`] (functions registered by name, callable from every binding).
//!
//! The same store and bus are shared by the processes of one machine with
//! `Engine::open("local:///dev/shm/myapp", config)` (no server), or of several machines with
//! `Engine::open("redis://127.0.0.1:6379/0?prefix=myapp:", config)`; `HORNBEAM_URL` chooses for
//! [`Engine::global`] (see [`Engine::open`]).

mod backend;
pub mod bus;
pub mod calls;
pub mod clock;
pub mod config;
pub mod engine;
pub mod error;
mod keyhash;
pub mod store;
pub mod sync;
mod valgrind;
pub mod value;

pub use bus::{Bus, ChangeKind, Mailbox, Message, ReadySet, RecvError};
pub use clock::{Clock, ManualClock};
pub use config::{Config, Limits, MailboxConfig};
pub use engine::Engine;
pub use error::{Error, Result};
pub use store::{Store, Ttl};
pub use value::Value;
