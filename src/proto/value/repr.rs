//! Python's `repr()` of a [`Value`], exactly as CPython 3.11 writes it: the
//! `Display` impl, written with an explicit walk (no recursion) so a value of
//! any depth prints on a small stack, and the leaf forms it uses —
//! [`write_str`] (quote choice, escapes, `str.isprintable` from the generated
//! `printable` table), [`write_bytes`], [`write_float`] (shortest round-trip
//! digits, exponent form when the exponent is below -4 or at least 16),
//! [`write_big_int`] (decimal, refused past CPython's 4300 digits) and a nested
//! proxy's `<ListProxy object, typeid 'list' at 0x…>`.

use std::fmt::{self, Write as _};

use super::printable::NON_PRINTABLE;
use super::{Slot, Step, Token, Value, Walk};

/// CPython's default limit on the decimal digits of an int it converts to text
/// (`sys.get_int_max_str_digits()`); a longer int is written as
/// `<int of N bits>` instead of costing quadratic time.
pub(crate) const INT_MAX_STR_DIGITS: usize = 4300;

/// Whether `str.isprintable()` is true for `c`.
pub(crate) fn is_printable(c: char) -> bool {
    let c = c as u32;
    if (0x20..0x7f).contains(&c) {
        return true;
    }
    NON_PRINTABLE
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_err()
}

/// `repr()` of a str: single quotes unless it holds `'` and no `"`; `\\`,
/// `\t`, `\n`, `\r` and the quote escaped; other non-printable characters as
/// `\xNN`, `\uNNNN` or `\UNNNNNNNN`.
pub(crate) fn write_str(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    f.write_char(quote)?;
    let mut clean = 0;
    for (i, c) in s.char_indices() {
        let plain = c != quote && c != '\\' && is_printable(c);
        if plain {
            continue;
        }
        f.write_str(&s[clean..i])?;
        clean = i + c.len_utf8();
        match c {
            '\\' => f.write_str("\\\\")?,
            '\t' => f.write_str("\\t")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            c if c == quote => write!(f, "\\{c}")?,
            c if (c as u32) <= 0xff => write!(f, "\\x{:02x}", c as u32)?,
            c if (c as u32) <= 0xffff => write!(f, "\\u{:04x}", c as u32)?,
            c => write!(f, "\\U{:08x}", c as u32)?,
        }
    }
    f.write_str(&s[clean..])?;
    f.write_char(quote)
}

/// `repr()` of bytes: `b'…'` (or `b"…"` as for a str), printable ASCII as is,
/// `\\`, `\t`, `\n`, `\r` and the quote escaped, every other byte `\xNN`.
pub(crate) fn write_bytes(f: &mut impl fmt::Write, b: &[u8]) -> fmt::Result {
    let quote = if b.contains(&b'\'') && !b.contains(&b'"') {
        b'"'
    } else {
        b'\''
    };
    f.write_char('b')?;
    f.write_char(char::from(quote))?;
    for &x in b {
        match x {
            b'\\' => f.write_str("\\\\")?,
            b'\t' => f.write_str("\\t")?,
            b'\n' => f.write_str("\\n")?,
            b'\r' => f.write_str("\\r")?,
            x if x == quote => write!(f, "\\{}", char::from(x))?,
            0x20..=0x7e => f.write_char(char::from(x))?,
            x => write!(f, "\\x{x:02x}")?,
        }
    }
    f.write_char(char::from(quote))
}

/// `repr()` of a float: the shortest digits that read back as the same
/// double, in positional form (`0.0001`, `1234.5`, `2.0`) when the decimal
/// exponent is in `-4..16`, else in exponent form (`1e-05`, `1.5e+16`,
/// `5e-324`); `inf`, `-inf`, `nan`, `-0.0`.
pub(crate) fn write_float(f: &mut impl fmt::Write, x: f64) -> fmt::Result {
    if x.is_nan() {
        return f.write_str("nan");
    }
    if x.is_infinite() {
        return f.write_str(if x > 0.0 { "inf" } else { "-inf" });
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "1.5e-7", "-0e0".
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("a decimal exponent");
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|&c| c != '.').collect();
    f.write_str(sign)?;
    if !(-4..16).contains(&exp) {
        f.write_str(&digits[..1])?;
        if digits.len() > 1 {
            write!(f, ".{}", &digits[1..])?;
        }
        let esign = if exp < 0 { '-' } else { '+' };
        return write!(f, "e{esign}{:02}", exp.unsigned_abs());
    }
    if exp < 0 {
        f.write_str("0.")?;
        for _ in 0..(-exp - 1) {
            f.write_char('0')?;
        }
        return f.write_str(&digits);
    }
    let point = exp as usize + 1;
    if digits.len() <= point {
        f.write_str(&digits)?;
        for _ in digits.len()..point {
            f.write_char('0')?;
        }
        f.write_str(".0")
    } else {
        write!(f, "{}.{}", &digits[..point], &digits[point..])
    }
}

