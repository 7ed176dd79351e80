"""Packaging: the code is found under kcompile/; the top-level templates/ and pdk_models/ ship inside the
package as kcompile/templates and kcompile/pdk_models (where kcompile.resources looks first). Metadata and
dependencies are in setup.cfg."""

from setuptools import find_packages, setup

DATA = {"kcompile.templates": "templates", "kcompile.pdk_models": "pdk_models"}

setup(
    packages=find_packages(include=["kcompile", "kcompile.*"]) + list(DATA),
    package_dir=DATA,
    package_data={"kcompile.templates": ["**/*.j2"], "kcompile.pdk_models": ["*.lib", "*.md"]},
)
