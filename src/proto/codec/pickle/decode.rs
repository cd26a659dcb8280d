//! The data-only pickle machine: runs the opcodes of protocols 2–5 that build
//! plain data, plus the handful of whitelisted globals managers send, into a flat
//! arena of [`Node`]s, then converts the result into [`Value`]s.
//!
//! Nothing is ever imported or called: a global is only a name compared against
//! the whitelist in [`resolve_global`], and "calling" one (REDUCE, NEWOBJ, BUILD)
//! interprets its arguments as data.
//!
//! Memory: one [`Budget`] of [`PICKLE_BYTES_PER_INPUT_BYTE`] × the input's length
//! (plus a floor) is charged with every byte the decode allocates — arena nodes,
//! the stack, marks and memo (by capacity, as they grow), strings, every
//! constructor's result (`range`, `array`, `bytes`, `list`, `set`, exceptions),
//! and each [`Value`] the conversion builds. Memo references cost an index while
//! the machine runs. A node referenced more than once is converted once: a
//! container, an opaque object, or a str, bytes or big int of at least
//! [`SHARE_MIN_BYTES`] becomes a [`Value::Shared`] at every reference (charged
//! once, plus nothing per further reference beyond the slot its parent already
//! paid for), and a smaller leaf is copied, each copy charged. The values the
//! result expands to, a shared one counted at every reference, are capped by
//! [`expanded_limit`]. A node referenced once is
//! moved out of the arena (its string is not copied, its index list is freed).
//! A structure that contains itself is refused as soon as the conversion meets
//! the node it is converting; nesting is capped by [`MAX_DEPTH`].

use std::sync::Arc;

#[cfg(doc)]
use super::super::expanded_limit;
use super::super::{Budget, CodecError, Expanded, Globals, PICKLE_BYTES_PER_INPUT_BYTE};
use super::globals::{resolve_global, Global};
use crate::proto::value::{Form, ObjectId, PyObject, Slice, Token, Value, BUILT_PARTS};

/// Deepest nesting of containers accepted in one decoded value (a recursive
/// structure trips this too).
pub const MAX_DEPTH: u32 = 128;

/// The smallest str, bytes or big int that is shared rather than copied when a
/// pickle references it more than once: below it, a copy costs no more than
/// the `Arc` (its counts and a 48-byte value) would.
pub const SHARE_MIN_BYTES: usize = 64;

/// Index of a node in the arena.
pub(super) type Ix = u32;

/// A memo slot that was never stored (and an absent part of an [`Object`]).
pub(super) const NO_MEMO: Ix = Ix::MAX;

/// An object made by a REDUCE or NEWOBJ of a global the data model does not
/// interpret (an exception class, a value type the policy allows): kept as the
/// parts that make it, to become a [`PyObject`].
#[derive(Debug)]
pub(super) struct Object {
    /// REDUCE, NEWOBJ or NEWOBJ_EX.
    pub(super) form: Form,
    /// The global called.
    pub(super) callable: Ix,
    /// The argument tuple.
    pub(super) args: Ix,
    /// NEWOBJ_EX's keyword dict, or [`NO_MEMO`].
    pub(super) kwargs: Ix,
    /// Items APPENDed onto it.
    pub(super) items: Vec<Ix>,
    /// Entries SETITEMed onto it.
    pub(super) entries: Vec<(Ix, Ix)>,
    /// Its BUILD state, or [`NO_MEMO`].
    pub(super) state: Ix,
}

/// One object built by the machine. Containers refer to other nodes by index.
#[derive(Debug)]
pub(super) enum Node {
    None,
    Bool(bool),
    Int(i64),
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Ix>),
    Tuple(Vec<Ix>),
    Dict(Vec<(Ix, Ix)>),
    Set(Vec<Ix>),
    FrozenSet(Vec<Ix>),
    Slice(Box<Slice>),
    Global(Global),
    /// A `Token` instance; its state `(typeid, address, id)` arrives by BUILD
    /// (or as REDUCE arguments) and is read at once.
    Token(Option<Box<TokenState>>),
    /// A rebuilt proxy: the index of its token.
    Proxy(Ix),
    /// An opaque object (an exception instance, a `datetime` …).
    Object(Box<Object>),
    /// An interpreted iterator (`iter`, `zip` …): the items it yields, and
    /// whether it came from `reversed` (for the position a BUILD sets).
    Iter(Vec<Ix>, bool),
    /// Converted and moved out (it was referenced once).
    Taken,
    /// Being converted: meeting it again means the value contains itself.
    Busy,
    /// Converted, referenced more than once: each further reference gets a
    /// clone of this value (a [`Value::Shared`], or a small leaf), whose heap
    /// size is the second field (0 for a shared value: a clone costs nothing)
    /// and which expands to the third field's count of values.
    Done(Box<(Value, usize, u64)>),
}

