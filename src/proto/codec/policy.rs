//! Which globals an opaque value may name: the server's policy on what passes
//! through it (see `SECURITY.md`, "Opaque values").
//!
//! The server never imports or calls a global, whatever the policy: an opaque
//! value is data. The policy decides what one client may hand to another
//! through the server — the receiving client's `pickle.loads` *does* call the
//! globals it names — so by default only the standard library's value types
//! and exception classes pass, the way a careful unpickler's allow-list works.

use std::fmt;
use std::str::FromStr;

/// The policy on globals inside values (`mgrd --globals`,
/// `ServerConfig::globals`, `mgr_server_set_globals`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Globals {
    /// The standard library's value types (datetime, Decimal, Fraction,
    /// complex, UUID, pathlib paths, collections' Counter / OrderedDict /
    /// defaultdict / deque …), the builtin types as values, and the built-in
    /// exception classes (plus `queue.Empty` and a few more).
    #[default]
    Default,
    /// Any global, as CPython's own manager allows: clients trust each other
    /// (user classes such as `__main__.Point` pass).
    Any,
    /// No opaque values at all: only what the data model represents.
    None,
}

impl FromStr for Globals {
    type Err = String;
    fn from_str(s: &str) -> Result<Globals, String> {
        match s {
            "default" => Ok(Globals::Default),
            "any" => Ok(Globals::Any),
            "none" => Ok(Globals::None),
            _ => Err(format!(
                "unknown globals policy '{s}' (default, any or none)"
            )),
        }
    }
}

impl fmt::Display for Globals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Globals::Default => "default",
            Globals::Any => "any",
            Globals::None => "none",
        })
    }
}

/// The standard library's value types, by module.
const VALUE_TYPES: &[(&str, &[&str])] = &[
    (
        "builtins",
        &[
            "complex",
            "int",
            "float",
            "str",
            "bytes",
            "bytearray",
            "bool",
            "list",
            "tuple",
            "dict",
            "set",
            "frozenset",
            "object",
            "range",
            "slice",
        ],
    ),
    (
        "datetime",
        &["datetime", "date", "time", "timedelta", "timezone"],
    ),
    ("decimal", &["Decimal"]),
    ("fractions", &["Fraction"]),
    ("uuid", &["UUID", "SafeUUID"]),
    (
        "pathlib",
        &[
            "PurePath",
            "PurePosixPath",
            "PureWindowsPath",
            "Path",
            "PosixPath",
            "WindowsPath",
        ],
    ),
    (
        "collections",
        &["Counter", "OrderedDict", "defaultdict", "deque", "ChainMap"],
    ),
    ("array", &["array"]),
    // A str with lone surrogates travels as `_codecs.decode(bytes, 'utf-8',
    // 'surrogatepass')` (a Rust string cannot hold one); decoding is pure.
    ("_codecs", &["decode"]),
    (
        "ipaddress",
        &["IPv4Address", "IPv6Address", "IPv4Network", "IPv6Network"],
    ),
    // Exceptions outside builtins that managers and queues raise.
    ("queue", &["Empty", "Full"]),
    ("_queue", &["Empty"]),
    ("threading", &["BrokenBarrierError"]),
    (
        "multiprocessing.context",
        &[
            "TimeoutError",
            "ProcessError",
            "AuthenticationError",
            "BufferTooShort",
        ],
    ),
    ("multiprocessing.managers", &["RemoteError"]),
    (
        "asyncio.exceptions",
        &["CancelledError", "TimeoutError", "InvalidStateError"],
    ),
    (
        "concurrent.futures._base",
        &["CancelledError", "TimeoutError"],
    ),
    ("subprocess", &["CalledProcessError", "TimeoutExpired"]),
    ("json.decoder", &["JSONDecodeError"]),
    ("socket", &["timeout", "gaierror", "herror"]),
];

/// Functions that cannot run code, which the server interprets (as sort keys,
/// in `map`): they pass under every policy, as values and as callables.
const PURE: &[(&str, &[&str])] = &[
    (
        "builtins",
        &["str.lower", "str.upper", "str.casefold", "len", "abs"],
    ),
    ("operator", &["itemgetter"]),
    // The data types the decoder keeps as they came and the server reads.
    ("builtins", &["range", "bytearray"]),
    ("array", &["array", "_array_reconstructor"]),
    // What `_getvalue()` of a Namespace or Value returns, as on CPython.
    ("multiprocessing.managers", &["Namespace", "Value"]),
];

