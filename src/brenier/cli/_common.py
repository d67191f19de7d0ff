"""What every ``brenier`` command shares: the Typer app, exit codes, argument types, console output,
one-line user errors, the output folder, convergence warnings, and reading input files.

Error handling, in one place: a command registered with ``@command(...)`` turns every error a user
can cause — an unreadable or corrupt input file, a damaged run folder (``CorruptRunError``), an
impossible option — into one red ``error:`` line naming the file and what is wrong, and exit status
2, never a traceback. An output folder the command created is removed again when the command fails
before writing anything into it.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .. import __version__
from .._io import CorruptRunError
from ..exceptions import ConvergenceWarning

#: exit status of a user error (bad input file, corrupt run folder, bad option value): click's usage errors'
EXIT_USAGE = 2
#: exit status when a fit stopped short of its tolerance (a ConvergenceWarning); the outputs are written
EXIT_UNCONVERGED = 3
#: exit status after Ctrl-C stopped a fit (the partial result is saved)
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = (
    "Exit status: 0 done; 1 an output could not be written; 2 a user error (a bad or corrupt input file or run "
    "folder, an impossible option), one line naming the file; 3 a fit stopped short of its tolerance "
    "(ConvergenceWarning; the outputs are written; --allow-unconverged exits 0); 130 interrupted (the partial "
    "result is saved; rerun to resume)."
)

app = typer.Typer(
    name="brenier",
    help="Geometric optimal-transport generative modelling: semi-discrete OT, Brenier potentials, power diagrams.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"brenier {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", help="Show the version and exit.", callback=_version_callback, is_eager=True),
) -> None:
    """Geometric optimal-transport generative modelling: semi-discrete OT, Brenier potentials, power diagrams."""


class DeviceKind(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def allow_unconverged_option() -> Any:
    """The ``--allow-unconverged`` flag of every command that fits."""
    return typer.Option(False, "--allow-unconverged",
                        help="Exit 0 even when a fit stops short of its tolerance (ConvergenceWarning). Without it the "
                             "warning is printed, the outputs are still written, and the exit status is 3.")


# ------------------------------------------------------------------ output
def console() -> Console:
    # Created per call so that the console follows sys.stdout (CliRunner swaps it).
    return Console(highlight=False)


def err_console() -> Console:
    return Console(stderr=True, highlight=False)


def one_line(message: str) -> str:
    """A message on one line (library messages may hold newlines)."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``error: message`` in red on stderr (one line, no markup parsing) and exit."""
    err_console().print(Text(f"error: {one_line(message)}", style="bold red"), soft_wrap=True)
    raise typer.Exit(code)


def warn(message: str) -> None:
    err_console().print(Text(f"warning: {one_line(message)}", style="yellow"), soft_wrap=True)


def _user_message(exc: BaseException) -> str:
    msg = str(exc) or type(exc).__name__
    if isinstance(exc, KeyError):  # str(KeyError('x')) is "'x'": say what it is
        msg = f"missing key {msg}"
    if msg.startswith("checkpoint:"):
        msg += " — delete it, pick another --out, or pass --no-checkpoint"
    return msg


def user_errors(fn: Callable[[], Any]) -> Any:
    """Run ``fn``; turn the library's input errors into a red line and exit status 2."""
    try:
        return fn()
    except (ValueError, TypeError, FileNotFoundError) as exc:  # CorruptRunError is a ValueError
        fail(_user_message(exc))


def finite_or_none(x: Any) -> Any:
    """JSON has no NaN/inf: report them as null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def fmt(x: Any, spec: str = ".3g") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return format(x, spec)


def table(title: str, rows: list[tuple[str, str | Text]]) -> Table:
    """A two-column key/value table; plain strings are shown verbatim (no markup parsing)."""
    t = Table(title=title, show_header=False, title_justify="left", title_style="bold", box=None, padding=(0, 2))
    t.add_column(style="bold cyan", no_wrap=True)
    t.add_column()
    for k, v in rows:
        t.add_row(k, v if isinstance(v, Text) else Text(str(v)))
    return t


def write_outputs(what: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` (which writes files); an OSError (disk full, permissions) is one red line, exit 1."""
    try:
        return fn()
    except OSError as exc:
        fail(f"{what}: could not write the results ({exc})", code=1)


# ------------------------------------------------------------------ the output folder
#: folders created by prepare_out during the running command (deepest last), removed on failure if empty
_created: list[Path] = []


