//! `mgr_client` and `mgr_proxy`: the blocking client from C, over
//! [`Manager`] and [`Proxy`].
//!
//! A client and every proxy made from it share one connection and belong to one
//! thread. A proxy keeps the connection open after [`mgr_client_free`]; freeing a
//! proxy releases its reference on the server.

use std::ffi::{c_char, CString};

use super::status::{mgr_status, Fail};
use super::value::{arg_args, arg_kwargs, arg_value, into_raw, mgr_value};
use super::{arg_bytes, arg_str, out_ptr};
use crate::client::{Manager, Proxy, Returned};
use crate::proto::Value;

/// A connection to a manager server (opaque). Owned: free with
/// [`mgr_client_free`]. A client and its proxies belong to the thread that
/// made them.
#[derive(Debug)]
pub struct mgr_client {
    _private: [u8; 0],
}

/// A reference to a shared object (opaque). Owned: free with [`mgr_proxy_free`],
/// which releases the reference.
#[derive(Debug)]
pub struct mgr_proxy {
    _private: [u8; 0],
}

struct ProxyBox {
    proxy: Proxy,
    typeid: CString,
}

fn boxed_proxy(proxy: Proxy) -> *mut mgr_proxy {
    let typeid = CString::new(proxy.token().typeid.clone()).unwrap_or_default();
    Box::into_raw(Box::new(ProxyBox { proxy, typeid })).cast()
}

pub(crate) unsafe fn arg_client<'a>(p: *mut mgr_client) -> Result<&'a Manager, Fail> {
    p.cast::<Manager>()
        .as_ref()
        .ok_or_else(|| Fail::null("client"))
}

unsafe fn arg_proxy<'a>(p: *const mgr_proxy) -> Result<&'a ProxyBox, Fail> {
    p.cast::<ProxyBox>()
        .as_ref()
        .ok_or_else(|| Fail::null("proxy"))
}

/// The body of both connect functions: checks the arguments, connects with
/// `connect`, and writes the owned client to `*out`.
unsafe fn connect_with(
    address: *const c_char,
    authkey: *const u8,
    authkey_len: usize,
    out: *mut *mut mgr_client,
    connect: fn(&str, &[u8]) -> crate::Result<Manager>,
) -> Result<mgr_status, Fail> {
    let address = arg_str(address, "address")?;
    let key = arg_bytes(authkey, authkey_len, "authkey")?;
    let out = out_ptr(out, "out")?;
    let m = connect(address, key)?;
    *out = Box::into_raw(Box::new(m)).cast();
    Ok(mgr_status::MGR_OK)
}

/// Connects to the server at `address` (`host:port` or `unix:/path`) and
/// authenticates with the `authkey_len`-byte `authkey` (NULL allowed when the
/// length is 0). On success writes an owned client to `*out`. `MGR_ERR_AUTH` on
/// a wrong key, `MGR_ERR_IO` when nothing listens. For a CPython manager server
/// use [`mgr_client_connect_cpython`].
#[no_mangle]
pub unsafe extern "C" fn mgr_client_connect(
    address: *const c_char,
    authkey: *const u8,
    authkey_len: usize,
    out: *mut *mut mgr_client,
) -> mgr_status {
    ffi_boundary! { connect_with(address, authkey, authkey_len, out, Manager::connect) }
}

/// Connects to a CPython manager server (`BaseManager.start()`,
/// `get_server().serve_forever()`) at `address` and speaks its protocol: pickle,
/// method calls over one accepted connection, each public request (create,
/// incref, decref …) over a connection of its own. Otherwise as
/// [`mgr_client_connect`]; the same calls work on the client it writes to `*out`.
#[no_mangle]
pub unsafe extern "C" fn mgr_client_connect_cpython(
    address: *const c_char,
    authkey: *const u8,
    authkey_len: usize,
    out: *mut *mut mgr_client,
) -> mgr_status {
    ffi_boundary! { connect_with(address, authkey, authkey_len, out, Manager::connect_cpython) }
}

/// Frees the client. NULL is a no-op. Proxies made from it stay usable (they
/// keep the connection open until the last one is freed).
#[no_mangle]
pub unsafe extern "C" fn mgr_client_free(client: *mut mgr_client) {
    ffi_boundary! {
        if !client.is_null() {
            drop(Box::from_raw(client.cast::<Manager>()));
        }
        Ok(())
    }
}

