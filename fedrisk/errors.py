"""One exception hierarchy for everything a user can act on.

Every message names the thing at fault (party, file, column, setting) and what to do about it.
Code deeper in the stack converts library exceptions into one of these at the boundary where the
context (which party, which file) is still known.
"""
from __future__ import annotations

__all__ = [
    "FedriskError",
    "ConfigError",
    "DataError",
    "CodecError",
    "TransportError",
    "ProtocolError",
    "CryptoError",
    "Interrupted",
]


class FedriskError(Exception):
    """Base class: a problem the user can fix, with a message that says how."""


class ConfigError(FedriskError):
    """The job spec or a command-line option is invalid."""


class DataError(FedriskError):
    """A party's data file is missing, unreadable or does not fit the job."""


class CodecError(FedriskError):
    """A wire message is malformed, oversize, or not addressed to this job/party."""


class TransportError(FedriskError):
    """A peer could not be reached, refused us, or did not answer in time."""


class ProtocolError(FedriskError):
    """A peer sent something the protocol does not allow at this step."""


class CryptoError(FedriskError):
    """A cryptographic precondition failed (overflow risk, wrong key, bad ciphertext)."""


class Interrupted(FedriskError):
    """The job was stopped by a signal (SIGINT/SIGTERM); the message names the phase it was in."""
