//! The whitelisted globals: which (module, name) pairs a pickle may name, and
//! what "calling" each one (REDUCE, NEWOBJ, BUILD) means as data — a slice, a
//! set, a list from an array's bytes, a Token, a rebuilt proxy, an exception.
//! Nothing here imports or runs anything: a name that is not listed is an error.

use super::decode::{err, long_node, Ix, Machine, Node, Object, NO_MEMO};
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
    /// `builtins.bytearray` / `builtins.bytes` (protocols 2–4).
    Bytes,
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
            Global::Object => ("builtins", "object"),
            Global::Array => ("array", "array"),
            Global::CodecsDecode => ("_codecs", "decode"),
            Global::Exception(kind) => super::exception_class(kind)?,
            Global::Other(mn) => (&mn.0, &mn.1),
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
        (_, "bytearray" | "bytes") if builtin => Some(Global::Bytes),
        (_, "range" | "xrange") if builtin => Some(Global::Range),
        (_, "object") if builtin => Some(Global::Object),
        (_, n) if builtin && BUILTIN_EXCEPTIONS.contains(&n) => {
            Some(Global::Exception(n.to_owned()))
        }
        ("_codecs" | "codecs", "encode") => Some(Global::CodecsEncode),
        ("_codecs" | "codecs", "decode") => Some(Global::CodecsDecode),
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
        None if globals.allows(module, name) => Ok(Global::Other(Box::new((
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
            _ => return err(format!("{what} of something that is not a sequence")),
        };
        let mut items = self.budget.vec(n)?;
        if let Node::List(v) | Node::Tuple(v) | Node::Set(v) | Node::FrozenSet(v) = self.node(src) {
            items.extend_from_slice(v);
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
        if len > 4 && !matches!(g, Global::Exception(_) | Global::NewObj | Global::Other(_)) {
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
            Global::Bytes => match a[..] {
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
                let mut b = [0i64, 0, 1];
                let given = match a.len() {
                    1 => &mut b[1..2],
                    2 => &mut b[..2],
                    3 => &mut b[..],
                    _ => return err("range() takes 1 to 3 arguments"),
                };
                for (slot, &i) in given.iter_mut().zip(a) {
                    *slot = match *self.node(i) {
                        Node::Int(v) => v,
                        _ => return err("range() bounds must be ints"),
                    };
                }
                let [start, stop, step] = b;
                if step == 0 {
                    return err("range() arg 3 must not be zero");
                }
                let len = if (step > 0 && start < stop) || (step < 0 && start > stop) {
                    let span = (i128::from(stop) - i128::from(start)).unsigned_abs();
                    (span - 1) / step.unsigned_abs() as u128 + 1
                } else {
                    0
                };
                // Each item costs a node and an index: refuse before building
                // a range this request's remaining budget cannot hold.
                let per_item = (std::mem::size_of::<Node>() + std::mem::size_of::<Ix>()) as u128;
                if len * per_item > self.budget.left() as u128 {
                    return err(format!(
                        "range() of {len} items is too large for this request"
                    ));
                }
                let items = (0..len as i64).map(|k| {
                    Ok(Node::Int(
                        (i128::from(start) + i128::from(k) * i128::from(step)) as i64,
                    ))
                });
                Node::List(self.add_all(len as usize, items)?)
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
            Global::Array => match a[..] {
                [code, items] if self.text(code).is_some() => match self.node(items) {
                    Node::List(_) => Node::List(self.items_of(items, "array()")?),
                    Node::Str(s) => {
                        // One node per character; copying the text first keeps
                        // the borrow of the arena short (and is charged).
                        let n = s.chars().count();
                        self.budget.spend(s.len())?;
                        self.budget.spend(n.saturating_mul(4))?;
                        let Node::Str(s) = self.node(items) else {
                            unreachable!("matched a str")
                        };
                        let s = s.clone();
                        let chars = s.chars().map(|c| Ok(Node::Str(c.to_string())));
                        Node::List(self.add_all(n, chars)?)
                    }
                    // managers.py reduces arrays to (typecode, a.tobytes()):
                    // native machine format, as on this (the same) host.
                    Node::Bytes(_) => {
                        let Some(fmt) = self.text(code).and_then(native_format) else {
                            return err("array() with an unknown typecode");
                        };
                        self.array(fmt, items)?
                    }
                    _ => return err("array() needs a list of items"),
                },
                _ => return err("array() needs a typecode and a list"),
            },
            Global::ArrayReconstructor => match a[..] {
                [cls, code, fmt, data] => {
                    if self.global(cls) != Some(&Global::Array) || self.text(code).is_none() {
                        return err("_array_reconstructor needs array.array and a typecode");
                    }
                    let (&Node::Int(fmt), Node::Bytes(_)) = (self.node(fmt), self.node(data))
                    else {
                        return err("_array_reconstructor needs a format code and bytes");
                    };
                    self.array(fmt, data)?
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
            Global::Exception(_) | Global::Other(_) => object(Form::Reduce, func, args, NO_MEMO),
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
            _ => err("BUILD is only accepted for Token and opaque objects"),
        }
    }

    /// The items of an array's machine-format bytes (node `data`) as a list.
    fn array(&mut self, fmt: i64, data: Ix) -> Result<Node, CodecError> {
        let (size, _, _) = machine_format(fmt)?;
        let Node::Bytes(bytes) = self.node(data) else {
            return err("array data must be bytes");
        };
        if bytes.len() % size != 0 {
            return err("array data is not a whole number of items");
        }
        let n = bytes.len() / size;
        // Characters carry up to 4 bytes of text each.
        // Unsigned 64-bit items above i64::MAX become 9-byte big ints.
        match fmt {
            18..=21 => self.budget.spend(n.saturating_mul(4))?,
            10 | 11 => self.budget.spend(n.saturating_mul(9))?,
            _ => {}
        }
        // The bytes are copied out so the arena can grow while they are read.
        self.budget.spend(size * n)?;
        let Node::Bytes(bytes) = self.node(data) else {
            unreachable!("matched bytes")
        };
        let bytes = bytes.clone();
        let items = array_items(fmt, &bytes)?;
        Ok(Node::List(self.add_all(n, items)?))
    }

    /// Adds up to `n` nodes to the arena, charging them first, and returns
    /// their indices.
    fn add_all(
        &mut self,
        n: usize,
        items: impl Iterator<Item = Result<Node, CodecError>>,
    ) -> Result<Vec<Ix>, CodecError> {
        let mut ixs = self.budget.vec::<Ix>(n)?;
        for item in items.take(n) {
            let i = self.add(item?)?;
            ixs.push(i);
        }
        Ok(ixs)
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

/// Decodes `array._array_reconstructor`'s machine-format bytes into nodes,
/// one at a time.
fn array_items(
    fmt: i64,
    data: &[u8],
) -> Result<impl Iterator<Item = Result<Node, CodecError>> + '_, CodecError> {
    let (size, signed, big) = machine_format(fmt)?;
    if data.len() % size != 0 {
        return err("array data is not a whole number of items");
    }
    let word = move |c: &[u8]| -> u64 {
        let mut v = 0u64;
        for i in 0..size {
            let b = if big { c[i] } else { c[size - 1 - i] };
            v = (v << 8) | u64::from(b);
        }
        v
    };
    let utf16 = matches!(fmt, 18 | 19).then(|| {
        char::decode_utf16(data.chunks(2).map(move |c| word(c) as u16)).map(|c| {
            c.map(|c| Node::Str(c.to_string()))
                .or_else(|_| err("array holds invalid UTF-16"))
        })
    });
    let words = (!matches!(fmt, 18 | 19)).then(|| {
        data.chunks(size).map(move |c| {
            let v = word(c);
            Ok(match fmt {
                14 | 15 => Node::Float(f64::from(f32::from_bits(v as u32))),
                16 | 17 => Node::Float(f64::from_bits(v)),
                20 | 21 => match char::from_u32(v as u32) {
                    Some(ch) => Node::Str(ch.to_string()),
                    None => return err("array holds an invalid character"),
                },
                _ if signed => {
                    let shift = 64 - 8 * size as u32;
                    Node::Int(((v << shift) as i64) >> shift)
                }
                _ => match i64::try_from(v) {
                    Ok(i) => Node::Int(i),
                    Err(_) => long_node(&[&v.to_le_bytes()[..], &[0]].concat()),
                },
            })
        })
    });
    Ok(utf16
        .into_iter()
        .flatten()
        .chain(words.into_iter().flatten()))
}
