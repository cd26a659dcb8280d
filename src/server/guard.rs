//! The panic boundary around host code: every [`SharedObject`] callback and
//! constructor runs through [`catch`], so a panicking object costs one call (an
//! error reply) and, for a method that may have left it half-updated, that
//! object — never the server or the other clients.
//!
//! This module only turns panics into messages; what a panic means for the
//! object (it is marked broken) is decided by [`Core`](super::context::Core).
//!
//! [`SharedObject`]: super::registry::SharedObject

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};

/// Runs `f`; a panic becomes `Err` with its message.
///
/// Callers must not touch state `f` may have left half-updated except to mark
/// it unusable (hence the `AssertUnwindSafe`: the object table quarantines the
/// object, and `Core`'s own bookkeeping is not written by host code).
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    panic::catch_unwind(AssertUnwindSafe(f)).map_err(|payload| message(&*payload))
}

/// The text a panic carried (`panic!("...")` gives a `&str` or a `String`).
fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-text payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_messages() {
        assert_eq!(catch(|| 7), Ok(7));
        assert_eq!(catch(|| -> u8 { panic!("boom") }), Err("boom".to_owned()));
        let n = 3;
        assert_eq!(
            catch(|| -> u8 { panic!("boom {n}") }),
            Err("boom 3".to_owned())
        );
        assert_eq!(
            catch(|| std::panic::panic_any(5u32)),
            Err("a panic with a non-text payload".to_owned())
        );
    }
}
