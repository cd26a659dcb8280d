//! The whitelisted globals: which (module, name) pairs a pickle may name, and
//! what "calling" each one (REDUCE, NEWOBJ, BUILD) means as data — a slice, a
//! set, a list from an array's bytes, a Token, a rebuilt proxy, an exception.
//! Nothing here imports or runs anything: a name that is not listed is an error.

use super::decode::{err, long_node, Machine, Node};
use crate::proto::codec::CodecError;
use crate::proto::value::Slice;

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

/// Maps a (module, name) pair to a whitelisted global, or refuses it.
pub(super) fn resolve_global(module: &str, name: &str) -> Result<Global, CodecError> {
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
        None => err(format!(
            "global '{module}.{name}' is not allowed (libmgr accepts data-only pickles)"
        )),
    }
}

impl Machine<'_> {
    fn global(&self, i: usize) -> Option<&Global> {
        match &self.nodes[i] {
            Node::Global(g) => Some(g),
            _ => None,
        }
    }

    fn tuple(&self, i: usize, what: &str) -> Result<Vec<usize>, CodecError> {
        match &self.nodes[i] {
            Node::Tuple(v) => Ok(v.clone()),
            _ => err(format!("{what} needs an argument tuple")),
        }
    }

    fn int_or_none(&self, i: usize) -> Result<Option<i64>, CodecError> {
        match self.nodes[i] {
            Node::None => Ok(None),
            Node::Int(v) => Ok(Some(v)),
            Node::Bool(b) => Ok(Some(i64::from(b))),
            _ => err("slice bounds must be ints or None"),
        }
    }

    /// REDUCE: "calls" a whitelisted global by interpreting its arguments.
    pub(super) fn reduce(&mut self, func: usize, args: usize) -> Result<Node, CodecError> {
        let Some(g) = self.global(func).cloned() else {
            return err("REDUCE of something that is not a whitelisted global");
        };
        let a = self.tuple(args, "REDUCE")?;
        Ok(match g {
            Global::Slice => {
                let b = a
                    .iter()
                    .map(|&i| self.int_or_none(i))
                    .collect::<Result<Vec<_>, _>>()?;
                match b[..] {
                    [stop] => Node::Slice(Slice {
                        start: None,
                        stop,
                        step: None,
                    }),
                    [start, stop] => Node::Slice(Slice {
                        start,
                        stop,
                        step: None,
                    }),
                    [start, stop, step] => Node::Slice(Slice { start, stop, step }),
                    _ => return err("slice() takes 1 to 3 arguments"),
                }
            }
            Global::Seq(tuple) => {
                let items = match a[..] {
                    [] => Vec::new(),
                    [src] => match &self.nodes[src] {
                        Node::List(v) | Node::Tuple(v) | Node::Set(v) | Node::FrozenSet(v) => {
                            v.clone()
                        }
                        _ => return err("list()/tuple() of something that is not a sequence"),
                    },
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
                    [src] => match &self.nodes[src] {
                        Node::List(v) | Node::Tuple(v) | Node::Set(v) | Node::FrozenSet(v) => {
                            v.clone()
                        }
                        _ => return err("set() of something that is not a sequence"),
                    },
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
                [src] => match &self.nodes[src] {
                    Node::Bytes(b) => Node::Bytes(b.clone()),
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
                for (slot, &i) in given.iter_mut().zip(&a) {
                    *slot = match self.nodes[i] {
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
                if len > self.range_limit() as u128 {
                    return err(format!(
                        "range() of {len} items is too large for this request"
                    ));
                }
                let items = (0..len as i64)
                    .map(|k| {
                        Node::Int((i128::from(start) + i128::from(k) * i128::from(step)) as i64)
                    })
                    .collect();
                Node::List(self.add_all(items))
            }
            Global::CodecsEncode => match a[..] {
                [s, enc] if matches!(self.text(enc), Some("latin1" | "latin-1")) => {
                    let Some(s) = self.text(s) else {
                        return err("encode() of something that is not a str");
                    };
                    let b = s
                        .chars()
                        .map(|c| u8::try_from(u32::from(c)))
                        .collect::<Result<Vec<u8>, _>>()
                        .or_else(|_| err("latin1 text with a character above U+00FF"))?;
                    Node::Bytes(b)
                }
                _ => return err("only encode(str, 'latin1') is supported"),
            },
            Global::Array => match a[..] {
                [code, items] if self.text(code).is_some() => match &self.nodes[items] {
                    Node::List(v) => Node::List(v.clone()),
                    Node::Str(s) => {
                        let chars: Vec<Node> =
                            s.chars().map(|c| Node::Str(c.to_string())).collect();
                        Node::List(self.add_all(chars))
                    }
                    // managers.py reduces arrays to (typecode, a.tobytes()):
                    // native machine format, as on this (the same) host.
                    Node::Bytes(data) => {
                        let Some(fmt) = self.text(code).and_then(native_format) else {
                            return err("array() with an unknown typecode");
                        };
                        let items = array_items(fmt, &data.clone())?;
                        Node::List(self.add_all(items))
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
                    let (Node::Int(fmt), Node::Bytes(data)) = (&self.nodes[fmt], &self.nodes[data])
                    else {
                        return err("_array_reconstructor needs a format code and bytes");
                    };
                    let items = array_items(*fmt, data)?;
                    Node::List(self.add_all(items))
                }
                _ => return err("_array_reconstructor takes 4 arguments"),
            },
            Global::Reconstructor => match a[..] {
                [cls, base, state]
                    if self.global(cls) == Some(&Global::Token)
                        && self.global(base) == Some(&Global::Object)
                        && matches!(self.nodes[state], Node::None) =>
                {
                    Node::Token(None)
                }
                _ => return err("copyreg._reconstructor is only accepted for Token"),
            },
            Global::NewObj => match a.split_first() {
                Some((&cls, rest)) => {
                    let rest = Node::Tuple(rest.to_vec());
                    self.nodes.push(rest);
                    let rest = self.nodes.len() - 1;
                    return self.new_object(cls, rest, None);
                }
                None => return err("copyreg.__newobj__ needs a class"),
            },
            Global::Token => match a[..] {
                [_, _, _] => Node::Token(Some(args)),
                _ => return err("Token() takes 3 arguments"),
            },
            Global::RebuildProxy => match a[..] {
                [func, token, _serializer, _kwds] => {
                    if self.global(func) != Some(&Global::ProxyType) {
                        return err("RebuildProxy needs a multiprocessing.managers proxy type");
                    }
                    if !matches!(self.nodes[token], Node::Token(Some(_))) {
                        return err("RebuildProxy needs a Token");
                    }
                    Node::Proxy(token)
                }
                _ => return err("RebuildProxy takes 4 arguments"),
            },
            Global::Exception(kind) => Node::Exception(kind, args),
            Global::ProxyType | Global::Object => {
                return err("proxy types and object are not callable here")
            }
        })
    }

    /// NEWOBJ / NEWOBJ_EX: only `Token.__new__(Token)` and exceptions.
    pub(super) fn new_object(
        &mut self,
        cls: usize,
        args: usize,
        kwargs: Option<usize>,
    ) -> Result<Node, CodecError> {
        let a = self.tuple(args, "NEWOBJ")?;
        if let Some(k) = kwargs {
            if !matches!(&self.nodes[k], Node::Dict(d) if d.is_empty()) {
                return err("NEWOBJ_EX with keyword arguments is not supported");
            }
        }
        match self.global(cls) {
            Some(Global::Token) if a.is_empty() => Ok(Node::Token(None)),
            Some(Global::Exception(kind)) => Ok(Node::Exception(kind.clone(), args)),
            _ => err("NEWOBJ is only accepted for Token and exceptions"),
        }
    }

    /// BUILD: a Token's `(typeid, address, id)` state; an exception's attribute
    /// dict is accepted and ignored.
    pub(super) fn build(&mut self, obj: usize, state: usize) -> Result<(), CodecError> {
        match self.nodes[obj] {
            Node::Token(None) => match &self.nodes[state] {
                Node::Tuple(v) if v.len() == 3 => {
                    self.nodes[obj] = Node::Token(Some(state));
                    Ok(())
                }
                _ => err("Token state must be (typeid, address, id)"),
            },
            Node::Exception(..) => Ok(()),
            _ => err("BUILD is only accepted for Token and exceptions"),
        }
    }

    fn add_all(&mut self, items: Vec<Node>) -> Vec<usize> {
        let first = self.nodes.len();
        self.nodes.extend(items);
        (first..self.nodes.len()).collect()
    }
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

/// Decodes `array._array_reconstructor`'s machine-format bytes into nodes.
fn array_items(fmt: i64, data: &[u8]) -> Result<Vec<Node>, CodecError> {
    // (item size, signed, big-endian, kind) per CPython's enum machine_format_code.
    let (size, big) = match fmt {
        0 | 1 => (1, false),
        2..=5 => (2, fmt % 2 == 1),
        6..=9 | 14 | 15 | 20 | 21 => (4, fmt % 2 == 1),
        10..=13 | 16 | 17 => (8, fmt % 2 == 1),
        18 | 19 => (2, fmt == 19),
        _ => return err(format!("unknown array machine format {fmt}")),
    };
    if data.len() % size != 0 {
        return err("array data is not a whole number of items");
    }
    let signed = matches!(fmt, 1 | 4 | 5 | 8 | 9 | 12 | 13);
    let word = |c: &[u8]| -> u64 {
        let mut v = 0u64;
        for i in 0..size {
            let b = if big { c[i] } else { c[size - 1 - i] };
            v = (v << 8) | u64::from(b);
        }
        v
    };
    if matches!(fmt, 18 | 19) {
        let units: Vec<u16> = data.chunks(2).map(|c| word(c) as u16).collect();
        return char::decode_utf16(units)
            .map(|c| c.map(|c| Node::Str(c.to_string())))
            .collect::<Result<_, _>>()
            .or_else(|_| err("array holds invalid UTF-16"));
    }
    data.chunks(size)
        .map(|c| {
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
        .collect()
}
