//! Serving one decoded request: the public methods, method calls on objects, the
//! `__str__` / `__repr__` / `#GETVALUE` fallbacks, and `#PROXY` results.
//!
//! Works on [`Core`] and one connection's [`Session`]; it never touches sockets or
//! encodings (ids are turned into the connection's form through [`IdStyle`]).

use std::fmt::Write as _;
use std::rc::Rc;

use super::context::{CallId, ConnId, Core, Recount, Unavailable};
use super::fasthash::FastMap;
use super::guard;
use super::procs;
use super::registry::{CallArgs, Outcome, TypeSpec};
use crate::proto::{ObjectId, Reply, RequestRef, Token, Value};

/// How object ids appear in values for a connection: integers on the native path,
/// the hex strings CPython uses on the pickle path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdStyle {
    Int,
    /// Pickle connections: ids are CPython-style hex strings.
    Hex,
}

/// Per-connection state the dispatcher needs.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) id: ConnId,
    pub(crate) ids: IdStyle,
    /// Whether references taken over this connection belong to it (released when it
    /// closes). True on the native path; CPython's clients take references over
    /// short-lived connections, so theirs are global, as in CPython.
    pub(crate) owns_refs: bool,
    /// After `accept_connection` (or always, natively): the connection serves
    /// calls until EOF instead of closing after one public request.
    pub(crate) persistent: bool,
    pub(crate) owned: FastMap<ObjectId, u32>,
}

impl Session {
    pub(crate) fn new(id: ConnId, ids: IdStyle, owns_refs: bool) -> Session {
        Session {
            id,
            ids,
            owns_refs,
            persistent: owns_refs,
            owned: FastMap::default(),
        }
    }

    fn id_value(&self, id: ObjectId) -> Value {
        match self.ids {
            IdStyle::Int => Value::Int(id.0 as i64),
            IdStyle::Hex => Value::Str(id.to_string()),
        }
    }

    /// Takes a reference on this connection's behalf: it belongs to the
    /// connection (native path), else to the peer's process when its pid is
    /// known (a Unix socket: released when the process exits), else it is global.
    pub(crate) fn take_ref(&mut self, core: &mut Core, id: ObjectId) -> bool {
        if !core.objects.incref(id) {
            return false;
        }
        if self.owns_refs {
            *self.owned.entry(id).or_insert(0) += 1;
        } else if let Some(pid) = self.pid(core) {
            core.procs.take(pid, id);
        }
        true
    }

    /// The peer's pid, when the server knows it.
    fn pid(&self, core: &Core) -> Option<u32> {
        core.peers.get(&self.id).and_then(|p| p.pid)
    }

    /// Drops a reference: one this connection (or its process) owns if it has
    /// any, else a global one. A decref a process sent just before it exited,
    /// read after its exit released its references, is ignored (it would
    /// drop someone else's): true if the object exists.
    pub(crate) fn drop_ref(&mut self, core: &mut Core, id: ObjectId) -> bool {
        if let Some(n) = self.owned.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                self.owned.remove(&id);
            }
        } else if let Some(pid) = self.pid(core) {
            if !core.procs.give_back(pid, id)
                && !core.procs.by_pid.contains_key(&pid)
                && procs::has_exited(pid)
            {
                return core.objects.contains(id);
            }
        }
        core.objects.decref(id)
    }

    /// Releases every reference the connection still owns (it is closing).
    pub(crate) fn release_all(&mut self, core: &mut Core) {
        for (id, n) in self.owned.drain() {
            for _ in 0..n {
                core.objects.decref(id);
            }
        }
    }
}

/// What serving a request produced.
#[derive(Debug)]
pub(crate) enum Dispatched {
    /// Answer now.
    Reply(Reply),
    /// The answer comes later through this handle.
    Deferred(CallId),
    /// A `create` succeeded: the reply is `(ident, exposed)` of a new object of
    /// `spec`'s type, left to the encoder (a pickle connection gets the type's
    /// exposed tuple pre-encoded, not a tuple of strings built and dropped).
    Created {
        /// The new object's id in the session's style.
        ident: Value,
        /// Its type.
        spec: Rc<TypeSpec>,
    },
}

/// The `#RETURN` of a [`Dispatched::Created`] as a value: `(ident, exposed)`.
pub(crate) fn created_reply(ident: Value, spec: &TypeSpec) -> Reply {
    let exposed = spec.exposed().iter().cloned().map(Value::Str).collect();
    Reply::Return(Value::Tuple(vec![ident, Value::Tuple(exposed)]))
}

fn traceback(kind: &str, msg: impl std::fmt::Display) -> Dispatched {
    Dispatched::Reply(Reply::Traceback(format!(
        "Traceback (most recent call last):\n  (libmgr server)\n{kind}: {msg}"
    )))
}

