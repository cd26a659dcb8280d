//! Published (named) objects: long-lived objects the server itself holds, that
//! clients reach by a typeid of their own — what CPython's
//! `BaseManager.register('get_queue', callable=lambda: queue)` serves, and what
//! `mgrd --object get_queue=Queue` and a host's [`Server::expose`] set up.
//!
//! `create` of such a name returns the same object every time (with its type's
//! exposed methods), taking a reference like any `create`; the server keeps one
//! reference of its own, so the object lives until [`Server::unexpose`] or until
//! the server is dropped, however clients count theirs. A name cannot be a
//! registered typeid; a type registered later under a published name is
//! shadowed by it for `create`. This module owns the
//! names' bookkeeping on the server's side and the `NAME=TYPE[:ARGS]` syntax
//! ([`ObjectSpec`]); `dispatch` answers `create` for a name.

use std::fmt;
use std::str::FromStr;

use super::{CallArgs, Server, SharedObject};
use crate::error::{Error, Result};
use crate::proto::{ObjectId, Value};

impl Server {
    /// Publishes a new object of the registered `typeid`, built from `args` as
    /// a client's `create` would build it, under `name`: from then on a
    /// client's `create(name)` (Python: `m.<name>()` after
    /// `Manager.register(name)`) returns a proxy to this one object. The
    /// server holds a reference to it until [`unexpose`](Self::unexpose) or
    /// until it is dropped.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `name` is empty, a registered typeid or
    /// published already; [`Error::Remote`] when the constructor fails (or
    /// `typeid` is unknown).
    ///
    /// # Examples
    ///
    /// ```
    /// use mgr::server::CallArgs;
    /// use mgr::{Server, ServerConfig, Value};
    ///
    /// let mut server = Server::bind(ServerConfig::new("127.0.0.1:0".parse()?, b"k"))?;
    /// server.register_builtins();
    /// // Python: `Manager.register('get_jobs')`, then `m.get_jobs()`.
    /// server.expose("get_jobs", "Queue", CallArgs::positional(vec![Value::Int(100)]))?;
    /// assert!(server.expose("get_jobs", "Queue", CallArgs::default()).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn expose(&mut self, name: &str, typeid: &str, args: CallArgs) -> Result<ObjectId> {
        self.core.registry.check_name(name).map_err(Error::Config)?;
        let id = self.core.construct(None, typeid, args)?;
        self.publish(name, id);
        Ok(id)
    }

    /// Publishes `object`, built by the host, under `name`, as an object of the
    /// registered `typeid` (whose exposed methods and method_to_typeid it
    /// gets): see [`expose`](Self::expose).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `name` is refused (as for `expose`) or `typeid`
    /// is not registered; [`Error::Remote`] (a `MemoryError`) when the
    /// server's `max_held_bytes` has no room. The object is dropped then.
    pub fn expose_object(
        &mut self,
        name: &str,
        typeid: &str,
        object: Box<dyn SharedObject>,
    ) -> Result<ObjectId> {
        self.core.registry.check_name(name).map_err(Error::Config)?;
        let spec = self
            .core
            .registry
            .get(typeid)
            .cloned()
            .ok_or_else(|| Error::Config(format!("unknown typeid '{typeid}'")))?;
        let id = self.core.admit(None, spec, object)?;
        self.core.rescan_refs(id);
        self.publish(name, id);
        Ok(id)
    }

    /// Publishes the live object `id` (one a client or the host created)
    /// under `name`: see [`expose`](Self::expose). The server takes a
    /// reference of its own.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an unknown id or a refused name.
    pub fn expose_id(&mut self, name: &str, id: ObjectId) -> Result<()> {
        self.core.registry.check_name(name).map_err(Error::Config)?;
        if !self.core.objects.contains(id) {
            return Err(Error::Config(format!("no shared object {id}")));
        }
        self.publish(name, id);
        Ok(())
    }

    /// Withdraws the name and drops the server's reference: the object lives
    /// on while clients hold it. False when nothing is published as `name`.
    pub fn unexpose(&mut self, name: &str) -> bool {
        let Some(id) = self.core.registry.remove_named(name) else {
            return false;
        };
        self.core.objects.decref(id);
        self.core.sweep();
        true
    }

    /// The object published as `name`, if any.
    pub fn exposed(&self, name: &str) -> Option<ObjectId> {
        self.core.registry.named(name)
    }

    fn publish(&mut self, name: &str, id: ObjectId) {
        self.core.objects.incref(id);
        let spec = self.core.objects.get(id).expect("live").spec.clone();
        self.core.registry.add_named(name, id, spec);
    }
}

/// `NAME=TYPE[:ARGS]`: an object to publish, as `mgrd --object` takes it.
///
/// `ARGS` is a comma-separated list of literals: integers, floats, `None`,
/// `True`, `False`, and strings — quoted (`'a,b'` or `"10"`, no escapes) or
/// bare (`i`, anything that is not one of the others). So `jobs=Queue:10` is
/// `Queue(10)`, `hits=Value:i,0` is `Value('i', 0)`, `start=Barrier:3` is
/// `Barrier(3)`, and `get_state=dict` is `dict()`.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectSpec {
    /// The name clients create it by.
    pub name: String,
    /// The registered typeid it is built as.
    pub typeid: String,
    /// Positional arguments for the constructor.
    pub args: Vec<Value>,
}

