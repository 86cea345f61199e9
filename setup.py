"""Build hook for the compiled modules (everything else is in pyproject.toml).

- fedrisk.crypto._montgomery: batch Montgomery products over GMP's mpn layer (Debian: libgmp-dev).
  Without it fedrisk uses its pure-gmpy2 kernels (same results, slower);
  `python -m fedrisk.crypto.montgomery` says which one is active.
- fedrisk.crypto._idhash: the PSI order keys (prefixed SHA-256 of a batch of ids) over OpenSSL's
  libcrypto (Debian: libssl-dev). Without it fedrisk hashes with hashlib (same keys, slower).

Both are optional: without a C compiler or the headers the install still succeeds.
"""
from setuptools import Extension, setup

setup(ext_modules=[
    Extension("fedrisk.crypto._montgomery", ["fedrisk/crypto/_montgomery.c"],
              libraries=["gmp"], extra_compile_args=["-O2"], optional=True),
    Extension("fedrisk.crypto._idhash", ["fedrisk/crypto/_idhash.c"],
              libraries=["crypto"], extra_compile_args=["-O2"], optional=True),
])
