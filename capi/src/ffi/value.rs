//! `mgr_value`: an owned tree of [`Value`]s built and read from C, so hosts never
//! hand-roll an encoding.
//!
//! An owned `mgr_value*` (from a constructor, [`mgr_value_clone`], a call result)
//! is freed with [`mgr_value_free`]. Pointers handed out by accessors
//! (`const mgr_value*`, `const char*`, `const uint8_t*`) borrow from their parent
//! and stay valid until the parent is freed or modified. Container helpers
//! ([`mgr_value_append`], [`mgr_value_insert`], [`mgr_value_dict_set`]) take
//! ownership of the items they are given, even when they fail.

use std::ffi::{c_char, CString};

use super::status::{mgr_status, Fail};
use super::{arg_bytes, arg_str, out_ptr};
use crate::proto::{ObjectId, Token, Value};

/// A dynamically typed value (opaque). Plain data: a value may move between
/// threads, but is used by one thread at a time.
#[derive(Debug)]
pub struct mgr_value {
    _private: [u8; 0],
}

/// The kind of a value, as [`mgr_value_type`] reports it. Stable numbers.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum mgr_value_kind {
    /// Python's None.
    MGR_VALUE_NONE = 0,
    /// A boolean.
    MGR_VALUE_BOOL = 1,
    /// A 64-bit integer.
    MGR_VALUE_INT = 2,
    /// A double.
    MGR_VALUE_FLOAT = 3,
    /// A UTF-8 string.
    MGR_VALUE_STR = 4,
    /// A byte string.
    MGR_VALUE_BYTES = 5,
    /// A list.
    MGR_VALUE_LIST = 6,
    /// A tuple.
    MGR_VALUE_TUPLE = 7,
    /// A dict (ordered key/value pairs).
    MGR_VALUE_DICT = 8,
    /// A reference to a shared object (typeid + id).
    MGR_VALUE_REF = 9,
    /// A set or frozenset (read it like a list).
    MGR_VALUE_SET = 10,
    /// Something else (an integer beyond 64 bits, a slice): readable only as text
    /// through [`mgr_value_repr`].
    MGR_VALUE_OTHER = 11,
    /// A Python object the data model does not represent (a `datetime`, an
    /// exception instance …), kept as data: keep, copy, store and pass it on;
    /// [`mgr_value_opaque_global`] names its class, [`mgr_value_repr`] gives text.
    MGR_VALUE_OPAQUE = 12,
    /// Returned for a NULL value.
    MGR_VALUE_INVALID = 255,
}

/// Boxes a value for C.
pub(crate) fn into_raw(v: Value) -> *mut mgr_value {
    Box::into_raw(Box::new(v)).cast()
}

/// Takes ownership of an owned value from C (NULL → `None`).
pub(crate) unsafe fn from_raw(p: *mut mgr_value) -> Option<Value> {
    (!p.is_null()).then(|| *Box::from_raw(p.cast::<Value>()))
}

/// Views a `Value` as the C type (for borrowed pointers).
pub(crate) fn as_ptr(v: &Value) -> *const mgr_value {
    (v as *const Value).cast()
}

/// Borrows a value argument, seen through sharing ([`Value::resolved`]): a
/// value a decoder shared between several places reads as the value it shares.
pub(crate) unsafe fn arg_value<'a>(p: *const mgr_value, name: &str) -> Result<&'a Value, Fail> {
    p.cast::<Value>()
        .as_ref()
        .map(Value::resolved)
        .ok_or_else(|| Fail::null(name))
}

/// Borrows a value argument to change it: a shared value is made this place's
/// own first ([`Value::unshare`]), so the other places keep what they had.
unsafe fn arg_value_mut<'a>(p: *mut mgr_value, name: &str) -> Result<&'a mut Value, Fail> {
    p.cast::<Value>()
        .as_mut()
        .map(Value::unshare)
        .ok_or_else(|| Fail::null(name))
}

