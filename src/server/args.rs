//! Typed extraction of a call's arguments ([`CallArgs::extract`]): a tuple of
//! Rust types from the positional arguments, through the `TryFrom<Value>`
//! conversions, with a `TypeError` naming the argument on a mismatch.
//!
//! This module only converts; binding keywords to parameters is up to the
//! method ([`CallArgs::take`]).

use super::registry::CallArgs;
use crate::proto::{ConversionError, RemoteError, Value};

/// Types [`CallArgs::extract`] can produce: tuples (up to 8 items, and `()`)
/// of types with a `TryFrom<Value>` conversion ([`String`], [`i64`], [`f64`],
/// [`bool`], `Vec<T>`, [`Value`] itself for one taken as it is …). An
/// `Option<T>` item takes `None`, and may be left out at the end: trailing
/// `Option`s are optional arguments.
pub trait FromArgs: Sized {
    /// Converts exactly these positional arguments.
    ///
    /// # Errors
    ///
    /// A `TypeError` when their number differs from the tuple's, or one does
    /// not convert (naming its position, 1-based, and the types wanted and
    /// found).
    fn from_args(args: Vec<Value>) -> Result<Self, RemoteError>;
}

/// A `TypeError` for a wrong number of positional arguments, as Python words it.
fn count_error(want: usize, got: usize) -> RemoteError {
    let s = if want == 1 { "" } else { "s" };
    let were = if got == 1 { "was" } else { "were" };
    RemoteError::type_error(format!(
        "takes {want} positional argument{s} but {got} {were} given"
    ))
}

/// Converts argument `n` (1-based) of the `given`, naming it in the error;
/// `None` when it was not given (which only an `Option` accepts).
fn convert<T>(n: usize, given: usize, v: Option<Value>) -> Result<T, RemoteError>
where
    T: TryFrom<Value>,
    ConversionError: From<T::Error>,
{
    let missing = v.is_none();
    T::try_from(v.unwrap_or(Value::None)).map_err(|e| {
        if missing {
            let were = if given == 1 { "was" } else { "were" };
            return RemoteError::type_error(format!(
                "missing positional argument {n} ({given} {were} given)"
            ));
        }
        let e = ConversionError::from(e);
        RemoteError::type_error(format!(
            "argument {n}: expected {}, found {}",
            e.expected, e.found
        ))
    })
}

impl FromArgs for () {
    fn from_args(args: Vec<Value>) -> Result<(), RemoteError> {
        if args.is_empty() {
            Ok(())
        } else {
            Err(count_error(0, args.len()))
        }
    }
}

macro_rules! from_args {
    ($($len:literal: $($t:ident $n:literal),+;)*) => {$(
        impl<$($t),+> FromArgs for ($($t,)+)
        where
            $($t: TryFrom<Value>, ConversionError: From<$t::Error>,)+
        {
            fn from_args(args: Vec<Value>) -> Result<Self, RemoteError> {
                let given = args.len();
                if given > $len {
                    return Err(count_error($len, given));
                }
                let mut it = args.into_iter();
                Ok(($(convert::<$t>($n, given, it.next())?,)+))
            }
        }
    )*};
}

from_args! {
    1: A 1;
    2: A 1, B 2;
    3: A 1, B 2, C 3;
    4: A 1, B 2, C 3, D 4;
    5: A 1, B 2, C 3, D 4, E 5;
    6: A 1, B 2, C 3, D 4, E 5, F 6;
    7: A 1, B 2, C 3, D 4, E 5, F 6, G 7;
    8: A 1, B 2, C 3, D 4, E 5, F 6, G 7, H 8;
}