/// An error reply of kind RuntimeError (a `RuntimeError` instance for Python).
fn runtime_error(msg: String) -> Dispatched {
    Dispatched::Reply(Reply::Error(crate::proto::RemoteError::new(
        "RuntimeError",
        msg,
    )))
}

/// The answer for any call on an object a panic has broken.
fn broken(id: ObjectId, typeid: &str, why: &str) -> Dispatched {
    runtime_error(format!(
        "shared object {id} ({typeid}) is broken: an earlier callback panicked: {why}"
    ))
}

fn unknown_object(id: impl std::fmt::Display) -> Dispatched {
    traceback("KeyError", format!("'{id}' (no such shared object)"))
}

/// Reads an object id from a public method's argument: an int, a hex string, or
/// a token.
fn id_arg(v: Option<&Value>) -> Result<ObjectId, String> {
    match v.map(Value::resolved) {
        Some(Value::Int(i)) => Ok(ObjectId(*i as u64)),
        Some(Value::Str(s)) => ObjectId::from_hex(s).ok_or_else(|| format!("'{s}'")),
        Some(Value::Ref(t)) => Ok(t.id),
        Some(other) => Err(other.to_string()),
        None => Err("missing object id".to_owned()),
    }
}

/// Serves one request, then sweeps what it freed: once the callback has returned,
/// an object whose last reference went is gone before the next request is read
/// (so `decref` then `number_of_objects` on one connection counts it out).
pub(crate) fn dispatch(core: &mut Core, session: &mut Session, req: RequestRef<'_>) -> Dispatched {
    let mut args = CallArgs {
        args: req.args,
        kwargs: req.kwargs,
    };
    // An argument shared with nothing else is made its own (free: the decoder
    // that shared it is gone); one aliased by another argument stays shared,
    // and methods see through it.
    args.args.iter_mut().for_each(Value::take_unique);
    args.kwargs.iter_mut().for_each(|(_, v)| v.take_unique());
    let done = match req.target {
        None => public(core, session, req.method, args),
        Some(id) => call(core, session, id, req.method, args),
    };
    if let Dispatched::Reply(Reply::Return(v)) = &done {
        core.lend(v);
    }
    if core.objects.needs_sweep() {
        core.sweep();
    }
    done
}

fn public(core: &mut Core, session: &mut Session, method: &str, mut args: CallArgs) -> Dispatched {
    let done = |v: Value| Dispatched::Reply(Reply::Return(v));
    match method {
        "create" => {
            if !matches!(args.args.first(), Some(Value::Str(_))) {
                return traceback("TypeError", "create() needs a typeid string");
            }
            let typeid = args.args.remove(0).into_str().unwrap_or_default();
            let made = match core.registry.named(&typeid) {
                Some(id) => named(core, &typeid, id, &args),
                None if core.registry.get(&typeid).is_some() => {
                    core.construct(Some(session.id), &typeid, args)
                }
                None => {
                    // CPython's server looks the typeid up in a dict: a KeyError.
                    let why = if matches!(typeid.as_str(), "Pool" | "AsyncResult") {
                        // SyncManager registers them, but they run Python code in
                        // the server's process, which libmgr never does.
                        " (a Pool runs Python functions in the server's process; libmgr runs no \
                         Python: make a multiprocessing.Pool in the client instead)"
                    } else {
                        ""
                    };
                    let key = Value::Str(typeid);
                    return Dispatched::Reply(Reply::Traceback(format!(
                        "Traceback (most recent call last):\n  (libmgr server) unknown typeid {key}{why}\nKeyError: {key}"
                    )));
                }
            };
            match made {
                Ok(id) => {
                    session.take_ref(core, id);
                    let spec = Rc::clone(&core.objects.get(id).expect("live").spec);
                    Dispatched::Created {
                        ident: session.id_value(id),
                        spec,
                    }
                }
                Err(e) => traceback(&e.kind, &e.message),
            }
        }
        "incref" | "decref" => match id_arg(args.args.first()) {
            Ok(id) => {
                let pins = core.registry.pins(id);
                if method == "decref"
                    && pins > 0
                    && core.objects.get(id).is_some_and(|s| s.refcount <= pins)
                {
                    // Only the server's own references are left: an extra
                    // decref must not destroy a published object.
                    return traceback(
                        "KeyError",
                        format!("'{id}' (a published object: no client reference is left to drop)"),
                    );
                }
                let ok = if method == "incref" {
                    session.take_ref(core, id)
                } else {
                    session.drop_ref(core, id)
                };
                if ok {
                    done(Value::None)
                } else {
                    unknown_object(id)
                }
            }
            Err(e) => traceback("KeyError", e),
        },
        "get_methods" => match id_arg(args.args.first()) {
            Ok(id) => match core.objects.get(id) {
                Some(slot) => done(Value::Tuple(
                    slot.spec
                        .exposed()
                        .iter()
                        .cloned()
                        .map(Value::Str)
                        .collect(),
                )),
                None => unknown_object(id),
            },
            Err(e) => traceback("KeyError", e),
        },
        "debug_info" => done(Value::Str(debug_info(core))),
        "number_of_objects" => done(Value::Int(core.held_objects() as i64)),
        // libmgr's own (CPython has no such method): the server's counters
        // as a dict, what `Server::stats` returns (`mgrctl stats`).
        "stats" => done(core.snapshot().to_value()),
        "dummy" => done(Value::None),
        "accept_connection" => {
            session.persistent = true;
            done(Value::None)
        }
        "shutdown" => {
            core.shutdown_requested = true;
            done(Value::None)
        }
        other => match core.segments.public(other, &args.args) {
            Some(Ok(v)) => done(v),
            Some(Err(e)) => traceback(&e.kind, &e.message),
            None => traceback("AssertionError", format!("'{other}' unrecognized")),
        },
    }
}