/// Takes an owned value argument (consumed even on failure).
pub(crate) unsafe fn take_value(p: *mut mgr_value, name: &str) -> Result<Value, Fail> {
    from_raw(p).ok_or_else(|| Fail::null(name))
}

/// Reads optional `args` (a list or tuple, or NULL for none) as positional arguments.
pub(crate) unsafe fn arg_args(p: *const mgr_value) -> Result<Vec<Value>, Fail> {
    match p.cast::<Value>().as_ref().map(Value::resolved) {
        None => Ok(Vec::new()),
        Some(Value::List(v) | Value::Tuple(v)) => Ok(v.clone()),
        Some(other) => Err(Fail::wrong_type("list or tuple (args)", other.type_name())),
    }
}

/// Reads optional `kwargs` (a dict with str keys, or NULL for none).
pub(crate) unsafe fn arg_kwargs(p: *const mgr_value) -> Result<Vec<(String, Value)>, Fail> {
    match p.cast::<Value>().as_ref().map(Value::resolved) {
        None => Ok(Vec::new()),
        Some(Value::Dict(d)) => d
            .iter()
            .map(|(k, v)| match k.resolved() {
                Value::Str(s) => Ok((s.clone(), v.clone())),
                other => Err(Fail::new(
                    mgr_status::MGR_ERR_INVALID_ARGUMENT,
                    format!("kwargs keys must be str, got {}", other.type_name()),
                )),
            })
            .collect(),
        Some(other) => Err(Fail::wrong_type("dict (kwargs)", other.type_name())),
    }
}

/// Builds a Rust-allocated C string (freed with [`mgr_string_free`]).
pub(crate) fn owned_cstring(s: &str) -> *mut c_char {
    CString::new(s.replace('\0', "\\0"))
        .unwrap_or_default()
        .into_raw()
}

/// A new None value. Owned: free with [`mgr_value_free`]. Never NULL.
#[no_mangle]
pub unsafe extern "C" fn mgr_value_none() -> *mut mgr_value {
    ffi_boundary! { Ok(into_raw(Value::None)) }
}

/// A new bool value. Owned: free with [`mgr_value_free`].
#[no_mangle]
pub unsafe extern "C" fn mgr_value_bool(b: bool) -> *mut mgr_value {
    ffi_boundary! { Ok(into_raw(Value::Bool(b))) }
}

/// A new int value. Owned: free with [`mgr_value_free`].
#[no_mangle]
pub unsafe extern "C" fn mgr_value_int(i: i64) -> *mut mgr_value {
    ffi_boundary! { Ok(into_raw(Value::Int(i))) }
}

/// A new float value. Owned: free with [`mgr_value_free`].
#[no_mangle]
pub unsafe extern "C" fn mgr_value_float(f: f64) -> *mut mgr_value {
    ffi_boundary! { Ok(into_raw(Value::Float(f))) }
}

/// A new str value copied from the NUL-terminated UTF-8 string `s`. Owned: free
/// with [`mgr_value_free`]. NULL (with the last error set) if `s` is NULL or not
/// UTF-8.
#[no_mangle]
pub unsafe extern "C" fn mgr_value_str(s: *const c_char) -> *mut mgr_value {
    ffi_boundary! { Ok(into_raw(Value::Str(arg_str(s, "s")?.to_owned()))) }
}

/// A new str value copied from `len` bytes of UTF-8 at `s` (no terminator needed;
/// may contain NUL). Owned. NULL if the bytes are not UTF-8.
#[no_mangle]
pub unsafe extern "C" fn mgr_value_str_len(s: *const c_char, len: usize) -> *mut mgr_value {
    ffi_boundary! {
        let b = arg_bytes(s.cast(), len, "s")?;
        let s = std::str::from_utf8(b)
            .map_err(|_| Fail::new(mgr_status::MGR_ERR_INVALID_ARGUMENT, "s is not valid UTF-8"))?;
        Ok(into_raw(Value::Str(s.to_owned())))
    }
}

