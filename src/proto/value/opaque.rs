//! [`PyObject`]: a Python object the data model cannot represent (a `datetime`,
//! a `Decimal`, an exception instance, a user class), kept as the inert data
//! that rebuilds it — the global that makes it, its arguments, its state, and
//! the items and entries added to it — so the server can store it and hand it
//! back exactly as it came without understanding it, and never calls anything.
//!
//! Its parts are ordinary [`Value`]s, children of the tree like a tuple's items:
//! cloning, comparing, dropping and walking a value reach inside an opaque one
//! without recursion (see `tree`). Which globals may appear is the decoder's
//! policy (`proto::codec::pickle::Globals`), not this module's.

use std::fmt;

use super::Value;

/// How a [`PyObject`] is made, as pickle says it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Form {
    /// A class or function used as a value, named by module and qualified name
    /// (`builtins.list` as a `defaultdict`'s factory, a class object).
    Global {
        /// The module (`collections`).
        module: String,
        /// The name within it (`OrderedDict`).
        name: String,
    },
    /// `callable(*args)` (pickle's REDUCE).
    Reduce,
    /// `cls.__new__(cls, *args)` (NEWOBJ).
    NewObj,
    /// `cls.__new__(cls, *args, **kwargs)` (NEWOBJ_EX).
    NewObjEx,
}

/// Index of each part of a built (non-[`Form::Global`]) object.
pub(crate) const CALLABLE: usize = 0;
pub(crate) const ARGS: usize = 1;
pub(crate) const KWARGS: usize = 2;
pub(crate) const ITEMS: usize = 3;
pub(crate) const ENTRIES: usize = 4;
pub(crate) const STATE: usize = 5;
/// Parts of a built object.
pub(crate) const BUILT_PARTS: usize = 6;

/// An opaque Python object: see the module docs. Equality is by content.
#[derive(Clone, PartialEq)]
pub struct PyObject {
    form: Form,
    /// Empty for a global; else `[callable, args (tuple), kwargs (dict), items
    /// (list), entries (dict), state (None when there is none)]`: the order
    /// pickle writes them in.
    parts: Vec<Value>,
}

impl PyObject {
    /// A class or function used as a value.
    pub fn global(module: impl Into<String>, name: impl Into<String>) -> PyObject {
        PyObject {
            form: Form::Global {
                module: module.into(),
                name: name.into(),
            },
            parts: Vec::new(),
        }
    }

    /// An object made by `form` (not [`Form::Global`]) from `callable` (usually
    /// a global) and the items of `args`, with no keyword arguments, state,
    /// items or entries yet.
    ///
    /// # Panics
    ///
    /// When `form` is [`Form::Global`] (use [`PyObject::global`]).
    pub fn built(form: Form, callable: Value, args: Vec<Value>) -> PyObject {
        assert!(
            !matches!(form, Form::Global { .. }),
            "a global has no parts"
        );
        PyObject {
            form,
            parts: vec![
                callable,
                Value::Tuple(args),
                Value::Dict(Vec::new()),
                Value::List(Vec::new()),
                Value::Dict(Vec::new()),
                Value::None,
            ],
        }
    }

    /// Rebuilds an object from its form and parts as [`parts`](Self::parts)
    /// returns them; `None` unless they have the shapes a decoder guarantees
    /// (none for a global; else args a tuple, kwargs a dict, items a list,
    /// entries a dict, and kwargs empty unless the form is NEWOBJ_EX).
    pub fn from_parts(form: Form, parts: Vec<Value>) -> Option<PyObject> {
        let ok = match form {
            Form::Global { .. } => parts.is_empty(),
            _ => {
                parts.len() == BUILT_PARTS
                    && matches!(parts[ARGS].resolved(), Value::Tuple(_))
                    && matches!(parts[KWARGS].resolved(), Value::Dict(d)
                        if d.is_empty() || form == Form::NewObjEx)
                    && matches!(parts[ITEMS].resolved(), Value::List(_))
                    && matches!(parts[ENTRIES].resolved(), Value::Dict(_))
            }
        };
        ok.then_some(PyObject { form, parts })
    }

    /// How the object is made.
    pub fn form(&self) -> &Form {
        &self.form
    }

    /// The parts, in the order [`from_parts`](Self::from_parts) takes them.
    pub fn parts(&self) -> &[Value] {
        &self.parts
    }

    pub(crate) fn parts_mut(&mut self) -> &mut Vec<Value> {
        &mut self.parts
    }