/// A Token's state, read when it is set.
#[derive(Debug)]
pub(super) struct TokenState {
    pub(super) typeid: String,
    pub(super) id: ObjectId,
    address: Address,
}

/// The address a Token names, as far as matching it against ours needs.
#[derive(Debug)]
enum Address {
    /// `(host, port)`: compared by port.
    Port(i64),
    /// A Unix socket path.
    Path(String),
    Other,
}

/// The result of running a pickle: the arena and the index of the root node.
#[derive(Debug)]
pub(super) struct Decoded {
    nodes: Vec<Node>,
    pub(super) root: Ix,
    /// How many references each node has from the nodes reachable from the
    /// root (saturating): 0 unreachable, 1 moved when converted, 2 shared.
    refs: Vec<u8>,
    budget: Budget,
    /// Values converted so far, a shared one counted at every reference.
    expanded: Expanded,
    /// Globals a value may name.
    globals: Globals,
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
    nodes: Vec<Node>,
    stack: Vec<Ix>,
    marks: Vec<u32>,
    /// Memo key → node; keys are below the input's length (a pickler numbers
    /// them from 0, one per PUT), so this is a vector, charged as it grows.
    memo: Vec<Ix>,
    /// Keys stored so far (MEMOIZE's next key, as `len(memo)` in CPython).
    memo_len: u32,
    pub(super) budget: Budget,
    /// Globals a pickle may name beyond the ones interpreted as data.
    pub(super) globals: Globals,
}

/// Runs a whole pickle. Trailing bytes after STOP are an error.
pub(super) fn run(data: &[u8], globals: Globals) -> Result<Decoded, CodecError> {
    let mut m = Machine {
        globals,
        input: Input { data, pos: 0 },
        nodes: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: Vec::new(),
        memo_len: 0,
        budget: Budget::new(data.len(), PICKLE_BYTES_PER_INPUT_BYTE),
    };
    let root = m.run()?;
    if m.input.pos != data.len() {
        return err(format!(
            "{} trailing bytes after STOP",
            data.len() - m.input.pos
        ));
    }
    let Machine {
        nodes, mut budget, ..
    } = m;
    let expanded = Expanded::new(data.len());
    let refs = count_refs(&nodes, root, &mut budget)?;
    Ok(Decoded {
        nodes,
        root,
        refs,
        budget,
        expanded,
        globals,
        home: None,
    })
}

/// The nodes `node` refers to (that a conversion may visit).
fn children(
    node: &Node,
    mut f: impl FnMut(Ix) -> Result<(), CodecError>,
) -> Result<(), CodecError> {
    match node {
        Node::List(v) | Node::Tuple(v) | Node::Set(v) | Node::FrozenSet(v) | Node::Iter(v, _) => {
            v.iter().try_for_each(|&c| f(c))
        }
        Node::Dict(d) => d.iter().try_for_each(|&(k, v)| {
            f(k)?;
            f(v)
        }),
        Node::Proxy(c) => f(*c),
        Node::Object(o) => {
            for c in [o.callable, o.args, o.kwargs, o.state] {
                if c != NO_MEMO {
                    f(c)?;
                }
            }
            o.items.iter().try_for_each(|&c| f(c))?;
            o.entries.iter().try_for_each(|&(k, v)| {
                f(k)?;
                f(v)
            })
        }
        _ => Ok(()),
    }
}

/// Counts the references to every node reachable from `root` (saturating at
/// 2), visiting each node once: memo sharing and cycles cost nothing here.
fn count_refs(nodes: &[Node], root: Ix, budget: &mut Budget) -> Result<Vec<u8>, CodecError> {
    let mut refs = budget.vec::<u8>(nodes.len())?;
    refs.resize(nodes.len(), 0);
    let mut todo: Vec<Ix> = Vec::new();
    refs[root as usize] = 1;
    todo.push(root);
    while let Some(i) = todo.pop() {
        children(&nodes[i as usize], |c| {
            let r = &mut refs[c as usize];
            if *r == 0 {
                budget.reserve(&mut todo, 1)?;
                todo.push(c);
            }
            *r = r.saturating_add(1).min(2);
            Ok(())
        })?;
    }
    Ok(refs)
}

