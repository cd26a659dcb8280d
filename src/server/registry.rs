//! Shared types: the [`SharedObject`] trait objects implement, and the registry that
//! maps a typeid to its [`TypeSpec`] (constructor, exposed methods, method_to_typeid).
//!
//! This module owns type descriptions only; live objects belong to
//! `objects` and calls are routed by `dispatch`.

use std::collections::HashMap;

use super::fasthash::FastMap;
use std::fmt;
use std::rc::Rc;

use super::context::{CallId, ConnId, Context, TimerId};
use crate::proto::codec::pickle;
use crate::proto::{ObjectId, RemoteError, Value};

/// Positional and keyword arguments of a call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallArgs {
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments, in the order given.
    pub kwargs: Vec<(String, Value)>,
}

impl CallArgs {
    /// Positional arguments only.
    pub fn positional(args: Vec<Value>) -> CallArgs {
        CallArgs {
            args,
            kwargs: Vec::new(),
        }
    }

    /// Takes the argument at `pos`, or the keyword `name`, as Python binds a
    /// parameter; `None` when neither was given.
    pub fn take(&mut self, pos: usize, name: &str) -> Option<Value> {
        if let Some(i) = self.kwargs.iter().position(|(k, _)| k == name) {
            return Some(self.kwargs.remove(i).1);
        }
        self.args
            .get_mut(pos)
            .map(|v| std::mem::replace(v, Value::None))
    }

    /// Checks the arguments' shape for a method binding them by hand with
    /// [`take`](Self::take) ([`extract`](Self::extract) checks on its own).
    ///
    /// # Errors
    ///
    /// A `TypeError` like Python's when more than `max` positional
    /// arguments or any keyword argument not in `known` was passed.
    ///
    /// # Examples
    ///
    /// ```
    /// use mgr::server::CallArgs;
    /// use mgr::Value;
    ///
    /// let mut args = CallArgs {
    ///     args: vec![Value::Int(1)],
    ///     kwargs: vec![("timeout".into(), Value::Float(0.5))],
    /// };
    /// args.check("get", 2, &["block", "timeout"])?;
    /// assert_eq!(args.take(0, "block"), Some(Value::Int(1)));
    /// assert_eq!(args.take(1, "timeout"), Some(Value::Float(0.5)));
    /// assert!(args.check("get", 0, &[]).is_err());
    /// # Ok::<(), mgr::RemoteError>(())
    /// ```
    pub fn check(&self, method: &str, max: usize, known: &[&str]) -> Result<(), RemoteError> {
        if self.args.len() > max {
            return Err(RemoteError::type_error(format!(
                "{method}() takes at most {max} positional arguments ({} given)",
                self.args.len()
            )));
        }
        if let Some((k, _)) = self
            .kwargs
            .iter()
            .find(|(k, _)| !known.contains(&k.as_str()))
        {
            return Err(RemoteError::type_error(format!(
                "{method}() got an unexpected keyword argument '{k}'"
            )));
        }
        Ok(())
    }

    /// Whether any argument holds an object reference.
    pub fn has_refs(&self) -> bool {
        self.args.iter().any(Value::has_refs) || self.kwargs.iter().any(|(_, v)| v.has_refs())
    }
}

/// What a call produced.
pub enum Outcome {
    /// A value, returned as `#RETURN` (or made a new shared object when the method is
    /// in the type's method_to_typeid).
    Value(Value),
    /// A new shared object, of the typeid method_to_typeid names for this method,
    /// returned as `#PROXY`.
    Object(Box<dyn SharedObject>),
    /// The answer comes later through the handle from
    /// [`Context::defer`](super::context::Context::defer).
    Deferred,
}

impl fmt::Debug for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Value(v) => f.debug_tuple("Value").field(v).finish(),
            Outcome::Object(_) => f.write_str("Object(..)"),
            Outcome::Deferred => f.write_str("Deferred"),
        }
    }
}

impl From<Value> for Outcome {
    fn from(v: Value) -> Outcome {
        Outcome::Value(v)
    }
}

/// The result of a call: an outcome, or a Python-kinded error.
pub type CallResult = Result<Outcome, RemoteError>;

