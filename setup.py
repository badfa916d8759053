"""Only here to name the cffi module; all metadata lives in pyproject.toml."""

from setuptools import setup

setup(cffi_modules=["core/ring/_native/build.py:ffibuilder"])