/// Whether `b` is UTF-8 once encoded surrogates (U+D800–U+DFFF as three
/// bytes, which CPython's `surrogatepass` writes) are allowed.
pub(super) fn surrogatepass(mut b: &[u8]) -> bool {
    loop {
        match std::str::from_utf8(b) {
            Ok(_) => return true,
            Err(e) => {
                let rest = &b[e.valid_up_to()..];
                match rest {
                    [0xed, 0xa0..=0xbf, 0x80..=0xbf, ..] => b = &rest[3..],
                    _ => return false,
                }
            }
        }
    }
}

/// Minimal little-endian two's-complement form (as `Value::BigInt` keeps, and
/// as LONG1 carries).
pub(super) use crate::proto::value::minimal_le as minimal;

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
    /// The node at `i`.
    pub(super) fn node(&self, i: Ix) -> &Node {
        &self.nodes[i as usize]
    }

    /// The node at `i`, to change.
    pub(super) fn node_mut(&mut self, i: Ix) -> &mut Node {
        &mut self.nodes[i as usize]
    }

    /// Replaces the node at `i`.
    pub(super) fn set_node(&mut self, i: Ix, n: Node) {
        self.nodes[i as usize] = n;
    }

    /// Adds a node to the arena (charging its room) and returns its index.
    pub(super) fn add(&mut self, n: Node) -> Result<Ix, CodecError> {
        let Ok(i) = Ix::try_from(self.nodes.len()) else {
            return err("too many objects in one pickle");
        };
        if i == NO_MEMO {
            return err("too many objects in one pickle");
        }
        self.budget.reserve(&mut self.nodes, 1)?;
        if let Node::Object(_) = n {
            // Its box is outside the arena.
            self.budget.spend_items::<Object>(1)?;
        }
        self.nodes.push(n);
        Ok(i)
    }

    fn push_ix(&mut self, i: Ix) -> Result<(), CodecError> {
        self.budget.reserve(&mut self.stack, 1)?;
        self.stack.push(i);
        Ok(())
    }

    fn push(&mut self, n: Node) -> Result<(), CodecError> {
        let i = self.add(n)?;
        self.push_ix(i)
    }

    fn pop(&mut self) -> Result<Ix, CodecError> {
        match self.stack.pop() {
            Some(i)
                if self
                    .marks
                    .last()
                    .is_none_or(|&m| self.stack.len() >= m as usize) =>
            {
                Ok(i)
            }
            Some(_) => err("stack underflow (popped past a MARK)"),
            None => err("stack underflow"),
        }
    }

    fn top(&self) -> Result<Ix, CodecError> {
        match self.stack.last() {
            Some(&i)
                if self
                    .marks
                    .last()
                    .is_none_or(|&m| self.stack.len() > m as usize) =>
            {
                Ok(i)
            }
            _ => err("stack underflow"),
        }
    }

    /// Removes the last MARK and returns where it stood: the items pushed
    /// since are `stack[m..]`.
    fn mark(&mut self) -> Result<usize, CodecError> {
        match self.marks.pop() {
            Some(m) => Ok(m as usize),
            None => err("no MARK on the stack"),
        }
    }

    /// The items pushed since the last MARK (which is removed), in a vector
    /// of exactly their number.
    fn pop_mark(&mut self) -> Result<Vec<Ix>, CodecError> {
        let m = self.mark()?;
        let mut items = self.budget.vec(self.stack.len() - m)?;
        items.extend(self.stack.drain(m..));
        Ok(items)
    }

    /// The items pushed since the last MARK as key/value pairs.
    fn pop_mark_pairs(&mut self) -> Result<Vec<(Ix, Ix)>, CodecError> {
        let m = self.mark()?;
        let n = self.stack.len() - m;
        if n % 2 != 0 {
            return err("SETITEMS with an odd number of items");
        }
        let mut items = self.budget.vec(n / 2)?;
        items.extend(self.stack[m..].chunks(2).map(|p| (p[0], p[1])));
        self.stack.truncate(m);
        Ok(items)
    }

    pub(super) fn text(&self, i: Ix) -> Option<&str> {
        match self.node(i) {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    fn memo_get(&mut self, k: u32) -> Result<(), CodecError> {
        match self.memo.get(k as usize) {
            Some(&i) if i != NO_MEMO => self.push_ix(i),
            _ => err(format!("memo key {k} was never stored")),
        }
    }

    fn memo_put(&mut self, k: u32) -> Result<(), CodecError> {
        let top = self.top()?;
        let k = k as usize;
        if k >= self.input.data.len() {
            return err(format!(
                "memo key {k} is beyond what a pickle of this size can number"
            ));
        }
        if k >= self.memo.len() {
            let extra = k + 1 - self.memo.len();
            self.budget.reserve(&mut self.memo, extra)?;
            self.memo.resize(k + 1, NO_MEMO);
        }
        if self.memo[k] == NO_MEMO {
            self.memo_len += 1;
        }
        self.memo[k] = top;
        Ok(())
    }

    /// Moves the items from `stack[m..]` into the container `at`: a list for
    /// APPEND(S) (`op` b'a', b'e'), a dict for SETITEM(S) (b's', b'u'), a set
    /// for ADDITEMS.
    fn extend(&mut self, at: Ix, m: usize, op: u8) -> Result<(), CodecError> {
        let Machine {
            nodes,
            stack,
            budget,
            ..
        } = self;
        let items = &stack[m..];
        match (op, &mut nodes[at as usize]) {
            (b'a' | b'e', Node::List(v)) | (0x90, Node::Set(v)) => {
                budget.reserve(v, items.len())?;
                v.extend_from_slice(items);
            }
            (b's' | b'u', Node::Dict(d)) => {
                if items.len() % 2 != 0 {
                    return err("SETITEMS with an odd number of items");
                }
                budget.reserve(d, items.len() / 2)?;
                d.extend(items.chunks(2).map(|p| (p[0], p[1])));
            }
            (b'a' | b'e', Node::Object(o)) => {
                budget.reserve(&mut o.items, items.len())?;
                o.items.extend_from_slice(items);
            }
            (b's' | b'u', Node::Object(o)) => {
                if items.len() % 2 != 0 {
                    return err("SETITEMS with an odd number of items");
                }
                budget.reserve(&mut o.entries, items.len() / 2)?;
                o.entries.extend(items.chunks(2).map(|p| (p[0], p[1])));
            }
            (b'a' | b'e', _) => return err("APPEND to something that is not a list"),
            (b's' | b'u', _) => return err("SETITEM on something that is not a dict"),
            _ => return err("ADDITEMS to something that is not a set"),
        }
        stack.truncate(m);
        Ok(())
    }

    /// APPEND / SETITEM: the last `n` items go into the container under them.
    fn extend_top(&mut self, n: usize, op: u8) -> Result<(), CodecError> {
        let floor = self.marks.last().map_or(0, |&m| m as usize);
        if self.stack.len() < floor + n + 1 {
            return err("stack underflow");
        }
        let m = self.stack.len() - n;
        let at = self.stack[m - 1];
        self.extend(at, m, op)
    }

    /// APPENDS / SETITEMS / ADDITEMS: the items since the last MARK go into the
    /// container under the MARK.
    fn extend_mark(&mut self, op: u8) -> Result<(), CodecError> {
        let m = self.mark()?;
        let floor = self.marks.last().map_or(0, |&m| m as usize);
        if m <= floor {
            return err("stack underflow");
        }
        let at = self.stack[m - 1];
        self.extend(at, m, op)
    }

    fn run(&mut self) -> Result<Ix, CodecError> {
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
                b'(' => {
                    let at = self.stack.len() as u32;
                    self.budget.reserve(&mut self.marks, 1)?;
                    self.marks.push(at)
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    let m = self.mark()?;
                    self.stack.truncate(m);
                }
                b'2' => {
                    let t = self.top()?;
                    self.push_ix(t)?
                }
                b'N' => self.push(Node::None)?,
                0x88 => self.push(Node::Bool(true))?,
                0x89 => self.push(Node::Bool(false))?,
                b'J' => {
                    let v = self.input.u32()? as i32;
                    self.push(Node::Int(i64::from(v)))?
                }
                b'K' => {
                    let v = self.input.byte()?;
                    self.push(Node::Int(i64::from(v)))?
                }
                b'M' => {
                    let v = self.input.u16()?;
                    self.push(Node::Int(v as i64))?
                }
                0x8a => {
                    let n = self.input.byte()?;
                    let b = self.input.take(usize::from(n))?;
                    self.budget.spend(b.len())?;
                    self.push(long_node(b))?
                }
                0x8b => {
                    let n = self.input.u32()?;
                    let n = self.input.len(u64::from(n))?;
                    let b = self.input.take(n)?;
                    self.budget.spend(b.len())?;
                    self.push(long_node(b))?
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
                    self.push(node)?
                }
                b'L' => {
                    let s = self.input.line()?;
                    match s.trim_end_matches('L').parse::<i64>() {
                        Ok(i) => self.push(Node::Int(i))?,
                        Err(_) => return err("LONG text argument beyond 64 bits"),
                    }
                }
                b'F' => {
                    let s = self.input.line()?;
                    match s.parse::<f64>() {
                        Ok(f) => self.push(Node::Float(f))?,
                        Err(_) => return err(format!("bad FLOAT argument '{s}'")),
                    }
                }
                b'G' => {
                    let b = self.input.take(8)?;
                    self.push(Node::Float(f64::from_be_bytes(
                        b.try_into().expect("8 bytes"),
                    )))?
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
                    self.bytes(n)?;
                    if op == 0x96 {
                        // BYTEARRAY8: kept as `bytearray(b)`, as it came back.
                        let data = self.pop()?;
                        let func = self.add(Node::Global(Global::Bytes(true)))?;
                        let mut items = self.budget.vec(1)?;
                        items.push(data);
                        let args = self.add(Node::Tuple(items))?;
                        let n = self.reduce(func, args)?;
                        self.push(n)?
                    }
                }
                b']' => self.push(Node::List(Vec::new()))?,
                b')' => self.push(Node::Tuple(Vec::new()))?,
                b'}' => self.push(Node::Dict(Vec::new()))?,
                0x8f => self.push(Node::Set(Vec::new()))?,
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Node::List(items))?
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Node::Tuple(items))?
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let floor = self.marks.last().map_or(0, |&m| m as usize);
                    if self.stack.len() < floor + n {
                        return err("stack underflow");
                    }
                    let m = self.stack.len() - n;
                    let mut items = self.budget.vec(n)?;
                    items.extend(self.stack.drain(m..));
                    self.push(Node::Tuple(items))?
                }
                b'd' => {
                    let items = self.pop_mark_pairs()?;
                    self.push(Node::Dict(items))?
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    self.push(Node::FrozenSet(items))?
                }
                b'a' => self.extend_top(1, op)?,
                b's' => self.extend_top(2, op)?,
                b'e' | b'u' | 0x90 => self.extend_mark(op)?,
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
                0x94 => self.memo_put(self.memo_len)?,
                b'c' => {
                    let module = self.input.line()?;
                    let name = self.input.line()?;
                    let g = resolve_global(module, name, self.globals)?;
                    self.push_global(g)?
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Some(module), Some(name)) = (self.text(module), self.text(name)) else {
                        return err("STACK_GLOBAL needs two strings");
                    };
                    let g = resolve_global(module, name, self.globals)?;
                    self.push_global(g)?
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let n = self.reduce(func, args)?;
                    self.push(n)?
                }
                0x81 => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let n = self.new_object(cls, args, None)?;
                    self.push(n)?
                }
                0x92 => {
                    let kwargs = self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let n = self.new_object(cls, args, Some(kwargs))?;
                    self.push(n)?
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

    fn push_global(&mut self, g: Global) -> Result<(), CodecError> {
        match &g {
            Global::Exception(name) => self.budget.spend(name.len())?,
            Global::Other(mn) => self
                .budget
                .spend(mn.0.len() + mn.1.len() + std::mem::size_of::<(String, String)>())?,
            _ => {}
        }
        self.push(Node::Global(g))
    }

    fn string(&mut self, n: usize) -> Result<(), CodecError> {
        let b = self.input.take(n)?;
        match std::str::from_utf8(b) {
            Ok(s) => {
                self.budget.spend(n)?;
                self.push(Node::Str(s.to_owned()))
            }
            Err(_) if surrogatepass(b) => self.surrogate_string(b),
            Err(_) => err("string is not valid UTF-8"),
        }
    }

    /// A str with lone surrogates (CPython pickles it with `surrogatepass`),
    /// which a Rust `String` cannot hold: kept as the opaque value
    /// `_codecs.decode(bytes, 'utf-8', 'surrogatepass')`, which unpickles to
    /// the same str.
    fn surrogate_string(&mut self, b: &[u8]) -> Result<(), CodecError> {
        if self.globals == Globals::None {
            return err(
                "a str with lone surrogates is only kept as an opaque value, \
                        which this server refuses (--globals none)",
            );
        }
        self.budget.spend(b.len() + 16)?;
        let func = self.add(Node::Global(Global::CodecsDecode))?;
        let data = self.add(Node::Bytes(b.to_vec()))?;
        let enc = self.add(Node::Str("utf-8".to_owned()))?;
        let errors = self.add(Node::Str("surrogatepass".to_owned()))?;
        let mut items = self.budget.vec(3)?;
        items.extend([data, enc, errors]);
        let args = self.add(Node::Tuple(items))?;
        let n = self.reduce(func, args)?;
        self.push(n)
    }

    fn bytes(&mut self, n: usize) -> Result<(), CodecError> {
        let b = self.input.take(n)?;
        self.budget.spend(n)?;
        self.push(Node::Bytes(b.to_vec()))
    }

    /// Reads a Token's state tuple `(typeid, address, id)`.
    pub(super) fn token_state(&mut self, state: Ix) -> Result<Box<TokenState>, CodecError> {
        let (t, a, i) = match self.node(state) {
            Node::Tuple(v) if v.len() == 3 => (v[0], v[1], v[2]),
            _ => return err("Token state must be (typeid, address, id)"),
        };
        let (Some(typeid), Some(id)) = (self.text(t), self.text(i)) else {
            return err("Token typeid and id must be strings");
        };
        let Some(id) = ObjectId::from_hex(id) else {
            return err(format!("Token id '{id}' is not a hex object id"));
        };
        let address = match self.node(a) {
            Node::Tuple(p) if p.len() == 2 => match *self.node(p[1]) {
                Node::Int(port) => Address::Port(port),
                _ => Address::Other,
            },
            Node::Str(s) => Address::Path(s.clone()),
            _ => Address::Other,
        };
        let typeid = typeid.to_owned();
        let heap = typeid.len()
            + match &address {
                Address::Path(p) => p.len(),
                _ => 0,
            };
        self.budget
            .spend(heap + std::mem::size_of::<TokenState>())?;
        Ok(Box::new(TokenState {
            typeid,
            id,
            address,
        }))
    }
}

