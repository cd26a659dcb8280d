//! `mgr_status` (stable numeric codes), the thread-local last error, and the
//! plumbing `ffi_boundary!` uses to turn failures and panics into return values.

use std::any::Any;
use std::cell::RefCell;
use std::ffi::{c_char, c_int, CString};

use crate::error::Error;
use crate::proto::RemoteError;

/// The result of a fallible call. The numbers are part of the ABI: they are never
/// renumbered or reused, new codes are only appended.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum mgr_status {
    /// Success.
    MGR_OK = 0,
    /// A required pointer argument was NULL.
    MGR_ERR_NULL_ARGUMENT = 1,
    /// An argument was malformed (bad UTF-8, bad address, unknown options version …).
    MGR_ERR_INVALID_ARGUMENT = 2,
    /// A value accessor was used on a value of another kind.
    MGR_ERR_WRONG_TYPE = 3,
    /// An index was past the end.
    MGR_ERR_OUT_OF_RANGE = 4,
    /// A key was not found.
    MGR_ERR_NOT_FOUND = 5,
    /// A socket or system call failed.
    MGR_ERR_IO = 6,
    /// Refused by configuration (e.g. no authkey on a public address).
    MGR_ERR_CONFIG = 7,
    /// The handshake failed (wrong authkey, or not a manager).
    MGR_ERR_AUTH = 8,
    /// The peer broke the protocol, or the result was not of the expected form.
    MGR_ERR_PROTOCOL = 9,
    /// The remote method raised: see [`mgr_last_error_kind`] and [`mgr_last_error`].
    MGR_ERR_REMOTE = 10,
    /// The connection or server is closed.
    MGR_ERR_CLOSED = 11,
    /// Refused because a callback of this server is running (re-entrant use of
    /// a function that needs the whole server).
    MGR_ERR_BUSY = 12,
    /// Not allowed in the current state (a request answered twice, a deferred
    /// reply answered twice …).
    MGR_ERR_STATE = 13,
    /// The deferred call's client has gone (or its object was destroyed): the
    /// answer was dropped, harmlessly.
    MGR_ERR_STALE = 14,
    /// A panic was caught at the boundary (a bug in libmgr).
    MGR_ERR_PANIC = 15,
    /// The non-blocking client cannot take the call now: its pending-call
    /// table or output buffer is full. Process, then retry.
    MGR_ERR_WOULD_BLOCK = 16,
}

/// A failure on its way to the C caller: a status, a message, and for remote
/// errors the exception kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Fail {
    /// The status returned.
    pub status: mgr_status,
    /// The message [`mgr_last_error`] shows.
    pub message: String,
    /// The exception kind [`mgr_last_error_kind`] shows (remote errors).
    pub kind: Option<String>,
}

impl Fail {
    /// A failure with `status` and `message`.
    pub fn new(status: mgr_status, message: impl Into<String>) -> Fail {
        Fail {
            status,
            message: message.into(),
            kind: None,
        }
    }

    /// A NULL `name` argument.
    pub fn null(name: &str) -> Fail {
        Fail::new(
            mgr_status::MGR_ERR_NULL_ARGUMENT,
            format!("{name} must not be NULL"),
        )
    }

    /// A value of the wrong kind.
    pub fn wrong_type(expected: &str, got: &str) -> Fail {
        Fail::new(
            mgr_status::MGR_ERR_WRONG_TYPE,
            format!("expected a {expected} value, got {got}"),
        )
    }

    /// A remote error.
    pub fn remote(e: RemoteError) -> Fail {
        Fail {
            status: mgr_status::MGR_ERR_REMOTE,
            message: e.message,
            kind: Some(e.kind),
        }
    }