    /// The module and name of the global this object is, or (for a built
    /// object) of the global that makes it, when that is a global.
    pub fn global_name(&self) -> Option<(&str, &str)> {
        match &self.form {
            Form::Global { module, name } => Some((module, name)),
            _ => match self.parts[CALLABLE].resolved() {
                Value::Opaque(o) => match &o.form {
                    Form::Global { module, name } => Some((module, name)),
                    _ => None,
                },
                _ => None,
            },
        }
    }

    /// Part `i`, seen through sharing.
    fn part(&self, i: usize) -> Option<&Value> {
        self.parts.get(i).map(Value::resolved)
    }

    /// What makes a built object (`None` for a global).
    pub fn callable(&self) -> Option<&Value> {
        self.part(CALLABLE)
    }

    /// The positional arguments (a tuple), for a built object.
    pub fn args(&self) -> Option<&Value> {
        self.part(ARGS)
    }

    /// The keyword arguments (a dict, empty unless NEWOBJ_EX).
    pub fn kwargs(&self) -> Option<&Value> {
        self.part(KWARGS)
    }

    /// The BUILD state (`None` when there was none).
    pub fn state(&self) -> Option<&Value> {
        self.part(STATE)
    }

    /// Items appended after construction (APPENDS), a list.
    pub fn items(&self) -> Option<&Value> {
        self.part(ITEMS)
    }

    /// Entries set after construction (SETITEMS), a dict.
    pub fn entries(&self) -> Option<&Value> {
        self.part(ENTRIES)
    }

    /// Sets the BUILD state (`None`: none) of a built object; a global has
    /// no state and is left as it is.
    pub fn set_state(&mut self, state: Value) {
        if let Some(s) = self.parts.get_mut(STATE) {
            *s = state;
        }
    }

    /// The entries of a `collections` Counter, OrderedDict or defaultdict
    /// (its dict argument, then the entries set onto it); `None` for any other
    /// object. Read as data: nothing is called.
    pub fn mapping_entries(&self) -> Option<Vec<(Value, Value)>> {
        let ("collections", "Counter" | "OrderedDict" | "defaultdict") = self.global_name()? else {
            return None;
        };
        if self.form != Form::Reduce
            || !matches!(self.items(), Some(Value::List(v)) if v.is_empty())
        {
            return None;
        }
        let mut out = Vec::new();
        match (self.global_name()?.1, self.args()) {
            ("Counter", Some(Value::Tuple(a))) => match a.first().map(Value::resolved) {
                None => {}
                Some(Value::Dict(d)) if a.len() == 1 => out.extend(d.iter().cloned()),
                _ => return None,
            },
            ("OrderedDict", Some(Value::Tuple(a))) if a.is_empty() => {}
            ("defaultdict", Some(Value::Tuple(a))) if a.len() <= 1 => {}
            _ => return None,
        }
        if let Some(Value::Dict(d)) = self.entries() {
            out.extend(d.iter().cloned());
        }
        Some(out)
    }

    /// The items of a `collections.deque` (its list argument, then the items
    /// appended onto it); `None` for any other object.
    pub fn sequence_items(&self) -> Option<Vec<Value>> {
        if self.global_name()? != ("collections", "deque") || self.form != Form::Reduce {
            return None;
        }
        let mut out = Vec::new();
        match self.args() {
            Some(Value::Tuple(a)) => match a.first().map(Value::resolved) {
                None => {}
                Some(Value::List(v) | Value::Tuple(v)) => out.extend(v.iter().cloned()),
                Some(_) => return None,
            },
            _ => return None,
        }
        if let Some(Value::List(v)) = self.items() {
            out.extend(v.iter().cloned());
        }
        Some(out)
    }

    /// `(start, stop, step)` of a `range` kept as the call that makes it.
    pub fn range_bounds(&self) -> Option<(i64, i64, i64)> {
        if self.global_name()? != ("builtins", "range") || self.form != Form::Reduce {
            return None;
        }
        let Some(Value::Tuple(a)) = self.args() else {
            return None;
        };
        let int = |i: usize| a.get(i).and_then(Value::as_int);
        match a.len() {
            1 => Some((0, int(0)?, 1)),
            2 => Some((int(0)?, int(1)?, 1)),
            3 => Some((int(0)?, int(1)?, int(2)?)).filter(|r| r.2 != 0),
            _ => None,
        }
    }