impl Decoded {
    /// The node at `i`.
    pub(super) fn node(&self, i: Ix) -> &Node {
        &self.nodes[i as usize]
    }

    /// The root node.
    pub(super) fn root(&self) -> &Node {
        self.node(self.root)
    }

    /// The string in node `i`, if it is one.
    pub(super) fn text(&self, i: Ix) -> Option<&str> {
        match self.node(i) {
            Node::Str(s) => Some(s),
            Node::Done(d) => d.0.as_str(),
            _ => None,
        }
    }

    /// The kind and args tuple of an exception instance at `i` (an object made
    /// by an exception class).
    pub(super) fn exception(&self, i: Ix) -> Option<(String, Ix)> {
        let Node::Object(o) = self.node(i) else {
            return None;
        };
        match self.node(o.callable) {
            Node::Global(super::globals::Global::Exception(kind)) => Some((kind.clone(), o.args)),
            _ => None,
        }
    }

    /// Charges `bytes` to this decode's budget.
    pub(super) fn spend(&mut self, bytes: usize) -> Result<(), CodecError> {
        self.budget.spend(bytes)
    }

    /// Bytes left in this decode's budget.
    pub(super) fn left(&self) -> usize {
        self.budget.left()
    }

    /// A Token (or proxy) node as a [`Token`], checked against `home`.
    pub(super) fn token(&mut self, i: Ix) -> Result<Token, CodecError> {
        let st = match self.node(i) {
            Node::Token(Some(s)) => s,
            &Node::Proxy(t) => return self.token(t),
            Node::Token(None) => return err("Token without its state"),
            _ => return err("expected a Token"),
        };
        if let Some(home) = &self.home {
            let same = match (&st.address, home) {
                (Address::Port(a), Value::Tuple(h)) if h.len() == 2 => {
                    matches!(h[1], Value::Int(b) if b == *a)
                }
                (Address::Path(a), Value::Str(b)) => a == b,
                _ => false,
            };
            if !same {
                return err(format!(
                    "a proxy of another manager ({} {}) cannot be sent to this server",
                    st.typeid, st.id
                ));
            }
        }
        let (n, id) = (st.typeid.len(), st.id);
        self.budget.spend(n)?;
        let Node::Token(Some(st)) = self.node(i) else {
            unreachable!("matched a token")
        };
        Ok(Token {
            typeid: st.typeid.clone(),
            id,
        })
    }

