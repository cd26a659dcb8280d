//! The pickle serializer, so stock CPython clients (and servers) can talk to libmgr.
//!
//! Decoding is data-only: the machine in `decode.rs` runs the opcodes of protocols
//! 2–5 that build None, bools, ints (big ones kept exactly), floats, str, bytes,
//! bytearray, tuples, lists, dicts, sets and frozensets, with memo, marks and
//! frames, and it knows a short whitelist of globals by name —
//! `multiprocessing.managers.Token`, `RebuildProxy` with `AutoProxy` or a
//! SyncManager proxy type (a pickled proxy becomes a [`Value::Ref`]),
//! `builtins.slice`, `array.array` / `array._array_reconstructor` (a list), the
//! constructors protocols 2–3 reduce bytes and sets to, `builtins.list` / `tuple`
//! (managers.py pickles dict views as `list(items)`), and exception classes (for
//! replies). Any other global (`os.system`, `builtins.eval` …) or opcode (INST, OBJ,
//! PERSID, EXT*, out-of-band buffers) is a [`CodecError`]: nothing is ever imported
//! or executed. Memory is bounded by one byte budget per payload,
//! [`PICKLE_BYTES_PER_INPUT_BYTE`](super::PICKLE_BYTES_PER_INPUT_BYTE) × its
//! length plus a floor (see [`decode_limit`](super::decode_limit)), charged
//! across every constructor, memo reference and conversion; nesting by
//! [`MAX_DEPTH`].
//!
//! Encoding writes protocol 4 that CPython's `pickle.loads` turns into the objects
//! its own manager would send: tokens as real `multiprocessing.managers.Token`
//! instances carrying the server's address, references as
//! `RebuildProxy(ProxyType, token, 'pickle', {})`, errors as instances of their
//! builtin (or known module) exception class, other errors as `#TRACEBACK` text.
//!
//! This module is sans-IO and does not know sockets: the caller passes the
//! server's address already in CPython's form (see [`encode_reply`]).

mod decode;
mod encode;
mod fast;
mod globals;
mod small;

use decode::{Decoded, Node};
use encode::Writer;
use globals::{BUILTIN_EXCEPTIONS, MODULE_EXCEPTIONS};

use super::{CodecError, Globals};
use crate::proto::message::{RemoteError, Reply, Request, RequestRef};
use crate::proto::value::{ObjectId, Slot, Step, Value, Walk};

pub use decode::{MAX_DEPTH, SHARE_MIN_BYTES};

/// What the encoder needs to know about the server whose tokens it writes.
pub struct Origin<'a> {
    /// The server's address as CPython represents it — `('127.0.0.1', port)` as
    /// a tuple for TCP, the path as a str for a Unix socket — written into every
    /// token.
    pub address: &'a Value,
    /// The exposed methods of a typeid. A reference to an object whose typeid
    /// gets `AutoProxy` carries them, as CPython's own pickled proxies do; `None`
    /// leaves the client to ask with `get_methods`.
    pub exposed: &'a dyn Fn(&str) -> Option<&'a [String]>,
}

impl<'a> Origin<'a> {
    /// An origin that knows no typeid's exposed methods.
    pub fn new(address: &'a Value) -> Origin<'a> {
        Origin {
            address,
            exposed: &|_| None,
        }
    }
}

impl std::fmt::Debug for Origin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin")
            .field("address", self.address)
            .finish_non_exhaustive()
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, CodecError> {
    Err(CodecError::new(format!("pickle: {}", msg.into())))
}

/// The `multiprocessing.managers` proxy type CPython's SyncManager uses for
/// `typeid`; every other typeid gets `AutoProxy` (which asks the server for the
/// exposed methods).
pub(crate) fn proxy_type(typeid: &str) -> &'static str {
    match typeid {
        "Event" => "EventProxy",
        "Lock" | "RLock" | "Semaphore" | "BoundedSemaphore" => "AcquirerProxy",
        "Condition" => "ConditionProxy",
        "Barrier" => "BarrierProxy",
        "Pool" => "PoolProxy",
        "list" => "ListProxy",
        "dict" => "DictProxy",
        "Value" => "ValueProxy",
        "Array" => "ArrayProxy",
        "Namespace" => "NamespaceProxy",
        "Iterator" => "IteratorProxy",
        _ => "AutoProxy",
    }
}