    /// The bytes of a `bytearray` kept as the call that makes it.
    pub fn bytearray_bytes(&self) -> Option<&[u8]> {
        if self.global_name()? != ("builtins", "bytearray") || self.form != Form::Reduce {
            return None;
        }
        match self.args() {
            Some(Value::Tuple(a)) => match &a[..] {
                [] => Some(&[]),
                [b] => b.as_bytes(),
                _ => None,
            },
            _ => None,
        }
    }

    /// The typecode and data of an `array.array` kept as the call that makes
    /// it: `array(code, items)` or `_array_reconstructor(array, code, mformat,
    /// bytes)`.
    pub fn array_data(&self) -> Option<(char, ArrayData<'_>)> {
        if self.form != Form::Reduce {
            return None;
        }
        let Some(Value::Tuple(a)) = self.args() else {
            return None;
        };
        let code = |v: &Value| {
            let s = v.as_str()?;
            let mut c = s.chars();
            match (c.next(), c.next()) {
                (Some(tc), None) => Some(tc),
                _ => None,
            }
        };
        match (self.global_name()?, &a[..]) {
            (("array", "array"), [tc, data]) => Some((
                code(tc)?,
                match data.resolved() {
                    Value::List(v) => ArrayData::Items(v),
                    Value::Str(s) => ArrayData::Text(s),
                    Value::Bytes(b) => ArrayData::Native(b),
                    _ => return None,
                },
            )),
            (("array", "_array_reconstructor"), [_, tc, fmt, b]) => match fmt.resolved() {
                Value::Int(fmt) => Some((code(tc)?, ArrayData::Machine(*fmt, b.as_bytes()?))),
                _ => None,
            },
            _ => None,
        }
    }

    /// Python's type name for messages: the class name when known.
    pub fn type_name(&self) -> &str {
        match (&self.form, self.global_name()) {
            (Form::Global { .. }, _) => "type",
            (_, Some((_, name))) => name,
            _ => "object",
        }
    }

    /// Python-like `repr()` text, without recursion: `Decimal('1.5')` for a
    /// REDUCE of a global whose arguments are all plain leaves, `<class
    /// 'm.n'>` for a global, `<m.n object>` otherwise.
    pub(crate) fn fmt_repr(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some((module, name)) = self.global_name() else {
            return f.write_str("<object>");
        };
        if let Form::Global { .. } = self.form {
            return match (module, name.split_once('.')) {
                ("builtins", Some((class, method))) => {
                    write!(f, "<method '{method}' of '{class}' objects>")
                }
                ("builtins", None)
                    if name.starts_with(|c: char| c.is_lowercase())
                        && !matches!(
                            name,
                            "int"
                                | "float"
                                | "str"
                                | "bytes"
                                | "bytearray"
                                | "bool"
                                | "list"
                                | "tuple"
                                | "dict"
                                | "set"
                                | "frozenset"
                                | "object"
                                | "range"
                                | "slice"
                                | "complex"
                        ) =>
                {
                    write!(f, "<built-in function {name}>")
                }
                ("builtins", None) => write!(f, "<class '{name}'>"),
                _ => write!(f, "<class '{module}.{name}'>"),
            };
        }
        if let Some(text) = self.known_repr(module, name) {
            return f.write_str(&text);
        }
        let plain =
            |v: &Value| !v.resolved().is_container() && !matches!(v.resolved(), Value::Opaque(_));
        let simple = matches!(self.form, Form::Reduce)
            && matches!(self.state(), Some(Value::None))
            && matches!(self.items(), Some(Value::List(v)) if v.is_empty())
            && matches!(self.entries(), Some(Value::Dict(d)) if d.is_empty());
        match self.args() {
            Some(Value::Tuple(args)) if simple && args.iter().all(plain) => {
                write!(f, "{name}(")?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str(")")
            }
            _ => write!(f, "<{module}.{name} object>"),
        }
    }
}