    /// Converts node `i` into a [`Value`], spending from the budget.
    pub(super) fn value(&mut self, i: Ix) -> Result<Value, CodecError> {
        self.value_at(i, 0).map(|(v, _)| v)
    }

    /// Node `i` as a value and the bytes its heap holds. A node referenced
    /// once is moved out of the arena; a shared one is converted once, kept,
    /// and copied (and charged) for every reference.
    fn value_at(&mut self, i: Ix, depth: u32) -> Result<(Value, usize), CodecError> {
        if depth > MAX_DEPTH {
            return err("value nested too deeply (or recursive)");
        }
        match self.node(i) {
            Node::Token(_) | Node::Proxy(_) => {
                self.expanded.add(1)?;
                let t = self.token(i)?;
                let n = t.typeid.len();
                return Ok((Value::Ref(t), n));
            }
            Node::Done(d) => {
                let (size, n) = (d.1, d.2);
                self.expanded.add(n)?;
                self.budget.spend(size)?;
                let Node::Done(d) = self.node(i) else {
                    unreachable!("matched Done")
                };
                return Ok((d.0.clone(), size));
            }
            Node::Busy => return err("value is recursive (it contains itself)"),
            Node::Taken => return err("a value referenced once was converted twice"),
            _ => {}
        }
        let shared = self.refs.get(i as usize).is_none_or(|&r| r > 1);
        let slot = if shared { Node::Busy } else { Node::Taken };
        let node = std::mem::replace(&mut self.nodes[i as usize], slot);
        let before = self.expanded.count();
        self.expanded.add(1)?;
        let (v, size) = self.convert(node, depth)?;
        if !shared {
            return Ok((v, size));
        }
        let n = self.expanded.count() - before;
        let kept = std::mem::size_of::<(Value, usize, u64)>();
        if worth_sharing(&v) {
            // The Arc's counts and value; every reference clones the Arc.
            self.budget
                .spend(kept + 16 + std::mem::size_of::<Value>())?;
            let v = Value::Shared(Arc::new(v));
            self.nodes[i as usize] = Node::Done(Box::new((v.clone(), 0, n)));
            return Ok((v, 0));
        }
        self.budget.spend(size + kept)?;
        let copy = v.clone();
        self.nodes[i as usize] = Node::Done(Box::new((v, size, n)));
        Ok((copy, size))
    }

