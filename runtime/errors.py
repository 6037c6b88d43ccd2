"""Errors a user can hit: each carries one clear line and the exit code the CLIs return.

Exit codes, the same for every `edge-*` command (`h2a.runtime.cli.run_main` applies them):
0 done; 1 the work failed (a file could not be read or written, the store failed, a gate
refused); 2 what the user gave was refused (usage, bundle, config, an input file or value);
3 the video source cannot be opened; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_SOURCE = 3
EXIT_INTERRUPTED = 130


class H2AError(Exception):
    """Base of user-facing errors; `str(err)` is the one line to print."""

    exit_code = EXIT_FAILURE


class BundleError(H2AError):
    """The plan bundle was refused before anything was loaded from it."""

    exit_code = EXIT_USAGE


class BackendError(H2AError):
    """The backend a bundle needs is missing or cannot run here."""

    exit_code = EXIT_USAGE


class InputError(H2AError):
    """A file or value the user named does not exist or is not what it should be."""

    exit_code = EXIT_USAGE


class MissingExtraError(H2AError):
    """A command needs a package of an extra that is not installed (e.g. onnx for quantize)."""

    exit_code = EXIT_USAGE
