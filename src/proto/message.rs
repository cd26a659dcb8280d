//! Requests and replies, independent of how they are serialized.
//!
//! These mirror CPython's `(ident, methodname, args, kwds)` request tuple and its
//! `(kind, result)` reply pair with the kinds `#RETURN`, `#PROXY`, `#ERROR`,
//! `#TRACEBACK` and `#UNSERIALIZABLE`.

use std::fmt;

use super::value::{ObjectId, Token, Value};

/// One request from a client.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The object called, or `None` for a public method of the server (`create`,
    /// `incref`, `decref`, `get_methods`, `debug_info`, `number_of_objects`, `dummy`,
    /// `accept_connection`, `shutdown`).
    pub target: Option<ObjectId>,
    /// Method name.
    pub method: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments, in the order given.
    pub kwargs: Vec<(String, Value)>,
}

impl Request {
    /// A call of `method` on object `target` with positional arguments only.
    pub fn call(target: ObjectId, method: &str, args: Vec<Value>) -> Request {
        Request {
            target: Some(target),
            method: method.to_owned(),
            args,
            kwargs: Vec::new(),
        }
    }

    /// A call of the server's public method `method`.
    pub fn public(method: &str, args: Vec<Value>) -> Request {
        Request {
            target: None,
            method: method.to_owned(),
            args,
            kwargs: Vec::new(),
        }
    }
}

/// A request decoded in place: the method name borrows the payload it came in,
/// so serving a call allocates nothing for it.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRef<'a> {
    /// The object called, or `None` for a public method of the server.
    pub target: Option<ObjectId>,
    /// Method name, borrowed from the payload.
    pub method: &'a str,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments, in the order given.
    pub kwargs: Vec<(String, Value)>,
}

impl RequestRef<'_> {
    /// An owned [`Request`] with the same contents.
    pub fn into_owned(self) -> Request {
        Request {
            target: self.target,
            method: self.method.to_owned(),
            args: self.args,
            kwargs: self.kwargs,
        }
    }
}

/// An error raised by a method, carrying the Python exception kind it stands for.
///
/// `kind` is the exception's qualified name as a CPython client would see it:
/// builtins without a module (`KeyError`, `ValueError`) and others with one
/// (`queue.Empty`, `threading.BrokenBarrierError`). `args` are the exception's
/// arguments when they are not just the message (a `KeyError` carries its key).
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteError {
    /// Exception kind, e.g. `KeyError` or `queue.Empty`.
    pub kind: String,
    /// Human-readable message.
    pub message: String,
    /// The exception's args; empty means `(message,)` (or `()` if the message is empty).
    pub args: Vec<Value>,
}

impl RemoteError {
    /// An error of `kind` with `message`.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> RemoteError {
        RemoteError {
            kind: kind.into(),
            message: message.into(),
            args: Vec::new(),
        }
    }

    /// A `TypeError`.
    pub fn type_error(message: impl Into<String>) -> RemoteError {
        RemoteError::new("TypeError", message)
    }

    /// A `ValueError`.
    pub fn value_error(message: impl Into<String>) -> RemoteError {
        RemoteError::new("ValueError", message)
    }

    /// A `KeyError` for `key`, with the key as its argument as Python raises it.
    pub fn key_error(key: Value) -> RemoteError {
        RemoteError {
            kind: "KeyError".into(),
            message: key.to_string(),
            args: vec![key],
        }
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            f.write_str(&self.kind)
        } else {
            write!(f, "{}: {}", self.kind, self.message)
        }
    }
}

impl std::error::Error for RemoteError {}

/// The server's answer to one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `#RETURN`: the method's result.
    Return(Value),
    /// `#PROXY`: the result became a new shared object (method_to_typeid).
    Proxy {
        /// Methods the new object exposes.
        exposed: Vec<String>,
        /// The new object's token.
        token: Token,
    },
    /// `#ERROR`: the method raised.
    Error(RemoteError),
    /// `#TRACEBACK`: the request could not be served (unknown object, unknown
    /// method, malformed request); the text says why.
    Traceback(String),
    /// `#UNSERIALIZABLE`: the result could not be encoded.
    Unserializable(String),
}

impl Reply {
    /// The CPython name of this reply's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Reply::Return(_) => "#RETURN",
            Reply::Proxy { .. } => "#PROXY",
            Reply::Error(_) => "#ERROR",
            Reply::Traceback(_) => "#TRACEBACK",
            Reply::Unserializable(_) => "#UNSERIALIZABLE",
        }
    }
}

impl From<Result<Value, RemoteError>> for Reply {
    fn from(r: Result<Value, RemoteError>) -> Reply {
        match r {
            Ok(v) => Reply::Return(v),
            Err(e) => Reply::Error(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_display_and_key_error_args() {
        let e = RemoteError::key_error(Value::Str("k".into()));
        assert_eq!(e.to_string(), "KeyError: 'k'");
        assert_eq!(e.args, vec![Value::Str("k".into())]);
        assert_eq!(
            RemoteError::new("queue.Empty", "").to_string(),
            "queue.Empty"
        );
    }

    #[test]
    fn reply_kinds_are_cpythons() {
        assert_eq!(Reply::Return(Value::None).kind(), "#RETURN");
        assert_eq!(Reply::Traceback(String::new()).kind(), "#TRACEBACK");
        let r: Reply = Err(RemoteError::value_error("x")).into();
        assert_eq!(r.kind(), "#ERROR");
    }
}