/// A new bytes value copied from `len` bytes at `data` (NULL allowed when `len` is
/// 0). Owned: free with [`mgr_value_free`].
#[no_mangle]
pub unsafe extern "C" fn mgr_value_bytes(data: *const u8, len: usize) -> *mut mgr_value {
    ffi_boundary! { Ok(into_raw(Value::Bytes(arg_bytes(data, len, "data")?.to_vec()))) }
}

/// A new empty list. Owned: free with [`mgr_value_free`].
#[no_mangle]
pub unsafe extern "C" fn mgr_value_list() -> *mut mgr_value {
    ffi_boundary! { Ok(into_raw(Value::List(Vec::new()))) }
}

/// A new empty tuple (grow it with [`mgr_value_append`]). Owned.
#[no_mangle]
pub unsafe extern "C" fn mgr_value_tuple() -> *mut mgr_value {
    ffi_boundary! { Ok(into_raw(Value::Tuple(Vec::new()))) }
}

/// A new empty dict. Owned: free with [`mgr_value_free`].
#[no_mangle]
pub unsafe extern "C" fn mgr_value_dict() -> *mut mgr_value {
    ffi_boundary! { Ok(into_raw(Value::Dict(Vec::new()))) }
}

/// A new reference to the shared object `id` of type `type_id` (to pass a shared
/// object as an argument; see also `mgr_proxy_to_value`). Owned. NULL if
/// `type_id` is NULL or not UTF-8.
#[no_mangle]
pub unsafe extern "C" fn mgr_value_ref(type_id: *const c_char, id: u64) -> *mut mgr_value {
    ffi_boundary! {
        Ok(into_raw(Value::Ref(Token { typeid: arg_str(type_id, "type_id")?.to_owned(), id: ObjectId(id) })))
    }
}

/// A deep copy of `v`. Owned: free with [`mgr_value_free`]. NULL if `v` is NULL.
#[no_mangle]
pub unsafe extern "C" fn mgr_value_clone(v: *const mgr_value) -> *mut mgr_value {
    ffi_boundary! { Ok(into_raw(arg_value(v, "v")?.clone())) }
}

/// Frees an owned value and everything inside it. NULL is a no-op. Never pass a
/// borrowed pointer (one from an accessor or a callback argument).
#[no_mangle]
pub unsafe extern "C" fn mgr_value_free(v: *mut mgr_value) {
    ffi_boundary! {
        drop(from_raw(v));
        Ok(())
    }
}

/// The kind of `v`; `MGR_VALUE_INVALID` for NULL.
#[no_mangle]
pub unsafe extern "C" fn mgr_value_type(v: *const mgr_value) -> mgr_value_kind {
    ffi_boundary! {
        use mgr_value_kind::*;
        Ok(match arg_value(v, "v")? {
            Value::None => MGR_VALUE_NONE,
            Value::Bool(_) => MGR_VALUE_BOOL,
            Value::Int(_) => MGR_VALUE_INT,
            Value::Float(_) => MGR_VALUE_FLOAT,
            Value::Str(_) => MGR_VALUE_STR,
            Value::Bytes(_) => MGR_VALUE_BYTES,
            Value::List(_) => MGR_VALUE_LIST,
            Value::Tuple(_) => MGR_VALUE_TUPLE,
            Value::Dict(_) => MGR_VALUE_DICT,
            Value::Ref(_) => MGR_VALUE_REF,
            Value::Set(_) | Value::FrozenSet(_) => MGR_VALUE_SET,
            Value::BigInt(_) | Value::Slice(_) => MGR_VALUE_OTHER,
            Value::Opaque(_) => MGR_VALUE_OPAQUE,
            // `arg_value` sees through sharing.
            Value::Shared(_) => unreachable!("resolved"),
        })
    }
}