impl CallArgs {
    /// The positional arguments as a tuple of Rust types, for a method that
    /// takes these (and no keywords). Each converts with its
    /// `TryFrom<Value>`: a Python `int` to any integer type it fits, `str` to
    /// `String`, `list` or `tuple` to `Vec<T>`, `None` to `Option::None` … An
    /// `Option` left out at the end is `None` (an optional argument).
    ///
    /// # Errors
    ///
    /// A `TypeError` (what the caller sees raised) when keywords were passed,
    /// too many arguments were ("takes 2 positional arguments but 3 were
    /// given"), one that is not an `Option` is missing ("missing positional
    /// argument 2 (1 was given)"), or one does not convert ("argument 2:
    /// expected int, found str").
    ///
    /// # Examples
    ///
    /// ```
    /// use mgr::server::CallArgs;
    /// use mgr::Value;
    ///
    /// let args = CallArgs::positional(vec![Value::from("apples"), Value::Int(3)]);
    /// let (name, n): (String, i64) = args.extract()?;
    /// assert_eq!((name.as_str(), n), ("apples", 3));
    ///
    /// let wrong = CallArgs::positional(vec![Value::Int(3), Value::from("apples")]);
    /// let e = wrong.extract::<(String, i64)>().unwrap_err();
    /// assert_eq!(e.kind, "TypeError");
    /// assert_eq!(e.message, "argument 1: expected str, found int");
    ///
    /// let short = CallArgs::positional(vec![Value::from("apples")]);
    /// let e = short.extract::<(String, i64)>().unwrap_err();
    /// assert_eq!(e.message, "missing positional argument 2 (1 was given)");
    ///
    /// // A trailing Option may be left out.
    /// let short = CallArgs::positional(vec![Value::from("apples")]);
    /// let (name, n): (String, Option<i64>) = short.extract()?;
    /// assert_eq!((name.as_str(), n), ("apples", None));
    /// # Ok::<(), mgr::RemoteError>(())
    /// ```
    ///
    /// In a method, `?` turns the error into the call's answer:
    ///
    /// ```
    /// use mgr::server::{CallArgs, CallResult, Context, SharedObject};
    /// use mgr::{RemoteError, Value};
    ///
    /// struct Stock(std::collections::HashMap<String, i64>);
    ///
    /// impl SharedObject for Stock {
    ///     fn call(&mut self, _: &mut Context<'_>, method: &str, args: CallArgs) -> CallResult {
    ///         match method {
    ///             "add" => {
    ///                 let (item, n): (String, i64) = args.extract()?;
    ///                 let total = self.0.entry(item).or_default();
    ///                 *total += n;
    ///                 Ok(Value::Int(*total).into())
    ///             }
    ///             _ => Err(RemoteError::new("AttributeError", method)),
    ///         }
    ///     }
    /// }
    /// ```
    pub fn extract<T: FromArgs>(self) -> Result<T, RemoteError> {
        if let Some((k, _)) = self.kwargs.first() {
            return Err(RemoteError::type_error(format!(
                "got an unexpected keyword argument '{k}' (this method takes positional arguments only)"
            )));
        }
        T::from_args(self.args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: Vec<Value>) -> CallArgs {
        CallArgs::positional(v)
    }

    #[test]
    fn extracts_each_arity_and_names_the_bad_argument() {
        let () = args(vec![]).extract().unwrap();
        let (a,): (i64,) = args(vec![Value::Int(1)]).extract().unwrap();
        assert_eq!(a, 1);
        let (s, n, f, b, o, v): (String, u16, f64, bool, Option<i64>, Value) = args(vec![
            Value::from("x"),
            Value::Int(7),
            Value::Int(2),
            Value::Bool(true),
            Value::None,
            Value::from("raw"),
        ])
        .extract()
        .unwrap();
        assert_eq!((s.as_str(), n, f, b, o), ("x", 7, 2.0, true, None));
        assert_eq!(v, Value::from("raw"));
        let e = args(vec![Value::Int(1), Value::Int(70000)])
            .extract::<(i64, u16)>()
            .unwrap_err();
        assert_eq!(e.kind, "TypeError");
        assert_eq!(
            e.message,
            "argument 2: expected an int that fits u16, found 70000"
        );
        let e = args(vec![Value::Int(1)]).extract::<()>().unwrap_err();
        assert_eq!(e.message, "takes 0 positional arguments but 1 was given");
        let e = args(vec![]).extract::<(i64,)>().unwrap_err();
        assert_eq!(e.message, "missing positional argument 1 (0 were given)");
        let e = args(vec![Value::Int(1), Value::Int(2)])
            .extract::<(i64,)>()
            .unwrap_err();
        assert_eq!(e.message, "takes 1 positional argument but 2 were given");
        let (a, b, c): (i64, Option<String>, Option<i64>) =
            args(vec![Value::Int(1), Value::from("b")])
                .extract()
                .unwrap();
        assert_eq!((a, b.as_deref(), c), (1, Some("b"), None));
    }

    #[test]
    fn keywords_are_refused() {
        let a = CallArgs {
            args: vec![Value::Int(1)],
            kwargs: vec![("n".to_owned(), Value::Int(2))],
        };
        let e = a.extract::<(i64,)>().unwrap_err();
        assert_eq!(e.kind, "TypeError");
        assert!(e.message.contains("keyword argument 'n'"), "{}", e.message);
    }
}
