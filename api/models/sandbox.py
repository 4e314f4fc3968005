"""Linux Landlock for the model inspector child: where it may write, and nothing else.

Resource limits bound how much a process uses; they cannot say *where* it writes. Landlock (an
unprivileged Linux security module, kernel 5.13+) can: after :func:`restrict_writes`, this
process and everything it starts may create, write, truncate, rename or remove files only
beneath one folder (or nowhere), open no TCP connection and bind no TCP port (kernel 6.7+), and
signal or reach through abstract Unix sockets no process outside itself (kernel 6.12+), e.g.
the API. Reading stays allowed: the interpreter, torch and the upload must be read.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

__all__ = ["LandlockUnavailableError", "restrict_writes"]

# Syscall numbers: the same on every architecture for syscalls added since 5.1 (asm-generic).
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

# LANDLOCK_ACCESS_FS_*: every right that changes the filesystem, by the ABI that brought it.
_WRITE_RIGHTS_ABI1 = (
    (1 << 1)  # WRITE_FILE (also below)
    | (1 << 4)  # REMOVE_DIR
    | (1 << 5)  # REMOVE_FILE
    | (1 << 6)  # MAKE_CHAR
    | (1 << 7)  # MAKE_DIR
    | (1 << 8)  # MAKE_REG
    | (1 << 9)  # MAKE_SOCK
    | (1 << 10)  # MAKE_FIFO
    | (1 << 11)  # MAKE_BLOCK
    | (1 << 12)  # MAKE_SYM
)
_WRITE_FILE = 1 << 1
_REFER = 1 << 13  # ABI 2: link or rename across folders
_TRUNCATE = 1 << 14  # ABI 3
_NET_TCP = (1 << 0) | (1 << 1)  # ABI 4: BIND_TCP, CONNECT_TCP
_SCOPES = (1 << 0) | (1 << 1)  # ABI 6: ABSTRACT_UNIX_SOCKET, SIGNAL


class LandlockUnavailableError(OSError):
    """The kernel has no Landlock (too old, or the module is not enabled)."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def restrict_writes(writable: Path | None) -> None:
    """Confine this process for good: writes beneath ``writable`` only (nowhere when ``None``).

    Raises :class:`LandlockUnavailableError` when the kernel cannot enforce it, and ``OSError``
    when a step fails; the process is then left as it was.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    abi = libc.syscall(_CREATE_RULESET, None, ctypes.c_size_t(0), _CREATE_RULESET_VERSION)
    if abi < 1:
        raise LandlockUnavailableError(ctypes.get_errno(), "Landlock is not available")
    rights = _WRITE_RIGHTS_ABI1 | (_REFER if abi >= 2 else 0) | (_TRUNCATE if abi >= 3 else 0)
    attr = _RulesetAttr(rights, _NET_TCP if abi >= 4 else 0, _SCOPES if abi >= 6 else 0)
    # Older kernels accept the larger struct as long as the fields they do not know are zero.
    size = ctypes.c_size_t(ctypes.sizeof(attr))
    ruleset = libc.syscall(_CREATE_RULESET, ctypes.byref(attr), size, 0)
    if ruleset < 0:
        raise _os_error("landlock_create_ruleset")
    try:
        # Libraries open the null device for writing at import (dill): harmless, allowed.
        _allow(libc, ruleset, Path(os.devnull), _WRITE_FILE | (_TRUNCATE if abi >= 3 else 0))
        if writable is not None:
            _allow(libc, ruleset, writable, rights)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0):
            raise _os_error("prctl(PR_SET_NO_NEW_PRIVS)")
        if libc.syscall(_RESTRICT_SELF, ruleset, 0):
            raise _os_error("landlock_restrict_self")
    finally:
        os.close(ruleset)


def _allow(libc: ctypes.CDLL, ruleset: int, path: Path, rights: int) -> None:
    target = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        rule = _PathBeneathAttr(rights, target)
        if libc.syscall(_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0):
            raise _os_error(f"landlock_add_rule({path})")
    finally:
        os.close(target)


def _os_error(call: str) -> OSError:
    number = ctypes.get_errno()
    return OSError(number, f"{call}: {os.strerror(number)}")
