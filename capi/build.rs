//! Link settings for the shared library only: a SONAME (so programs record
//! `libmgr.so.0`, not the build path) and a version script exporting exactly the
//! `mgr_*` C API.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" || os == "android" || os.ends_with("bsd") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libmgr.so.0");
        println!("cargo:rustc-cdylib-link-arg=-Wl,--version-script={dir}/mgr.map");
    }
    println!("cargo:rerun-if-changed=mgr.map");
    println!("cargo:rerun-if-changed=build.rs");
}
