//! The whitelisted globals: which (module, name) pairs a pickle may name, and
//! what "calling" each one (REDUCE, NEWOBJ, BUILD) means as data — a slice, a
//! set, a list from an array's bytes, a Token, a rebuilt proxy, an exception.
//! Nothing here imports or runs anything: a name that is not listed is an error.

use super::decode::{err, Ix, Machine, Node, Object, NO_MEMO};
use crate::proto::codec::{CodecError, Globals};
use crate::proto::value::{Form, Slice};

/// A whitelisted global, resolved by name only.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Global {
    /// `multiprocessing.managers.Token`.
    Token,
    /// `multiprocessing.managers.RebuildProxy`.
    RebuildProxy,
    /// `multiprocessing.managers.AutoProxy` or one of the SyncManager proxy types.
    ProxyType,
    /// `builtins.slice`.
    Slice,
    /// `builtins.set` / `builtins.frozenset` (protocols 2 and 3 reduce sets to them).
    Set(bool),
    /// `builtins.list` / `builtins.tuple` (managers.py reduces dict views to
    /// `list(items)`).
    Seq(bool),
    /// `builtins.bytearray` (`true`, kept as the call that makes it) /
    /// `builtins.bytes` (protocols 2–4).
    Bytes(bool),
    /// `builtins.range`: materialized as a list (`m.list(range(10))`), within
    /// the same input-proportional budget as every other value.
    Range,
    /// `_codecs.encode` (protocol 2 pickles bytes as `encode(str, 'latin1')`).
    CodecsEncode,
    /// `_codecs.decode`, only as `decode(bytes, 'utf-8', 'surrogatepass')`: a
    /// str with lone surrogates, kept as that opaque call.
    CodecsDecode,
    /// `builtins.object` (the base in `copyreg._reconstructor`).
    Object,
    /// `array.array`.
    Array,
    /// `array._array_reconstructor`.
    ArrayReconstructor,
    /// `copyreg._reconstructor`.
    Reconstructor,
    /// `copyreg.__newobj__`.
    NewObj,
    /// An exception class, by its libmgr kind (`KeyError`, `queue.Empty`).
    Exception(String),
    /// Another global the policy lets values name: (module, name). Calling it
    /// makes an opaque object.
    Other(Box<(String, String)>),
    /// An iterator constructor over data, interpreted: the iterator becomes
    /// the list of what it would yield.
    Iter(IterFn),
}

/// The iterator constructors (and `getattr` for `str.lower` & co.) the decoder
/// interprets over data, never calling anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IterFn {
    /// `iter(seq)`, then BUILD with the position.
    Iter,
    /// `reversed(seq)`, then BUILD with the position.
    Reversed,
    /// `zip(*iterables)`.
    Zip,
    /// `enumerate(iterable, start)`.
    Enumerate,
    /// `map(f, iterable)` with a pure builtin `f`.
    Map,
    /// `getattr(str, 'lower' | 'upper' | 'casefold')`.
    Getattr,
}

impl Global {
    /// The (module, name) a value naming this global carries, for the globals
    /// that may be values (`builtins.list` as a `defaultdict`'s factory, an
    /// exception class, an allowed class); `None` for the decoding machinery
    /// (Token, RebuildProxy, copyreg's helpers …).
    pub(super) fn py_name(&self) -> Option<(&str, &str)> {
        Some(match self {
            Global::Slice => ("builtins", "slice"),
            Global::Set(false) => ("builtins", "set"),
            Global::Set(true) => ("builtins", "frozenset"),
            Global::Seq(false) => ("builtins", "list"),
            Global::Seq(true) => ("builtins", "tuple"),
            Global::Range => ("builtins", "range"),
            Global::Bytes(true) => ("builtins", "bytearray"),
            Global::ArrayReconstructor => ("array", "_array_reconstructor"),
            Global::Object => ("builtins", "object"),
            Global::Array => ("array", "array"),
            Global::CodecsDecode => ("_codecs", "decode"),
            Global::Exception(kind) => super::exception_class(kind)?,
            Global::Other(mn) => (&mn.0, &mn.1),
            Global::Iter(IterFn::Iter) => ("builtins", "iter"),
            Global::Iter(IterFn::Reversed) => ("builtins", "reversed"),
            Global::Iter(IterFn::Zip) => ("builtins", "zip"),
            Global::Iter(IterFn::Enumerate) => ("builtins", "enumerate"),
            Global::Iter(IterFn::Map) => ("builtins", "map"),
            Global::Iter(IterFn::Getattr) => ("builtins", "getattr"),
            _ => return None,
        })
    }
}