/// Borrows the module and name of the global an opaque value is, or that
/// makes it (`"decimal"`, `"Decimal"`): UTF-8 bytes, NOT NUL-terminated, valid
/// until `v` is freed or modified. `MGR_ERR_WRONG_TYPE` if `v` is not an
/// opaque value or is not made by a named global.
#[no_mangle]
pub unsafe extern "C" fn mgr_value_opaque_global(
    v: *const mgr_value,
    module: *mut *const c_char,
    module_len: *mut usize,
    name: *mut *const c_char,
    name_len: *mut usize,
) -> mgr_status {
    ffi_boundary! {
        let v = arg_value(v, "v")?;
        match v.as_opaque().and_then(|o| o.global_name()) {
            Some((m, n)) => {
                let (mp, ml) = (out_ptr(module, "module")?, out_ptr(module_len, "module_len")?);
                let (np, nl) = (out_ptr(name, "name")?, out_ptr(name_len, "name_len")?);
                *mp = m.as_ptr().cast();
                *ml = m.len();
                *np = n.as_ptr().cast();
                *nl = n.len();
                Ok(mgr_status::MGR_OK)
            }
            None => Err(Fail::wrong_type("opaque object", v.type_name())),
        }
    }
}

/// Reads a bool into `*out`. `MGR_ERR_WRONG_TYPE` if `v` is not a bool.
#[no_mangle]
pub unsafe extern "C" fn mgr_value_get_bool(v: *const mgr_value, out: *mut bool) -> mgr_status {
    ffi_boundary! {
        match arg_value(v, "v")? {
            Value::Bool(b) => { *out_ptr(out, "out")? = *b; Ok(mgr_status::MGR_OK) }
            other => Err(Fail::wrong_type("bool", other.type_name())),
        }
    }
}

/// Reads an int into `*out`. `MGR_ERR_WRONG_TYPE` if `v` is not an int that fits
/// in 64 bits (bools are not ints here).
#[no_mangle]
pub unsafe extern "C" fn mgr_value_get_int(v: *const mgr_value, out: *mut i64) -> mgr_status {
    ffi_boundary! {
        match arg_value(v, "v")? {
            Value::Int(i) => { *out_ptr(out, "out")? = *i; Ok(mgr_status::MGR_OK) }
            other => Err(Fail::wrong_type("int", other.type_name())),
        }
    }
}

/// Reads a float (or an int, converted) into `*out`.
#[no_mangle]
pub unsafe extern "C" fn mgr_value_get_float(v: *const mgr_value, out: *mut f64) -> mgr_status {
    ffi_boundary! {
        match arg_value(v, "v")? {
            Value::Float(f) => { *out_ptr(out, "out")? = *f; Ok(mgr_status::MGR_OK) }
            Value::Int(i) => { *out_ptr(out, "out")? = *i as f64; Ok(mgr_status::MGR_OK) }
            other => Err(Fail::wrong_type("float", other.type_name())),
        }
    }
}

/// Borrows a str's UTF-8 bytes: `*ptr` (NOT NUL-terminated) and `*len`. Valid
/// until `v` is freed or modified. For a C string use [`mgr_value_str_dup`].
#[no_mangle]
pub unsafe extern "C" fn mgr_value_get_str(
    v: *const mgr_value,
    ptr: *mut *const c_char,
    len: *mut usize,
) -> mgr_status {
    ffi_boundary! {
        match arg_value(v, "v")? {
            Value::Str(s) => {
                let (p, l) = (out_ptr(ptr, "ptr")?, out_ptr(len, "len")?);
                *p = s.as_ptr().cast();
                *l = s.len();
                Ok(mgr_status::MGR_OK)
            }
            other => Err(Fail::wrong_type("str", other.type_name())),
        }
    }
}

/// A NUL-terminated copy of a str value (an embedded NUL is written as `\0`).
/// Owned: free with [`mgr_string_free`]. NULL if `v` is NULL or not a str.
#[no_mangle]
pub unsafe extern "C" fn mgr_value_str_dup(v: *const mgr_value) -> *mut c_char {
    ffi_boundary! {
        match arg_value(v, "v")? {
            Value::Str(s) => Ok(owned_cstring(s)),
            other => Err(Fail::wrong_type("str", other.type_name())),
        }
    }
}