    /// Records this failure as the thread's last error.
    pub fn record(&self) {
        let msg = CString::new(self.message.replace('\0', "\\0")).unwrap_or_default();
        let kind = CString::new(self.kind.clone().unwrap_or_default().replace('\0', "\\0"))
            .unwrap_or_default();
        LAST.with(|l| *l.borrow_mut() = (msg, kind));
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        use mgr_status::*;
        let status = match &e {
            Error::Io(io) if is_closed(io) => MGR_ERR_CLOSED,
            Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => MGR_ERR_WOULD_BLOCK,
            Error::Io(_) | Error::Connect { .. } => MGR_ERR_IO,
            Error::Address(_) => MGR_ERR_INVALID_ARGUMENT,
            Error::Auth(_) => MGR_ERR_AUTH,
            Error::Frame(_) | Error::Codec(_) | Error::Protocol(_) => MGR_ERR_PROTOCOL,
            Error::Config(_) => MGR_ERR_CONFIG,
            Error::Remote(_) => MGR_ERR_REMOTE,
            _ => MGR_ERR_IO,
        };
        match e {
            Error::Remote(r) => Fail::remote(r),
            other => Fail::new(status, other.to_string()),
        }
    }
}

fn is_closed(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | BrokenPipe | ConnectionReset | ConnectionAborted | NotConnected
    )
}

thread_local! {
    static LAST: RefCell<(CString, CString)> = RefCell::new((CString::default(), CString::default()));
}

/// What an exported function returns when it fails or panics.
pub trait FfiReturn {
    /// The failure value for `status`.
    fn failed(status: mgr_status) -> Self;
}

impl FfiReturn for mgr_status {
    fn failed(status: mgr_status) -> Self {
        status
    }
}
impl<T> FfiReturn for *mut T {
    fn failed(_: mgr_status) -> Self {
        std::ptr::null_mut()
    }
}
impl<T> FfiReturn for *const T {
    fn failed(_: mgr_status) -> Self {
        std::ptr::null()
    }
}
impl FfiReturn for () {
    fn failed(_: mgr_status) -> Self {}
}
impl FfiReturn for bool {
    fn failed(_: mgr_status) -> Self {
        false
    }
}
/// -1: never a valid descriptor, and "no timer" for a timeout.
impl FfiReturn for i32 {
    fn failed(_: mgr_status) -> Self {
        -1
    }
}
impl FfiReturn for u64 {
    fn failed(_: mgr_status) -> Self {
        0
    }
}
impl FfiReturn for u32 {
    fn failed(_: mgr_status) -> Self {
        0
    }
}
impl FfiReturn for usize {
    fn failed(_: mgr_status) -> Self {
        0
    }
}
impl FfiReturn for super::value::mgr_value_kind {
    fn failed(_: mgr_status) -> Self {
        super::value::mgr_value_kind::MGR_VALUE_INVALID
    }
}

/// Ends a boundary: the value, or the failure value after recording the error.
pub fn finish<R: FfiReturn>(r: std::thread::Result<Result<R, Fail>>) -> R {
    match r {
        Ok(Ok(v)) => v,
        Ok(Err(f)) => {
            f.record();
            R::failed(f.status)
        }
        Err(p) => {
            Fail::new(
                mgr_status::MGR_ERR_PANIC,
                format!("libmgr panicked: {}", panic_message(&*p)),
            )
            .record();
            R::failed(mgr_status::MGR_ERR_PANIC)
        }
    }
}

fn panic_message(p: &(dyn Any + Send)) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// The message of the last failed call on this thread ("" if none failed yet).
///
/// Owned by the library: valid until the next failing libmgr call on this thread.
/// Successful calls leave it unchanged.
#[no_mangle]
pub unsafe extern "C" fn mgr_last_error() -> *const c_char {
    ffi_boundary! {
        Ok(LAST.with(|l| l.borrow().0.as_ptr()))
    }
}

/// The Python exception kind of the last failure on this thread when it was
/// [`mgr_status::MGR_ERR_REMOTE`] (e.g. "KeyError", "queue.Empty"), else "".
///
/// Owned by the library: valid until the next failing libmgr call on this thread.
#[no_mangle]
pub unsafe extern "C" fn mgr_last_error_kind() -> *const c_char {
    ffi_boundary! {
        Ok(LAST.with(|l| l.borrow().1.as_ptr()))
    }
}