/// A live shared object. Every callback runs on the server's thread with a
/// [`Context`] through which it may defer its answer, answer earlier deferred
/// calls, set timers and create objects.
///
/// Callbacks may rely on: the object is never called re-entrantly (a nested call
/// to the same object is refused), and it is dropped only after its callbacks have
/// returned. A callback that panics is caught: its caller gets a
/// `RuntimeError`, and the object is marked broken and never called again.
///
/// # Examples
///
/// A counter whose `wait_for(n)` blocks until `incr()` has reached `n` (a
/// deferred reply: no thread waits), and whose waiter is forgotten when its
/// client goes:
///
/// ```
/// use mgr::server::{CallArgs, CallId, CallResult, Context, Outcome, ReplyHandle, SharedObject, TypeSpec};
/// use mgr::Value;
///
/// #[derive(Default)]
/// struct Counter {
///     n: i64,
///     waiters: Vec<(i64, ReplyHandle)>,
/// }
///
/// impl SharedObject for Counter {
///     fn call(&mut self, cx: &mut Context<'_>, method: &str, args: CallArgs) -> CallResult {
///         match method {
///             "incr" => {
///                 let () = args.extract()?;
///                 self.n += 1;
///                 let (done, waiting) = std::mem::take(&mut self.waiters)
///                     .into_iter()
///                     .partition(|(at, _)| *at <= self.n);
///                 self.waiters = waiting;
///                 for (_, h) in done {
///                     cx.reply(h, Ok(Value::Int(self.n)));
///                 }
///                 Ok(Value::Int(self.n).into())
///             }
///             "wait_for" => {
///                 let (at,): (i64,) = args.extract()?;
///                 if self.n >= at {
///                     return Ok(Value::Int(self.n).into());
///                 }
///                 self.waiters.push((at, cx.defer()));
///                 Ok(Outcome::Deferred)
///             }
///             _ => unreachable!("the server calls exposed methods only"),
///         }
///     }
///
///     fn on_cancel(&mut self, _: &mut Context<'_>, call: CallId) {
///         self.waiters.retain(|(_, h)| h.id() != call);
///     }
///
///     fn get_value(&self) -> Result<Value, mgr::RemoteError> {
///         Ok(Value::Int(self.n))
///     }
/// }
///
/// let spec = TypeSpec::new("Counter", &["incr", "wait_for"], |_, args| {
///     let () = args.extract()?;
///     Ok(Box::new(Counter::default()))
/// })
/// .reads_only(&["wait_for"]);
/// assert!(spec.exposes("wait_for"));
/// ```
pub trait SharedObject: 'static {
    /// Runs method `method` (already checked against the type's exposed list).
    ///
    /// # Errors
    ///
    /// The error returned is what the caller sees raised, with its Python
    /// kind ([`RemoteError::type_error`] and friends).
    fn call(&mut self, cx: &mut Context<'_>, method: &str, args: CallArgs) -> CallResult;

    /// A timer set with [`Context::set_timer`] fired.
    fn on_timer(&mut self, _cx: &mut Context<'_>, _timer: TimerId) {}

    /// The client of a deferred call went away before the call was answered: forget
    /// the handle (answering it now would be a no-op).
    fn on_cancel(&mut self, _cx: &mut Context<'_>, _call: CallId) {}

    /// A connection this object asked to watch
    /// ([`Context::watch_disconnect`]) has closed: release what it held.
    fn on_disconnect(&mut self, _cx: &mut Context<'_>, _conn: ConnId) {}

    /// A client process this object asked to watch
    /// ([`Context::watch_process_exit`]) has exited: release what it held.
    fn on_process_exit(&mut self, _cx: &mut Context<'_>, _pid: u32) {}

    /// The last reference is gone and the object is about to be dropped.
    fn on_destroy(&mut self, _cx: &mut Context<'_>) {}

    /// `repr()` of the object (the `__repr__` fallback); `None` gives the default
    /// `<typeid object, id=…>` form.
    fn repr(&self) -> Option<String> {
        None
    }

    /// `str()` of the object (the `__str__` fallback); defaults to the repr.
    fn str(&self) -> Option<String> {
        self.repr()
    }

    /// The object's value as a copy (the `#GETVALUE` fallback, `_getvalue()` in Python).
    ///
    /// # Errors
    ///
    /// By default a `TypeError`: the object has no value to copy.
    fn get_value(&self) -> Result<Value, RemoteError> {
        Err(RemoteError::type_error("this object has no value to copy"))
    }

    /// Calls `f` with every object id this object holds a reference to (values
    /// stored inside it that are proxies). The table keeps those objects alive.
    fn visit_refs(&self, _f: &mut dyn FnMut(ObjectId)) {}

    /// The bytes of data this object holds, for the server's
    /// [`max_held_bytes`](super::ServerConfig::max_held_bytes) accounting; asked
    /// after every callback, so keep it O(1) (a running total). The default, 0,
    /// leaves the object out of the accounting. An object that counts should
    /// refuse growth past the cap with [`Context::check_growth`] before it
    /// changes anything.
    fn held_bytes(&self) -> usize {
        0
    }
}

/// Builds a new object of a type from the `create` arguments (or, for a typeid
/// used as a method_to_typeid target, from the method's result as the single
/// argument).
pub(crate) type Constructor =
    Rc<dyn Fn(&mut Context<'_>, CallArgs) -> Result<Box<dyn SharedObject>, RemoteError>>;

/// Everything the server knows about one typeid.
#[derive(Clone)]
pub struct TypeSpec {
    typeid: Rc<str>,
    exposed: Rc<[String]>,
    /// `exposed` as a pickled tuple of str, copied into `create` replies.
    exposed_pickle: Rc<[u8]>,
    /// Every exposed method, found with one lookup per call.
    methods: FastMap<String, Method>,
    constructor: Constructor,
    /// A built-in data type (`list`, `dict`, `Array`) whose current value a
    /// call may read when a proxy of it is an argument to iterate.
    read_by_value: bool,
}

/// What the server knows about one exposed method.
#[derive(Debug, Clone, Default)]
pub(crate) struct Method {
    /// The typeid its result becomes (method_to_typeid), if any.
    pub result_typeid: Option<Rc<str>>,
    /// It never lets go of or takes on object references (see
    /// [`TypeSpec::reads_only`]), so the server need not recount them after it.
    pub reads_only: bool,
    /// When it succeeds it stores each reference in its arguments exactly once
    /// and lets go of none (see [`TypeSpec::adds_only`]).
    pub adds_only: bool,
}

impl fmt::Debug for TypeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypeSpec")
            .field("typeid", &self.typeid)
            .field("exposed", &self.exposed)
            .field("methods", &self.methods)
            .finish_non_exhaustive()
    }
}

impl TypeSpec {
    /// A type named `typeid` whose objects `constructor` builds (from the
    /// `create` call's arguments), exposing the methods `exposed`: clients
    /// may call only those.
    ///
    /// # Examples
    ///
    /// ```
    /// use mgr::server::{CallArgs, CallResult, Context, SharedObject, TypeSpec};
    /// use mgr::Value;
    ///
    /// struct Greeter(String);
    /// impl SharedObject for Greeter {
    ///     fn call(&mut self, _: &mut Context<'_>, _: &str, _: CallArgs) -> CallResult {
    ///         Ok(Value::from(format!("hello from {}", self.0)).into())
    ///     }
    /// }
    ///
    /// // Python: `m.Greeter("host")` then `.hello()`.
    /// let spec = TypeSpec::new("Greeter", &["hello"], |_, args| {
    ///     let (name,): (String,) = args.extract()?;
    ///     Ok(Box::new(Greeter(name)))
    /// });
    /// assert_eq!(spec.typeid(), "Greeter");
    /// assert!(spec.exposes("hello") && !spec.exposes("__del__"));
    /// ```
    pub fn new<F>(typeid: &str, exposed: &[&str], constructor: F) -> TypeSpec
    where
        F: Fn(&mut Context<'_>, CallArgs) -> Result<Box<dyn SharedObject>, RemoteError> + 'static,
    {
        let exposed: Vec<String> = exposed.iter().map(|s| s.to_string()).collect();
        TypeSpec {
            typeid: typeid.into(),
            methods: exposed
                .iter()
                .map(|m| (m.clone(), Method::default()))
                .collect(),
            exposed_pickle: pickle::str_tuple_opcodes(&exposed).into(),
            exposed: exposed.into(),
            constructor: Rc::new(constructor),
            read_by_value: false,
        }
    }

    /// Marks a built-in data type whose objects' current value (their
    /// `get_value`) stands in for a proxy of them passed where Python would
    /// iterate it ([`Context::snapshot`]).
    pub(crate) fn read_by_value(mut self) -> TypeSpec {
        self.read_by_value = true;
        self
    }

    /// Whether [`read_by_value`](Self::read_by_value) marked this type.
    pub(crate) fn is_read_by_value(&self) -> bool {
        self.read_by_value
    }

    /// Declares that `method`'s result becomes a new shared object of `typeid`,
    /// returned to the caller as `#PROXY`. The method is exposed too (as CPython
    /// adds method_to_typeid's keys to the exposed list).
    #[must_use = "a TypeSpec builder returns the changed spec"]
    pub fn method_to_typeid(mut self, method: &str, typeid: &str) -> TypeSpec {
        if !self.methods.contains_key(method) {
            let mut v = self.exposed.to_vec();
            v.push(method.to_owned());
            self.exposed_pickle = pickle::str_tuple_opcodes(&v).into();
            self.exposed = v.into();
        }
        self.methods
            .entry(method.to_owned())
            .or_default()
            .result_typeid = Some(typeid.into());
        self
    }

    /// Declares that these exposed methods neither store nor drop object
    /// references (`__getitem__`, `__len__` …). After any other call of an object
    /// that holds references, the server recounts what it holds — the whole
    /// container — so marking the readers keeps reads of a container of proxies
    /// O(1). A reader that does change what it holds must say so with
    /// [`Context::refs_changed`]. Names that are not exposed are ignored.
    #[must_use = "a TypeSpec builder returns the changed spec"]
    pub fn reads_only(mut self, methods: &[&str]) -> TypeSpec {
        for m in methods {
            if let Some(info) = self.methods.get_mut(*m) {
                info.reads_only = true;
            }
        }
        self
    }

    /// Declares that these exposed methods, when they succeed, store every object
    /// reference in their arguments exactly once and let go of nothing
    /// (`list.append`, `list.insert`). The server then counts the new references
    /// from the arguments instead of recounting the whole container, so building
    /// a list of n proxies costs O(n) rather than O(n²); a call with no references
    /// in its arguments costs nothing extra. When such a call fails, the server
    /// recounts. Not for methods that may hand an argument on (`Queue.put` to a
    /// waiting getter) or store only part of it (`extend` of a dict stores its
    /// keys). Names that are not exposed are ignored.
    #[must_use = "a TypeSpec builder returns the changed spec"]
    pub fn adds_only(mut self, methods: &[&str]) -> TypeSpec {
        for m in methods {
            if let Some(info) = self.methods.get_mut(*m) {
                info.adds_only = true;
            }
        }
        self
    }

    /// The typeid.
    pub fn typeid(&self) -> &str {
        &self.typeid
    }

    /// The exposed method names, in declaration order.
    pub fn exposed(&self) -> &[String] {
        &self.exposed
    }

    /// [`exposed`](Self::exposed) as pickle opcodes (a tuple of str).
    pub(crate) fn exposed_pickle(&self) -> &[u8] {
        &self.exposed_pickle
    }

    pub(crate) fn typeid_rc(&self) -> Rc<str> {
        self.typeid.clone()
    }

    /// The exposed method `name`, or `None` when it may not be called.
    pub(crate) fn method(&self, name: &str) -> Option<&Method> {
        self.methods.get(name)
    }

    /// Whether `method` may be called.
    pub fn exposes(&self, method: &str) -> bool {
        self.methods.contains_key(method)
    }

    /// The typeid `method`'s result becomes, if any.
    pub fn result_typeid(&self, method: &str) -> Option<&Rc<str>> {
        self.methods.get(method)?.result_typeid.as_ref()
    }

    pub(crate) fn constructor(&self) -> Constructor {
        self.constructor.clone()
    }
}

/// typeid → [`TypeSpec`], and the named objects: typeids whose `create`
/// returns one long-lived object (see [`Server::expose`](super::Server::expose)).
#[derive(Debug, Default)]
pub(crate) struct Registry {
    types: HashMap<String, Rc<TypeSpec>>,
    /// Each name's object, and that object's type.
    named: HashMap<String, (ObjectId, Rc<TypeSpec>)>,
    /// How many names publish each object (each holds one reference).
    pins: HashMap<ObjectId, u32>,
}

impl Registry {
    /// Adds or replaces a type.
    pub fn insert(&mut self, spec: TypeSpec) {
        self.types.insert(spec.typeid().to_owned(), Rc::new(spec));
    }

    /// Looks a typeid up.
    pub fn get(&self, typeid: &str) -> Option<&Rc<TypeSpec>> {
        self.types.get(typeid)
    }

    /// Registered typeids, sorted.
    pub fn typeids(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.types.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// The object published under `name`, if any.
    pub fn named(&self, name: &str) -> Option<ObjectId> {
        self.named.get(name).map(|(id, _)| *id)
    }

    /// The exposed methods of `typeid`'s objects: a registered type's, or for
    /// a name, its object's type's (pickled proxies carry them, so a client
    /// rebuilding one needs no `get_methods` round trip).
    pub fn exposed_of(&self, typeid: &str) -> Option<&[String]> {
        match self.types.get(typeid) {
            Some(spec) => Some(spec.exposed()),
            None => self.named.get(typeid).map(|(_, spec)| spec.exposed()),
        }
    }

    /// The names objects are published under, sorted.
    #[cfg(test)]
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.named.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// Why `name` cannot name a new published object, if it cannot: it is
    /// empty, a registered typeid, or published already.
    pub(crate) fn check_name(&self, name: &str) -> Result<(), String> {
        if name.is_empty() {
            Err("the name of a published object must not be empty".to_owned())
        } else if self.types.contains_key(name) {
            Err(format!(
                "'{name}' is a registered typeid: a published object needs a name of its own"
            ))
        } else if self.named.contains_key(name) {
            Err(format!("an object is published as '{name}' already"))
        } else {
            Ok(())
        }
    }

    /// Records that `name` publishes `id` (after [`check_name`](Self::check_name)).
    pub(crate) fn add_named(&mut self, name: &str, id: ObjectId, spec: Rc<TypeSpec>) {
        self.named.insert(name.to_owned(), (id, spec));
        *self.pins.entry(id).or_insert(0) += 1;
    }

    /// Forgets the name; returns the object it published.
    pub(crate) fn remove_named(&mut self, name: &str) -> Option<ObjectId> {
        let (id, _) = self.named.remove(name)?;
        if let Some(n) = self.pins.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                self.pins.remove(&id);
            }
        }
        Some(id)
    }

    /// The references the names hold to `id` (that no client may drop).
    pub(crate) fn pins(&self, id: ObjectId) -> u32 {
        self.pins.get(&id).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_binds_like_python() {
        let mut a = CallArgs {
            args: vec![Value::Int(1)],
            kwargs: vec![("timeout".into(), Value::Float(2.0))],
        };
        assert_eq!(a.take(0, "block"), Some(Value::Int(1)));
        assert_eq!(a.take(1, "timeout"), Some(Value::Float(2.0)));
        assert_eq!(a.take(2, "other"), None);
    }

    #[test]
    fn check_rejects_extra_arguments() {
        let a = CallArgs {
            args: vec![Value::None; 3],
            kwargs: vec![],
        };
        assert!(a
            .check("get", 2, &[])
            .unwrap_err()
            .message
            .contains("at most 2"));
        let a = CallArgs {
            args: vec![],
            kwargs: vec![("bogus".into(), Value::None)],
        };
        let e = a.check("get", 2, &["block"]).unwrap_err();
        assert_eq!(e.kind, "TypeError");
        assert!(e.message.contains("'bogus'"));
    }

    #[test]
    fn names_are_checked_against_typeids_and_each_other() {
        let mut r = Registry::default();
        r.insert(TypeSpec::new("dict", &[], |_, _| {
            Err(RemoteError::type_error("unused"))
        }));
        assert!(r.check_name("").is_err());
        assert!(r
            .check_name("dict")
            .unwrap_err()
            .contains("registered typeid"));
        assert!(r.check_name("get_state").is_ok());
        let spec = r.get("dict").unwrap().clone();
        r.add_named("get_state", ObjectId(7), spec.clone());
        r.add_named("alias", ObjectId(7), spec);
        assert_eq!(r.pins(ObjectId(7)), 2);
        assert!(r.check_name("get_state").unwrap_err().contains("already"));
        assert_eq!(r.named("get_state"), Some(ObjectId(7)));
        assert_eq!(r.names(), ["alias", "get_state"]);
        assert_eq!(r.exposed_of("alias"), Some(&[][..]), "the object's type's");
        assert_eq!(r.exposed_of("nothing"), None);
        assert_eq!(r.remove_named("get_state"), Some(ObjectId(7)));
        assert_eq!(r.named("get_state"), None);
        assert_eq!(r.pins(ObjectId(7)), 1);
        assert_eq!(r.remove_named("alias"), Some(ObjectId(7)));
        assert_eq!(r.pins(ObjectId(7)), 0);
    }

    #[test]
    fn method_to_typeid_exposes_method() {
        let spec = TypeSpec::new("dict", &["get"], |_, _| {
            Err(RemoteError::type_error("unused"))
        })
        .method_to_typeid("__iter__", "Iterator");
        assert!(spec.exposes("__iter__"));
        assert_eq!(spec.exposed(), ["get", "__iter__"]);
        assert_eq!(
            spec.result_typeid("__iter__").map(|s| &**s),
            Some("Iterator")
        );
        assert!(spec.result_typeid("get").is_none());
    }
}