/// Where CPython finds the exception class for an error `kind`: `("builtins",
/// "KeyError")` for `KeyError`, `("queue", "Empty")` for `queue.Empty` … `None`
/// for kinds not on the whitelist (they travel as `#TRACEBACK` text).
pub(crate) fn exception_class(kind: &str) -> Option<(&'static str, &'static str)> {
    if let Some(name) = BUILTIN_EXCEPTIONS.iter().find(|n| **n == kind) {
        return Some(("builtins", name));
    }
    MODULE_EXCEPTIONS
        .iter()
        .find(|(k, _, _)| *k == kind)
        .map(|(_, m, n)| (*m, *n))
}

/// Decodes a request as CPython's client sends it: `(ident, methodname, args,
/// kwds)`, with `ident` None for public methods or the object's hex id. Tokens
/// (pickled proxies) among the arguments are taken as they come; a server uses
/// [`decode_request_for`].
/// Opaque values pass under the [`Globals::Default`] policy.
///
/// # Errors
///
/// [`CodecError`] when the pickle is malformed, over the decode budget
/// ([`PICKLE_BYTES_PER_INPUT_BYTE`](super::PICKLE_BYTES_PER_INPUT_BYTE) × its
/// length + 1 MiB), nested too deeply,
/// not a request (or reply) of the expected shape, or names a global the
/// policy refuses.
pub fn decode_request(payload: &[u8]) -> Result<Request, CodecError> {
    if let Some(req) = fast::request(payload) {
        return Ok(req);
    }
    request(decode::run(payload, Globals::Default)?)
}

/// Decodes a request as [`decode_request`] does, for the server at `address`
/// (CPython's form, as for [`Origin::address`]): a pickled proxy whose token
/// names another server is refused instead of being taken for an object here.
///
/// # Errors
///
/// [`CodecError`] when the pickle is malformed, over the decode budget
/// ([`PICKLE_BYTES_PER_INPUT_BYTE`](super::PICKLE_BYTES_PER_INPUT_BYTE) × its
/// length + 1 MiB), nested too deeply,
/// not a request (or reply) of the expected shape, or names a global the
/// policy refuses.
pub fn decode_request_for(payload: &[u8], address: &Value) -> Result<Request, CodecError> {
    decode_request_with(payload, address, Globals::Default)
}

/// Decodes a request as [`decode_request_for`] does, letting values name only
/// the globals `globals` allows (see [`Globals`]); any other is refused.
///
/// # Errors
///
/// [`CodecError`] when the pickle is malformed, over the decode budget
/// ([`PICKLE_BYTES_PER_INPUT_BYTE`](super::PICKLE_BYTES_PER_INPUT_BYTE) × its
/// length + 1 MiB), nested too deeply,
/// not a request (or reply) of the expected shape, or names a global the
/// policy refuses.
pub fn decode_request_with(
    payload: &[u8],
    address: &Value,
    globals: Globals,
) -> Result<Request, CodecError> {
    // The common call (atoms, no memo references, no globals, no tokens) in
    // one pass; anything else, or anything wrong, is the general machine's.
    if let Some(req) = fast::request(payload) {
        return Ok(req);
    }
    general_request(payload, address, globals)
}

/// Decodes a request as [`decode_request_with`] does, its method name
/// borrowed from `payload` where it can be (the common call then allocates
/// only its arguments), or else kept in `owned`.
///
/// # Errors
///
/// As [`decode_request_with`].
// The server's reactor reads requests this way; clients only write them.
#[cfg_attr(not(feature = "server"), allow(dead_code))]
pub(crate) fn decode_request_ref_with<'a>(
    payload: &'a [u8],
    address: &Value,
    globals: Globals,
    owned: &'a mut String,
) -> Result<RequestRef<'a>, CodecError> {
    if let Some(req) = fast::request_ref(payload) {
        return Ok(req);
    }
    let req = general_request(payload, address, globals)?;
    *owned = req.method;
    Ok(RequestRef {
        target: req.target,
        method: owned,
        args: req.args,
        kwargs: req.kwargs,
    })
}

/// A request the fast path left to the general machine, its tokens checked
/// against the server at `address`.
fn general_request(
    payload: &[u8],
    address: &Value,
    globals: Globals,
) -> Result<Request, CodecError> {
    let mut d = decode::run(payload, globals)?;
    d.home = Some(address.clone());
    request(d)
}