/// Copies the message of the last failed call on this thread into `buf`, as
/// `snprintf` does: at most `len - 1` bytes and a terminating NUL (nothing is
/// written when `buf` is NULL or `len` is 0). Returns the message's full length
/// in bytes, without the NUL: a result `>= len` means it was cut short.
///
/// The copy stays the caller's, unlike [`mgr_last_error`]'s pointer, which the
/// next failing call replaces.
#[no_mangle]
pub unsafe extern "C" fn mgr_last_error_copy(buf: *mut c_char, len: usize) -> usize {
    ffi_boundary! {
        Ok(LAST.with(|l| {
            let msg = l.borrow().0.as_bytes().to_vec();
            if !buf.is_null() && len > 0 {
                let n = msg.len().min(len - 1);
                // SAFETY: the caller gives `len` writable bytes at `buf`.
                std::ptr::copy_nonoverlapping(msg.as_ptr(), buf.cast::<u8>(), n);
                *buf.add(n) = 0;
            }
            msg.len()
        }))
    }
}

/// A static, human-readable name for a status code ("MGR_OK", "MGR_ERR_REMOTE" …).
///
/// Takes any `int`, not only the codes this library knows: codes are append-only,
/// so a program built against a newer header may pass one this library has never
/// heard of. Such a code (and any negative or out-of-range value) gives
/// "MGR_ERR_UNKNOWN". Never NULL; never freed.
#[no_mangle]
pub unsafe extern "C" fn mgr_status_name(status: c_int) -> *const c_char {
    ffi_boundary! {
        Ok(status_name(status).as_ptr().cast::<c_char>())
    }
}

