"""What a `tfflows` command shows on the terminal: results, progress, and one line per failure.

By default a command is quiet: once it starts real work (`Terminal.capture`), the process's
stdout and stderr file descriptors are pointed at a log file, so TensorFlow's C++ start-up
chatter, absl and MLflow warnings, download bars and the tracebacks Beam logs all land there,
while the command's own output goes to the saved terminal streams. Every failure then ends in one
line on stderr (`Terminal.failure`), naming the log that holds the traceback. ``--verbose`` turns
all of this off: everything is shown as it comes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
import traceback

__all__ = ["QUIET_ENVIRONMENT", "Terminal", "EPOCH_RECORD_FIELDS", "MAX_FAILURE_LINE", "quiet", "shorten"]

# Set before TensorFlow, absl or MLflow is imported (they read these once, at import).
QUIET_ENVIRONMENT = {
    "TF_CPP_MIN_LOG_LEVEL": "2",  # C++ INFO and WARNING (oneDNN, CUDA probing); errors still reach the log
    "GRPC_VERBOSITY": "ERROR",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "TQDM_DISABLE": "1",
}
# A failure line is read, not scrolled: messages quote users' values (a row, a list, a path), which
# may be any size; `shorten` keeps the line under this many characters (but for a long log path).
MAX_FAILURE_LINE = 300
_CUT = " ... "


def _cut_middle(text: str, length: int) -> str:
    """`text` in `length` characters: its start and end, the middle replaced by `_CUT`."""
    if len(text) <= length:
        return text
    keep = length - len(_CUT)
    start = keep * 2 // 3
    return text[:start] + _CUT + text[len(text) - (keep - start):]


def shorten(message: str, room: int) -> str:
    """`message` on one line of at most ``room`` characters (at least 240: a long log path, named in
    full, may push the line past 300). The one place where failures' quoted values are bounded:
    the fix (after ``; fix:``) is kept (its end cut if it would take two thirds of the line), and
    the longest ``: ``-separated part before it (a quoted value, a path) is cut in the middle,
    then the next longest, so the field or file named first and the row and column stay."""
    message = " ".join(message.split())
    room = max(room, 240)
    if len(message) <= room:
        return message
    head, sep, fix = message.rpartition("; fix: ")
    if not sep:
        head, fix = message, ""
    fix = sep + fix
    if len(fix) > room * 2 // 3:
        fix = fix[:room * 2 // 3 - len(_CUT)] + _CUT.rstrip()
    parts = head.split(": ")
    while (excess := len(": ".join(parts)) + len(fix) - room) > 0:
        longest = max(range(len(parts)), key=lambda i: len(parts[i]))
        target = max(len(parts[longest]) - excess, 2 * len(_CUT))
        if target >= len(parts[longest]):
            break  # many short parts: the whole head is cut below
        parts[longest] = _cut_middle(parts[longest], target)
    return _cut_middle(": ".join(parts), room - len(fix)) + fix


# A trainer's per-epoch log record carries these (``extra=``); `Terminal` turns such records into
# the progress bar or the every-N-epochs lines.
EPOCH_RECORD_FIELDS = ("epoch", "epochs")


class _Progress(logging.Handler):
    """The `tfflows` loggers on the terminal: warnings and errors as they come, and per-epoch
    records (`EPOCH_RECORD_FIELDS`) as a bar rewritten in place ("bar"), one line every
    ``every`` epochs ("lines") or not at all ("off"). Other INFO records stay in the log."""

    def __init__(self, stream, mode: str, every: int):
        super().__init__(logging.INFO)
        self.stream, self.mode, self.every = stream, mode, every
        self._bar_open, self._start = False, None

    def _end_bar(self) -> None:
        if self._bar_open:
            self.stream.write("\n")
            self._bar_open = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            epoch, epochs = getattr(record, "epoch", None), getattr(record, "epochs", None)
            if record.levelno >= logging.WARNING:
                self._end_bar()
                self.stream.write(f"{record.levelname.lower()}: {record.getMessage()}\n")
            elif epoch is not None and epochs and self.mode == "bar":
                self._start = self._start or (epoch - 1, time.monotonic())
                done = max(epoch - self._start[0], 1)
                eta = (time.monotonic() - self._start[1]) / done * (epochs - epoch)
                filled = int(20 * epoch / epochs)
                self.stream.write(f"\r[{'#' * filled}{'.' * (20 - filled)}] {record.getMessage()}, "
                                  f"ETA {int(eta) // 60}:{int(eta) % 60:02d}\x1b[K")
                self._bar_open = True
            elif epoch is not None and epochs and self.mode == "lines":
                if epoch == 1 or epoch % self.every == 0 or epoch == epochs:
                    self.stream.write(record.getMessage() + "\n")
            self.stream.flush()
        except Exception:  # a broken terminal must not stop a run
            self.handleError(record)

    def close(self) -> None:
        self._end_bar()
        super().close()


class Terminal:
    """The terminal of one command. `out`/`err` are where results and failures go; `log_path` is
    the log file once `capture` ran (None before, and always with ``verbose``)."""

    def __init__(self, command: str, verbose: bool = False):
        self.command, self.verbose = command, verbose
        self.out, self.err = sys.stdout, sys.stderr
        self.log_path: str | None = None
        self._saved: list[int] = []
        self._handlers: list[tuple[logging.Logger, logging.Handler]] = []
        if not verbose:
            for name, value in QUIET_ENVIRONMENT.items():
                os.environ.setdefault(name, value)

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def capture(self, log_dir: str | None, progress: str = "lines", every: int = 10) -> None:
        """From here on, stdout/stderr (file descriptors 1 and 2) go to a new log file in ``log_dir``
        (or, when that cannot be written or is None, in the temporary folder); the `tfflows`
        loggers show progress on the terminal as `_Progress` describes. With ``verbose``: the
        `tfflows` loggers' INFO lines go to stderr and nothing is redirected."""
        if self.verbose:
            self._add_handler(logging.getLogger("tfflows"), logging.StreamHandler(sys.stderr),
                              "%(asctime)s %(name)s: %(message)s")
            return
        self.log_path = self._open_log(log_dir)
        sys.stdout.flush()
        sys.stderr.flush()
        self._saved = [os.dup(1), os.dup(2)]
        self.out = os.fdopen(os.dup(self._saved[0]), "w", buffering=1)
        self.err = os.fdopen(os.dup(self._saved[1]), "w", buffering=1)
        if progress == "auto":
            progress = "bar" if self.err.isatty() else "lines"
        log_fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        logging.captureWarnings(True)
        root = logging.getLogger()
        root.setLevel(logging.INFO)
        # The log by name, not through sys.stderr: in a notebook that is the kernel's stream, not fd 2.
        self._add_handler(root, logging.FileHandler(self.log_path), "%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._add_handler(logging.getLogger("tfflows"), _Progress(self.err, progress, every), "%(message)s")

    def _add_handler(self, logger: logging.Logger, handler: logging.Handler, fmt: str) -> None:
        handler.setFormatter(logging.Formatter(fmt, "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        self._handlers.append((logger, handler))

    def _open_log(self, log_dir: str | None) -> str:
        name = f"{self.command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        for folder in ([log_dir] if log_dir else []) + [os.path.join(tempfile.gettempdir(), "tfflows-logs")]:
            try:
                os.makedirs(folder, exist_ok=True)
                path = os.path.join(folder, name)
                with open(path, "a"):
                    return path
            except OSError:
                continue
        raise OSError(f"cannot create a log file in {log_dir} or the temporary folder")

    def failure(self, error: BaseException, message: str) -> None:
        """One line on stderr, under `MAX_FAILURE_LINE` characters (`shorten`); the traceback goes to
        the log (to stderr too with ``verbose``)."""
        prefix, suffix = f"tfflows {self.command}: ", ""
        if self.verbose:
            traceback.print_exception(error, file=self.err)
        elif self.log_path and (log_path := self._log_traceback(error)):
            suffix = f" (log: {log_path})"
        message = shorten(message, MAX_FAILURE_LINE - 1 - len(prefix) - len(suffix))
        print(f"{prefix}{message}{suffix}", file=self.err, flush=True)

    def _log_traceback(self, error: BaseException) -> str | None:
        """Appends the traceback to the log, or, when that cannot be written (the disk that filled
        up and failed the run holds it), to a new log in the temporary folder. Returns the log that
        holds it (None: neither could be written; the failure line still comes)."""
        for folder in (None, os.path.join(tempfile.gettempdir(), "tfflows-logs")):
            try:
                path = self.log_path if folder is None else self._open_log(folder)
                with open(path, "a") as log:
                    traceback.print_exception(error, file=log)
                return path
            except OSError:
                continue
        return None

    def close(self) -> None:
        """Puts the terminal back (file descriptors and logging), e.g. for a caller in-process."""
        for logger, handler in reversed(self._handlers):
            logger.removeHandler(handler)
            handler.close()
        self._handlers.clear()
        if self._saved:
            with contextlib.suppress(OSError):  # what is left for a log on a full disk is lost
                sys.stdout.flush()
                sys.stderr.flush()
            os.dup2(self._saved[0], 1)
            os.dup2(self._saved[1], 2)
            for fd in self._saved:
                os.close(fd)
            self._saved = []
            self.out.close()
            self.err.close()
            self.out, self.err = sys.stdout, sys.stderr


@contextlib.contextmanager
def quiet(log_dir: str | None = None, progress: str = "lines", every: int = 10):
    """The command line's quiet mode (`Terminal.capture`) for a notebook or a script: inside the
    block TensorFlow, absl, Beam and MLflow output goes to a log file in ``log_dir`` (else the
    temporary folder), while `tfflows` warnings and training progress still show; yields the log's
    path. Python's own streams are pointed at the log too: in a Jupyter kernel they are not file
    descriptors 1 and 2. Enter it before TensorFlow is imported, which reads `QUIET_ENVIRONMENT`
    once and, imported into a kernel with no logging set up, logs INFO lines into the notebook."""
    terminal = Terminal("notebook")
    terminal.capture(log_dir, progress, every)
    try:
        with open(terminal.log_path, "a", buffering=1) as log, contextlib.redirect_stdout(log), \
                contextlib.redirect_stderr(log):
            yield terminal.log_path
    finally:
        terminal.close()