/// `create` of a typeid that names a published object: that object (the
/// caller takes a reference), as CPython's `register('get_queue', callable=lambda:
/// queue)` returns the same queue every time. Arguments are refused, as that
/// lambda refuses them.
fn named(
    core: &Core,
    name: &str,
    id: ObjectId,
    args: &CallArgs,
) -> Result<ObjectId, crate::proto::RemoteError> {
    if !args.args.is_empty() || !args.kwargs.is_empty() {
        return Err(crate::proto::RemoteError::type_error(format!(
            "'{name}' names a published object: create() takes no arguments for it"
        )));
    }
    match core.objects.get(id) {
        Some(_) => Ok(id),
        None => Err(crate::proto::RemoteError::new(
            "KeyError",
            format!("'{name}' names an object that is gone"),
        )),
    }
}

/// CPython's debug_info: one entry per object with its refcount and str().
/// The objects and references are those `number_of_objects` counts: references
/// lent to replies in flight are left out, and so is an object only they hold.
fn debug_info(core: &Core) -> String {
    let mut out = String::new();
    let lent: FastMap<ObjectId, u32> = core.loans.lent().collect();
    let mut live: Vec<_> = core
        .objects
        .iter()
        .filter_map(|(id, slot)| match lent.get(&id) {
            None => Some((id, slot, slot.refcount)),
            Some(&n) if slot.refcount > n => Some((id, slot, slot.refcount - n)),
            Some(_) => None, // as in `Core::held_objects`
        })
        .collect();
    live.sort_by_key(|(id, _, _)| *id);
    for (id, slot, refcount) in live {
        // An object too big for its repr() to be a result is not printed
        // (only 75 characters of it would be shown).
        let text = slot
            .object
            .as_ref()
            .filter(|_| slot.broken.is_none() && slot.bytes <= core.limits.max_result)
            .and_then(|o| guard::catch(|| o.str()).ok().flatten())
            .unwrap_or_else(|| format!("<{} object>", slot.spec.typeid()));
        let short: String = text.chars().take(75).collect();
        // Entries joined by newlines, as CPython's '\n'.join(result).
        if !out.is_empty() {
            out.push('\n');
        }
        let _ = write!(out, "  {id}:       refcount={refcount}\n    {short}");
    }
    out
}

