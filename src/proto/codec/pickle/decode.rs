//! The data-only pickle machine: runs the opcodes of protocols 2–5 that build
//! plain data, plus the handful of whitelisted globals managers send, into a flat
//! arena of [`Node`]s, then converts the result into [`Value`]s.
//!
//! Nothing is ever imported or called: a global is only a name compared against
//! the whitelist in [`resolve_global`], and "calling" one (REDUCE, NEWOBJ, BUILD)
//! interprets its arguments as data. The arena holds one node per opcode at most
//! and every container only the items moved into it, so memory is linear in the
//! input; converting to `Value` (which copies what the memo shares) is capped by a
//! budget proportional to the input and by [`MAX_DEPTH`].

use std::collections::HashMap;

use super::super::CodecError;
use crate::proto::value::{ObjectId, Slice, Token, Value};

/// Deepest nesting of containers accepted in one decoded value (a recursive
/// structure trips this too).
pub const MAX_DEPTH: u32 = 128;

/// Conversion budget: units (one per value, plus one per byte of str, bytes and
/// big-int data) allowed per input byte, and a floor for tiny inputs. Every
/// opcode builds at most one value, so only memo sharing (a GET of an object
/// already built) can spend more than one unit per byte; 4 leaves room for the
/// sharing real pickles do (a memoized key repeated in many dicts).
const BUDGET_PER_BYTE: usize = 4;
const BUDGET_FLOOR: usize = 64 * 1024;

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

/// One object built by the machine. Containers refer to other nodes by index.
#[derive(Debug, Clone)]
pub(super) enum Node {
    None,
    Bool(bool),
    Int(i64),
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<usize>),
    Tuple(Vec<usize>),
    Dict(Vec<(usize, usize)>),
    Set(Vec<usize>),
    FrozenSet(Vec<usize>),
    Slice(Slice),
    Global(Global),
    /// A `Token` instance; its state `(typeid, address, id)` arrives by BUILD.
    Token(Option<usize>),
    /// A rebuilt proxy: the index of its token.
    Proxy(usize),
    /// An exception instance: its kind and its args tuple.
    Exception(String, usize),
}

/// The result of running a pickle: the arena and the index of the root node.
#[derive(Debug)]
pub(super) struct Decoded {
    pub(super) nodes: Vec<Node>,
    pub(super) root: usize,
    budget: usize,
}

fn err<T>(msg: impl Into<String>) -> Result<T, CodecError> {
    Err(CodecError::new(format!("pickle: {}", msg.into())))
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

/// Reads the input a little at a time, never past its end.
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.data.len() - self.pos < n {
            return err("truncated pickle");
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn byte(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<usize, CodecError> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_le_bytes([b[0], b[1]])))
    }
    fn u32(&mut self) -> Result<u32, CodecError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, CodecError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    /// A length that must fit in what is left of the input.
    fn len(&mut self, n: u64) -> Result<usize, CodecError> {
        let left = (self.data.len() - self.pos) as u64;
        if n > left {
            return err(format!("length {n} exceeds the {left} bytes left"));
        }
        Ok(n as usize)
    }
    /// A newline-terminated text argument (protocol 0 opcodes), without the newline.
    fn line(&mut self) -> Result<&'a str, CodecError> {
        let rest = &self.data[self.pos..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return err("truncated pickle (missing newline)");
        };
        self.pos += end + 1;
        std::str::from_utf8(&rest[..end]).or_else(|_| err("text argument is not UTF-8"))
    }
}

/// The machine's state while it runs.
struct Machine<'a> {
    input: Input<'a>,
    nodes: Vec<Node>,
    stack: Vec<usize>,
    marks: Vec<usize>,
    memo: HashMap<u32, usize>,
}

/// Runs a whole pickle. Trailing bytes after STOP are an error.
pub(super) fn run(data: &[u8]) -> Result<Decoded, CodecError> {
    let mut m = Machine {
        input: Input { data, pos: 0 },
        nodes: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    };
    let root = m.run()?;
    if m.input.pos != data.len() {
        return err(format!(
            "{} trailing bytes after STOP",
            data.len() - m.input.pos
        ));
    }
    Ok(Decoded {
        nodes: m.nodes,
        root,
        budget: data.len().saturating_mul(BUDGET_PER_BYTE) + BUDGET_FLOOR,
    })
}

/// Minimal little-endian two's-complement form of `b` (as Value::BigInt keeps).
fn minimal(mut b: Vec<u8>) -> Vec<u8> {
    while b.len() > 1 {
        let (last, prev) = (b[b.len() - 1], b[b.len() - 2]);
        if (last == 0 && prev & 0x80 == 0) || (last == 0xff && prev & 0x80 != 0) {
            b.pop();
        } else {
            break;
        }
    }
    b
}