impl PyObject {
    /// CPython's own `repr()` for the standard library's value types whose
    /// pickled form is not their repr (`datetime.datetime(2024, 5, 1, 0, 0)`,
    /// `datetime.timedelta(days=3)`, `Fraction(1, 3)`, `UUID('…')`), read from
    /// their arguments or state as data; `None` for anything else (and for
    /// forms these types do not pickle to: time zones, `fold`).
    fn known_repr(&self, module: &str, name: &str) -> Option<String> {
        let args = match self.args() {
            Some(Value::Tuple(a)) => a.as_slice(),
            _ => &[],
        };
        // `(h, m[, s[, us]])` as datetime and time print them: seconds only
        // when not zero or when microseconds follow.
        let clock = |b: &[u8]| {
            let (h, m, sec) = (b[0], b[1], b[2]);
            let us = (u32::from(b[3]) << 16) | (u32::from(b[4]) << 8) | u32::from(b[5]);
            match (sec, us) {
                (_, 1..) => format!("{h}, {m}, {sec}, {us}"),
                (1.., 0) => format!("{h}, {m}, {sec}"),
                _ => format!("{h}, {m}"),
            }
        };
        match (module, name, args) {
            ("datetime", "datetime", [Value::Bytes(b)]) if b.len() == 10 && b[2] & 0x80 == 0 => {
                let year = u16::from(b[0]) << 8 | u16::from(b[1]);
                Some(format!(
                    "datetime.datetime({year}, {}, {}, {})",
                    b[2],
                    b[3],
                    clock(&b[4..])
                ))
            }
            ("datetime", "date", [Value::Bytes(b)]) if b.len() == 4 => {
                let year = u16::from(b[0]) << 8 | u16::from(b[1]);
                Some(format!("datetime.date({year}, {}, {})", b[2], b[3]))
            }
            ("datetime", "time", [Value::Bytes(b)]) if b.len() == 6 && b[0] & 0x80 == 0 => {
                Some(format!("datetime.time({})", clock(b)))
            }
            ("datetime", "timedelta", [Value::Int(d), Value::Int(s), Value::Int(us)]) => {
                let parts: Vec<String> = [("days", d), ("seconds", s), ("microseconds", us)]
                    .iter()
                    .filter(|(_, v)| **v != 0)
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                Some(if parts.is_empty() {
                    "datetime.timedelta(0)".to_owned()
                } else {
                    format!("datetime.timedelta({})", parts.join(", "))
                })
            }
            ("fractions", "Fraction", [Value::Str(s)]) => {
                let (n, d) = s.split_once('/').unwrap_or((s, "1"));
                let digits = |t: &str| {
                    let t = t.strip_prefix('-').unwrap_or(t);
                    !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit())
                };
                (digits(n) && digits(d)).then(|| format!("Fraction({n}, {d})"))
            }
            ("uuid", "UUID", _) => {
                let Some(Value::Dict(state)) = self.state() else {
                    return None;
                };
                let int = state.iter().find_map(|(k, v)| match k {
                    Value::Str(k) if k == "int" => Some(v),
                    _ => None,
                })?;
                let n: u128 = match int {
                    Value::Int(i) => u128::try_from(*i).ok()?,
                    Value::BigInt(b) if b.len() <= 16 || (b.len() == 17 && b[16] == 0) => {
                        if b.len() < 17 && b.last().is_some_and(|x| x & 0x80 != 0) {
                            return None; // negative
                        }
                        b.iter()
                            .take(16)
                            .rev()
                            .fold(0u128, |acc, x| acc << 8 | u128::from(*x))
                    }
                    _ => return None,
                };
                let h = format!("{n:032x}");
                Some(format!(
                    "UUID('{}-{}-{}-{}-{}')",
                    &h[..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..]
                ))
            }
            _ => None,
        }
    }
}