/// Builtin exception classes a pickle may name (and the encoder may emit).
pub(super) const BUILTIN_EXCEPTIONS: &[&str] = &[
    "ArithmeticError",
    "AssertionError",
    "AttributeError",
    "BaseException",
    "BlockingIOError",
    "BrokenPipeError",
    "BufferError",
    "ConnectionAbortedError",
    "ConnectionError",
    "ConnectionRefusedError",
    "ConnectionResetError",
    "EOFError",
    "Exception",
    "FileExistsError",
    "FileNotFoundError",
    "FloatingPointError",
    "IndexError",
    "InterruptedError",
    "IsADirectoryError",
    "KeyError",
    "LookupError",
    "MemoryError",
    "NotADirectoryError",
    "NotImplementedError",
    "OSError",
    "OverflowError",
    "PermissionError",
    "ProcessLookupError",
    "RecursionError",
    "ReferenceError",
    "RuntimeError",
    "StopAsyncIteration",
    "StopIteration",
    "TimeoutError",
    "TypeError",
    "UnboundLocalError",
    "UnicodeError",
    "ValueError",
    "ZeroDivisionError",
];

/// Exceptions outside builtins: (libmgr kind, module, class) — the module is
/// where a pickle names the class (`queue.Empty` is `_queue.Empty` in CPython).
pub(super) const MODULE_EXCEPTIONS: &[(&str, &str, &str)] = &[
    ("queue.Empty", "queue", "Empty"),
    ("queue.Empty", "_queue", "Empty"),
    ("queue.Full", "queue", "Full"),
    (
        "threading.BrokenBarrierError",
        "threading",
        "BrokenBarrierError",
    ),
    (
        "multiprocessing.TimeoutError",
        "multiprocessing.context",
        "TimeoutError",
    ),
    (
        "multiprocessing.managers.RemoteError",
        "multiprocessing.managers",
        "RemoteError",
    ),
];

/// The proxy types of `multiprocessing.managers` a pickled proxy may name.
pub(super) const PROXY_TYPES: &[&str] = &[
    "AutoProxy",
    "BaseProxy",
    "IteratorProxy",
    "AcquirerProxy",
    "ConditionProxy",
    "EventProxy",
    "BarrierProxy",
    "NamespaceProxy",
    "ValueProxy",
    "BaseListProxy",
    "ListProxy",
    "DictProxy",
    "ArrayProxy",
    "PoolProxy",
];

