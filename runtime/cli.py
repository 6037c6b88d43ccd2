"""The one way every `edge-*` command ends: a user-facing error is one line on stderr and the
exit code of `h2a.runtime.errors`, never a traceback."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from types import ModuleType

from h2a.runtime.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, H2AError, MissingExtraError


def describe_os_error(err: OSError) -> str:
    """'No such file or directory: data/x.json' rather than "[Errno 2] ... 'data/x.json'"."""
    reason = err.strerror or str(err)
    return f"{reason}: {err.filename}" if err.filename else reason


def run_main(prog: str, body: Callable[[], int | None]) -> int:
    """Run a command's body; returns its exit code (None counts as success)."""
    try:
        code = body()
    except H2AError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:
        print(f"{prog}: error: {describe_os_error(err)}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK if code is None else code


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import an optional dependency, or refuse in one line that names the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(
            f"{purpose} needs {module}, which is not installed here (pip install 'hoi2anomaly-edge[{extra}]')"
        ) from None