impl ObjectSpec {
    /// Publishes it on `server` ([`Server::expose`]).
    ///
    /// # Errors
    ///
    /// As [`Server::expose`].
    pub fn expose(&self, server: &mut Server) -> Result<ObjectId> {
        server.expose(
            &self.name,
            &self.typeid,
            CallArgs::positional(self.args.clone()),
        )
    }
}

impl fmt::Display for ObjectSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.typeid)?;
        for (i, a) in self.args.iter().enumerate() {
            f.write_str(if i == 0 { ":" } else { "," })?;
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

impl FromStr for ObjectSpec {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<ObjectSpec, String> {
        let (name, rest) = s
            .split_once('=')
            .ok_or_else(|| format!("'{s}': expected NAME=TYPE[:ARGS]"))?;
        let (typeid, args) = match rest.split_once(':') {
            Some((t, a)) => (t, Some(a)),
            None => (rest, None),
        };
        if name.is_empty() || typeid.is_empty() {
            return Err(format!("'{s}': expected NAME=TYPE[:ARGS]"));
        }
        Ok(ObjectSpec {
            name: name.to_owned(),
            typeid: typeid.to_owned(),
            args: match args {
                Some(a) => literals(a).map_err(|e| format!("'{s}': {e}"))?,
                None => Vec::new(),
            },
        })
    }
}

/// Splits `a` at the commas outside quotes and reads each piece as a literal.
fn literals(a: &str) -> std::result::Result<Vec<Value>, String> {
    if a.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut piece = String::new();
    let mut quote = None;
    for c in a.chars() {
        match (quote, c) {
            (None, ',') => out.push(literal(&std::mem::take(&mut piece))?),
            (None, '\'' | '"') => {
                quote = Some(c);
                piece.push(c);
            }
            (Some(q), c) if c == q => {
                quote = None;
                piece.push(c);
            }
            _ => piece.push(c),
        }
    }
    if quote.is_some() {
        return Err("unterminated quote".to_owned());
    }
    out.push(literal(&piece)?);
    Ok(out)
}

fn literal(p: &str) -> std::result::Result<Value, String> {
    let p = p.trim();
    let quoted = p.len() >= 2
        && ((p.starts_with('\'') && p.ends_with('\'')) || (p.starts_with('"') && p.ends_with('"')));
    Ok(match p {
        _ if quoted => Value::Str(p[1..p.len() - 1].to_owned()),
        _ if p.contains(['\'', '"']) => return Err(format!("stray quote in '{p}'")),
        "" => return Err("empty argument".to_owned()),
        "None" => Value::None,
        "True" => Value::Bool(true),
        "False" => Value::Bool(false),
        _ => match (p.parse::<i64>(), p.parse::<f64>()) {
            (Ok(i), _) => Value::Int(i),
            (_, Ok(f)) if p.starts_with(|c: char| c.is_ascii_digit() || "+-.".contains(c)) => {
                Value::Float(f)
            }
            _ => Value::Str(p.to_owned()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> ObjectSpec {
        s.parse().unwrap()
    }

    #[test]
    fn specs_parse_names_types_and_literals() {
        let q = spec("jobs=Queue:10");
        assert_eq!((q.name.as_str(), q.typeid.as_str()), ("jobs", "Queue"));
        assert_eq!(q.args, [Value::Int(10)]);
        assert_eq!(spec("get_state=dict").args, []);
        assert_eq!(spec("s=dict:").args, []);
        assert_eq!(
            spec("v=Value:i,0").args,
            [Value::Str("i".into()), Value::Int(0)]
        );
        assert_eq!(
            spec("x=T:None,True,False,-2.5,'a,b',\"10\", bare ").args,
            [
                Value::None,
                Value::Bool(true),
                Value::Bool(false),
                Value::Float(-2.5),
                Value::Str("a,b".into()),
                Value::Str("10".into()),
                Value::Str("bare".into()),
            ]
        );
        // `inf` and `nan` parse as floats in Rust; here they are words.
        assert_eq!(spec("x=T:inf").args, [Value::Str("inf".into())]);
        assert_eq!(spec("jobs=Queue:10").to_string(), "jobs=Queue:10");
    }

    #[test]
    fn bad_specs_say_why() {
        for (bad, why) in [
            ("noequals", "NAME=TYPE"),
            ("=Queue", "NAME=TYPE"),
            ("q=", "NAME=TYPE"),
            ("q=Queue:'open", "unterminated quote"),
            ("q=Queue:1,,2", "empty argument"),
            ("q=Queue:a'b'", "stray quote"),
        ] {
            let e = bad.parse::<ObjectSpec>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