/// The NUL-terminated name of `code`, or "MGR_ERR_UNKNOWN\0".
fn status_name(code: c_int) -> &'static [u8] {
    use mgr_status::*;
    const NAMES: &[(mgr_status, &[u8])] = &[
        (MGR_OK, b"MGR_OK\0"),
        (MGR_ERR_NULL_ARGUMENT, b"MGR_ERR_NULL_ARGUMENT\0"),
        (MGR_ERR_INVALID_ARGUMENT, b"MGR_ERR_INVALID_ARGUMENT\0"),
        (MGR_ERR_WRONG_TYPE, b"MGR_ERR_WRONG_TYPE\0"),
        (MGR_ERR_OUT_OF_RANGE, b"MGR_ERR_OUT_OF_RANGE\0"),
        (MGR_ERR_NOT_FOUND, b"MGR_ERR_NOT_FOUND\0"),
        (MGR_ERR_IO, b"MGR_ERR_IO\0"),
        (MGR_ERR_CONFIG, b"MGR_ERR_CONFIG\0"),
        (MGR_ERR_AUTH, b"MGR_ERR_AUTH\0"),
        (MGR_ERR_PROTOCOL, b"MGR_ERR_PROTOCOL\0"),
        (MGR_ERR_REMOTE, b"MGR_ERR_REMOTE\0"),
        (MGR_ERR_CLOSED, b"MGR_ERR_CLOSED\0"),
        (MGR_ERR_BUSY, b"MGR_ERR_BUSY\0"),
        (MGR_ERR_STATE, b"MGR_ERR_STATE\0"),
        (MGR_ERR_STALE, b"MGR_ERR_STALE\0"),
        (MGR_ERR_PANIC, b"MGR_ERR_PANIC\0"),
        (MGR_ERR_WOULD_BLOCK, b"MGR_ERR_WOULD_BLOCK\0"),
    ];
    NAMES
        .iter()
        .find(|(s, _)| *s as c_int == code)
        .map_or(b"MGR_ERR_UNKNOWN\0", |(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last() -> (String, String) {
        unsafe {
            (
                CStr::from_ptr(mgr_last_error())
                    .to_str()
                    .unwrap()
                    .to_owned(),
                CStr::from_ptr(mgr_last_error_kind())
                    .to_str()
                    .unwrap()
                    .to_owned(),
            )
        }
    }

    #[test]
    fn codes_are_stable() {
        use mgr_status::*;
        assert_eq!(MGR_OK as i32, 0);
        assert_eq!(MGR_ERR_NULL_ARGUMENT as i32, 1);
        assert_eq!(MGR_ERR_REMOTE as i32, 10);
        assert_eq!(MGR_ERR_BUSY as i32, 12);
        assert_eq!(MGR_ERR_PANIC as i32, 15);
        let name = unsafe { CStr::from_ptr(mgr_status_name(MGR_ERR_STALE as c_int)) };
        assert_eq!(name.to_str().unwrap(), "MGR_ERR_STALE");
    }

    fn name_of(code: c_int) -> String {
        let p = unsafe { mgr_status_name(code) };
        assert!(!p.is_null());
        unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_owned()
    }

    #[test]
    fn the_last_error_copies_out_like_snprintf() {
        let _: mgr_status = finish(Ok(Err(Fail::null("argument"))));
        let full = "argument must not be NULL";
        let mut buf = [0x55 as c_char; 64];
        let n = unsafe { mgr_last_error_copy(buf.as_mut_ptr(), buf.len()) };
        assert_eq!(n, full.len());
        let got = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
        assert_eq!(got.to_str().unwrap(), full);
        let mut small = [0x55 as c_char; 9];
        let n = unsafe { mgr_last_error_copy(small.as_mut_ptr(), small.len()) };
        assert_eq!(n, full.len(), "the full length says it was cut");
        let got = unsafe { std::ffi::CStr::from_ptr(small.as_ptr()) };
        assert_eq!(got.to_str().unwrap(), "argument");
        assert_eq!(
            unsafe { mgr_last_error_copy(std::ptr::null_mut(), 0) },
            full.len()
        );
    }

    #[test]
    fn every_code_has_its_own_name_and_unknown_codes_a_fixed_one() {
        let known: Vec<String> = (0..=16).map(name_of).collect();
        assert_eq!(known[0], "MGR_OK");
        assert_eq!(known[15], "MGR_ERR_PANIC");
        for (code, name) in known.iter().enumerate() {
            assert!(
                name.starts_with("MGR_") && name != "MGR_ERR_UNKNOWN",
                "{code}: {name}"
            );
        }
        let mut unique = known.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), known.len(), "two codes share a name");
        for code in [17, 18, 999, -1, c_int::MIN, c_int::MAX] {
            assert_eq!(name_of(code), "MGR_ERR_UNKNOWN", "code {code}");
        }
    }

    #[test]
    fn failures_set_last_error_and_successes_keep_it() {
        let r: mgr_status = finish(Ok(Err(Fail::remote(RemoteError::new("KeyError", "'x'")))));
        assert_eq!(r, mgr_status::MGR_ERR_REMOTE);
        assert_eq!(last(), ("'x'".into(), "KeyError".into()));
        let p: *mut u8 = finish(Ok(Err(Fail::null("out"))));
        assert!(p.is_null());
        assert_eq!(last(), ("out must not be NULL".into(), String::new()));
        let ok: mgr_status = finish(Ok(Ok(mgr_status::MGR_OK)));
        assert_eq!(ok, mgr_status::MGR_OK);
        assert_eq!(last().0, "out must not be NULL");
    }

    #[test]
    fn panics_become_the_fallback() {
        let r = std::panic::catch_unwind(|| -> Result<mgr_status, Fail> { panic!("boom") });
        assert_eq!(finish(r), mgr_status::MGR_ERR_PANIC);
        assert_eq!(last().0, "libmgr panicked: boom");
        let n = std::panic::catch_unwind(|| -> Result<u64, Fail> { panic!("x") });
        assert_eq!(finish(n), 0);
    }

    #[test]
    fn last_error_is_per_thread() {
        Fail::new(mgr_status::MGR_ERR_IO, "here").record();
        let there = std::thread::spawn(|| last().0).join().unwrap();
        assert_eq!(there, "");
        assert_eq!(last().0, "here");
    }

    #[test]
    fn errors_map_to_statuses() {
        let f: Fail = Error::Config("no".into()).into();
        assert_eq!(f.status, mgr_status::MGR_ERR_CONFIG);
        let f: Fail = Error::Io(std::io::ErrorKind::UnexpectedEof.into()).into();
        assert_eq!(f.status, mgr_status::MGR_ERR_CLOSED);
        let f: Fail = Error::Remote(RemoteError::new("queue.Empty", "")).into();
        assert_eq!(f.kind.as_deref(), Some("queue.Empty"));
    }
}
