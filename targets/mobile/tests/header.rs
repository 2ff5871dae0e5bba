//! The checked-in C header must be what cbindgen makes of the current API, so C, Swift and
//! Kotlin callers never build against a stale one. `LOAM_BLESS=1` rewrites it.

use std::path::Path;

#[test]
fn c_header_is_current() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("reading cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen could not read the crate");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let path = crate_dir.join("include/loam.h");
    if std::env::var_os("LOAM_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("writing include/loam.h");
        return;
    }
    let checked_in = std::fs::read(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "{} is out of date with src/capi.rs; regenerate it with \
         `LOAM_BLESS=1 cargo test -p loam-mobile --test header` and commit it",
        path.display()
    );
}