/// A LONG1/LONG4 payload as an int node: `Int` when it fits in 64 bits.
fn long_node(bytes: &[u8]) -> Node {
    if bytes.is_empty() {
        return Node::Int(0);
    }
    let b = minimal(bytes.to_vec());
    if b.len() <= 8 {
        let fill = if b[b.len() - 1] & 0x80 != 0 { 0xff } else { 0 };
        let mut buf = [fill; 8];
        buf[..b.len()].copy_from_slice(&b);
        Node::Int(i64::from_le_bytes(buf))
    } else {
        Node::BigInt(b)
    }
}

impl Machine<'_> {
    fn push(&mut self, n: Node) {
        self.nodes.push(n);
        self.stack.push(self.nodes.len() - 1);
    }

    fn pop(&mut self) -> Result<usize, CodecError> {
        match self.stack.pop() {
            Some(i) if self.marks.last().is_none_or(|&m| self.stack.len() >= m) => Ok(i),
            Some(_) => err("stack underflow (popped past a MARK)"),
            None => err("stack underflow"),
        }
    }

    fn top(&self) -> Result<usize, CodecError> {
        match self.stack.last() {
            Some(&i) if self.marks.last().is_none_or(|&m| self.stack.len() > m) => Ok(i),
            _ => err("stack underflow"),
        }
    }

    /// The items pushed since the last MARK, which is removed.
    fn pop_mark(&mut self) -> Result<Vec<usize>, CodecError> {
        let Some(m) = self.marks.pop() else {
            return err("no MARK on the stack");
        };
        Ok(self.stack.split_off(m))
    }

    fn text(&self, i: usize) -> Option<&str> {
        match &self.nodes[i] {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    fn memo_get(&mut self, k: u32) -> Result<(), CodecError> {
        match self.memo.get(&k) {
            Some(&i) => {
                self.stack.push(i);
                Ok(())
            }
            None => err(format!("memo key {k} was never stored")),
        }
    }

    fn memo_put(&mut self, k: u32) -> Result<(), CodecError> {
        let top = self.top()?;
        self.memo.insert(k, top);
        Ok(())
    }

    fn container_mut(&mut self, at: usize) -> &mut Node {
        &mut self.nodes[at]
    }

    fn extend_list(&mut self, list: usize, items: Vec<usize>) -> Result<(), CodecError> {
        match self.container_mut(list) {
            Node::List(v) => {
                v.extend(items);
                Ok(())
            }
            _ => err("APPEND to something that is not a list"),
        }
    }

    fn set_items(&mut self, dict: usize, items: Vec<usize>) -> Result<(), CodecError> {
        if items.len() % 2 != 0 {
            return err("SETITEMS with an odd number of items");
        }
        let pairs = items.chunks(2).map(|p| (p[0], p[1]));
        match self.container_mut(dict) {
            Node::Dict(d) => {
                d.extend(pairs);
                Ok(())
            }
            _ => err("SETITEM on something that is not a dict"),
        }
    }

    fn run(&mut self) -> Result<usize, CodecError> {
        loop {
            let op = self.input.byte()?;
            match op {
                0x80 => {
                    let p = self.input.byte()?;
                    if !(2..=5).contains(&p) {
                        return err(format!("unsupported protocol {p} (2 to 5 are accepted)"));
                    }
                }
                0x95 => {
                    // FRAME: a hint for buffered readers; just check it fits.
                    let n = self.input.u64()?;
                    self.input.len(n)?;
                }
                b'.' => {
                    let root = self.pop()?;
                    if !self.stack.is_empty() || !self.marks.is_empty() {
                        return err("items left on the stack at STOP");
                    }
                    return Ok(root);
                }
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let t = self.top()?;
                    self.stack.push(t);
                }
                b'N' => self.push(Node::None),
                0x88 => self.push(Node::Bool(true)),
                0x89 => self.push(Node::Bool(false)),
                b'J' => {
                    let v = self.input.u32()? as i32;
                    self.push(Node::Int(i64::from(v)))
                }
                b'K' => {
                    let v = self.input.byte()?;
                    self.push(Node::Int(i64::from(v)))
                }
                b'M' => {
                    let v = self.input.u16()?;
                    self.push(Node::Int(v as i64))
                }
                0x8a => {
                    let n = self.input.byte()?;
                    let b = self.input.take(usize::from(n))?;
                    self.push(long_node(b))
                }
                0x8b => {
                    let n = self.input.u32()?;
                    let n = self.input.len(u64::from(n))?;
                    let b = self.input.take(n)?;
                    self.push(long_node(b))
                }
                b'I' => {
                    let node = match self.input.line()? {
                        "01" => Node::Bool(true),
                        "00" => Node::Bool(false),
                        s => match s.parse::<i64>() {
                            Ok(i) => Node::Int(i),
                            Err(_) => return err(format!("bad INT argument '{s}'")),
                        },
                    };
                    self.push(node)
                }
                b'L' => {
                    let s = self.input.line()?;
                    match s.trim_end_matches('L').parse::<i64>() {
                        Ok(i) => self.push(Node::Int(i)),
                        Err(_) => return err("LONG text argument beyond 64 bits"),
                    }
                }
                b'F' => {
                    let s = self.input.line()?;
                    match s.parse::<f64>() {
                        Ok(f) => self.push(Node::Float(f)),
                        Err(_) => return err(format!("bad FLOAT argument '{s}'")),
                    }
                }
                b'G' => {
                    let b = self.input.take(8)?;
                    self.push(Node::Float(f64::from_be_bytes(
                        b.try_into().expect("8 bytes"),
                    )))
                }
                0x8c => {
                    let n = usize::from(self.input.byte()?);
                    self.string(n)?
                }
                b'X' => {
                    let n = self.input.u32()?;
                    let n = self.input.len(u64::from(n))?;
                    self.string(n)?
                }
                0x8d => {
                    let n = self.input.u64()?;
                    let n = self.input.len(n)?;
                    self.string(n)?
                }
                b'C' => {
                    let n = usize::from(self.input.byte()?);
                    self.bytes(n)?
                }
                b'B' => {
                    let n = self.input.u32()?;
                    let n = self.input.len(u64::from(n))?;
                    self.bytes(n)?
                }
                0x8e | 0x96 => {
                    let n = self.input.u64()?;
                    let n = self.input.len(n)?;
                    self.bytes(n)?
                }
                b']' => self.push(Node::List(Vec::new())),
                b')' => self.push(Node::Tuple(Vec::new())),
                b'}' => self.push(Node::Dict(Vec::new())),
                0x8f => self.push(Node::Set(Vec::new())),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Node::List(items))
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Node::Tuple(items))
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(Node::Tuple(items))
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push(Node::Dict(Vec::new()));
                    let d = self.top()?;
                    self.set_items(d, items)?
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    self.push(Node::FrozenSet(items))
                }
                b'a' => {
                    let item = self.pop()?;
                    let list = self.top()?;
                    self.extend_list(list, vec![item])?
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let list = self.top()?;
                    self.extend_list(list, items)?
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let d = self.top()?;
                    self.set_items(d, vec![k, v])?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let d = self.top()?;
                    self.set_items(d, items)?
                }
                0x90 => {
                    let items = self.pop_mark()?;
                    let s = self.top()?;
                    match self.container_mut(s) {
                        Node::Set(v) => v.extend(items),
                        _ => return err("ADDITEMS to something that is not a set"),
                    }
                }
                b'g' => {
                    let s = self.input.line()?;
                    let k = s.parse::<u32>().or_else(|_| err("bad GET argument"))?;
                    self.memo_get(k)?
                }
                b'h' => {
                    let k = self.input.byte()?;
                    self.memo_get(u32::from(k))?
                }
                b'j' => {
                    let k = self.input.u32()?;
                    self.memo_get(k)?
                }
                b'p' => {
                    let s = self.input.line()?;
                    let k = s.parse::<u32>().or_else(|_| err("bad PUT argument"))?;
                    self.memo_put(k)?
                }
                b'q' => {
                    let k = self.input.byte()?;
                    self.memo_put(u32::from(k))?
                }
                b'r' => {
                    let k = self.input.u32()?;
                    self.memo_put(k)?
                }
                0x94 => {
                    let k = u32::try_from(self.memo.len()).or_else(|_| err("memo too large"))?;
                    self.memo_put(k)?
                }
                b'c' => {
                    let module = self.input.line()?;
                    let name = self.input.line()?;
                    let g = resolve_global(module, name)?;
                    self.push(Node::Global(g))
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Some(module), Some(name)) = (self.text(module), self.text(name)) else {
                        return err("STACK_GLOBAL needs two strings");
                    };
                    let g = resolve_global(module, name)?;
                    self.push(Node::Global(g))
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let n = self.reduce(func, args)?;
                    self.push(n)
                }
                0x81 => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let n = self.new_object(cls, args, None)?;
                    self.push(n)
                }
                0x92 => {
                    let kwargs = self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let n = self.new_object(cls, args, Some(kwargs))?;
                    self.push(n)
                }
                b'b' => {
                    let state = self.pop()?;
                    let obj = self.top()?;
                    self.build(obj, state)?
                }
                b'P' | b'Q' => return err("persistent ids (PERSID) are not allowed"),
                b'i' | b'o' => {
                    return err(format!(
                        "opcode {:?} (INST/OBJ) is not allowed",
                        char::from(op)
                    ))
                }
                0x82..=0x84 => return err("extension registry opcodes (EXT*) are not allowed"),
                0x97 | 0x98 => return err("out-of-band buffers are not supported"),
                b'S' | b'T' | b'U' | b'V' => {
                    return err("Python 2 string opcodes are not supported")
                }
                other => return err(format!("unknown or disallowed opcode 0x{other:02x}")),
            }
        }
    }

    fn string(&mut self, n: usize) -> Result<(), CodecError> {
        let b = self.input.take(n)?;
        match std::str::from_utf8(b) {
            Ok(s) => {
                self.push(Node::Str(s.to_owned()));
                Ok(())
            }
            Err(_) => err("string is not valid UTF-8"),
        }
    }

    fn bytes(&mut self, n: usize) -> Result<(), CodecError> {
        let b = self.input.take(n)?.to_vec();
        self.push(Node::Bytes(b));
        Ok(())
    }

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
    fn reduce(&mut self, func: usize, args: usize) -> Result<Node, CodecError> {
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
    fn new_object(
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
    fn build(&mut self, obj: usize, state: usize) -> Result<(), CodecError> {
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

impl Decoded {
    /// The root node.
    pub(super) fn root(&self) -> &Node {
        &self.nodes[self.root]
    }

    /// The string in node `i`, if it is one.
    pub(super) fn text(&self, i: usize) -> Option<&str> {
        match &self.nodes[i] {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A Token node's (typeid, id string), once its state is set.
    pub(super) fn token(&self, i: usize) -> Result<Token, CodecError> {
        let state = match self.nodes[i] {
            Node::Token(Some(s)) => s,
            Node::Proxy(t) => return self.token(t),
            Node::Token(None) => return err("Token without its state"),
            _ => return err("expected a Token"),
        };
        let Node::Tuple(parts) = &self.nodes[state] else {
            return err("Token state must be a tuple");
        };
        let (Some(typeid), Some(id)) = (self.text(parts[0]), self.text(parts[2])) else {
            return err("Token typeid and id must be strings");
        };
        let Some(id) = ObjectId::from_hex(id) else {
            return err(format!("Token id '{id}' is not a hex object id"));
        };
        Ok(Token {
            typeid: typeid.to_owned(),
            id,
        })
    }

    /// Converts node `i` into a [`Value`], spending from the budget.
    pub(super) fn value(&mut self, i: usize) -> Result<Value, CodecError> {
        self.value_at(i, 0)
    }

    fn spend(&mut self, units: usize) -> Result<(), CodecError> {
        if units > self.budget {
            return err("pickle expands beyond the size limit (shared references)");
        }
        self.budget -= units;
        Ok(())
    }

    fn values(&mut self, items: &[usize], depth: u32) -> Result<Vec<Value>, CodecError> {
        let mut out = Vec::with_capacity(items.len().min(1024));
        for &i in items {
            out.push(self.value_at(i, depth + 1)?);
        }
        Ok(out)
    }

    fn value_at(&mut self, i: usize, depth: u32) -> Result<Value, CodecError> {
        if depth > MAX_DEPTH {
            return err("value nested too deeply (or recursive)");
        }
        self.spend(1)?;
        // Cloning the index lists keeps the borrow checker out of the recursion;
        // it costs no more than the values built from them.
        Ok(match self.nodes[i].clone() {
            Node::None => Value::None,
            Node::Bool(b) => Value::Bool(b),
            Node::Int(v) => Value::Int(v),
            Node::Float(f) => Value::Float(f),
            Node::BigInt(b) => {
                self.spend(b.len())?;
                Value::BigInt(b)
            }
            Node::Str(s) => {
                self.spend(s.len())?;
                Value::Str(s)
            }
            Node::Bytes(b) => {
                self.spend(b.len())?;
                Value::Bytes(b)
            }
            Node::List(v) => Value::List(self.values(&v, depth)?),
            Node::Tuple(v) => Value::Tuple(self.values(&v, depth)?),
            Node::Set(v) => Value::Set(self.values(&v, depth)?),
            Node::FrozenSet(v) => Value::FrozenSet(self.values(&v, depth)?),
            Node::Dict(d) => {
                let mut out = Vec::with_capacity(d.len().min(1024));
                for (k, v) in d {
                    out.push((self.value_at(k, depth + 1)?, self.value_at(v, depth + 1)?));
                }
                Value::Dict(out)
            }
            Node::Slice(s) => Value::Slice(s),
            Node::Token(_) | Node::Proxy(_) => Value::Ref(self.token(i)?),
            Node::Global(_) => return err("a class or function cannot be a value"),
            Node::Exception(..) => return err("an exception cannot be a value here"),
        })
    }
}
