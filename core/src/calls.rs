//! Functions registered by name in this process, callable from every binding: Hornbeam's
//! `hornbeam:register_function` and Python's `call(name, *args)`.
//!
//! A function takes its arguments as one MessagePack array and returns one MessagePack value, so
//! a function registered from C can be called from Python or Rust and the other way round. The
//! registry is per process (it is not shared through a backend) and global, like the functions
//! themselves.
//!
//! ```
//! use hornbeam_core::calls;
//!
//! // [a, b] -> a + b, for small non-negative integers (MessagePack positive fixints).
//! calls::register("add", |args: &[u8]| match args {
//!     [0x92, a, b] if *a < 0x40 && *b < 0x40 => Ok(vec![a + b]),
//!     _ => Err(String::from("expected two small integers")),
//! });
//! assert_eq!(calls::call("add", &[0x92, 1, 2]).unwrap(), vec![3]);
//! assert!(calls::unregister("add"));
//! ```
//!
//! **Locking behaviour:** one read-write lock guards the map; `call` holds the read lock only to
//! clone the function's `Arc`, never while the function runs, so a function may call, register
//! or unregister functions itself, and a function unregistered during its own call finishes it.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;

use crate::error::{shorten, Error, Result};
use crate::value;

/// A registered function: MessagePack array of arguments in, one MessagePack value or an error
/// message out. Called from any thread, possibly from several at once.
pub type Function = Arc<dyn Fn(&[u8]) -> std::result::Result<Vec<u8>, String> + Send + Sync>;

fn registry() -> &'static RwLock<HashMap<String, Function>> {
    static REGISTRY: OnceLock<RwLock<HashMap<String, Function>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Registers `f` under `name`, replacing any function of that name.
pub fn register(
    name: &str,
    f: impl Fn(&[u8]) -> std::result::Result<Vec<u8>, String> + Send + Sync + 'static,
) {
    register_arc(name, Arc::new(f));
}

/// [`register`] for a function already in an `Arc`.
pub fn register_arc(name: &str, f: Function) {
    registry().write().insert(name.to_owned(), f);
}

/// Removes the function `name`; whether there was one.
pub fn unregister(name: &str) -> bool {
    registry().write().remove(name).is_some()
}

/// Whether a function is registered under `name`.
pub fn contains(name: &str) -> bool {
    registry().read().contains_key(name)
}

/// The registered names, sorted.
pub fn names() -> Vec<String> {
    let mut names: Vec<String> = registry().read().keys().cloned().collect();
    names.sort_unstable();
    names
}

/// Calls the function `name` with `args` (a MessagePack array) on this thread and returns its
/// result (a MessagePack value).
///
/// Errors: [`Error::InvalidValue`] when `args` is not one well-formed MessagePack array (the
/// function is not called) or the function's result is not one well-formed MessagePack value;
/// [`Error::NoFunction`] when none is registered under `name`; [`Error::FunctionFailed`] with the
/// function's message when it fails.
pub fn call(name: &str, args: &[u8]) -> Result<Vec<u8>> {
    let invalid = |what: &str, reason: String| Error::InvalidValue {
        key: format!("{what} of function {}", shorten(name)),
        reason,
    };
    value::validate(args).map_err(|r| invalid("arguments", r))?;
    if !matches!(args.first(), Some(0x90..=0x9f | 0xdc | 0xdd)) {
        return Err(invalid("arguments", String::from("not an array")));
    }
    let f = registry()
        .read()
        .get(name)
        .cloned()
        .ok_or_else(|| Error::NoFunction {
            name: shorten(name),
        })?;
    let out = f(args).map_err(|message| Error::FunctionFailed {
        name: shorten(name),
        message,
    })?;
    value::validate(&out).map_err(|r| invalid("result", r))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_call_replace_unregister() {
        register("calls_test_echo", |args: &[u8]| Ok(args.to_vec()));
        assert!(matches!(
            call("calls_test_echo", &[0x01]),
            Err(Error::InvalidValue { .. })
        ));
        assert!(matches!(
            call("calls_test_echo", &[0x92, 0x01]),
            Err(Error::InvalidValue { .. })
        ));
        assert!(contains("calls_test_echo"));
        assert!(names().contains(&String::from("calls_test_echo")));
        assert_eq!(
            call("calls_test_echo", &[0x91, 0x01]).unwrap(),
            vec![0x91, 0x01]
        );
        register("calls_test_echo", |_: &[u8]| Ok(vec![0xc0]));
        assert_eq!(call("calls_test_echo", &[0x90]).unwrap(), vec![0xc0]);
        assert!(unregister("calls_test_echo"));
        assert!(!unregister("calls_test_echo"));
        assert_eq!(
            call("calls_test_echo", &[0x90]),
            Err(Error::NoFunction {
                name: String::from("calls_test_echo")
            })
        );
    }

    #[test]
    fn a_malformed_result_is_refused() {
        register("calls_test_bad", |_: &[u8]| Ok(vec![0x92, 0x01]));
        let err = call("calls_test_bad", &[0x90]).unwrap_err();
        assert!(err.to_string().contains("result of function"), "{err}");
        unregister("calls_test_bad");
    }

    #[test]
    fn failure_carries_the_message() {
        register("calls_test_fail", |_: &[u8]| Err(String::from("no luck")));
        let err = call("calls_test_fail", &[0x90]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "function \"calls_test_fail\" failed: no luck"
        );
        unregister("calls_test_fail");
    }

    #[test]
    fn a_function_may_use_the_registry_while_it_runs() {
        register("calls_test_inner", |_: &[u8]| Ok(vec![0x07]));
        register("calls_test_outer", |_: &[u8]| {
            let inner = call("calls_test_inner", &[0x90]).map_err(|e| e.to_string())?;
            unregister("calls_test_outer");
            Ok(inner)
        });
        assert_eq!(call("calls_test_outer", &[0x90]).unwrap(), vec![0x07]);
        assert!(!contains("calls_test_outer"));
        unregister("calls_test_inner");
    }

    #[test]
    fn calls_from_many_threads() {
        register("calls_test_len", |args: &[u8]| Ok(vec![args.len() as u8]));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..1000 {
                        assert_eq!(call("calls_test_len", &[0x92, 1, 2]).unwrap(), vec![3]);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        unregister("calls_test_len");
    }
}