/// ctypes types, as `Value`'s typecode (`m.Value(ctypes.c_int, 0)`): they pass
/// under the default policy as bare classes only, never called.
const CTYPES: &[&str] = &[
    "c_bool",
    "c_char",
    "c_wchar",
    "c_byte",
    "c_ubyte",
    "c_short",
    "c_ushort",
    "c_int",
    "c_uint",
    "c_long",
    "c_ulong",
    "c_longlong",
    "c_ulonglong",
    "c_size_t",
    "c_ssize_t",
    "c_int8",
    "c_uint8",
    "c_int16",
    "c_uint16",
    "c_int32",
    "c_uint32",
    "c_int64",
    "c_uint64",
    "c_float",
    "c_double",
    "c_longdouble",
    "c_char_p",
    "c_wchar_p",
    "c_void_p",
];

fn listed(list: &[(&str, &[&str])], module: &str, name: &str) -> bool {
    list.iter()
        .any(|(m, names)| *m == module && names.contains(&name))
}

/// Whether `module.name` is one of the pure functions the server interprets.
pub(crate) fn pure(module: &str, name: &str) -> bool {
    listed(PURE, module, name)
}

/// A built-in exception class's name: CPython's builtins ending in `Error`,
/// `Exception` or `Warning` are all exception classes, plus these.
fn builtin_exception(name: &str) -> bool {
    let ident = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric());
    ident
        && (name.ends_with("Error")
            || name.ends_with("Exception")
            || name.ends_with("Warning")
            || matches!(
                name,
                "BaseException"
                    | "BaseExceptionGroup"
                    | "ExceptionGroup"
                    | "GeneratorExit"
                    | "KeyboardInterrupt"
                    | "SystemExit"
                    | "StopIteration"
                    | "StopAsyncIteration"
            ))
}

impl Globals {
    /// Whether a value may name the global `module.name` and a client be made
    /// to call it (as REDUCE / NEWOBJ do when it unpickles the value).
    pub fn allows(self, module: &str, name: &str) -> bool {
        if pure(module, name) {
            return true;
        }
        match self {
            Globals::None => false,
            Globals::Any => !module.is_empty() && !name.is_empty(),
            Globals::Default => {
                (module == "builtins" && builtin_exception(name))
                    || listed(VALUE_TYPES, module, name)
            }
        }
    }

    /// Whether a value may name the global `module.name` as a bare class
    /// (not called): what [`allows`](Self::allows) passes, and the ctypes
    /// types under the default policy.
    pub fn allows_bare(self, module: &str, name: &str) -> bool {
        self.allows(module, name)
            || (self == Globals::Default && module == "ctypes" && CTYPES.contains(&name))
    }

    /// The error text for a global this policy refuses.
    pub(crate) fn refusal(self, module: &str, name: &str) -> String {
        match self {
            Globals::None => format!(
                "global '{module}.{name}' is not allowed (this server accepts \
                 data-only values: --globals none)"
            ),
            _ => format!(
                "global '{module}.{name}' is not allowed (this server passes the \
                 standard library's value types and exceptions; start it with \
                 --globals any to pass every class, as CPython's manager does)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_passes_value_types_and_exceptions_only() {
        let d = Globals::Default;
        assert!(d.allows("datetime", "datetime"));
        assert!(d.allows("decimal", "Decimal"));
        assert!(d.allows("builtins", "ValueError"));
        assert!(d.allows("builtins", "UserWarning"));
        assert!(d.allows("_queue", "Empty"));
        assert!(!d.allows("os", "system"));
        assert!(!d.allows("builtins", "eval"));
        assert!(!d.allows("builtins", "getattr"));
        assert!(!d.allows("__main__", "Point"));
        assert!(Globals::Any.allows("__main__", "Point"));
        assert!(!Globals::None.allows("datetime", "datetime"));
        assert!(Globals::None.allows("builtins", "str.lower"));
        assert!(d.allows_bare("ctypes", "c_int") && !d.allows("ctypes", "c_int"));
        assert!(!Globals::None.allows_bare("ctypes", "c_int"));
        assert_eq!("any".parse::<Globals>(), Ok(Globals::Any));
        assert!("all".parse::<Globals>().is_err());
        assert_eq!(Globals::None.to_string(), "none");
    }
}