/// Maps a (module, name) pair to a whitelisted global, or to one `globals`
/// lets values name, or refuses it.
pub(super) fn resolve_global(
    module: &str,
    name: &str,
    globals: Globals,
) -> Result<Global, CodecError> {
    let builtin = matches!(module, "builtins" | "__builtin__" | "exceptions");
    let g = match (module, name) {
        ("multiprocessing.managers", "Token") => Some(Global::Token),
        ("multiprocessing.managers", "RebuildProxy") => Some(Global::RebuildProxy),
        ("multiprocessing.managers", n) if PROXY_TYPES.contains(&n) => Some(Global::ProxyType),
        (_, "slice") if builtin => Some(Global::Slice),
        (_, "set") if builtin => Some(Global::Set(false)),
        (_, "frozenset") if builtin => Some(Global::Set(true)),
        (_, "list") if builtin => Some(Global::Seq(false)),
        (_, "tuple") if builtin => Some(Global::Seq(true)),
        (_, "bytearray") if builtin => Some(Global::Bytes(true)),
        (_, "bytes") if builtin => Some(Global::Bytes(false)),
        (_, "range" | "xrange") if builtin => Some(Global::Range),
        (_, "object") if builtin => Some(Global::Object),
        (_, n) if builtin && BUILTIN_EXCEPTIONS.contains(&n) => {
            Some(Global::Exception(n.to_owned()))
        }
        ("_codecs" | "codecs", "encode") => Some(Global::CodecsEncode),
        ("_codecs" | "codecs", "decode") => Some(Global::CodecsDecode),
        (_, "iter") if builtin => Some(Global::Iter(IterFn::Iter)),
        (_, "reversed") if builtin => Some(Global::Iter(IterFn::Reversed)),
        (_, "zip") if builtin => Some(Global::Iter(IterFn::Zip)),
        (_, "enumerate") if builtin => Some(Global::Iter(IterFn::Enumerate)),
        (_, "map") if builtin => Some(Global::Iter(IterFn::Map)),
        (_, "getattr") if builtin => Some(Global::Iter(IterFn::Getattr)),
        ("array", "array") => Some(Global::Array),
        ("array", "_array_reconstructor") => Some(Global::ArrayReconstructor),
        ("copyreg" | "copy_reg", "_reconstructor") => Some(Global::Reconstructor),
        ("copyreg" | "copy_reg", "__newobj__") => Some(Global::NewObj),
        _ => MODULE_EXCEPTIONS
            .iter()
            .find(|(_, m, n)| *m == module && *n == name)
            .map(|(kind, _, _)| Global::Exception((*kind).to_owned())),
    };
    match g {
        Some(g) => Ok(g),
        None if globals.allows_bare(module, name) => Ok(Global::Other(Box::new((
            module.to_owned(),
            name.to_owned(),
        )))),
        None => err(globals.refusal(module, name)),
    }
}

