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
use super::globals::{resolve_global, Global};
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
    /// When set, every token must carry this server address (CPython's form):
    /// a proxy of another manager is refused rather than mistaken for one of
    /// ours. TCP addresses match by port, since a client may name the host
    /// differently (`localhost`, `127.0.0.1`, the wildcard it was bound to).
    pub(super) home: Option<Value>,
}

pub(super) fn err<T>(msg: impl Into<String>) -> Result<T, CodecError> {
    Err(CodecError::new(format!("pickle: {}", msg.into())))
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
pub(super) struct Machine<'a> {
    input: Input<'a>,
    pub(super) nodes: Vec<Node>,
    stack: Vec<usize>,
    marks: Vec<usize>,
    memo: HashMap<u32, usize>,
}

impl Machine<'_> {
    /// Most items a `range()` in this pickle may expand to: the conversion
    /// budget, so a tiny pickle cannot ask for a huge list.
    pub(super) fn range_limit(&self) -> usize {
        self.input.data.len().saturating_mul(BUDGET_PER_BYTE) + BUDGET_FLOOR
    }
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
        home: None,
    })
}

/// Minimal little-endian two's-complement form of `b` (as Value::BigInt keeps,
/// and as LONG1 carries).
pub(super) fn minimal(mut b: Vec<u8>) -> Vec<u8> {
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
pub(super) fn long_node(bytes: &[u8]) -> Node {
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

    pub(super) fn text(&self, i: usize) -> Option<&str> {
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
        if let Some(home) = &self.home {
            let same = match (&self.nodes[parts[1]], home) {
                (Node::Tuple(p), Value::Tuple(h)) if p.len() == 2 && h.len() == 2 => {
                    matches!((&self.nodes[p[1]], &h[1]), (Node::Int(a), Value::Int(b)) if a == b)
                }
                (Node::Str(a), Value::Str(b)) => a == b,
                _ => false,
            };
            if !same {
                return err(format!(
                    "a proxy of another manager ({typeid} {id}) cannot be sent to this server"
                ));
            }
        }
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
