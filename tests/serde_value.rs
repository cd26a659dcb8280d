//! `mgr::to_value` / `mgr::from_value` (feature `serde`) against real servers:
//! a round trip through a libmgr dict, and a stock CPython server that
//! unpickles the serde-made value and pickles it back.

mod common;

use common::{CpythonServer, TestServer, KEY};
use mgr::Value;
use serde::{Deserialize, Serialize, Serializer};

/// Bytes serialized as bytes (what `serde_bytes` does), not a list of ints.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(from = "Vec<u8>")]
struct Blob(Vec<u8>);

impl From<Vec<u8>> for Blob {
    fn from(v: Vec<u8>) -> Blob {
        Blob(v)
    }
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Shape {
    Point,
    Circle { r: f64 },
    Scaled(f64),
    Line(i32, i32),
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Job {
    name: String,
    tries: u32,
    shapes: Vec<Shape>,
    owner: Option<String>,
    pair: (i64, String),
    data: Blob,
}

fn job() -> Job {
    Job {
        name: "render".into(),
        tries: 3,
        shapes: vec![
            Shape::Point,
            Shape::Circle { r: 1.5 },
            Shape::Scaled(2.0),
            Shape::Line(-1, 7),
        ],
        owner: None,
        pair: (1, "a".into()),
        data: Blob(vec![0, 1, 255]),
    }
}

/// The Python value `job()` stands for, as a `Value`.
fn job_value() -> Value {
    let s = |x: &str| Value::Str(x.into());
    let dict = |e: Vec<(Value, Value)>| Value::Dict(e);
    dict(vec![
        (s("name"), s("render")),
        (s("tries"), Value::Int(3)),
        (
            s("shapes"),
            Value::List(vec![
                s("Point"),
                dict(vec![(s("Circle"), dict(vec![(s("r"), Value::Float(1.5))]))]),
                dict(vec![(s("Scaled"), Value::Float(2.0))]),
                dict(vec![(
                    s("Line"),
                    Value::Tuple(vec![Value::Int(-1), Value::Int(7)]),
                )]),
            ]),
        ),
        (s("owner"), Value::None),
        (s("pair"), Value::Tuple(vec![Value::Int(1), s("a")])),
        (s("data"), Value::Bytes(vec![0, 1, 255])),
    ])
}

#[test]
fn serde_values_have_the_python_shapes() {
    assert_eq!(mgr::to_value(&job()).unwrap(), job_value());
    assert_eq!(mgr::from_value::<Job>(job_value()).unwrap(), job());
}

#[test]
fn a_serde_value_round_trips_through_a_libmgr_dict() {
    let s = TestServer::start();
    let m = s.connect();
    let d = m.create("dict", vec![]).unwrap();
    let v = mgr::to_value(&job()).unwrap();
    d.call("__setitem__", vec![Value::from("job"), v]).unwrap();
    let back = d.call("get", vec![Value::from("job")]).unwrap();
    assert_eq!(mgr::from_value::<Job>(back).unwrap(), job());
}

#[test]
fn stock_cpython_reads_a_serde_value() {
    let py = CpythonServer::start(KEY);
    let m = mgr::Manager::connect_cpython(&py.address, KEY).unwrap();
    let d = m.create("dict", vec![]).unwrap();
    let v = mgr::to_value(&job()).unwrap();
    d.call("__setitem__", vec![Value::from("job"), v]).unwrap();
    // CPython unpickled it into Python objects and pickles them back: every
    // dict, tuple, list, bytes and None came through as itself.
    let back = d.call("get", vec![Value::from("job")]).unwrap();
    assert_eq!(back, job_value());
    assert_eq!(mgr::from_value::<Job>(back).unwrap(), job());
    drop(d);
    m.shutdown().unwrap();
    py.wait();
}

#[test]
fn values_without_a_serde_shape_are_errors() {
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Need {
        n: i64,
    }
    let missing = Value::Dict(vec![]);
    let e = mgr::from_value::<Need>(missing).unwrap_err();
    assert!(matches!(e, mgr::Error::Codec(_)), "{e}");
    assert!(e.to_string().contains("missing field `n`"), "{e}");
    let wrong = Value::Dict(vec![(Value::from("n"), Value::from("five"))]);
    assert!(mgr::from_value::<Need>(wrong).is_err());
    let big = Value::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 1]);
    let e = mgr::from_value::<i64>(big).unwrap_err();
    assert!(e.to_string().contains("no serde form"), "{e}");
    assert!(mgr::to_value(&u64::MAX).is_err());
    // An unhashable key is refused, as Python would.
    let mut m = std::collections::BTreeMap::new();
    m.insert(vec![1], 2);
    assert!(mgr::to_value(&m).is_err());
    // A unit variant carries nothing: `{"Point": 1}` is refused.
    let odd = Value::Dict(vec![(Value::from("Point"), Value::Int(1))]);
    assert!(mgr::from_value::<Shape>(odd).is_err());
}

/// A `Serialize` whose length hint lies (claims `usize::MAX` items, has two).
struct Liar;

impl Serialize for Liar {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(usize::MAX))?;
        seq.serialize_element(&1)?;
        seq.serialize_element(&Lying)?;
        seq.end()
    }
}

struct Lying;

impl Serialize for Lying {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(usize::MAX))?;
        map.serialize_entry("k", &2)?;
        map.end()
    }
}

#[test]
fn a_lying_length_hint_reserves_a_bounded_amount() {
    // Reserving the hint would abort (capacity overflow): at most 1024 slots
    // are reserved up front, the rest grows as items come.
    let v = mgr::to_value(&Liar).unwrap();
    let expect = Value::List(vec![
        Value::Int(1),
        Value::Dict(vec![(Value::from("k"), Value::Int(2))]),
    ]);
    assert_eq!(v, expect);
}