impl Machine<'_> {
    fn global(&self, i: Ix) -> Option<&Global> {
        match self.node(i) {
            Node::Global(g) => Some(g),
            _ => None,
        }
    }

    /// The first (up to 4) items of the argument tuple `i` and its length.
    fn args(&self, i: Ix, what: &str) -> Result<([Ix; 4], usize), CodecError> {
        match self.node(i) {
            Node::Tuple(v) => {
                let mut a = [0; 4];
                let n = v.len().min(4);
                a[..n].copy_from_slice(&v[..n]);
                Ok((a, v.len()))
            }
            _ => err(format!("{what} needs an argument tuple")),
        }
    }

    fn int_or_none(&self, i: Ix) -> Result<Option<i64>, CodecError> {
        match *self.node(i) {
            Node::None => Ok(None),
            Node::Int(v) => Ok(Some(v)),
            Node::Bool(b) => Ok(Some(i64::from(b))),
            _ => err("slice bounds must be ints or None"),
        }
    }

    /// A copy of the items of the list, tuple or set `src`, charged.
    fn items_of(&mut self, src: Ix, what: &str) -> Result<Vec<Ix>, CodecError> {
        let n = match self.node(src) {
            Node::List(v) | Node::Tuple(v) | Node::Set(v) | Node::FrozenSet(v) => v.len(),
            Node::Dict(d) => d.len(),
            Node::Str(_) | Node::Bytes(_) | Node::Object(_) => return self.iterated(src, what),
            _ => return err(format!("{what} of something that is not a sequence")),
        };
        let mut items = self.budget.vec(n)?;
        match self.node(src) {
            Node::List(v) | Node::Tuple(v) | Node::Set(v) | Node::FrozenSet(v) => {
                items.extend_from_slice(v)
            }
            Node::Dict(d) => items.extend(d.iter().map(|&(k, _)| k)),
            _ => unreachable!("matched a container"),
        }
        Ok(items)
    }

    /// What iterating a str (its characters), bytes (their ints), `range`
    /// or `bytearray` yields, as new nodes, each charged like any node: a
    /// `range(10**12)` runs out of budget, it is never materialized.
    fn iterated(&mut self, src: Ix, what: &str) -> Result<Vec<Ix>, CodecError> {
        enum Source {
            Chars(String),
            Bytes(Vec<u8>),
            Range(i64, i64, i64),
        }
        let source = match self.node(src) {
            Node::Str(s) => Source::Chars(s.clone()),
            Node::Bytes(b) => Source::Bytes(b.clone()),
            Node::Object(o) if o.form == Form::Reduce => {
                let (callable, args) = (o.callable, o.args);
                let bounds: Vec<Ix> = match self.node(args) {
                    Node::Tuple(a) => a.clone(),
                    _ => Vec::new(),
                };
                match (self.global(callable), &bounds[..]) {
                    (Some(Global::Range), b) if (1..=3).contains(&b.len()) => {
                        let mut b = [0i64, 0, 1];
                        for (k, &i) in bounds.iter().enumerate() {
                            let Node::Int(v) = *self.node(i) else {
                                return err("range() bounds must be ints");
                            };
                            b[if bounds.len() == 1 { 1 } else { k }] = v;
                        }
                        Source::Range(b[0], b[1], b[2])
                    }
                    (Some(Global::Bytes(true)), []) => Source::Bytes(Vec::new()),
                    (Some(Global::Bytes(true)), &[b]) => match self.node(b) {
                        Node::Bytes(b) => Source::Bytes(b.clone()),
                        _ => return err("bytearray() of something that is not bytes"),
                    },
                    _ => return err(format!("{what} of an object that is not a sequence")),
                }
            }
            _ => return err(format!("{what} of something that is not a sequence")),
        };
        // The copy of a str or bytes taken above, charged.
        if let Source::Chars(s) = &source {
            self.budget.spend(s.len())?;
        } else if let Source::Bytes(b) = &source {
            self.budget.spend(b.len())?;
        }
        let mut items = Vec::new();
        let mut push = |d: &mut Self, node: Node| -> Result<(), CodecError> {
            d.budget.reserve(&mut items, 1)?;
            items.push(d.add(node)?);
            Ok(())
        };
        match source {
            Source::Chars(s) => {
                for c in s.chars() {
                    self.budget.spend(c.len_utf8())?;
                    push(self, Node::Str(c.to_string()))?;
                }
            }
            Source::Bytes(b) => {
                for x in b {
                    push(self, Node::Int(i64::from(x)))?;
                }
            }
            Source::Range(start, stop, step) => {
                if step == 0 {
                    return err("range() arg 3 must not be zero");
                }
                let mut i = start;
                while (step > 0 && i < stop) || (step < 0 && i > stop) {
                    push(self, Node::Int(i))?;
                    match i.checked_add(step) {
                        Some(n) => i = n,
                        None => break,
                    }
                }
            }
        }
        Ok(items)
    }

    /// REDUCE: "calls" a whitelisted global by interpreting its arguments.
    pub(super) fn reduce(&mut self, func: Ix, args: Ix) -> Result<Node, CodecError> {
        let Some(g) = self.global(func).cloned() else {
            return err("REDUCE of something that is not a whitelisted global");
        };
        if let Global::Exception(kind) = &g {
            self.budget.spend(kind.len())?;
        }
        let (arr, len) = self.args(args, "REDUCE")?;
        if len > 4
            && !matches!(
                g,
                Global::Exception(_)
                    | Global::NewObj
                    | Global::Other(_)
                    | Global::Iter(IterFn::Zip)
            )
        {
            return err("too many arguments for a whitelisted global");
        }
        let a = &arr[..len.min(4)];
        Ok(match g {
            Global::Slice => {
                let b = a
                    .iter()
                    .map(|&i| self.int_or_none(i))
                    .collect::<Result<Vec<_>, _>>()?;
                let slice = match b[..] {
                    [stop] => Slice {
                        start: None,
                        stop,
                        step: None,
                    },
                    [start, stop] => Slice {
                        start,
                        stop,
                        step: None,
                    },
                    [start, stop, step] => Slice { start, stop, step },
                    _ => return err("slice() takes 1 to 3 arguments"),
                };
                self.budget.spend_items::<Slice>(1)?;
                Node::Slice(Box::new(slice))
            }
            Global::Seq(tuple) => {
                let items = match a[..] {
                    [] => Vec::new(),
                    [src] => self.items_of(src, "list()/tuple()")?,
                    _ => return err("list()/tuple() take at most one argument"),
                };
                if tuple {
                    Node::Tuple(items)
                } else {
                    Node::List(items)
                }
            }
            Global::Set(frozen) => {
                let items = match a[..] {
                    [] => Vec::new(),
                    [src] => self.items_of(src, "set()")?,
                    _ => return err("set() takes at most one argument"),
                };
                if frozen {
                    Node::FrozenSet(items)
                } else {
                    Node::Set(items)
                }
            }
            Global::Bytes(true) => match a[..] {
                [] => object(Form::Reduce, func, args, NO_MEMO),
                [src] if matches!(self.node(src), Node::Bytes(_)) => {
                    object(Form::Reduce, func, args, NO_MEMO)
                }
                _ => return err("bytearray() with unsupported arguments"),
            },
            Global::Bytes(false) => match a[..] {
                [] => Node::Bytes(Vec::new()),
                [src] => match self.node(src) {
                    Node::Bytes(b) => {
                        let n = b.len();
                        self.budget.spend(n)?;
                        let Node::Bytes(b) = self.node(src) else {
                            unreachable!("matched bytes")
                        };
                        Node::Bytes(b.clone())
                    }
                    _ => return err("bytes()/bytearray() of something that is not bytes"),
                },
                _ => return err("bytes()/bytearray() with unsupported arguments"),
            },
            Global::Range => {
                // Kept compact, as the call that makes it (a server
                // constructor materializes it within its own byte bound).
                if !(1..=3).contains(&a.len()) {
                    return err("range() takes 1 to 3 arguments");
                }
                let mut step = 1;
                for (k, &i) in a.iter().enumerate() {
                    match *self.node(i) {
                        Node::Int(v) => {
                            if k == 2 {
                                step = v;
                            }
                        }
                        _ => return err("range() bounds must be ints"),
                    }
                }
                if step == 0 {
                    return err("range() arg 3 must not be zero");
                }
                object(Form::Reduce, func, args, NO_MEMO)
            }
            Global::CodecsEncode => match a[..] {
                [text, enc] if matches!(self.text(enc), Some("latin1" | "latin-1")) => {
                    let Some(s) = self.text(text) else {
                        return err("encode() of something that is not a str");
                    };
                    let n = s.len();
                    self.budget.spend(n)?;
                    let Some(s) = self.text(text) else {
                        unreachable!("matched a str")
                    };
                    let mut b = Vec::with_capacity(n);
                    for c in s.chars() {
                        match u8::try_from(u32::from(c)) {
                            Ok(byte) => b.push(byte),
                            Err(_) => return err("latin1 text with a character above U+00FF"),
                        }
                    }
                    Node::Bytes(b)
                }
                _ => return err("only encode(str, 'latin1') is supported"),
            },
            // Arrays are kept as the call that makes them (an `array.array`
            // comes back as one); the server reads their items when it needs
            // them.
            Global::Array => {
                match a[..] {
                    [code, items] => {
                        let Some(tc) = self
                            .text(code)
                            .filter(|t| t.chars().count() == 1 && "bBuhHiIlLqQfd".contains(*t))
                        else {
                            return err("array() needs a typecode (b, B, u, h, H, i, I, l, L, q, Q, f or d)");
                        };
                        let tc = tc.to_owned();
                        match self.node(items) {
                            Node::List(_) => {}
                            Node::Str(_) if tc == "u" => {}
                            Node::Bytes(b) => {
                                let Some(fmt) = native_format(&tc) else {
                                    return err("array() with an unknown typecode");
                                };
                                if b.len() % machine_format(fmt)?.0 != 0 {
                                    return err("array data is not a whole number of items");
                                }
                            }
                            _ => return err("array() needs a list of items"),
                        }
                        object(Form::Reduce, func, args, NO_MEMO)
                    }
                    _ => return err("array() needs a typecode and a list"),
                }
            }
            Global::ArrayReconstructor => match a[..] {
                [cls, code, fmt, data] => {
                    if self.global(cls) != Some(&Global::Array) || self.text(code).is_none() {
                        return err("_array_reconstructor needs array.array and a typecode");
                    }
                    let (&Node::Int(fmt), Node::Bytes(b)) = (self.node(fmt), self.node(data))
                    else {
                        return err("_array_reconstructor needs a format code and bytes");
                    };
                    if b.len() % machine_format(fmt)?.0 != 0 {
                        return err("array data is not a whole number of items");
                    }
                    object(Form::Reduce, func, args, NO_MEMO)
                }
                _ => return err("_array_reconstructor takes 4 arguments"),
            },
            Global::Reconstructor => match a[..] {
                [cls, base, state]
                    if self.global(cls) == Some(&Global::Token)
                        && self.global(base) == Some(&Global::Object)
                        && matches!(self.node(state), Node::None) =>
                {
                    Node::Token(None)
                }
                _ => return err("copyreg._reconstructor is only accepted for Token"),
            },
            Global::NewObj => {
                let Some(&cls) = a.first() else {
                    return err("copyreg.__newobj__ needs a class");
                };
                let mut rest = self.budget.vec::<Ix>(len - 1)?;
                if let Node::Tuple(v) = self.node(args) {
                    rest.extend_from_slice(&v[1..]);
                }
                let rest = self.add(Node::Tuple(rest))?;
                return self.new_object(cls, rest, None);
            }
            Global::Token => match a[..] {
                [_, _, _] => Node::Token(Some(self.token_state(args)?)),
                _ => return err("Token() takes 3 arguments"),
            },
            Global::RebuildProxy => match a[..] {
                [func, token, _serializer, _kwds] => {
                    if self.global(func) != Some(&Global::ProxyType) {
                        return err("RebuildProxy needs a multiprocessing.managers proxy type");
                    }
                    if !matches!(self.node(token), Node::Token(Some(_))) {
                        return err("RebuildProxy needs a Token");
                    }
                    Node::Proxy(token)
                }
                _ => return err("RebuildProxy takes 4 arguments"),
            },
            Global::Other(mn) if !self.globals.allows(&mn.0, &mn.1) => {
                return err(format!(
                    "'{}.{}' is accepted as a class, not called",
                    mn.0, mn.1
                ))
            }
            Global::Exception(_) | Global::Other(_) => object(Form::Reduce, func, args, NO_MEMO),
            Global::Iter(f) => self.iterate(f, args)?,
            Global::CodecsDecode => match a[..] {
                [data, enc, errors]
                    if self.globals != Globals::None
                        && self.text(enc) == Some("utf-8")
                        && self.text(errors) == Some("surrogatepass")
                        && matches!(self.node(data), Node::Bytes(b)
                            if super::decode::surrogatepass(b)) =>
                {
                    object(Form::Reduce, func, args, NO_MEMO)
                }
                _ => return err("only decode(bytes, 'utf-8', 'surrogatepass') is supported"),
            },
            Global::ProxyType | Global::Object => {
                return err("proxy types and object are not callable here")
            }
        })
    }

    /// NEWOBJ / NEWOBJ_EX: `Token.__new__(Token)`, or an opaque object of an
    /// exception class or another allowed global.
    pub(super) fn new_object(
        &mut self,
        cls: Ix,
        args: Ix,
        kwargs: Option<Ix>,
    ) -> Result<Node, CodecError> {
        let (_, len) = self.args(args, "NEWOBJ")?;
        if let Some(k) = kwargs {
            if !matches!(self.node(k), Node::Dict(_)) {
                return err("NEWOBJ_EX keyword arguments must be a dict");
            }
        }
        let form = if kwargs.is_some() {
            Form::NewObjEx
        } else {
            Form::NewObj
        };
        if let Some(Global::Other(mn)) = self.global(cls) {
            if !self.globals.allows(&mn.0, &mn.1) {
                return err(format!(
                    "'{}.{}' is accepted as a class, not instantiated",
                    mn.0, mn.1
                ));
            }
        }
        match self.global(cls) {
            Some(Global::Token) if len == 0 => Ok(Node::Token(None)),
            Some(Global::Exception(_) | Global::Other(_)) => {
                Ok(object(form, cls, args, kwargs.unwrap_or(NO_MEMO)))
            }
            _ => err("NEWOBJ is only accepted for Token, exceptions and allowed classes"),
        }
    }

    /// BUILD: a Token's `(typeid, address, id)` state, or an opaque object's
    /// state (kept as data; a second BUILD of one object is refused).
    pub(super) fn build(&mut self, obj: Ix, state: Ix) -> Result<(), CodecError> {
        match self.node(obj) {
            Node::Token(None) => {
                let st = self.token_state(state)?;
                self.set_node(obj, Node::Token(Some(st)));
                Ok(())
            }
            Node::Object(o) if o.state == NO_MEMO => {
                let Node::Object(o) = self.node_mut(obj) else {
                    unreachable!("matched an object")
                };
                o.state = state;
                Ok(())
            }
            Node::Object(_) => err("BUILD twice on one object is not supported"),
            Node::Iter(..) => {
                let Node::Int(pos) = *self.node(state) else {
                    return err("an iterator's state must be an int");
                };
                let Node::Iter(items, reversed) = self.node_mut(obj) else {
                    unreachable!("matched an iterator")
                };
                // iter: the next item is items[pos]; reversed (kept reversed):
                // the next is the original's items[pos], going down.
                let pos = usize::try_from(pos.max(0)).unwrap_or(usize::MAX);
                if *reversed {
                    let keep = pos.saturating_add(1).min(items.len());
                    items.drain(..items.len() - keep);
                } else {
                    items.drain(..pos.min(items.len()));
                }
                Ok(())
            }
            _ => err("BUILD is only accepted for Token and opaque objects"),
        }
    }

    /// The items an iterable node yields: a list, tuple, set, frozenset or
    /// interpreted iterator; a copy, charged.
    fn yielded(&mut self, src: Ix, what: &str) -> Result<Vec<Ix>, CodecError> {
        if let Node::Iter(v, _) = self.node(src) {
            let n = v.len();
            let mut items = self.budget.vec(n)?;
            if let Node::Iter(v, _) = self.node(src) {
                items.extend_from_slice(v);
            }
            return Ok(items);
        }
        self.items_of(src, what)
    }

    /// REDUCE of an iterator constructor: the list it would yield, built as
    /// nodes (charged); or `str.lower` & co. from `getattr`.
    fn iterate(&mut self, f: IterFn, args: Ix) -> Result<Node, CodecError> {
        let (a, len) = self.args(args, "REDUCE")?;
        let a = &a[..len.min(4)];
        Ok(match (f, a) {
            (IterFn::Getattr, &[cls, attr]) => {
                let method = match (self.global(cls).and_then(Global::py_name), self.text(attr)) {
                    (Some(("builtins", "str")), Some(m @ ("lower" | "upper" | "casefold"))) => m,
                    _ => return err(
                        "getattr() is not allowed except as str.lower, str.upper or str.casefold",
                    ),
                };
                let name = format!("str.{method}");
                self.budget.spend(name.len() + 8)?;
                Node::Global(Global::Other(Box::new(("builtins".to_owned(), name))))
            }
            (IterFn::Iter, &[src]) => Node::Iter(self.yielded(src, "iter()")?, false),
            (IterFn::Reversed, &[src]) => {
                let mut items = self.yielded(src, "reversed()")?;
                items.reverse();
                Node::Iter(items, true)
            }
            (IterFn::Zip, _) => {
                let Node::Tuple(srcs) = self.node(args) else {
                    unreachable!("args checked a tuple")
                };
                let srcs = srcs.clone();
                self.budget.spend_items::<Ix>(srcs.len())?;
                let mut cols = Vec::with_capacity(srcs.len());
                for &s in &srcs {
                    cols.push(self.yielded(s, "zip()")?);
                }
                let rows = cols.iter().map(Vec::len).min().unwrap_or(0);
                let mut out = self.budget.vec::<Ix>(rows)?;
                for r in 0..rows {
                    let mut row = self.budget.vec::<Ix>(cols.len())?;
                    row.extend(cols.iter().map(|c| c[r]));
                    out.push(self.add(Node::Tuple(row))?);
                }
                Node::Iter(out, false)
            }
            (IterFn::Enumerate, &[src, ..]) if a.len() <= 2 => {
                let start = match a.get(1).map(|&i| self.node(i)) {
                    None => 0,
                    Some(&Node::Int(s)) => s,
                    Some(_) => return err("enumerate() start must be an int"),
                };
                let items = self.yielded(src, "enumerate()")?;
                let mut out = self.budget.vec::<Ix>(items.len())?;
                for (k, item) in items.into_iter().enumerate() {
                    let Some(n) = start.checked_add(k as i64) else {
                        return err("enumerate() count overflows");
                    };
                    let n = self.add(Node::Int(n))?;
                    let mut row = self.budget.vec::<Ix>(2)?;
                    row.extend([n, item]);
                    out.push(self.add(Node::Tuple(row))?);
                }
                Node::Iter(out, false)
            }
            (IterFn::Map, &[func, src]) => {
                let Some((module, name)) = self.global(func).and_then(Global::py_name) else {
                    return err("map() is only accepted with a pure builtin (str.lower, len …)");
                };
                if !crate::proto::codec::policy::pure(module, name) || module != "builtins" {
                    return err(format!(
                        "map() is only accepted with str.lower, str.upper, str.casefold, \
                         len or abs, not {module}.{name}"
                    ));
                }
                let name = name.to_owned();
                let items = self.yielded(src, "map()")?;
                let mut out = self.budget.vec::<Ix>(items.len())?;
                for item in items {
                    let n = self.apply_pure(&name, item)?;
                    out.push(self.add(n)?);
                }
                Node::Iter(out, false)
            }
            _ => return err(format!("{f:?} with unsupported arguments")),
        })
    }

    /// A pure builtin applied to a node, as data.
    fn apply_pure(&mut self, f: &str, item: Ix) -> Result<Node, CodecError> {
        let node = self.node(item);
        if let Node::Str(s) = node {
            if let Some(out) = crate::proto::value::str_method(f, s) {
                self.budget.spend(out.len())?;
                return Ok(Node::Str(out));
            }
        }
        let out = match (f, node) {
            ("len", Node::Str(s)) => Node::Int(s.chars().count() as i64),
            ("len", Node::Bytes(b)) => Node::Int(b.len() as i64),
            ("len", Node::List(v) | Node::Tuple(v) | Node::Set(v) | Node::FrozenSet(v)) => {
                Node::Int(v.len() as i64)
            }
            ("len", Node::Dict(d)) => Node::Int(d.len() as i64),
            ("abs", &Node::Int(i)) => match i.checked_abs() {
                Some(a) => Node::Int(a),
                None => return err("abs() of the smallest int is not supported in map()"),
            },
            ("abs", &Node::Float(x)) => Node::Float(x.abs()),
            ("abs", &Node::Bool(b)) => Node::Int(i64::from(b)),
            _ => return err(format!("map({f}, ...) over an item it does not apply to")),
        };
        Ok(out)
    }
}

