//! Shared-memory segments tracked for clients, as CPython's `SharedMemoryServer`
//! does for `SharedMemoryManager`: the public methods `track_segment`,
//! `release_segment` and `list_segments`, and every tracked segment unlinked when
//! the server shuts down, so segments outlive their creators but not the server.
//!
//! This module owns the list of names and the `shm_unlink(3)` calls; it never maps
//! a segment.

use std::ffi::CString;

use crate::proto::{RemoteError, Value};

/// Longest segment name accepted (NAME_MAX less the leading slash).
const MAX_NAME: usize = 254;

/// Names of the segments the server unlinks at shutdown, in tracking order.
#[derive(Debug, Default)]
pub(crate) struct Segments {
    names: Vec<String>,
}

/// The POSIX name of a segment as CPython's `SharedMemory` forms it: a leading
/// slash, then a name without slashes.
fn posix_name(name: &str) -> Result<CString, RemoteError> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    if bare.is_empty() || bare.len() > MAX_NAME || bare.contains('/') {
        return Err(RemoteError::value_error(format!(
            "invalid shared memory segment name {name:?}"
        )));
    }
    CString::new(format!("/{bare}"))
        .map_err(|_| RemoteError::value_error("segment name contains a NUL byte"))
}

/// Removes the segment's name from the system; a segment already gone is fine.
fn unlink(name: &str) -> Result<(), RemoteError> {
    let c = posix_name(name)?;
    // SAFETY: `c` is a valid NUL-terminated string.
    if unsafe { libc::shm_unlink(c.as_ptr()) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(RemoteError::new(
                "OSError",
                format!("shm_unlink({name}): {e}"),
            ));
        }
    }
    Ok(())
}

fn name_arg(args: &[Value], method: &str) -> Result<String, RemoteError> {
    match args {
        [Value::Str(s)] => {
            posix_name(s)?;
            Ok(s.clone())
        }
        _ => Err(RemoteError::type_error(format!(
            "{method}() takes one segment name (a str)"
        ))),
    }
}

impl Segments {
    /// Serves one of the three public methods; `None` when `method` is not one of them.
    pub(crate) fn public(
        &mut self,
        method: &str,
        args: &[Value],
    ) -> Option<Result<Value, RemoteError>> {
        Some(match method {
            "track_segment" => name_arg(args, method).map(|name| {
                self.names.push(name);
                Value::None
            }),
            "release_segment" => name_arg(args, method).and_then(|name| {
                let i = self
                    .names
                    .iter()
                    .position(|n| *n == name)
                    .ok_or_else(|| RemoteError::value_error("list.remove(x): x not in list"))?;
                self.names.remove(i);
                unlink(&name).map(|()| Value::None)
            }),
            "list_segments" => Ok(Value::List(
                self.names.iter().cloned().map(Value::Str).collect(),
            )),
            _ => return None,
        })
    }

    /// Unlinks every tracked segment (at shutdown).
    pub(crate) fn unlink_all(&mut self) {
        for name in self.names.drain(..) {
            let _ = unlink(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(name: &str) {
        let c = posix_name(name).unwrap();
        // SAFETY: valid C string; the descriptor is closed at once.
        let fd = unsafe { libc::shm_open(c.as_ptr(), libc::O_CREAT | libc::O_RDWR, 0o600) };
        assert!(fd >= 0, "shm_open: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` is open.
        unsafe { libc::close(fd) };
    }

    fn exists(name: &str) -> bool {
        std::path::Path::new("/dev/shm").join(name).exists()
    }

    #[test]
    fn track_list_release_and_unlink_at_shutdown() {
        let a = format!("mgr_test_a_{}", std::process::id());
        let b = format!("mgr_test_b_{}", std::process::id());
        create(&a);
        create(&b);
        let mut s = Segments::default();
        assert_eq!(
            s.public("track_segment", &[Value::Str(a.clone())]),
            Some(Ok(Value::None))
        );
        assert_eq!(
            s.public("track_segment", &[Value::Str(b.clone())]),
            Some(Ok(Value::None))
        );
        assert_eq!(
            s.public("list_segments", &[]),
            Some(Ok(Value::List(vec![
                Value::Str(a.clone()),
                Value::Str(b.clone())
            ])))
        );
        assert_eq!(
            s.public("release_segment", &[Value::Str(a.clone())]),
            Some(Ok(Value::None))
        );
        assert!(!exists(&a), "released segments are unlinked");
        assert!(exists(&b));
        s.unlink_all();
        assert!(!exists(&b), "shutdown unlinks the rest");
        assert_eq!(
            s.public("list_segments", &[]),
            Some(Ok(Value::List(vec![])))
        );
    }

    #[test]
    fn bad_names_and_unknown_segments_are_errors() {
        let mut s = Segments::default();
        for bad in ["", "a/b", "/"] {
            let e = s
                .public("track_segment", &[Value::Str(bad.into())])
                .unwrap()
                .unwrap_err();
            assert_eq!(e.kind, "ValueError", "{bad:?}");
        }
        let e = s
            .public("track_segment", &[Value::Int(1)])
            .unwrap()
            .unwrap_err();
        assert_eq!(e.kind, "TypeError");
        let e = s
            .public("release_segment", &[Value::Str("nope".into())])
            .unwrap()
            .unwrap_err();
        assert_eq!(e.kind, "ValueError");
        assert!(s.public("create", &[]).is_none());
    }
}