/// Borrows a bytes value: `*data` and `*len`. Valid until `v` is freed or modified.
#[no_mangle]
pub unsafe extern "C" fn mgr_value_get_bytes(
    v: *const mgr_value,
    data: *mut *const u8,
    len: *mut usize,
) -> mgr_status {
    ffi_boundary! {
        match arg_value(v, "v")? {
            Value::Bytes(b) => {
                let (p, l) = (out_ptr(data, "data")?, out_ptr(len, "len")?);
                *p = b.as_ptr();
                *l = b.len();
                Ok(mgr_status::MGR_OK)
            }
            other => Err(Fail::wrong_type("bytes", other.type_name())),
        }
    }
}

/// Reads an object reference's id into `*id` (the typeid is in
/// [`mgr_value_repr`]). `MGR_ERR_WRONG_TYPE` if `v` is not a reference.
#[no_mangle]
pub unsafe extern "C" fn mgr_value_get_ref(v: *const mgr_value, id: *mut u64) -> mgr_status {
    ffi_boundary! {
        match arg_value(v, "v")? {
            Value::Ref(t) => { *out_ptr(id, "id")? = t.id.0; Ok(mgr_status::MGR_OK) }
            other => Err(Fail::wrong_type("reference", other.type_name())),
        }
    }
}

/// The number of items of a list, tuple, set or dict, or the byte length of a str
/// or bytes, into `*out`.
#[no_mangle]
pub unsafe extern "C" fn mgr_value_len(v: *const mgr_value, out: *mut usize) -> mgr_status {
    ffi_boundary! {
        let n = match arg_value(v, "v")? {
            Value::List(x) | Value::Tuple(x) | Value::Set(x) | Value::FrozenSet(x) => x.len(),
            Value::Dict(d) => d.len(),
            Value::Str(s) => s.len(),
            Value::Bytes(b) => b.len(),
            other => return Err(Fail::wrong_type("container", other.type_name())),
        };
        *out_ptr(out, "out")? = n;
        Ok(mgr_status::MGR_OK)
    }
}

/// Borrows item `index` of a list, tuple or set into `*out`: valid until `v` is
/// freed or modified; do not free it.
#[no_mangle]
pub unsafe extern "C" fn mgr_value_get_item(
    v: *const mgr_value,
    index: usize,
    out: *mut *const mgr_value,
) -> mgr_status {
    ffi_boundary! {
        let items = match arg_value(v, "v")? {
            Value::List(x) | Value::Tuple(x) | Value::Set(x) | Value::FrozenSet(x) => x,
            other => return Err(Fail::wrong_type("list, tuple or set", other.type_name())),
        };
        let item = items.get(index).ok_or_else(|| Fail::new(
            mgr_status::MGR_ERR_OUT_OF_RANGE,
            format!("index {index} out of range (length {})", items.len()),
        ))?;
        *out_ptr(out, "out")? = as_ptr(item);
        Ok(mgr_status::MGR_OK)
    }
}

/// Borrows the key and value of a dict's entry `index` (insertion order) into
/// `*key` and `*value`: valid until `v` is freed or modified.
#[no_mangle]
pub unsafe extern "C" fn mgr_value_dict_item(
    v: *const mgr_value,
    index: usize,
    key: *mut *const mgr_value,
    value: *mut *const mgr_value,
) -> mgr_status {
    ffi_boundary! {
        let d = match arg_value(v, "v")? {
            Value::Dict(d) => d,
            other => return Err(Fail::wrong_type("dict", other.type_name())),
        };
        let (k, x) = d.get(index).ok_or_else(|| Fail::new(
            mgr_status::MGR_ERR_OUT_OF_RANGE,
            format!("index {index} out of range (length {})", d.len()),
        ))?;
        let (ko, vo) = (out_ptr(key, "key")?, out_ptr(value, "value")?);
        *ko = as_ptr(k);
        *vo = as_ptr(x);
        Ok(mgr_status::MGR_OK)
    }
}

