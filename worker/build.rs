//! Links the worker against the venv's Python (PYO3_CONFIG_FILE, written by
//! ops/pyo3_config.py).
//!
//! With a shared libpython: an rpath, so the binary never picks up a different
//! libpython at run time. With the interpreter's static libpython (Debian's
//! python3.11-dev ships one; pyo3-ffi links it whole, from the config's extra
//! lines): a non-PIE worker (those objects are not position independent) that
//! exports the Python C API for extension modules (numpy...). The embedded
//! CPython then runs as fast as the `python` binary, about 14 % faster than
//! through libpython3.11.so.
fn main() {
    println!("cargo:rerun-if-changed=python/jesse_mcp_runner.py");
    println!("cargo:rerun-if-env-changed=PYO3_CONFIG_FILE");
    if let Ok(path) = std::env::var("PYO3_CONFIG_FILE") {
        println!("cargo:rerun-if-changed={path}");
    }
    let config = pyo3_build_config::get();
    if config.shared() {
        pyo3_build_config::add_libpython_rpath_link_args();
        return;
    }
    println!("cargo:rustc-link-arg=-no-pie");
    for pattern in ["Py*", "_Py*"] {
        println!("cargo:rustc-link-arg=-Wl,--export-dynamic-symbol={pattern}");
    }
}
