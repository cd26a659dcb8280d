//! `include/mgr.h` is what cbindgen (the pinned version) generates from `capi/src/ffi`:
//! this test regenerates it and fails on any difference. Run with
//! `MGR_UPDATE_HEADER=1` to rewrite the checked-in header instead.
//!
//! It also checks the convention the header cannot show: every exported function
//! in `capi/src/ffi` runs its body inside the `ffi_boundary!` panic boundary.

use std::path::Path;

#[test]
fn header_is_up_to_date() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
    // The header lives at the repository's top, where C users look for it.
    let include = root
        .parent()
        .expect("capi/ is in the repository")
        .join("include");
    // cbindgen follows the `mod` items of src/ffi/mod.rs: only the C surface.
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(root.join("src/ffi/mod.rs"))
        .generate()
        .expect("cbindgen generates the header");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let generated = c_comments(&String::from_utf8(generated).expect("utf-8 header"));
    let path = include.join("mgr.h");
    if std::env::var_os("MGR_UPDATE_HEADER").is_some() {
        std::fs::write(&path, &generated).expect("write include/mgr.h");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    if checked_in != generated {
        let line = checked_in
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or(
                checked_in.lines().count().min(generated.lines().count()),
                |i| i,
            )
            + 1;
        panic!(
            "include/mgr.h is out of date (first difference at line {line}); \
             regenerate it with MGR_UPDATE_HEADER=1 cargo test --test header"
        );
    }
    for name in [
        "mgr_server_new",
        "mgr_create",
        "mgr_call",
        "mgr_status",
        "mgr_type",
    ] {
        assert!(generated.contains(name), "{name} missing from the header");
    }
    assert!(
        !generated.contains("[`"),
        "a rustdoc link is left in a C comment"
    );
}

/// The doc comments cbindgen copies are rustdoc: `[`mgr_free`]` links and
/// `mgr_type::version` paths. In C comments they become plain code spans and C
/// member syntax (`mgr_type.version`; enum constants lose their enum prefix).
fn c_comments(header: &str) -> String {
    let mut out = String::with_capacity(header.len());
    for line in header.split_inclusive('\n') {
        if !line.trim_start().starts_with("//") {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("[`") {
            let Some(len) = rest[at + 2..].find("`]") else {
                break;
            };
            let name = &rest[at + 2..at + 2 + len];
            let name = match name.split_once("::") {
                Some(("mgr_status", constant)) => constant.to_owned(),
                Some((owner, member)) => format!("{owner}.{member}"),
                None => name.to_owned(),
            };
            out.push_str(&rest[..at]);
            out.push('`');
            out.push_str(&name);
            out.push('`');
            rest = &rest[at + 2 + len + 2..];
        }
        out.push_str(rest);
    }
    out
}

#[test]
fn rustdoc_links_become_c_code_spans() {
    let h = "// Free with [`mgr_value_free`]; see [`mgr_type::version`] and\n\
             // [`mgr_status::MGR_ERR_REMOTE`], not d[key].\nint [`x`];\n";
    assert_eq!(
        c_comments(h),
        "// Free with `mgr_value_free`; see `mgr_type.version` and\n\
         // `MGR_ERR_REMOTE`, not d[key].\nint [`x`];\n"
    );
}

#[test]
fn every_export_is_behind_the_panic_boundary() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ffi");
    let mut exports = 0;
    for entry in std::fs::read_dir(&dir).expect("src/ffi") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        let mut lines = text.lines().peekable();
        while let Some(line) = lines.next() {
            if line.trim() != "#[no_mangle]" {
                continue;
            }
            exports += 1;
            // The signature runs up to the line ending in `{`; the next line opens
            // the boundary.
            let mut sig = String::new();
            for l in lines.by_ref() {
                sig.push_str(l);
                if l.trim_end().ends_with('{') {
                    break;
                }
            }
            assert!(
                sig.contains("pub unsafe extern \"C\" fn mgr_"),
                "{}: export not named mgr_* or not extern \"C\": {sig}",
                path.display()
            );
            let body = lines.next().unwrap_or_default();
            assert!(
                body.trim_start().starts_with("ffi_boundary!"),
                "{}: {sig} does not run inside ffi_boundary!",
                path.display()
            );
        }
    }
    assert!(exports > 50, "found only {exports} exports");
}