/// Borrows the value stored under the str key `key` in a dict into `*out`.
/// `MGR_ERR_NOT_FOUND` if there is no such key.
#[no_mangle]
pub unsafe extern "C" fn mgr_value_dict_get(
    v: *const mgr_value,
    key: *const c_char,
    out: *mut *const mgr_value,
) -> mgr_status {
    ffi_boundary! {
        let key = arg_str(key, "key")?;
        let d = match arg_value(v, "v")? {
            Value::Dict(d) => d,
            other => return Err(Fail::wrong_type("dict", other.type_name())),
        };
        let found = d.iter().find(|(k, _)| k.as_str() == Some(key)).ok_or_else(|| {
            Fail::new(mgr_status::MGR_ERR_NOT_FOUND, format!("no key '{key}'"))
        })?;
        *out_ptr(out, "out")? = as_ptr(&found.1);
        Ok(mgr_status::MGR_OK)
    }
}

/// Appends `item` to a list, tuple or set. Takes ownership of `item` (freed even
/// when the call fails).
///
/// Values may nest to any depth: cloning, comparing, printing and freeing never
/// recurse. Peers decode at most 128 levels, though: a call result nested deeper
/// reaches a libmgr client as an error (`MGR_ERR_REMOTE`), and a deeper argument
/// is refused by the server.
#[no_mangle]
pub unsafe extern "C" fn mgr_value_append(v: *mut mgr_value, item: *mut mgr_value) -> mgr_status {
    ffi_boundary! {
        let item = take_value(item, "item")?;
        match arg_value_mut(v, "v")? {
            Value::List(x) | Value::Tuple(x) | Value::Set(x) | Value::FrozenSet(x) => x.push(item),
            other => return Err(Fail::wrong_type("list, tuple or set", other.type_name())),
        }
        Ok(mgr_status::MGR_OK)
    }
}

/// Inserts `item` before position `index` of a list or tuple (`index` equal to the
/// length appends). Takes ownership of `item` (freed even when the call fails).
#[no_mangle]
pub unsafe extern "C" fn mgr_value_insert(
    v: *mut mgr_value,
    index: usize,
    item: *mut mgr_value,
) -> mgr_status {
    ffi_boundary! {
        let item = take_value(item, "item")?;
        match arg_value_mut(v, "v")? {
            Value::List(x) | Value::Tuple(x) if index <= x.len() => x.insert(index, item),
            Value::List(x) | Value::Tuple(x) => return Err(Fail::new(
                mgr_status::MGR_ERR_OUT_OF_RANGE,
                format!("index {index} out of range (length {})", x.len()),
            )),
            other => return Err(Fail::wrong_type("list or tuple", other.type_name())),
        }
        Ok(mgr_status::MGR_OK)
    }
}

/// Sets `dict[key] = value`, replacing an equal key's value in place or appending.
/// Takes ownership of `key` and `value` (freed even when the call fails).
#[no_mangle]
pub unsafe extern "C" fn mgr_value_dict_set(
    v: *mut mgr_value,
    key: *mut mgr_value,
    value: *mut mgr_value,
) -> mgr_status {
    ffi_boundary! {
        let key = take_value(key, "key");
        let value = take_value(value, "value");
        let (key, value) = (key?, value?);
        match arg_value_mut(v, "v")? {
            Value::Dict(d) => match d.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => d.push((key, value)),
            },
            other => return Err(Fail::wrong_type("dict", other.type_name())),
        }
        Ok(mgr_status::MGR_OK)
    }
}

/// Whether `a` and `b` are equal values (deep comparison; false if either is NULL).
#[no_mangle]
pub unsafe extern "C" fn mgr_value_equal(a: *const mgr_value, b: *const mgr_value) -> bool {
    ffi_boundary! { Ok(arg_value(a, "a")? == arg_value(b, "b")?) }
}

/// Python's `repr()` of `v` as a NUL-terminated string. Owned: free with
/// [`mgr_string_free`]. NULL if `v` is NULL.
#[no_mangle]
pub unsafe extern "C" fn mgr_value_repr(v: *const mgr_value) -> *mut c_char {
    ffi_boundary! { Ok(owned_cstring(&arg_value(v, "v")?.to_string())) }
}