    /// Converts a node taken out of the arena, moving its contents.
    fn convert(&mut self, node: Node, depth: u32) -> Result<(Value, usize), CodecError> {
        Ok(match node {
            Node::None => (Value::None, 0),
            Node::Bool(b) => (Value::Bool(b), 0),
            Node::Int(v) => (Value::Int(v), 0),
            Node::Float(f) => (Value::Float(f), 0),
            Node::BigInt(b) => {
                self.expanded.add_payload(b.len())?;
                let n = b.capacity();
                (Value::BigInt(b), n)
            }
            Node::Str(s) => {
                self.expanded.add_payload(s.len())?;
                let n = s.capacity();
                (Value::Str(s), n)
            }
            Node::Bytes(b) => {
                self.expanded.add_payload(b.len())?;
                let n = b.capacity();
                (Value::Bytes(b), n)
            }
            Node::List(v) | Node::Iter(v, _) => self.values(&v, depth, Value::List)?,
            Node::Tuple(v) => self.values(&v, depth, Value::Tuple)?,
            Node::Set(v) => self.values(&v, depth, Value::Set)?,
            Node::FrozenSet(v) => self.values(&v, depth, Value::FrozenSet)?,
            Node::Dict(d) => {
                let mut out = self.budget.vec::<(Value, Value)>(d.len())?;
                let mut size = d.len() * std::mem::size_of::<(Value, Value)>();
                for &(k, v) in &d {
                    let (k, kn) = self.value_at(k, depth + 1)?;
                    let (v, vn) = self.value_at(v, depth + 1)?;
                    size += kn + vn;
                    out.push((k, v));
                }
                (Value::Dict(out), size)
            }
            Node::Slice(s) => (Value::Slice(*s), 0),
            Node::Global(g) => {
                let Some((module, name)) = g.py_name() else {
                    return err("a class or function cannot be a value");
                };
                // `_codecs.decode` only ever makes a surrogate str (see reduce).
                if !self.globals.allows_bare(module, name) && g != Global::CodecsDecode {
                    return err(self.globals.refusal(module, name));
                }
                let size = module.len() + name.len() + std::mem::size_of::<PyObject>();
                self.budget.spend(size)?;
                (Value::opaque_global(module, name), size)
            }
            Node::Object(o) => self.object(*o, depth)?,
            Node::Token(_) | Node::Proxy(_) | Node::Taken | Node::Busy | Node::Done(_) => {
                return err("internal: node converted out of turn")
            }
        })
    }