fn request(mut d: Decoded) -> Result<Request, CodecError> {
    let parts = match d.root() {
        Node::Tuple(p) if p.len() == 4 => [p[0], p[1], p[2], p[3]],
        _ => return err("a request must be a tuple (ident, methodname, args, kwds)"),
    };
    let target = match d.node(parts[0]) {
        Node::None => None,
        Node::Str(s) => match ObjectId::from_hex(s) {
            Some(id) => Some(id),
            None => return err(format!("ident '{s}' is not a shared object id")),
        },
        _ => return err("ident must be None or a hex string"),
    };
    let Some(method) = d.text(parts[1]).map(str::to_owned) else {
        return err("methodname must be a str");
    };
    d.spend(method.len())?;
    let args = match d.value(parts[2])? {
        v if matches!(v.resolved(), Value::Tuple(_) | Value::List(_)) => {
            v.into_items().expect("a sequence")
        }
        _ => return err("args must be a tuple"),
    };
    let kwargs = match d.value(parts[3])? {
        kv if matches!(kv.resolved(), Value::Dict(_)) => {
            let kv = kv.into_entries().expect("a dict");
            d.spend(kv.len() * std::mem::size_of::<(String, Value)>())?;
            kv.into_iter()
                .map(|(k, v)| match k.into_str() {
                    Ok(k) => Ok((k, v)),
                    Err(_) => err("keyword names must be str"),
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        Value::None => Vec::new(),
        _ => return err("kwds must be a dict"),
    };
    Ok(Request {
        target,
        method,
        args,
        kwargs,
    })
}

/// Appends the pickle of `req` (no frame header) to `out`, as CPython's client
/// would send it. `origin` describes the server, for the tokens of any
/// references among the arguments.
pub fn encode_request(req: &Request, origin: &Origin<'_>, out: &mut Vec<u8>) {
    let mut w = Writer { out, origin };
    w.begin();
    w.tuple_of(4, |w| {
        match req.target {
            Some(id) => w.str(&id.to_string()),
            None => w.value(&Value::None),
        }
        w.str(&req.method);
        w.value(&Value::Tuple(req.args.clone()));
        let kw = req
            .kwargs
            .iter()
            .map(|(k, v)| (Value::Str(k.clone()), v.clone()))
            .collect();
        w.value(&Value::Dict(kw));
    });
    w.end();
}

/// Appends the pickle of `reply` (no frame header) to `out`: CPython's `(kind,
/// result)` pair. `origin` describes the server, for every token written.
pub fn encode_reply(reply: &Reply, origin: &Origin<'_>, out: &mut Vec<u8>) {
    // The common reply (an atom, or a list or tuple of atoms) in one pass.
    if let Reply::Return(v) = reply {
        if small::write_return(v, origin, out) {
            return;
        }
    }
    // A value Python cannot rebuild (a list as a dict key) would break the
    // client's connection in `recv`; say so instead, as CPython's server does.
    let values: &[Value] = match reply {
        Reply::Return(v) => std::slice::from_ref(v),
        Reply::Error(e) => &e.args,
        _ => &[],
    };
    if let Some(why) = values.iter().find_map(unhashable) {
        let reply = Reply::Unserializable(why);
        return encode_reply(&reply, origin, out);
    }
    let mut w = Writer { out, origin };
    if let Reply::Return(v) = reply {
        // The common reply: its constant head in one copy.
        w.out.extend_from_slice(RETURN_HEAD);
        w.value(v);
        w.op(0x86); // TUPLE2: (kind, result)
        w.end();
        return;
    }
    w.begin();
    match reply {
        Reply::Return(_) => unreachable!("written above"),
        Reply::Proxy { exposed, token } => {
            w.str("#PROXY");
            w.str_tuple(exposed);
            w.token(token);
            w.op(0x86); // TUPLE2: (exposed, token)
        }
        Reply::Error(e) => match exception_class(&e.kind) {
            Some((module, name)) => {
                w.str("#ERROR");
                let args = if !e.args.is_empty() {
                    e.args.clone()
                } else if e.message.is_empty() {
                    Vec::new()
                } else {
                    vec![Value::Str(e.message.clone())]
                };
                w.reduce(module, name, &args);
            }
            None => {
                w.str("#TRACEBACK");
                w.str(&format!(
                    "Traceback (most recent call last):\n  (libmgr server)\n{e}\n"
                ));
            }
        },
        Reply::Traceback(s) if s.ends_with('\n') => {
            w.str("#TRACEBACK");
            w.str(s);
        }
        Reply::Traceback(s) => {
            // CPython's text (`format_exc()`) ends with a newline; its client
            // prints it between two rules of dashes.
            w.str("#TRACEBACK");
            w.str(&format!("{s}\n"));
        }
        Reply::Unserializable(s) => {
            w.str("#UNSERIALIZABLE");
            w.str(s);
        }
    }
    w.op(0x86); // TUPLE2: (kind, result)
    w.end();
}

/// The pickle opcodes of a tuple of str (no PROTO, no STOP): a type's exposed
/// methods, encoded once and then copied into each [`encode_created`] reply.
#[cfg(feature = "server")]
pub(crate) fn str_tuple_opcodes(items: &[String]) -> Vec<u8> {
    let none = Value::None;
    let origin = Origin::new(&none);
    let mut out = Vec::new();
    Writer {
        out: &mut out,
        origin: &origin,
    }
    .str_tuple(items);
    out
}

/// Appends the pickle of a `create` reply, `('#RETURN', (ident, exposed))`, as
/// [`encode_reply`] writes it, with `exposed` already encoded by
/// [`str_tuple_opcodes`].
#[cfg(feature = "server")]
pub(crate) fn encode_created(ident: &str, exposed: &[u8], out: &mut Vec<u8>) {
    let none = Value::None;
    let origin = Origin::new(&none);
    out.extend_from_slice(RETURN_HEAD);
    let mut w = Writer {
        out,
        origin: &origin,
    };
    w.str(ident);
    w.out.extend_from_slice(exposed);
    w.op(0x86); // TUPLE2: (ident, exposed)
    w.op(0x86); // TUPLE2: (kind, result)
    w.end();
}

/// PROTO 4 and `'#RETURN'` (SHORT_BINUNICODE): how every `#RETURN` reply starts.
const RETURN_HEAD: &[u8] = b"\x80\x04\x8c\x07#RETURN";

/// Why `v` cannot be unpickled by Python, if it cannot: an unhashable value
/// (list, dict, set, slice) used as a set element or dict key. Walked with an
/// explicit stack: a host may build values of any depth.
fn unhashable(v: &Value) -> Option<String> {
    if !v.resolved().is_container() || sequences_of_leaves(v) {
        return None;
    }
    // Per open container: whether it is itself in a hashed position, and whether
    // it is a set (whose members all are).
    let mut open: Vec<(bool, bool)> = Vec::new();
    // Shared values looked into so far, by identity and whether hashed: each
    // is checked once, so the walk costs what the value holds.
    let mut seen: Option<std::collections::HashSet<(*const Value, bool)>> = None;
    let mut walk = Walk::new(v);
    while let Some(step) = walk.next() {
        let (x, slot) = match step {
            Step::Leaf(x, slot) | Step::Enter(x, slot) => (x, slot),
            Step::Exit(_) => {
                open.pop();
                continue;
            }
        };
        let hashed = match (slot, open.last()) {
            (Slot::Key(_), _) => true,
            (Slot::Item(_), Some(&(hashed, is_set))) => hashed || is_set,
            _ => false,
        };
        if hashed
            && matches!(
                x,
                Value::List(_) | Value::Dict(_) | Value::Set(_) | Value::Slice(_)
            )
        {
            return Some(format!(
                "unhashable type: '{}' used as a set element or dict key",
                x.type_name()
            ));
        }
        if let (Step::Enter(..), Some(a)) = (step, walk.shared()) {
            let seen = seen.get_or_insert_with(Default::default);
            if !seen.insert((std::sync::Arc::as_ptr(a), hashed)) {
                walk.skip_children();
            }
        }
        if let Step::Enter(..) = step {
            // An opaque object's parts (its state dict …) are not hashed
            // with it: Python hashes the object as it defines.
            let hashed = hashed && !matches!(x, Value::Opaque(_));
            open.push((hashed, matches!(x, Value::Set(_) | Value::FrozenSet(_))));
        }
    }
    None
}

/// A list or tuple of leaves and lists or tuples of leaves (a `create` reply's
/// `(ident, exposed)`, a call's args): no value in it is in a hashed position,
/// which this shows without the walk.
fn sequences_of_leaves(v: &Value) -> bool {
    let leaf = |x: &Value| !x.is_container() && !x.is_shared();
    let seq = |v: &Value| match v {
        Value::List(items) | Value::Tuple(items) => Some(items.iter().all(leaf)),
        _ => None,
    };
    match v {
        Value::List(items) | Value::Tuple(items) => {
            items.iter().all(|x| leaf(x) || seq(x) == Some(true))
        }
        _ => false,
    }
}

impl Writer<'_, '_> {
    fn str_tuple(&mut self, items: &[String]) {
        self.tuple_of(items.len(), |w| items.iter().for_each(|s| w.str(s)));
    }
}

/// Decodes a reply from a CPython manager server: `(kind, result)`.
///
/// Opaque values in the result may name any global: a client trusts its server.
///
/// # Errors
///
/// [`CodecError`] when the pickle is malformed, over the decode budget
/// ([`PICKLE_BYTES_PER_INPUT_BYTE`](super::PICKLE_BYTES_PER_INPUT_BYTE) × its
/// length + 1 MiB), nested too deeply,
/// not a request (or reply) of the expected shape, or names a global the
/// policy refuses.
///
/// # Panics
///
/// Never: the `expect`s follow a match on the value's kind.
pub fn decode_reply(payload: &[u8]) -> Result<Reply, CodecError> {
    let mut d = decode::run(payload, Globals::Any)?;
    let (kind, result) = match d.root() {
        Node::Tuple(p) if p.len() == 2 => (p[0], p[1]),
        _ => return err("a reply must be a tuple (kind, result)"),
    };
    let text = |d: &mut Decoded, what: &str| match d.text(result).map(str::len) {
        Some(n) => {
            d.spend(n)?;
            Ok(d.text(result).unwrap_or_default().to_owned())
        }
        None => err(format!("{what} result must be a str")),
    };
    Ok(match d.text(kind) {
        Some("#RETURN") => Reply::Return(d.value(result)?),
        Some("#PROXY") => {
            let (exposed, token) = match d.node(result) {
                Node::Tuple(p) if p.len() == 2 => (p[0], p[1]),
                _ => return err("#PROXY result must be (exposed, token)"),
            };
            let exposed = match d.value(exposed)? {
                v if matches!(v.resolved(), Value::Tuple(_) | Value::List(_)) => {
                    let v = v.into_items().expect("a sequence");
                    d.spend(v.len() * std::mem::size_of::<String>())?;
                    v.into_iter()
                        .map(|m| match m.into_str() {
                            Ok(s) => Ok(s),
                            Err(_) => err("exposed method names must be str"),
                        })
                        .collect::<Result<Vec<_>, _>>()?
                }
                _ => return err("exposed must be a sequence of names"),
            };
            Reply::Proxy {
                exposed,
                token: d.token(token)?,
            }
        }
        Some("#ERROR") => match d.exception(result) {
            Some((kind, args)) => {
                d.spend(kind.len())?;
                let args = match d.value(args)? {
                    v if matches!(v.resolved(), Value::Tuple(_)) => {
                        v.into_items().expect("a tuple")
                    }
                    _ => return err("exception args must be a tuple"),
                };
                Reply::Error(remote_error(kind, args, &mut d)?)
            }
            None => return err("#ERROR result must be an exception"),
        },
        Some("#TRACEBACK") => Reply::Traceback(text(&mut d, "#TRACEBACK")?),
        Some("#UNSERIALIZABLE") => Reply::Unserializable(text(&mut d, "#UNSERIALIZABLE")?),
        Some(other) => return err(format!("unknown reply kind '{other}'")),
        None => return err("reply kind must be a str"),
    })
}

/// An exception's kind and args as a [`RemoteError`], shaped as libmgr's own
/// errors are: a lone str argument is the message; a `KeyError` keeps its key.
/// A message made from other arguments is their repr, cut to what is left of
/// the decode's budget (and charged).
fn remote_error(
    kind: String,
    mut args: Vec<Value>,
    d: &mut Decoded,
) -> Result<RemoteError, CodecError> {
    let message = match &args[..] {
        [one] if matches!(one.resolved(), Value::Str(_)) && kind != "KeyError" => {
            match args.pop().map(Value::into_str) {
                Some(Ok(message)) => return Ok(RemoteError::new(kind, message)),
                _ => unreachable!("matched a lone str"),
            }
        }
        [] => String::new(),
        [one] => repr_within(one, d)?,
        _ => {
            let all = Value::Tuple(args);
            let message = repr_within(&all, d)?;
            args = all.into_items().expect("built a tuple");
            message
        }
    };
    Ok(RemoteError {
        kind,
        message,
        args,
    })
}

/// `v`'s repr, at most as long as the decode's budget allows (cut with "…").
fn repr_within(v: &Value, d: &mut Decoded) -> Result<String, CodecError> {
    use std::fmt::Write;
    struct Capped(String, usize);
    impl Write for Capped {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            if self.0.len() + s.len() > self.1 {
                return Err(std::fmt::Error);
            }
            self.0.push_str(s);
            Ok(())
        }
    }
    let cap = d.left().min(1 << 20);
    let mut out = Capped(String::new(), cap);
    if write!(out, "{v}").is_err() {
        out.0.push('…');
    }
    d.spend(out.0.capacity())?;
    Ok(out.0)
}

#[cfg(test)]
mod tests;