/// The magnitude of a little-endian two's-complement integer as little-endian
/// base-2³² limbs, and whether it is negative.
fn magnitude(le: &[u8]) -> (Vec<u32>, bool) {
    let negative = le.last().is_some_and(|&b| b & 0x80 != 0);
    let mut bytes = le.to_vec();
    if negative {
        // Two's complement negation: invert, add one.
        let mut carry = true;
        for b in &mut bytes {
            let (v, c) = (!*b).overflowing_add(u8::from(carry));
            *b = v;
            carry = c;
        }
    }
    let mut limbs: Vec<u32> = bytes
        .chunks(4)
        .map(|c| {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(w)
        })
        .collect();
    while limbs.last() == Some(&0) {
        limbs.pop();
    }
    (limbs, negative)
}

/// `repr()` of an int kept as little-endian two's-complement bytes
/// ([`Value::BigInt`]): its decimal digits. Past [`INT_MAX_STR_DIGITS`]
/// digits (where CPython raises `ValueError` rather than convert), it writes
/// `<int of N bits>`: the conversion is quadratic, so a huge int never costs
/// more than about 4300² digit steps.
pub(crate) fn write_big_int(f: &mut impl fmt::Write, le: &[u8]) -> fmt::Result {
    let (mut limbs, negative) = magnitude(le);
    let bits = limbs
        .last()
        .map_or(0, |l| limbs.len() * 32 - l.leading_zeros() as usize);
    // 10^4300 needs 14285 bits: anything longer has too many digits.
    if bits > 14_290 {
        return write!(f, "<int of {bits} bits>");
    }
    // Nine decimal digits at a time, least significant chunk first.
    let mut chunks = Vec::with_capacity(bits / 29 + 1);
    while !limbs.is_empty() {
        let mut rem = 0u64;
        for limb in limbs.iter_mut().rev() {
            let cur = (rem << 32) | u64::from(*limb);
            *limb = (cur / 1_000_000_000) as u32;
            rem = cur % 1_000_000_000;
        }
        chunks.push(rem as u32);
        while limbs.last() == Some(&0) {
            limbs.pop();
        }
    }
    let mut text = String::with_capacity(chunks.len() * 9 + 1);
    if negative {
        text.push('-');
    }
    match chunks.split_last() {
        None => text.push('0'),
        Some((top, rest)) => {
            let _ = write!(text, "{top}");
            for c in rest.iter().rev() {
                let _ = write!(text, "{c:09}");
            }
        }
    }
    let ndigits = text.len() - usize::from(negative);
    if ndigits > INT_MAX_STR_DIGITS {
        return write!(f, "<int of {bits} bits>");
    }
    f.write_str(&text)
}

/// The class name CPython gives a proxy of `typeid` inside its server (a
/// SyncManager type's proxy type, else `AutoProxy[typeid]`).
fn write_proxy(f: &mut impl fmt::Write, t: &Token) -> fmt::Result {
    match crate::proto::codec::pickle::proxy_type(&t.typeid) {
        "AutoProxy" => write!(f, "<AutoProxy[{}] object, typeid ", t.typeid)?,
        name => write!(f, "<{name} object, typeid ")?,
    }
    write_str(f, &t.typeid)?;
    write!(f, " at {:#x}>", t.id.0)
}

impl Value {
    /// Writes a value without children as Python's `repr()` would.
    fn fmt_leaf(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::None => f.write_str("None"),
            Value::Bool(true) => f.write_str("True"),
            Value::Bool(false) => f.write_str("False"),
            Value::Int(i) => write!(f, "{i}"),
            Value::BigInt(b) => write_big_int(f, b),
            Value::Float(x) => write_float(f, *x),
            Value::Str(s) => write_str(f, s),
            Value::Bytes(b) => write_bytes(f, b),
            Value::Ref(t) => write_proxy(f, t),
            Value::Slice(s) => {
                let part = |b: Option<i64>| b.map_or("None".to_owned(), |i| i.to_string());
                write!(
                    f,
                    "slice({}, {}, {})",
                    part(s.start),
                    part(s.stop),
                    part(s.step)
                )
            }
            Value::Opaque(o) => o.fmt_repr(f),
            Value::Shared(v) => v.fmt_leaf(f),
            Value::List(_)
            | Value::Tuple(_)
            | Value::Dict(_)
            | Value::Set(_)
            | Value::FrozenSet(_) => Ok(()),
        }
    }
}