/// The data of an `array.array` (see [`PyObject::array_data`]).
#[derive(Debug, Clone, Copy)]
pub enum ArrayData<'a> {
    /// Its items, as `array(code, [...])` carries them.
    Items(&'a [Value]),
    /// A `'u'` array's text.
    Text(&'a str),
    /// This host's machine values (`array(code, a.tobytes())`).
    Native(&'a [u8]),
    /// `_array_reconstructor`'s machine format code and bytes.
    Machine(i64, &'a [u8]),
}

impl fmt::Debug for PyObject {
    /// The form and the number of parts (the parts are printed by `Value`'s
    /// `Debug`, which walks without recursion).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PyObject({:?}, {} parts)", self.form, self.parts.len())
    }
}

impl Value {
    /// An opaque value: a class or function named `module.name`.
    pub fn opaque_global(module: impl Into<String>, name: impl Into<String>) -> Value {
        Value::Opaque(Box::new(PyObject::global(module, name)))
    }

    /// `module.name(*args)` as an opaque value (pickle's REDUCE of a global).
    pub fn opaque_call(module: &str, name: &str, args: Vec<Value>) -> Value {
        let callable = Value::opaque_global(module, name);
        Value::Opaque(Box::new(PyObject::built(Form::Reduce, callable, args)))
    }

    /// `module.name.__new__(module.name)` with its `BUILD` state: how pickle
    /// writes an instance of a plain class (`Namespace(x=1)`).
    pub fn opaque_instance(module: &str, name: &str, state: Value) -> Value {
        let callable = Value::opaque_global(module, name);
        let mut o = PyObject::built(Form::NewObj, callable, Vec::new());
        o.set_state(state);
        Value::Opaque(Box::new(o))
    }

    /// The opaque object inside an `Opaque`, if this is one.
    pub fn as_opaque(&self) -> Option<&PyObject> {
        match self.resolved() {
            Value::Opaque(o) => Some(o),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_names_and_repr() {
        let d = Value::opaque_call("decimal", "Decimal", vec![Value::Str("1.5".into())]);
        let o = d.as_opaque().unwrap();
        assert_eq!(o.global_name(), Some(("decimal", "Decimal")));
        assert_eq!(o.type_name(), "Decimal");
        assert_eq!(d.to_string(), "Decimal('1.5')");
        // CPython's own reprs of the types whose pickle is not their repr.
        let dt =
            |b: &[u8]| Value::opaque_call("datetime", "datetime", vec![Value::Bytes(b.to_vec())]);
        assert_eq!(
            dt(&[7, 232, 5, 1, 0, 0, 0, 0, 0, 0]).to_string(),
            "datetime.datetime(2024, 5, 1, 0, 0)"
        );
        assert_eq!(
            dt(&[7, 232, 5, 1, 13, 4, 5, 0, 0, 0]).to_string(),
            "datetime.datetime(2024, 5, 1, 13, 4, 5)"
        );
        assert_eq!(
            dt(&[7, 232, 5, 1, 13, 4, 0, 0, 1, 2]).to_string(),
            "datetime.datetime(2024, 5, 1, 13, 4, 0, 258)"
        );
        assert_eq!(
            Value::opaque_call("datetime", "date", vec![Value::Bytes(vec![7, 232, 12, 31])])
                .to_string(),
            "datetime.date(2024, 12, 31)"
        );
        assert_eq!(
            Value::opaque_call(
                "datetime",
                "time",
                vec![Value::Bytes(vec![9, 30, 0, 0, 0, 0])]
            )
            .to_string(),
            "datetime.time(9, 30)"
        );
        let td = |d, s, us| {
            Value::opaque_call(
                "datetime",
                "timedelta",
                vec![Value::Int(d), Value::Int(s), Value::Int(us)],
            )
            .to_string()
        };
        assert_eq!(td(3, 7, 0), "datetime.timedelta(days=3, seconds=7)");
        assert_eq!(td(0, 0, 0), "datetime.timedelta(0)");
        assert_eq!(
            td(-1, 86399, 5),
            "datetime.timedelta(days=-1, seconds=86399, microseconds=5)"
        );
        assert_eq!(
            Value::opaque_call("fractions", "Fraction", vec![Value::Str("-1/3".into())])
                .to_string(),
            "Fraction(-1, 3)"
        );
        assert_eq!(
            Value::opaque_global("builtins", "list").to_string(),
            "<class 'list'>"
        );
        assert_eq!(
            Value::opaque_global("builtins", "str.lower").to_string(),
            "<method 'lower' of 'str' objects>"
        );
        assert_eq!(
            Value::opaque_global("builtins", "len").to_string(),
            "<built-in function len>"
        );
        assert_eq!(
            Value::opaque_global("ctypes", "c_int").to_string(),
            "<class 'ctypes.c_int'>"
        );
        let mut c = PyObject::built(
            Form::NewObj,
            Value::opaque_global("uuid", "UUID"),
            Vec::new(),
        );
        c.set_state(Value::Dict(vec![(Value::Str("int".into()), Value::Int(5))]));
        assert_eq!(
            Value::Opaque(Box::new(c.clone())).to_string(),
            "UUID('00000000-0000-0000-0000-000000000005')"
        );
        let parts = c.parts().to_vec();
        assert!(PyObject::from_parts(Form::NewObj, parts.clone()) == Some(c));
        assert!(PyObject::from_parts(Form::NewObj, parts[..5].to_vec()).is_none());
        let mut bad = parts;
        bad[ARGS] = Value::List(vec![]);
        assert!(PyObject::from_parts(Form::NewObj, bad).is_none());
    }

    #[test]
    fn value_stays_small() {
        // Boxed: the variant keeps `Value` at the 48 bytes its largest inline
        // payload (a slice's three optional bounds) already takes.
        assert_eq!(std::mem::size_of::<Value>(), 48);
    }
}
