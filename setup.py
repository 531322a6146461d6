"""The package's metadata lives in pyproject.toml; this file keeps ``python setup.py`` workflows working."""

from setuptools import setup

setup()