    /// An opaque object's parts converted, as a [`PyObject`].
    fn object(&mut self, o: Object, depth: u32) -> Result<(Value, usize), CodecError> {
        let mut size = BUILT_PARTS * std::mem::size_of::<Value>() + std::mem::size_of::<PyObject>();
        self.budget.spend(size)?;
        let mut parts = Vec::with_capacity(BUILT_PARTS);
        let mut part = |d: &mut Decoded, i: Ix, absent: Value| -> Result<(), CodecError> {
            let v = if i == NO_MEMO {
                absent
            } else {
                let (v, n) = d.value_at(i, depth + 1)?;
                size += n;
                v
            };
            parts.push(v);
            Ok(())
        };
        part(self, o.callable, Value::None)?;
        part(self, o.args, Value::Tuple(Vec::new()))?;
        part(self, o.kwargs, Value::Dict(Vec::new()))?;
        let (items, n) = self.values(&o.items, depth, Value::List)?;
        size += n;
        parts.push(items);
        let mut entries = self.budget.vec::<(Value, Value)>(o.entries.len())?;
        size += o.entries.len() * std::mem::size_of::<(Value, Value)>();
        for &(k, v) in &o.entries {
            let (k, kn) = self.value_at(k, depth + 1)?;
            let (v, vn) = self.value_at(v, depth + 1)?;
            size += kn + vn;
            entries.push((k, v));
        }
        parts.push(Value::Dict(entries));
        let mut part = |d: &mut Decoded, i: Ix| -> Result<(), CodecError> {
            let v = if i == NO_MEMO {
                Value::None
            } else {
                let (v, n) = d.value_at(i, depth + 1)?;
                size += n;
                v
            };
            parts.push(v);
            Ok(())
        };
        part(self, o.state)?;
        match PyObject::from_parts(o.form, parts) {
            Some(p) => Ok((Value::Opaque(Box::new(p)), size)),
            None => err("an object's arguments must be a tuple and its keyword arguments a dict"),
        }
    }

    fn values(
        &mut self,
        items: &[Ix],
        depth: u32,
        make: fn(Vec<Value>) -> Value,
    ) -> Result<(Value, usize), CodecError> {
        let mut out = self.budget.vec::<Value>(items.len())?;
        let mut size = items.len() * std::mem::size_of::<Value>();
        for &i in items {
            let (v, n) = self.value_at(i, depth + 1)?;
            size += n;
            out.push(v);
        }
        Ok((make(out), size))
    }
}

/// Whether a value a pickle references more than once is shared rather than
/// copied at each reference: containers and built objects always, strings,
/// byte strings and big ints from [`SHARE_MIN_BYTES`].
fn worth_sharing(v: &Value) -> bool {
    match v {
        Value::Str(s) => s.len() >= SHARE_MIN_BYTES,
        Value::Bytes(b) | Value::BigInt(b) => b.len() >= SHARE_MIN_BYTES,
        // A bare global (a class such as `array.array`, named by every object
        // it makes) is no container: copied, so an object's callable stays
        // itself.
        v => v.is_container(),
    }
}

// The arena's per-object cost is part of the stated bound: keep nodes small.
const _: () = assert!(std::mem::size_of::<Node>() <= 32);