impl fmt::Display for Value {
    /// Python's `repr()` of the value, as CPython 3.11 writes it; a nested
    /// object reference prints as CPython's server prints the proxy it holds
    /// there (`<ListProxy object, typeid 'list' at 0x…>`, the address being
    /// the object's id).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut walk = Walk::new(self);
        while let Some(step) = walk.next() {
            let (v, slot) = match step {
                Step::Leaf(v, slot) | Step::Enter(v, slot) => (v, slot),
                Step::Exit(v) => {
                    f.write_str(match v {
                        Value::Opaque(_) => "",
                        Value::List(_) => "]",
                        Value::Tuple(t) if t.len() == 1 => ",)",
                        Value::Tuple(_) => ")",
                        Value::Dict(_) => "}",
                        Value::Set(s) | Value::FrozenSet(s) if s.is_empty() => "",
                        Value::Set(_) => "}",
                        _ => "})",
                    })?;
                    continue;
                }
            };
            match slot {
                Slot::Item(i) | Slot::Key(i) if i > 0 => f.write_str(", ")?,
                Slot::DictValue(_) => f.write_str(": ")?,
                _ => {}
            }
            match (step, v) {
                (Step::Leaf(..), _) => v.fmt_leaf(f)?,
                (_, Value::Opaque(o)) => {
                    o.fmt_repr(f)?;
                    walk.skip_children();
                }
                (_, Value::List(_)) => f.write_str("[")?,
                (_, Value::Tuple(_)) => f.write_str("(")?,
                (_, Value::Dict(_)) => f.write_str("{")?,
                (_, Value::Set(s)) if s.is_empty() => f.write_str("set()")?,
                (_, Value::Set(_)) => f.write_str("{")?,
                (_, Value::FrozenSet(s)) if s.is_empty() => f.write_str("frozenset()")?,
                _ => f.write_str("frozenset({")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ObjectId;

    fn float(x: f64) -> String {
        Value::Float(x).to_string()
    }

    #[test]
    fn floats_like_cpython() {
        // Each pair is CPython 3.11's repr().
        let cases: &[(f64, &str)] = &[
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (9999999999999998.0, "9999999999999998.0"),
            (1e-05, "1e-05"),
            (0.0001, "0.0001"),
            (0.00015, "0.00015"),
            (1.5e-07, "1.5e-07"),
            (5e-324, "5e-324"),
            (2.2250738585072014e-308, "2.2250738585072014e-308"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (0.1, "0.1"),
            (1.0 / 3.0, "0.3333333333333333"),
            (2.0 / 3.0, "0.6666666666666666"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (2.0, "2.0"),
            (-2.5, "-2.5"),
            (123456.789, "123456.789"),
            (1.5e16, "1.5e+16"),
            (1.2345e100, "1.2345e+100"),
            (-1e-100, "-1e-100"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::NAN, "nan"),
            (-f64::NAN, "nan"),
        ];
        for &(x, want) in cases {
            assert_eq!(float(x), want, "{x:e}");
        }
    }

    fn big(v: i128) -> String {
        let b = super::super::minimal_le(v.to_le_bytes().to_vec());
        Value::BigInt(b).to_string()
    }

    #[test]
    fn big_ints_in_decimal() {
        assert_eq!(big(1 << 64), "18446744073709551616");
        assert_eq!(big(-(1 << 64)), "-18446744073709551616");
        assert_eq!(big(i128::MAX), i128::MAX.to_string());
        assert_eq!(big(i128::MIN), i128::MIN.to_string());
        assert_eq!(big(0), "0");
        assert_eq!(big(-1), "-1");
        assert_eq!(big(1_000_000_000), "1000000000");
        // 10**300 and -(10**300), written out by CPython.
        let ten_300 = format!("1{}", "0".repeat(300));
        let le = pow10_le(300);
        assert_eq!(Value::BigInt(le.clone()).to_string(), ten_300);
        assert_eq!(
            Value::BigInt(negate(&le)).to_string(),
            format!("-{ten_300}")
        );
        // 10**4299 has 4300 digits (printed); 10**4300 has 4301 (CPython
        // refuses); 2**100000 is not converted at all.
        assert_eq!(Value::BigInt(pow10_le(4299)).to_string().len(), 4300);
        assert_eq!(
            Value::BigInt(pow10_le(4300)).to_string(),
            "<int of 14285 bits>"
        );
        let mut huge = vec![0u8; 12_500];
        huge.push(1);
        assert_eq!(Value::BigInt(huge).to_string(), "<int of 100001 bits>");
    }

    /// 10**n as minimal little-endian two's complement.
    fn pow10_le(n: usize) -> Vec<u8> {
        let mut b = vec![1u8];
        for _ in 0..n {
            let mut carry = 0u32;
            for x in &mut b {
                let v = u32::from(*x) * 10 + carry;
                *x = v as u8;
                carry = v >> 8;
            }
            while carry > 0 {
                b.push(carry as u8);
                carry >>= 8;
            }
        }
        b.push(0);
        super::super::minimal_le(b)
    }

    fn negate(le: &[u8]) -> Vec<u8> {
        let mut carry = true;
        let out = le
            .iter()
            .map(|&b| {
                let (v, c) = (!b).overflowing_add(u8::from(carry));
                carry = c;
                v
            })
            .collect();
        super::super::minimal_le(out)
    }

    fn s(x: &str) -> String {
        Value::from(x).to_string()
    }

    #[test]
    fn strings_like_cpython() {
        assert_eq!(s("it's done"), r#""it's done""#);
        assert_eq!(s("a\"b'c"), r#"'a"b\'c'"#);
        assert_eq!(s("say \"hi\""), r#"'say "hi"'"#);
        assert_eq!(s("\0"), r"'\x00'");
        assert_eq!(s("\u{200b}"), r"'\u200b'");
        assert_eq!(s("a\\b\t\n\r\x1b\x7f"), r"'a\\b\t\n\r\x1b\x7f'");
        assert_eq!(s("\u{85}\u{a0}\u{ad}é"), r"'\x85\xa0\xadé'");
        assert_eq!(s("日本 🐍"), "'日本 🐍'");
        assert_eq!(s("\u{e000}\u{2028}\u{3000}"), r"'\ue000\u2028\u3000'");
        assert_eq!(s("\u{10ffff}\u{e0001}"), r"'\U0010ffff\U000e0001'");
        assert_eq!(s(""), "''");
        assert!(is_printable(' ') && !is_printable('\u{378}') && is_printable('\u{37a}'));
    }

    #[test]
    fn the_printable_table_is_sorted_and_disjoint() {
        assert!(NON_PRINTABLE.iter().all(|&(lo, hi)| lo <= hi));
        assert!(NON_PRINTABLE.windows(2).all(|w| w[0].1 + 1 < w[1].0));
        // Spot checks against CPython 3.11's str.isprintable().
        for c in [
            '\u{0}', '\u{7f}', '\u{a0}', '\u{200b}', '\u{2028}', '\u{e000}',
        ] {
            assert!(!is_printable(c), "{c:?}");
        }
        for c in ['a', '~', '\u{a1}', 'é', '日', '🐍', '\u{1f600}'] {
            assert!(is_printable(c), "{c:?}");
        }
    }

    #[test]
    fn bytes_and_containers_like_cpython() {
        let b = |x: &[u8]| Value::Bytes(x.to_vec()).to_string();
        assert_eq!(b(b"\x00\xff'\""), r#"b'\x00\xff\'"'"#);
        assert_eq!(b(b"it's"), r#"b"it's""#);
        assert_eq!(b(b"\\\t\n\r\x7f~"), r"b'\\\t\n\r\x7f~'");
        let i = Value::Int;
        assert_eq!(Value::FrozenSet(vec![]).to_string(), "frozenset()");
        assert_eq!(Value::FrozenSet(vec![i(1)]).to_string(), "frozenset({1})");
        assert_eq!(Value::Set(vec![]).to_string(), "set()");
        assert_eq!(Value::Set(vec![i(1), i(2)]).to_string(), "{1, 2}");
        assert_eq!(Value::Tuple(vec![i(1)]).to_string(), "(1,)");
        assert_eq!(Value::Tuple(vec![]).to_string(), "()");
        assert_eq!(
            Value::List(vec![
                Value::Dict(vec![(Value::from("k"), Value::FrozenSet(vec![]))]),
                Value::Bool(false),
                Value::None
            ])
            .to_string(),
            "[{'k': frozenset()}, False, None]"
        );
        let proxy = |typeid: &str| {
            Value::Ref(Token {
                typeid: typeid.into(),
                id: ObjectId(0x300000007),
            })
            .to_string()
        };
        assert_eq!(
            proxy("list"),
            "<ListProxy object, typeid 'list' at 0x300000007>"
        );
        assert_eq!(
            proxy("Queue"),
            "<AutoProxy[Queue] object, typeid 'Queue' at 0x300000007>"
        );
        assert_eq!(
            proxy("Lock"),
            "<AcquirerProxy object, typeid 'Lock' at 0x300000007>"
        );
    }
}
