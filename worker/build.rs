//! Links the worker against the venv's libpython (PYO3_PYTHON) with an rpath, so
//! the binary never picks up a different libpython from the system at run time.
fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
    println!("cargo:rerun-if-changed=python/jesse_mcp_runner.py");
}