/// Creates a shared object of `type_id` with `args` (a list or tuple, or NULL)
/// and `kwargs` (a dict with str keys, or NULL), both borrowed. On success writes
/// an owned proxy to `*out` (free with [`mgr_proxy_free`]). `MGR_ERR_REMOTE` if
/// the constructor raised.
#[no_mangle]
pub unsafe extern "C" fn mgr_create(
    client: *mut mgr_client,
    type_id: *const c_char,
    args: *const mgr_value,
    kwargs: *const mgr_value,
    out: *mut *mut mgr_proxy,
) -> mgr_status {
    ffi_boundary! {
        let m = arg_client(client)?;
        let typeid = arg_str(type_id, "type_id")?;
        let (args, kwargs) = (arg_args(args)?, arg_kwargs(kwargs)?);
        let out = out_ptr(out, "out")?;
        let p = m.create_with(typeid, args, kwargs)?;
        *out = boxed_proxy(p);
        Ok(mgr_status::MGR_OK)
    }
}

unsafe fn invoke(
    proxy: *mut mgr_proxy,
    method: *const c_char,
    args: *const mgr_value,
    kwargs: *const mgr_value,
) -> Result<Returned, Fail> {
    let p = arg_proxy(proxy)?;
    let method = arg_str(method, "method")?;
    let (args, kwargs) = (arg_args(args)?, arg_kwargs(kwargs)?);
    Ok(p.proxy.invoke(method, args, kwargs)?)
}

/// Calls `method` on the proxied object with `args` (list/tuple or NULL) and
/// `kwargs` (dict or NULL), both borrowed, and writes the owned result to `*out`
/// (free with `mgr_value_free`). `MGR_ERR_REMOTE` when the method raised: the
/// exception kind is `mgr_last_error_kind()` and its message `mgr_last_error()`.
/// `MGR_ERR_PROTOCOL` if the method returns a shared object: use
/// [`mgr_call_proxy`] for those.
#[no_mangle]
pub unsafe extern "C" fn mgr_call(
    proxy: *mut mgr_proxy,
    method: *const c_char,
    args: *const mgr_value,
    kwargs: *const mgr_value,
    out: *mut *mut mgr_value,
) -> mgr_status {
    ffi_boundary! {
        let out = out_ptr(out, "out")?;
        let v = invoke(proxy, method, args, kwargs)?.into_value()?;
        *out = into_raw(v);
        Ok(mgr_status::MGR_OK)
    }
}

/// Calls a method whose result is a new shared object (the type's
/// method_to_typeid) and writes an owned proxy for it to `*out` (free with
/// [`mgr_proxy_free`]). `MGR_ERR_PROTOCOL` if the method returned a plain value.
#[no_mangle]
pub unsafe extern "C" fn mgr_call_proxy(
    proxy: *mut mgr_proxy,
    method: *const c_char,
    args: *const mgr_value,
    kwargs: *const mgr_value,
    out: *mut *mut mgr_proxy,
) -> mgr_status {
    ffi_boundary! {
        let out = out_ptr(out, "out")?;
        let p = invoke(proxy, method, args, kwargs)?.into_proxy()?;
        *out = boxed_proxy(p);
        Ok(mgr_status::MGR_OK)
    }
}

/// Takes a new reference to the object a reference value names (e.g. one found
/// inside a call's result) and writes an owned proxy for it to `*out`.
#[no_mangle]
pub unsafe extern "C" fn mgr_client_proxy_from_ref(
    client: *mut mgr_client,
    reference: *const mgr_value,
    out: *mut *mut mgr_proxy,
) -> mgr_status {
    ffi_boundary! {
        let m = arg_client(client)?;
        let token = match arg_value(reference, "reference")? {
            Value::Ref(t) => t.clone(),
            other => return Err(Fail::wrong_type("reference", other.type_name())),
        };
        let out = out_ptr(out, "out")?;
        *out = boxed_proxy(m.proxy(token)?);
        Ok(mgr_status::MGR_OK)
    }
}

/// The proxied object's id on its server (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn mgr_proxy_id(proxy: *const mgr_proxy) -> u64 {
    ffi_boundary! { Ok(arg_proxy(proxy)?.proxy.id().0) }
}

