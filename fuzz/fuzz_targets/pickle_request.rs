//! The pickle decoders (requests as a server reads them, replies as a client
//! reads them): arbitrary bytes never panic nor use more memory than the stated
//! bound, and a request that decodes re-encodes to a pickle that decodes to the
//! same request. Opaque values (datetime, exceptions, user classes …) are
//! decoded under each policy on globals.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mgr::proto::codec::{pickle, Globals, PICKLE_BYTES_PER_INPUT_BYTE};
use mgr::proto::Value;

#[path = "counting.rs"]
mod counting;
use counting::within_bound;

fuzz_target!(|data: &[u8]| {
    let c = PICKLE_BYTES_PER_INPUT_BYTE;
    let address = Value::Tuple(vec![Value::Str("127.0.0.1".into()), Value::Int(50000)]);
    let _ = within_bound(data, c, |d| pickle::decode_request_for(d, &address));
    // Opaque values of any class (and none at all) under the other policies.
    for globals in [Globals::Any, Globals::None] {
        let _ = within_bound(data, c, |d| pickle::decode_request_with(d, &address, globals));
    }
    let _ = within_bound(data, c, pickle::decode_reply);
    if let Ok(req) = within_bound(data, c, pickle::decode_request) {
        let mut out = Vec::new();
        pickle::encode_request(&req, &pickle::Origin::new(&address), &mut out);
        let again = pickle::decode_request(&out).expect("re-encoded request decodes");
        assert_eq!(format!("{again:?}"), format!("{req:?}"));
    }
});