/// An opaque object node made by `form` from the global `callable`.
fn object(form: Form, callable: Ix, args: Ix, kwargs: Ix) -> Node {
    Node::Object(Box::new(Object {
        form,
        callable,
        args,
        kwargs,
        items: Vec::new(),
        entries: Vec::new(),
        state: NO_MEMO,
    }))
}

/// The machine format code of an array typecode's native (`tobytes`) form, on
/// an LP64 host with this build's byte order.
fn native_format(code: &str) -> Option<i64> {
    let le = cfg!(target_endian = "little");
    let base = match code {
        "b" => return Some(1),
        "B" => return Some(0),
        "H" => 2,
        "h" => 4,
        "I" => 6,
        "i" => 8,
        "L" | "Q" => 10,
        "l" | "q" => 12,
        "f" => 14,
        "d" => 16,
        "u" => 20,
        _ => return None,
    };
    Some(if le { base } else { base + 1 })
}

/// (item size, signed, big-endian) of CPython's `enum machine_format_code`.
fn machine_format(fmt: i64) -> Result<(usize, bool, bool), CodecError> {
    let (size, big) = match fmt {
        0 | 1 => (1, false),
        2..=5 => (2, fmt % 2 == 1),
        6..=9 | 14 | 15 | 20 | 21 => (4, fmt % 2 == 1),
        10..=13 | 16 | 17 => (8, fmt % 2 == 1),
        18 | 19 => (2, fmt == 19),
        _ => return err(format!("unknown array machine format {fmt}")),
    };
    let signed = matches!(fmt, 1 | 4 | 5 | 8 | 9 | 12 | 13);
    Ok((size, signed, big))
}