/// Frees a string returned by libmgr ([`mgr_value_repr`], [`mgr_value_str_dup`]).
/// NULL is a no-op. Never pass it memory from elsewhere.
#[no_mangle]
pub unsafe extern "C" fn mgr_string_free(s: *mut c_char) {
    ffi_boundary! {
        if !s.is_null() {
            drop(CString::from_raw(s));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;
    use std::ptr;

    fn repr(v: *const mgr_value) -> String {
        unsafe {
            let s = mgr_value_repr(v);
            let out = CStr::from_ptr(s).to_str().unwrap().to_owned();
            mgr_string_free(s);
            out
        }
    }

    #[test]
    fn build_and_read_a_tree() {
        unsafe {
            let list = mgr_value_list();
            assert_eq!(
                mgr_value_append(list, mgr_value_int(-7)),
                mgr_status::MGR_OK
            );
            assert_eq!(
                mgr_value_append(list, mgr_value_str(c"hé".as_ptr())),
                mgr_status::MGR_OK
            );
            assert_eq!(
                mgr_value_insert(list, 0, mgr_value_none()),
                mgr_status::MGR_OK
            );
            let d = mgr_value_dict();
            assert_eq!(
                mgr_value_dict_set(d, mgr_value_str(c"k".as_ptr()), mgr_value_float(1.5)),
                mgr_status::MGR_OK
            );
            assert_eq!(
                mgr_value_dict_set(d, mgr_value_str(c"k".as_ptr()), mgr_value_bool(true)),
                mgr_status::MGR_OK
            );
            assert_eq!(mgr_value_append(list, d), mgr_status::MGR_OK);
            assert_eq!(
                mgr_value_append(list, mgr_value_bytes(b"\x00a".as_ptr(), 2)),
                mgr_status::MGR_OK
            );
            assert_eq!(repr(list), "[None, -7, 'hé', {'k': True}, b'\\x00a']");

            let mut n = 0;
            assert_eq!(mgr_value_len(list, &mut n), mgr_status::MGR_OK);
            assert_eq!(n, 5);
            let mut item = ptr::null();
            assert_eq!(mgr_value_get_item(list, 1, &mut item), mgr_status::MGR_OK);
            let mut i = 0;
            assert_eq!(mgr_value_get_int(item, &mut i), mgr_status::MGR_OK);
            assert_eq!(i, -7);
            assert_eq!(mgr_value_get_item(list, 2, &mut item), mgr_status::MGR_OK);
            let (mut p, mut l) = (ptr::null(), 0);
            assert_eq!(mgr_value_get_str(item, &mut p, &mut l), mgr_status::MGR_OK);
            assert_eq!(
                std::slice::from_raw_parts(p.cast::<u8>(), l),
                "hé".as_bytes()
            );
            let dup = mgr_value_str_dup(item);
            assert_eq!(CStr::from_ptr(dup).to_str().unwrap(), "hé");
            mgr_string_free(dup);
            assert_eq!(mgr_value_get_item(list, 3, &mut item), mgr_status::MGR_OK);
            assert_eq!(mgr_value_type(item), mgr_value_kind::MGR_VALUE_DICT);
            let mut b = false;
            let mut found = ptr::null();
            assert_eq!(
                mgr_value_dict_get(item, c"k".as_ptr(), &mut found),
                mgr_status::MGR_OK
            );
            assert_eq!(mgr_value_get_bool(found, &mut b), mgr_status::MGR_OK);
            assert!(b);
            assert_eq!(
                mgr_value_dict_get(item, c"z".as_ptr(), &mut found),
                mgr_status::MGR_ERR_NOT_FOUND
            );
            let (mut k, mut x) = (ptr::null(), ptr::null());
            assert_eq!(
                mgr_value_dict_item(item, 0, &mut k, &mut x),
                mgr_status::MGR_OK
            );
            assert_eq!(repr(k), "'k'");
            assert_eq!(mgr_value_get_item(list, 4, &mut item), mgr_status::MGR_OK);
            let (mut bp, mut bl) = (ptr::null(), 0);
            assert_eq!(
                mgr_value_get_bytes(item, &mut bp, &mut bl),
                mgr_status::MGR_OK
            );
            assert_eq!(std::slice::from_raw_parts(bp, bl), b"\x00a");

            let copy = mgr_value_clone(list);
            assert!(mgr_value_equal(copy, list));
            mgr_value_free(copy);
            mgr_value_free(list);
        }
    }

    #[test]
    fn wrong_types_and_ranges_leave_outputs_alone() {
        unsafe {
            let v = mgr_value_str(c"x".as_ptr());
            let mut i = 42;
            assert_eq!(mgr_value_get_int(v, &mut i), mgr_status::MGR_ERR_WRONG_TYPE);
            assert_eq!(i, 42, "out-pointer untouched on failure");
            let mut f = 0.0;
            assert_eq!(
                mgr_value_get_float(v, &mut f),
                mgr_status::MGR_ERR_WRONG_TYPE
            );
            let t = mgr_value_tuple();
            let mut item = ptr::null();
            assert_eq!(
                mgr_value_get_item(t, 0, &mut item),
                mgr_status::MGR_ERR_OUT_OF_RANGE
            );
            assert!(item.is_null());
            assert_eq!(
                mgr_value_insert(t, 2, mgr_value_none()),
                mgr_status::MGR_ERR_OUT_OF_RANGE
            );
            // Appending to a non-container consumes the item all the same.
            assert_eq!(
                mgr_value_append(v, mgr_value_int(1)),
                mgr_status::MGR_ERR_WRONG_TYPE
            );
            assert_eq!(
                mgr_value_get_int(ptr::null(), &mut i),
                mgr_status::MGR_ERR_NULL_ARGUMENT
            );
            assert_eq!(
                mgr_value_get_int(v, ptr::null_mut()),
                mgr_status::MGR_ERR_WRONG_TYPE
            );
            let n = mgr_value_int(3);
            assert_eq!(
                mgr_value_get_int(n, ptr::null_mut()),
                mgr_status::MGR_ERR_NULL_ARGUMENT
            );
            assert_eq!(
                mgr_value_type(ptr::null()),
                mgr_value_kind::MGR_VALUE_INVALID
            );
            mgr_value_free(n);
            mgr_value_free(t);
            mgr_value_free(v);
            mgr_value_free(ptr::null_mut());
            mgr_string_free(ptr::null_mut());
        }
    }

    #[test]
    fn bad_strings_are_refused() {
        unsafe {
            assert!(mgr_value_str(ptr::null()).is_null());
            let bad = [0xffu8, 0];
            assert!(mgr_value_str(bad.as_ptr().cast()).is_null());
            assert!(mgr_value_str_len(bad.as_ptr().cast(), 1).is_null());
            let v = mgr_value_str_len(b"a\0b".as_ptr().cast(), 3);
            let mut n = 0;
            assert_eq!(mgr_value_len(v, &mut n), mgr_status::MGR_OK);
            assert_eq!(n, 3);
            mgr_value_free(v);
        }
    }

    #[test]
    fn refs_and_args_helpers() {
        unsafe {
            let r = mgr_value_ref(c"Queue".as_ptr(), 0x1_0000_0002);
            let mut id = 0;
            assert_eq!(mgr_value_get_ref(r, &mut id), mgr_status::MGR_OK);
            assert_eq!(id, 0x1_0000_0002);
            assert_eq!(mgr_value_type(r), mgr_value_kind::MGR_VALUE_REF);
            assert!(arg_args(r).is_err());
            mgr_value_free(r);
            let d = mgr_value_dict();
            mgr_value_dict_set(d, mgr_value_int(1), mgr_value_int(2));
            assert_eq!(
                arg_kwargs(d).unwrap_err().status,
                mgr_status::MGR_ERR_INVALID_ARGUMENT
            );
            mgr_value_free(d);
            assert!(arg_args(ptr::null()).unwrap().is_empty());
        }
    }
}
