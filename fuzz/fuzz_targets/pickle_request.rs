//! The pickle decoders (requests as a server reads them, replies as a client
//! reads them): arbitrary bytes never panic, and a request that decodes
//! re-encodes to a pickle that decodes to the same request.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mgr::proto::codec::pickle;
use mgr::proto::Value;

fuzz_target!(|data: &[u8]| {
    let address = Value::Tuple(vec![Value::Str("127.0.0.1".into()), Value::Int(50000)]);
    let _ = pickle::decode_request_for(data, &address);
    let _ = pickle::decode_reply(data);
    if let Ok(req) = pickle::decode_request(data) {
        let mut out = Vec::new();
        pickle::encode_request(&req, &pickle::Origin::new(&address), &mut out);
        let again = pickle::decode_request(&out).expect("re-encoded request decodes");
        assert_eq!(format!("{again:?}"), format!("{req:?}"));
    }
});