def prepare_out(out: Path) -> Path:
    """Create the output folder ``out`` (and missing parents); remembered, so that a command that then
    fails before writing anything leaves no empty folder behind."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        fail(f"--out {out}: exists and is not a directory")
    new = [p for p in (out, *out.parents) if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"--out {out}: cannot create the directory ({exc.strerror or exc})")
    _created.extend(reversed(new))
    return out


def _remove_empty_created() -> None:
    for p in reversed(_created):
        try:
            p.rmdir()  # only succeeds on an empty folder: anything written is kept
        except OSError:
            break
    _created.clear()


def command(target: typer.Typer, name: str, **kwargs: Any) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register ``fn`` as command ``name`` of ``target``, with the user-error contract: errors a user
    can cause are one line and exit 2; a failed command removes the empty output folder it created."""

    def deco(fn: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(fn)  # typer reads the signature through __wrapped__
        def run(*args: Any, **kw: Any) -> None:
            _created.clear()
            ok = False
            try:
                fn(*args, **kw)
                ok = True
            except typer.Exit as exc:
                ok = exc.exit_code in (0, EXIT_UNCONVERGED, EXIT_INTERRUPTED)
                raise
            except KeyboardInterrupt:
                # not click's bare "Aborted!": say what is kept (fits checkpoint as they go)
                warn("interrupted (Ctrl-C); the checkpoints written so far are kept: rerun the same command to resume")
                raise typer.Exit(EXIT_INTERRUPTED) from None
            except (ValueError, TypeError, FileNotFoundError, KeyError) as exc:
                # the last line of defence: a user error that a command did not anticipate
                # (BRENIER_TRACEBACK=1 shows the traceback, for debugging brenier itself)
                if os.environ.get("BRENIER_TRACEBACK"):
                    raise
                fail(_user_message(exc))
            finally:
                if not ok:
                    _remove_empty_created()
                _created.clear()

        kwargs.setdefault("epilog", EXIT_CODES_HELP)
        return target.command(name, **kwargs)(run)

    return deco


def set_threads(threads: int) -> None:
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


# ------------------------------------------------------------------ convergence
class FitWarnings:
    """The library's warnings during fits, shown as one yellow line each instead of Python warnings.

    ``ConvergenceWarning``s are held back until the outputs are written; ``finish`` then prints
    them and exits with status 3 unless ``--allow-unconverged`` was given.
    """

    def __init__(self) -> None:
        self.unconverged: list[str] = []

    @contextmanager
    def watch(self) -> Iterator[None]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # torch's notice about its own beta sparse tensors is noise for a CLI user
            warnings.filterwarnings("ignore", message=r"Sparse CSR tensor support is in beta")
            try:
                yield
            finally:
                for w in caught:
                    if issubclass(w.category, ConvergenceWarning):
                        self.unconverged.append(one_line(str(w.message)))
                    else:
                        warn(str(w.message))

    def finish(self, allow_unconverged: bool) -> None:
        """Print each ConvergenceWarning as one line; exit 3 when there was one, unless allowed."""
        for msg in self.unconverged:
            warn(msg + ("" if allow_unconverged else
                        " (outputs written; exit status 3 — pass --allow-unconverged to accept an unconverged fit)"))
        if self.unconverged and not allow_unconverged:
            raise typer.Exit(EXIT_UNCONVERGED)


# ------------------------------------------------------------------ input loading
TARGET_KEYS = ("x", "targets")
_DEFAULT_WEIGHTS_KEY = "weights"

# ------------------------------------------------------------------ input loading
def load_targets(path: Path, weights_key: Optional[str] = None) -> tuple[np.ndarray, Optional[np.ndarray], str]:
    """Read targets (N, d) and optional weights (N,) from a .npy or .npz file.

    A .npz must hold the points under ``x`` or ``targets``; its weights are read from
    ``weights_key`` (default: ``weights`` when present, else uniform). Returns
    (targets, weights or None, a description of where the weights came from). Raises
    FileNotFoundError / ValueError with a one-line message naming the file and the problem.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, expected a .npy or .npz file")
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise ValueError(f"{path}: unsupported file type {path.suffix or '(no extension)'!r}; expected a .npy array (N, d) or a .npz archive with 'x' or 'targets'")

    weights = None
    weights_from = "uniform"
    if suffix == ".npy":
        if weights_key is not None:
            raise ValueError(f"{path}: --weights-key needs a .npz archive (a .npy file holds a single array)")
        x = np_load(path)
        if not isinstance(x, np.ndarray):
            raise ValueError(f"{path}: holds an .npz archive, not a single array; rename it to .npz")
    else:
        archive = np_load(path)
        if not hasattr(archive, "files"):
            raise ValueError(f"{path}: is not a .npz archive (it holds a single array); rename it to .npy")
        with archive:
            keys = list(archive.files)
            key = next((k for k in TARGET_KEYS if k in keys), None)
            if key is None:
                raise ValueError(f"{path}: no array named 'x' or 'targets' (found: {', '.join(keys) or 'none'})")
            x = _np_array(archive, key, path)
            wkey = weights_key if weights_key is not None else _DEFAULT_WEIGHTS_KEY
            if wkey in keys:
                weights = _np_array(archive, wkey, path)
                weights_from = f"{path.name}[{wkey}]"
            elif weights_key is not None:
                raise ValueError(f"{path}: no array named {weights_key!r} for the weights (found: {', '.join(keys)})")

    where = path.name if suffix == ".npy" else f"{path.name}[{key}]"
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise ValueError(f"{where}: expected an array of numbers, got dtype {x.dtype}")
    if np.iscomplexobj(x):
        raise ValueError(f"{where}: expected real numbers, got a complex array")
    if x.ndim != 2:
        raise ValueError(f"{where}: expected a 2-D array of shape (N, d), got shape {x.shape}")
    if x.shape[1] < 1:
        raise ValueError(f"{where}: the points have dimension 0 (shape {x.shape})")
    if x.shape[0] < 2:
        raise ValueError(f"{where}: need at least 2 points, got {x.shape[0]}")
    if not np.all(np.isfinite(x)):
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise ValueError(f"{where}: {bad} row(s) contain NaN or infinite values")
    if weights is not None:
        weights = _check_weights(weights, x.shape[0], weights_from)
    return x, weights, weights_from


def np_load(path: Path):
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as exc:
        raise ValueError(f"{path}: could not be read ({exc.strerror or exc})") from None
    if head[:2] == b"PK":
        pass  # a zip archive: np.load returns an NpzFile
    elif head != b"\x93NUMPY":
        kind = "empty" if not head else "not a NumPy file (no .npy header)"
        raise ValueError(f"{path}: could not be read as a NumPy array: the file is {kind}")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise ValueError(f"{path}: holds pickled Python objects, not a numeric array (refusing to unpickle)") from None
        raise ValueError(f"{path}: could not be read as a NumPy file ({exc})") from None
    except Exception as exc:  # zipfile.BadZipFile, EOFError, OSError, ...
        raise ValueError(f"{path}: could not be read as a NumPy file ({type(exc).__name__}: {exc})") from None


def _np_array(archive, key: str, path: Path) -> np.ndarray:
    try:
        return np.asarray(archive[key])
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise ValueError(f"{path}[{key}]: holds pickled Python objects, not a numeric array") from None
        raise ValueError(f"{path}[{key}]: could not be read ({exc})") from None
    except Exception as exc:  # members are read lazily: zipfile.BadZipFile (bad CRC), EOFError, zlib.error, ...
        raise ValueError(f"{path}[{key}]: could not be read (the archive is damaged: {type(exc).__name__}: {exc})") from None


def _check_weights(w: np.ndarray, n: int, where: str) -> np.ndarray:
    if w.dtype == object or not np.issubdtype(w.dtype, np.number) or np.iscomplexobj(w):
        raise ValueError(f"{where}: expected weights as real numbers, got dtype {w.dtype}")
    w = w.astype(np.float64).reshape(-1) if w.ndim == 2 and 1 in w.shape else w.astype(np.float64)
    if w.ndim != 1:
        raise ValueError(f"{where}: expected a 1-D array of {n} weights, got shape {w.shape}")
    if w.shape[0] != n:
        raise ValueError(f"{where}: expected {n} weights (one per target), got {w.shape[0]}")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"{where}: {int((~np.isfinite(w)).sum())} weight(s) are NaN or infinite")
    if np.any(w < 0):
        raise ValueError(f"{where}: {int((w < 0).sum())} negative weight(s); weights must be positive")
    if np.any(w == 0):
        raise ValueError(f"{where}: {int((w == 0).sum())} zero weight(s); drop those targets instead")
    return w



def load_images(data: str, limit: Optional[int]):
    """(X, y) from a built-in name or a path; user errors and a missing optional package as one red line."""
    from ..datasets import load

    try:
        return user_errors(lambda: load(data, limit=limit))
    except ImportError as exc:
        fail(str(exc))
