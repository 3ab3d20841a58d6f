"""Writes the pyo3 build configuration the worker is built with (PYO3_CONFIG_FILE).

Usage: <venv>/bin/python ops/pyo3_config.py OUTPUT

When the interpreter ships its static libpython (Debian's python3.11-dev does), the
config says `shared=false` and worker/build.rs links that archive whole into the
worker: the embedded CPython then runs as fast as the `python` binary (about 14 %
faster than through libpython3.11.so, measured with `make bench`). Otherwise it
describes the shared library, as PYO3_PYTHON alone would. The file is rewritten only
when its content changes, so cargo does not rebuild pyo3 for nothing.
"""
import os
import sys
import sysconfig


def main():
    var = sysconfig.get_config_var
    version = "%d.%d" % sys.version_info[:2]
    libpl, library = var("LIBPL"), var("LIBRARY")
    static = bool(libpl and library and os.path.isfile(os.path.join(libpl, library)))
    lines = [
        "implementation=CPython",
        f"version={version}",
        f"shared={'false' if static else 'true'}",
        "abi3=false",
        f"lib_name=python{version}",
        f"lib_dir={libpl if static else var('LIBDIR')}",
        f"executable={sys.executable}",
        "pointer_width=64",
        "build_flags=",
        f"suppress_build_script_link_lines={'true' if static else 'false'}",
    ]
    if static:
        # The archive, whole (extension modules need all of the C API), and the
        # libraries its built-in modules use, as the interpreter was linked.
        lines.append(f"extra_build_script_line=cargo:rustc-link-search=native={libpl}")
        lines.append(f"extra_build_script_line=cargo:rustc-link-lib=static:+whole-archive,-bundle=python{version}")
        flags = " ".join(filter(None, (var(k) for k in ("LIBS", "SYSLIBS", "MODLIBS", "LOCALMODLIBS")))).split()
        seen = []
        for flag in flags:
            if flag.startswith("-l") and flag[2:] not in seen:
                seen.append(flag[2:])
        for lib in seen:
            lines.append(f"extra_build_script_line=cargo:rustc-link-lib=dylib={lib}")
    text = "\n".join(lines) + "\n"
    path = sys.argv[1]
    try:
        with open(path) as f:
            if f.read() == text:
                return
    except FileNotFoundError:
        pass
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
