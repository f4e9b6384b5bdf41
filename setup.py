"""Build script: maps the source folders onto import names and compiles the
Cython CPU backend.  Metadata lives in pyproject.toml."""

import os
import sys

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))

# folder -> import name (docs/design.md: one distribution, several source roots)
ROOTS = {
    "needle": "core",
    "needle_numpy": "plugins/numpy",
    "needle_cpu": "plugins/cpu",
    "needle_cuda": "plugins/cuda",
    "needle.nn": "contrib/nn",
    "needle.optim": "contrib/optim",
    "needle.data": "contrib/data",
    "needle.models": "contrib/models",
}


def discover_packages():
    """Every folder with an __init__.py under each root, as a dotted name."""
    packages, package_dir = [], {}
    for name, folder in ROOTS.items():
        package_dir[name] = folder
        for dirpath, dirnames, filenames in os.walk(os.path.join(HERE, folder)):
            dirnames[:] = [d for d in dirnames if not d.startswith((".", "__"))]
            if "__init__.py" not in filenames:
                continue
            rel = os.path.relpath(dirpath, os.path.join(HERE, folder))
            packages.append(name if rel == "." else name + "." + rel.replace(os.sep, "."))
    return packages, package_dir


def cpu_extensions():
    sys.path.insert(0, os.path.join(HERE, "plugins", "cpu"))
    try:
        from build_config import extensions  # plugins/cpu/build_config.py
    finally:
        sys.path.pop(0)
    return extensions(HERE)


packages, package_dir = discover_packages()
setup(
    packages=packages,
    package_dir=package_dir,
    package_data={
        "needle_cuda": ["kernels/*.cu", "kernels/*.cuh"],
        "needle": ["py.typed"],
    },
    ext_modules=cpu_extensions(),
)
