"""Build hook for the one compiled module: fedrisk.crypto._montgomery (GMP's mpn layer).

Everything else is in pyproject.toml. The extension is optional: without a C compiler or GMP's
headers (Debian: libgmp-dev) the install still succeeds and fedrisk uses its pure-gmpy2 kernels
(same results, slower); `python -m fedrisk.crypto.montgomery` says which one is active.
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("fedrisk.crypto._montgomery", ["fedrisk/crypto/_montgomery.c"],
                             libraries=["gmp"], extra_compile_args=["-O2"], optional=True)])