fn call(
    core: &mut Core,
    session: &mut Session,
    id: ObjectId,
    method: &str,
    args: CallArgs,
) -> Dispatched {
    let Some(slot) = core.objects.get(id) else {
        return unknown_object(id);
    };
    let spec = slot.spec.clone();
    let Some(info) = spec.method(method) else {
        return fallback(core, id, method, &spec.typeid_rc(), spec.exposed());
    };
    let has_refs = args.has_refs();
    let mut added = Vec::new();
    if has_refs {
        let mut missing = None;
        let mut check = |t: &Token| {
            if !core.objects.contains(t.id) {
                missing = Some(t.id);
            }
            if info.adds_only {
                added.push(t.id);
            }
        };
        args.args.iter().for_each(|v| v.visit_refs(&mut check));
        args.kwargs
            .iter()
            .for_each(|(_, v)| v.visit_refs(&mut check));
        if let Some(m) = missing {
            return traceback(
                "KeyError",
                format!("'{m}' (argument refers to no shared object)"),
            );
        }
    }
    let proxy = info.result_typeid.clone();
    let recount = if info.adds_only {
        Recount::Added(added)
    } else if has_refs {
        Recount::Always
    } else if info.reads_only {
        Recount::IfAsked
    } else {
        Recount::IfHolding
    };
    let ran = core.with_object(id, Some(session.id), proxy.clone(), recount, |obj, cx| {
        obj.call(cx, method, args)
    });
    let (result, deferred) = match ran {
        Ok(r) => r,
        Err(Unavailable::Unknown) => return unknown_object(id),
        Err(Unavailable::Busy) => {
            return traceback(
                "RuntimeError",
                format!("shared object {id} is busy (re-entrant call)"),
            )
        }
        Err(Unavailable::Panicked(why)) => {
            return runtime_error(format!(
                "{method}() of shared object {id} ({}) panicked: {why}; the object is now broken",
                spec.typeid()
            ))
        }
        Err(Unavailable::Broken(why)) => return broken(id, spec.typeid(), &why),
    };
    if info.adds_only && result.is_err() {
        // It may have stored none of what its arguments named.
        core.rescan_refs(id);
    }
    if let Ok(Outcome::Deferred) = result {
        return match deferred {
            Some(h) => Dispatched::Deferred(h),
            None => traceback(
                "RuntimeError",
                format!("{method}() deferred without taking a reply handle"),
            ),
        };
    }
    if let Some(h) = deferred {
        core.discard(h);
    }
    Dispatched::Reply(match result {
        Ok(Outcome::Value(v)) => match proxy {
            Some(typeid) => proxy_from_value(core, session, &typeid, v),
            None => Reply::Return(v),
        },
        Ok(Outcome::Object(object)) => match proxy.and_then(|t| core.registry.get(&t).cloned()) {
            Some(spec) => match core.admit(Some(session.id), spec.clone(), object) {
                Ok(new) => {
                    core.rescan_refs(new);
                    proxy_reply(core, session, new, spec.typeid())
                }
                Err(e) => Reply::Error(e),
            },
            None => Reply::Traceback(format!(
                "TypeError: {method}() returned a shared object but has no registered method_to_typeid entry"
            )),
        },
        Ok(Outcome::Deferred) => unreachable!("handled above"),
        Err(e) => Reply::Error(e),
    })
}

/// Makes `value` a new shared object of `typeid` (method_to_typeid) and answers
/// with its `#PROXY`.
pub(crate) fn proxy_from_value(
    core: &mut Core,
    session: &mut Session,
    typeid: &Rc<str>,
    value: Value,
) -> Reply {
    match core.construct(Some(session.id), typeid, CallArgs::positional(vec![value])) {
        Ok(id) => proxy_reply(core, session, id, typeid),
        Err(e) => Reply::Error(e),
    }
}

fn proxy_reply(core: &mut Core, session: &mut Session, id: ObjectId, typeid: &str) -> Reply {
    session.take_ref(core, id);
    let exposed = core
        .objects
        .get(id)
        .expect("just created")
        .spec
        .exposed()
        .to_vec();
    Reply::Proxy {
        exposed,
        token: Token {
            typeid: typeid.to_owned(),
            id,
        },
    }
}

fn fallback(
    core: &mut Core,
    id: ObjectId,
    method: &str,
    typeid: &str,
    exposed: &[String],
) -> Dispatched {
    let Some(slot) = core.objects.get(id) else {
        return unknown_object(id);
    };
    if let Some(why) = &slot.broken {
        return broken(id, typeid, why);
    }
    let Some(object) = slot.object.as_ref() else {
        return traceback(
            "RuntimeError",
            format!("shared object {id} is busy (re-entrant call)"),
        );
    };
    if matches!(method, "__repr__" | "__str__" | "#GETVALUE") {
        // A copy of everything the object holds: bounded like any result.
        if let Err(e) = super::builtins::size::check_result(slot.bytes, core.limits.max_result) {
            return Dispatched::Reply(Reply::Error(e));
        }
    }
    let default_repr = || format!("<{typeid} object, id={id}>");
    // These take `&self`, so a panic leaves the object as it was: an error for
    // this call only.
    let ran = guard::catch(|| match method {
        "__repr__" => Some(Reply::Return(Value::Str(
            object.repr().unwrap_or_else(default_repr),
        ))),
        "__str__" => Some(Reply::Return(Value::Str(
            object.str().unwrap_or_else(default_repr),
        ))),
        "#GETVALUE" => Some(object.get_value().into()),
        _ => None,
    });
    match ran {
        Ok(Some(reply)) => Dispatched::Reply(reply),
        Ok(None) => traceback(
            "AttributeError",
            format!("method '{method}' of '{typeid}' object is not in exposed={exposed:?}"),
        ),
        Err(why) => runtime_error(format!(
            "{method} of shared object {id} ({typeid}) panicked: {why}"
        )),
    }
}