/// The proxied object's typeid. Owned by the proxy: valid until
/// [`mgr_proxy_free`]. NULL for NULL.
#[no_mangle]
pub unsafe extern "C" fn mgr_proxy_typeid(proxy: *const mgr_proxy) -> *const c_char {
    ffi_boundary! { Ok(arg_proxy(proxy)?.typeid.as_ptr()) }
}

/// A new reference value naming the proxied object, to pass it as an argument.
/// Owned: free with `mgr_value_free`. NULL for NULL.
#[no_mangle]
pub unsafe extern "C" fn mgr_proxy_to_value(proxy: *const mgr_proxy) -> *mut mgr_value {
    ffi_boundary! { Ok(into_raw(Value::Ref(arg_proxy(proxy)?.proxy.token().clone()))) }
}

/// Frees a proxy and releases its reference on the server (the object dies with
/// its last reference). NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn mgr_proxy_free(proxy: *mut mgr_proxy) {
    ffi_boundary! {
        if !proxy.is_null() {
            drop(Box::from_raw(proxy.cast::<ProxyBox>()));
        }
        Ok(())
    }
}

/// Writes the number of live shared objects on the server to `*out`.
#[no_mangle]
pub unsafe extern "C" fn mgr_client_number_of_objects(
    client: *mut mgr_client,
    out: *mut usize,
) -> mgr_status {
    ffi_boundary! {
        let m = arg_client(client)?;
        let out = out_ptr(out, "out")?;
        *out = m.number_of_objects()?;
        Ok(mgr_status::MGR_OK)
    }
}

/// Asks the server to shut down. The client still has to be freed.
#[no_mangle]
pub unsafe extern "C" fn mgr_client_shutdown(client: *mut mgr_client) -> mgr_status {
    ffi_boundary! {
        arg_client(client)?.shutdown()?;
        Ok(mgr_status::MGR_OK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ptr;

    #[test]
    fn connect_failures_leave_out_alone() {
        let mut c = ptr::null_mut();
        unsafe {
            // Nothing listens on a fresh Unix path.
            let st = mgr_client_connect(
                c"unix:/nonexistent/mgr.sock".as_ptr(),
                ptr::null(),
                0,
                &mut c,
            );
            assert_eq!(st, mgr_status::MGR_ERR_IO);
            assert!(c.is_null());
            let st = mgr_client_connect(c"not an address".as_ptr(), ptr::null(), 0, &mut c);
            assert_eq!(st, mgr_status::MGR_ERR_INVALID_ARGUMENT);
            let st = mgr_client_connect(ptr::null(), ptr::null(), 0, &mut c);
            assert_eq!(st, mgr_status::MGR_ERR_NULL_ARGUMENT);
            let st = mgr_client_connect(c"127.0.0.1:1".as_ptr(), ptr::null(), 3, &mut c);
            assert_eq!(
                st,
                mgr_status::MGR_ERR_NULL_ARGUMENT,
                "a NULL key with a length"
            );
            assert!(c.is_null());
        }
    }

    #[test]
    fn null_handles_are_refused() {
        let mut out = ptr::null_mut();
        let mut proxy = ptr::null_mut();
        let mut n = 0;
        unsafe {
            assert_eq!(
                mgr_create(
                    ptr::null_mut(),
                    c"T".as_ptr(),
                    ptr::null(),
                    ptr::null(),
                    &mut proxy
                ),
                mgr_status::MGR_ERR_NULL_ARGUMENT
            );
            assert_eq!(
                mgr_call(
                    ptr::null_mut(),
                    c"m".as_ptr(),
                    ptr::null(),
                    ptr::null(),
                    &mut out
                ),
                mgr_status::MGR_ERR_NULL_ARGUMENT
            );
            assert_eq!(
                mgr_client_number_of_objects(ptr::null_mut(), &mut n),
                mgr_status::MGR_ERR_NULL_ARGUMENT
            );
            assert_eq!(mgr_proxy_id(ptr::null()), 0);
            assert!(mgr_proxy_typeid(ptr::null()).is_null());
            mgr_proxy_free(ptr::null_mut());
            mgr_client_free(ptr::null_mut());
        }
        assert!(out.is_null() && proxy.is_null());
    }
}
