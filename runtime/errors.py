"""Errors a user can hit: each carries one clear line and the exit code the CLIs return."""

from __future__ import annotations


class H2AError(Exception):
    """Base of user-facing errors; `str(err)` is the one line to print."""

    exit_code = 1


class BundleError(H2AError):
    """The plan bundle was refused before anything was loaded from it."""

    exit_code = 2


class BackendError(H2AError):
    """The backend a bundle needs is missing or cannot run here."""

    exit_code = 2


class InputError(H2AError):
    """A file or value the user named does not exist or is not what it should be."""

    exit_code = 2
