"""The virtual phone's ``/system/bin/sh``: a small interpreter, never a real shell.

A command line is tokenised like POSIX sh (single and double quotes, backslashes, ``$?``, ``$NAME``,
``$(...)`` and backticks, globs, ``;`` ``&&`` ``||`` ``|``, ``>`` ``>>`` ``<`` ``2>`` ``2>&1``) and run by
Python functions that imitate Android's toybox commands inside the sandbox (:mod:`harness.sim.adb.fs`). Because
command substitution and ``;`` are interpreted as a shell would, an unquoted hostile name *would* run
``touch PWNED`` here too (confined to the sandbox) — which is what lets the tests prove the driver quotes
everything. Quoted data stays data. Executing the pushed ``benchmark_model`` stand-in times the model for
real (:mod:`harness.sim.adb.bench`) and prints benchmark_model's exact output.
"""

from __future__ import annotations

import errno
import hashlib
import re
import stat as st
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from harness.sim.adb import output as bm_output
from harness.sim.adb.bench import MAGIC, BenchWorker, Cancelled
from harness.sim.adb.fs import FSError, Sandbox, normalise
from harness.sim.adb.phone import Identity, Thermal

SH = "/system/bin/sh"
ENV = {"HOME": "/", "PATH": "/product/bin:/apex/com.android.runtime/bin:/system/bin:/system/xbin:/vendor/bin",
       "TMPDIR": "/data/local/tmp", "USER": "shell", "SHELL": SH, "HOSTNAME": "localhost", "ANDROID_DATA": "/data"}
OPERATORS = (";", "&&", "||", "|", "&")


MAX_NESTING = 64  # $(...) inside $(...): deeper is refused with a shell error


class NestedTooDeep(Exception):
    """$(...) nested beyond MAX_NESTING."""


class ShellSyntaxError(Exception):
    pass


class ExitShell(Exception):
    def __init__(self, status: int):
        self.status = status


# --- tokens --------------------------------------------------------------------------------

@dataclass
class Part:
    kind: str  # lit | var | cmd
    text: str
    quoted: bool


@dataclass
class Word:
    parts: list[Part] = field(default_factory=list)

    def add(self, kind: str, text: str, quoted: bool) -> None:
        if kind == "lit" and self.parts and self.parts[-1].kind == "lit" and self.parts[-1].quoted == quoted:
            self.parts[-1].text += text
        else:
            self.parts.append(Part(kind, text, quoted))


@dataclass
class Op:
    text: str


@dataclass
class Redir:
    fd: int
    op: str  # > >> < >&
    target: Word | int


def _find_close(s: str, i: int) -> int:
    """Index of the ``)`` closing a ``$(`` whose body starts at ``i`` (quotes and nesting respected)."""
    depth, q = 1, None
    while i < len(s):
        c = s[i]
        if q:
            if c == "\\" and q == '"':
                i += 1
            elif c == q:
                q = None
        elif c in "'\"":
            q = c
        elif c == "\\":
            i += 1
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ShellSyntaxError("unterminated $(")


def tokenize(s: str) -> list[Word | Op | Redir]:
    out: list[Word | Op | Redir] = []
    word: Word | None = None
    i, n = 0, len(s)

    def end_word() -> None:
        nonlocal word
        if word is not None:
            out.append(word)
            word = None

    def w() -> Word:
        nonlocal word
        if word is None:
            word = Word()
        return word

    def dollar(i: int, quoted: bool) -> int:
        """Handle ``$`` at s[i]; returns the index after the expansion."""
        if i + 1 < n and s[i + 1] == "?":
            w().add("var", "?", quoted)
            return i + 2
        if s.startswith("$((", i):
            raise ShellSyntaxError("arithmetic expansion is not supported")
        if i + 1 < n and s[i + 1] == "(":
            j = _find_close(s, i + 2)
            w().add("cmd", s[i + 2:j], quoted)
            return j + 1
        if i + 1 < n and s[i + 1] == "{":
            j = s.find("}", i + 2)
            if j < 0:
                raise ShellSyntaxError("unterminated ${")
            w().add("var", s[i + 2:j], quoted)
            return j + 1
        m = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9#@*$!-]").match(s, i + 1)
        if m:
            w().add("var", m.group(0), quoted)
            return m.end()
        w().add("lit", "$", quoted)
        return i + 1

    while i < n:
        c = s[i]
        if c in " \t":
            end_word()
            i += 1
        elif c == "\n":
            end_word()
            out.append(Op(";"))
            i += 1
        elif c == "#" and word is None:
            j = s.find("\n", i)
            i = n if j < 0 else j
        elif c in ";&|":
            end_word()
            two = s[i:i + 2]
            if two in ("&&", "||"):
                out.append(Op(two))
                i += 2
            else:
                out.append(Op(c))
                i += 1
        elif c in "<>":
            fd = 1 if c == ">" else 0
            if word is not None and len(word.parts) == 1 and word.parts[0].kind == "lit" \
                    and not word.parts[0].quoted and word.parts[0].text in ("0", "1", "2"):
                fd = int(word.parts[0].text)
                word = None
            end_word()
            op = c
            i += 1
            if c == ">" and i < n and s[i] == ">":
                op, i = ">>", i + 1
            if i < n and s[i] == "&" and c == ">":
                m = re.compile(r"&([0-9])").match(s, i)
                if not m:
                    raise ShellSyntaxError("bad redirection")
                out.append(Redir(fd, ">&", int(m.group(1))))
                i = m.end()
                continue
            out.append(Redir(fd, op, Word()))  # target: the next word
        elif c == "'":
            j = s.find("'", i + 1)
            if j < 0:
                raise ShellSyntaxError("unterminated quoted string")
            w().add("lit", s[i + 1:j], True)
            i = j + 1
        elif c == '"':
            w().add("lit", "", True)
            i += 1
            while True:
                if i >= n:
                    raise ShellSyntaxError("unterminated quoted string")
                c = s[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\" and i + 1 < n and s[i + 1] in '$`"\\\n':
                    if s[i + 1] != "\n":
                        w().add("lit", s[i + 1], True)
                    i += 2
                elif c == "$":
                    i = dollar(i, True)
                elif c == "`":
                    j = s.find("`", i + 1)
                    if j < 0:
                        raise ShellSyntaxError("unterminated `")
                    w().add("cmd", s[i + 1:j], True)
                    i = j + 1
                else:
                    w().add("lit", c, True)
                    i += 1
        elif c == "\\":
            if i + 1 < n and s[i + 1] != "\n":
                w().add("lit", s[i + 1], True)
            i += 2
        elif c == "$":
            i = dollar(i, False)
        elif c == "`":
            j = s.find("`", i + 1)
            if j < 0:
                raise ShellSyntaxError("unterminated `")
            w().add("cmd", s[i + 1:j], False)
            i = j + 1
        else:
            w().add("lit", c, False)
            i += 1
    end_word()
    # attach redirection targets
    merged: list[Word | Op | Redir] = []
    k = 0
    while k < len(out):
        t = out[k]
        if isinstance(t, Redir) and isinstance(t.target, Word) and not t.target.parts:
            if k + 1 >= len(out) or not isinstance(out[k + 1], Word):
                raise ShellSyntaxError("redirection without a target")
            t.target = out[k + 1]  # type: ignore[assignment]
            k += 1
        merged.append(t)
        k += 1
    return merged


# --- execution -----------------------------------------------------------------------------

class IO:
    """Where a command's stdout (1) and stderr (2) go."""

    def __init__(self, out: Callable[[bytes], None], err: Callable[[bytes], None]):
        self.fds = {1: out, 2: err}

    def out(self, data: bytes | str) -> None:
        self.fds[1](data.encode() if isinstance(data, str) else data)

    def err(self, data: bytes | str) -> None:
        self.fds[2](data.encode() if isinstance(data, str) else data)


@dataclass
class Phone:
    """What a shell needs from the phone it runs on."""

    box: Sandbox
    identity: Identity
    props: dict[str, str]
    worker: BenchWorker
    thermal: Thermal
    busy: threading.Event
    log: list[list[str]] = field(default_factory=list)  # every argv executed, for tests
    running: set[threading.Event] = field(default_factory=set)  # cancel events of running benchmark_models


Command = Callable[["Shell", list[str], IO, bytes], int]
BUILTINS: dict[str, Command] = {}


def builtin(*names: str) -> Callable[[Command], Command]:
    def deco(fn: Command) -> Command:
        for name in names:
            BUILTINS[name] = fn
        return fn
    return deco


class Shell:
    """One ``sh -c`` invocation: its own working directory, variables and last status."""

    def __init__(self, phone: Phone, cancelled: threading.Event | None = None, depth: int = 0):
        self.phone = phone
        self.depth = depth  # nesting of $(...): bounded like a real shell's stack, never Python's
        self.box = phone.box
        self.cwd = "/"
        self.env = dict(ENV)
        self.status = 0
        self.cancelled = cancelled or threading.Event()
        self.flush: Callable[[], None] = lambda: None

    def run(self, script: str, out: Callable[[bytes], None]) -> int:
        """Run a command line, writing stdout+stderr to ``out`` (shell v1 merges them). Returns the status.

        Output is coalesced like adbd reading a pipe: sent when a command blocks (``flush``) or at the end.
        """
        buf = bytearray()

        def flush() -> None:
            if buf:
                data = bytes(buf)
                buf.clear()
                out(data)

        self.flush = flush
        io = IO(buf.extend, buf.extend)
        script = script.split("\0", 1)[0]  # adbd hands sh a C string: it ends at the first NUL
        try:
            tokens = tokenize(script)
        except ShellSyntaxError as e:
            io.err(f"{SH}: syntax error: {e}\n")
            flush()
            return 2
        except RecursionError:
            io.err(f"{SH}: syntax error: nested too deeply\n")
            flush()
            return 2
        try:
            self._run_list(tokens, io)
        except ExitShell as e:
            self.status = e.status
        except NestedTooDeep:
            if self.depth:
                raise
            buf.clear()
            io.err(f"{SH}: command substitutions nested more than {MAX_NESTING} deep\n")
            self.status = 2
        flush()
        return self.status

    def _run_list(self, tokens: list, io: IO) -> None:
        i, connector = 0, ";"
        while i < len(tokens):
            j = i
            while j < len(tokens) and not (isinstance(tokens[j], Op) and tokens[j].text in (";", "&&", "||", "&")):
                j += 1
            pipeline = tokens[i:j]
            if self.cancelled.is_set():
                raise Cancelled()
            run = connector == ";" or (connector == "&&" and self.status == 0) or \
                (connector == "||" and self.status != 0)
            if pipeline and run:
                self._run_pipeline(pipeline, io)
            if j < len(tokens):
                connector = tokens[j].text
                if connector == "&":
                    io.err(f"{SH}: background jobs are not supported by the virtual phone\n")
                    self.status = 2
                    connector = ";"
            i = j + 1

    def _run_pipeline(self, tokens: list, io: IO) -> None:
        stages: list[list] = [[]]
        for t in tokens:
            if isinstance(t, Op) and t.text == "|":
                stages.append([])
            else:
                stages[-1].append(t)
        stdin = b""
        for k, stage in enumerate(stages):
            if k < len(stages) - 1:
                buf = bytearray()
                self._run_simple(stage, IO(buf.extend, io.fds[2]), stdin)
                stdin = bytes(buf)
            else:
                self._run_simple(stage, io, stdin)

    # --- expansion -----------------------------------------------------------------------
    def substitute(self, script: str) -> str:
        if self.depth >= MAX_NESTING:
            raise NestedTooDeep()
        buf = bytearray()
        sub = Shell(self.phone, self.cancelled, self.depth + 1)
        sub.cwd, sub.env, sub.status = self.cwd, dict(self.env), self.status
        sub.run(script, buf.extend)
        self.status = sub.status
        return buf.decode(errors="replace").rstrip("\n")

    def expand(self, word: Word) -> list[str]:
        fields: list[str] = [""]
        globbing = False
        for p in word.parts:
            if p.kind == "lit":
                fields[-1] += p.text
                globbing |= not p.quoted and any(c in p.text for c in "*?[")
                continue
            value = self.env.get(p.text, "") if p.kind == "var" and p.text != "?" else (
                str(self.status) if p.kind == "var" else self.substitute(p.text))
            if p.quoted:
                fields[-1] += value
            else:
                pieces = value.split()
                if not pieces:
                    continue
                if value[:1].isspace() and fields[-1]:
                    fields.append("")
                fields[-1] += pieces[0]
                fields.extend(pieces[1:])
                if value[-1:].isspace():
                    fields.append("")
        fields = [f for f in fields if f != ""] or ([""] if all(p.quoted for p in word.parts) else [])
        if not globbing:
            return fields
        out: list[str] = []
        for f in fields:
            matches = self.box.glob(normalise(f, self.cwd)) if any(c in f for c in "*?[") else []
            if matches and not f.startswith("/"):
                base = normalise(".", self.cwd)
                matches = [m[len(base):].lstrip("/") if base != "/" else m.lstrip("/") for m in matches]
            out += matches or [f]
        return out

    def path(self, p: str) -> str:
        return normalise(p, self.cwd)

    # --- simple commands -----------------------------------------------------------------
    def _run_simple(self, tokens: list, io: IO, stdin: bytes) -> None:
        argv: list[str] = []
        redirs: list[Redir] = []
        for t in tokens:
            if isinstance(t, Redir):
                redirs.append(t)
            elif isinstance(t, Word):
                argv += self.expand(t)
        while argv and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", argv[0]):
            name, _, value = argv.pop(0).partition("=")
            self.env[name] = value
        files = []
        try:
            io, stdin = self._redirect(redirs, io, stdin, files)
        except FSError as e:
            io.err(f"{SH}: {e.path}: {e.strerror}\n")
            self.status = 1
            return
        try:
            if argv:
                self.phone.log.append(list(argv))
                self.status = self.execute(argv, io, stdin)
        finally:
            for f in files:
                f.close()

    def _redirect(self, redirs: list[Redir], io: IO, stdin: bytes, files: list) -> tuple[IO, bytes]:
        fds = dict(io.fds)
        for r in redirs:
            if r.op == ">&":
                fds[r.fd] = fds.get(r.target, fds[1])  # type: ignore[arg-type]
                continue
            target = self.expand(r.target)  # type: ignore[arg-type]
            if len(target) != 1:
                raise FSError(errno.EINVAL, " ".join(target) or "''")
            path = self.path(target[0])
            if r.op == "<":
                stdin = b"" if path == "/dev/null" else self.box.read(path)
            elif path == "/dev/null":
                fds[r.fd] = lambda data: None
            else:
                old = self.box.read(path) if r.op == ">>" and self.box.exists(path) else b""
                f = self.box.open_write(path)
                f.write(old)
                files.append(f)
                fds[r.fd] = f.write
        return IO(fds[1], fds[2]), stdin

    def execute(self, argv: list[str], io: IO, stdin: bytes) -> int:
        name = argv[0]
        if "/" in name:
            return self._exec_file(argv, io)
        fn = BUILTINS.get(name)
        if fn is None:
            io.err(f"{SH}: {name}: inaccessible or not found\n")
            return 127
        try:
            return fn(self, argv, io, stdin)
        except FSError as e:
            io.err(f"{name}: {e.path}: {e.strerror}\n")
            return 1
        except OSError as e:  # a host error no FSError names: its message, never the host path (it ended the shell)
            io.err(f"{name}: {e.strerror or 'I/O error'}\n")
            return 1

    def _exec_file(self, argv: list[str], io: IO) -> int:
        path = self.path(argv[0])
        try:
            mode, _, _ = self.box.stat(path)
            content = self.box.read(path) if st.S_ISREG(mode) else b""
        except FSError as e:
            if e.errno == errno.ENOENT:
                io.err(f"{SH}: {argv[0]}: inaccessible or not found\n")
                return 127
            io.err(f"{SH}: {argv[0]}: can't execute: {e.strerror}\n")
            return 126
        if not st.S_ISREG(mode) or not mode & 0o111:
            io.err(f"{SH}: {argv[0]}: can't execute: Permission denied\n")
            return 126
        if content.startswith(MAGIC):
            return benchmark_model(self, argv, io)
        io.err(f"{SH}: {argv[0]}: can't execute: Exec format error\n")
        return 126


# --- toybox-like builtins ------------------------------------------------------------------

def _flags(argv: list[str], allowed: str) -> tuple[set[str], list[str]]:
    flags, rest, i = set(), [], 1
    while i < len(argv):
        a = argv[i]
        if a == "--":
            rest += argv[i + 1:]
            break
        if a.startswith("-") and len(a) > 1 and all(c in allowed for c in a[1:]):
            flags |= set(a[1:])
        else:
            rest.append(a)
        i += 1
    return flags, rest


@builtin("true", ":")
def _true(sh: Shell, argv, io, stdin) -> int:
    return 0


@builtin("false")
def _false(sh: Shell, argv, io, stdin) -> int:
    return 1


@builtin("exit")
def _exit(sh: Shell, argv, io, stdin) -> int:
    raise ExitShell(int(argv[1]) if len(argv) > 1 and argv[1].isdigit() else sh.status)


@builtin("echo")
def _echo(sh: Shell, argv, io, stdin) -> int:
    args = argv[1:]
    newline = True
    if args and args[0] == "-n":
        newline, args = False, args[1:]
    io.out(" ".join(args) + ("\n" if newline else ""))
    return 0


@builtin("cd")
def _cd(sh: Shell, argv, io, stdin) -> int:
    target = sh.path(argv[1] if len(argv) > 1 else "/")
    if not sh.box.is_dir(target):
        io.err(f"{SH}: cd: {argv[1] if len(argv) > 1 else '/'}: No such file or directory\n")
        return 2
    sh.cwd = target
    return 0


@builtin("pwd")
def _pwd(sh: Shell, argv, io, stdin) -> int:
    io.out(sh.cwd + "\n")
    return 0


@builtin("cat")
def _cat(sh: Shell, argv, io, stdin) -> int:
    _, files = _flags(argv, "uv")
    if not files:
        io.out(stdin)
        return 0
    status = 0
    for f in files:
        try:
            io.out(sh.box.read(sh.path(f)))
        except FSError as e:
            io.err(f"cat: {f}: {e.strerror}\n")
            status = 1
    return status


@builtin("head", "tail")
def _head_tail(sh: Shell, argv, io, stdin) -> int:
    """``head``/``tail`` [-n N | -N] [FILE...]: the first or last N lines (10), as toybox's; ``tail -n +N``: from
    line N on."""
    n, from_line, files, args = 10, False, [], argv[1:]
    while args:
        a = args.pop(0)
        value = args.pop(0) if a == "-n" and args else a[2:] if a.startswith("-n") and len(a) > 2 else \
            a[1:] if a.startswith("-") and a[1:].isdigit() else None
        if value is not None:
            from_line = argv[0] == "tail" and value.startswith("+")
            if not value.lstrip("+").isdigit():
                io.err(f"{argv[0]}: bad -n '{value}'\n")
                return 1
            n = int(value.lstrip("+"))
        elif a.startswith("-") and a != "-":
            io.err(f"{argv[0]}: Unknown option '{a.lstrip('-')}'\n")
            return 1
        else:
            files.append(a)
    inputs, status = _read_inputs(sh, argv[0], files, io, stdin)
    for _, data in inputs:
        lines = data.splitlines(keepends=True)
        io.out(b"".join(lines[:n] if argv[0] == "head" else lines[max(n - 1, 0):] if from_line
                        else lines[max(len(lines) - n, 0):]))
    return status


def _read_inputs(sh: Shell, command: str, files: list[str], io, stdin) -> tuple[list[tuple[str, bytes]], int]:
    """(name, bytes) of each FILE, standard input for none or ``-``; one that cannot be read is reported as
    toybox does and makes the status 1."""
    out, status = [], 0
    for f in files or ["-"]:
        try:
            data = stdin if f == "-" else sh.box.read(sh.path(f))
        except FSError as e:
            io.err(f"{command}: {f}: {e.strerror}\n")
            status = 1
            continue
        out.append((f, data.encode() if isinstance(data, str) else data))
    return out, status


@builtin("ls")
def _ls(sh: Shell, argv, io, stdin) -> int:
    flags, paths = _flags(argv, "1aldhn")
    status = 0
    for p in paths or ["."]:
        full = sh.path(p)
        try:
            mode, size, mtime = sh.box.stat(full)
        except FSError as e:
            io.err(f"ls: {p}: {e.strerror}\n")
            status = 1
            continue
        names = [p] if not st.S_ISDIR(mode) or "d" in flags else \
            [n for n in sh.box.listdir(full) if "a" in flags or not n.startswith(".")]
        for name in names:
            if "l" in flags:
                m, s, t = sh.box.stat(full if name == p else f"{full.rstrip('/')}/{name}")
                io.out(f"{st.filemode(m)} 1 shell shell {s:>8} "
                       f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(t))} {name}\n")
            else:
                io.out(name + "\n")
    return status


@builtin("mkdir")
def _mkdir(sh: Shell, argv, io, stdin) -> int:
    flags, paths = _flags(argv, "p")
    status = 0
    for p in paths:
        try:
            sh.box.mkdir(sh.path(p), parents="p" in flags)
        except FSError as e:
            io.err(f"mkdir: '{p}': {e.strerror}\n")
            status = 1
    return status


@builtin("rm")
def _rm(sh: Shell, argv, io, stdin) -> int:
    flags, paths = _flags(argv, "frRv")
    status = 0
    for p in paths:
        try:
            sh.box.remove(sh.path(p), recursive=bool(flags & {"r", "R"}))
        except FSError as e:
            if not ("f" in flags and e.errno == errno.ENOENT):
                io.err(f"rm: {p}: {e.strerror}\n")
                status = 1
    return status


def _chmod_mode(spec: str, old: int) -> int:
    if re.fullmatch(r"[0-7]{1,4}", spec):
        return int(spec, 8)
    mode = old & 0o7777
    for clause in spec.split(","):
        m = re.fullmatch(r"([ugoa]*)([-+=])([rwx]*)", clause)
        if not m:
            raise ValueError(spec)
        who = m.group(1) or "a"
        bits = sum({"r": 4, "w": 2, "x": 1}[c] for c in m.group(3))
        mask = sum({"u": bits << 6, "g": bits << 3, "o": bits}[w] for w in ("ugo" if "a" in who else who))
        clear = sum({"u": 0o700, "g": 0o070, "o": 0o007}[w] for w in ("ugo" if "a" in who else who))
        mode = mode | mask if m.group(2) == "+" else mode & ~mask if m.group(2) == "-" else (mode & ~clear) | mask
    return mode


@builtin("chmod")
def _chmod(sh: Shell, argv, io, stdin) -> int:
    _, args = _flags(argv, "R")
    if len(args) < 2:
        io.err("chmod: Need 2 arguments\n")
        return 1
    status = 0
    for p in args[1:]:
        try:
            full = sh.path(p)
            sh.box.chmod(full, _chmod_mode(args[0], sh.box.stat(full)[0]))
        except ValueError:
            io.err(f"chmod: bad mode '{args[0]}'\n")
            return 1
        except FSError as e:
            io.err(f"chmod: {p}: {e.strerror}\n")
            status = 1
    return status


@builtin("touch")
def _touch(sh: Shell, argv, io, stdin) -> int:
    _, paths = _flags(argv, "ca")
    for p in paths:
        sh.box.touch(sh.path(p))
    return 0


@builtin("mv")
def _mv(sh: Shell, argv, io, stdin) -> int:
    _, args = _flags(argv, "fin")
    if len(args) != 2:
        io.err("mv: needs 2 arguments\n")
        return 1
    sh.box.rename(sh.path(args[0]), sh.path(args[1]))
    return 0


@builtin("sha256sum", "sha1sum", "md5sum")
def _hashsum(sh: Shell, argv, io, stdin) -> int:
    algo = {"sha256sum": "sha256", "sha1sum": "sha1", "md5sum": "md5"}[argv[0]]
    _, files = _flags(argv, "b")
    inputs, status = _read_inputs(sh, argv[0], files, io, stdin)
    for f, data in inputs:
        io.out(f"{hashlib.new(algo, data).hexdigest()}  {f}\n")
    return status


@builtin("stat")
def _stat(sh: Shell, argv, io, stdin) -> int:
    fmt, paths, i = None, [], 1
    while i < len(argv):
        if argv[i] == "-c" and i + 1 < len(argv):
            fmt, i = argv[i + 1], i + 2
            continue
        paths.append(argv[i])
        i += 1
    status = 0
    for p in paths:
        try:
            mode, size, mtime = sh.box.stat(sh.path(p))
        except FSError as e:
            io.err(f"stat: '{p}': {e.strerror}\n")
            status = 1
            continue
        if fmt is None:
            io.out(f"  File: {p}\n  Size: {size}\nAccess: ({mode & 0o7777:04o}/{st.filemode(mode)})\n")
            continue
        subs = {"s": str(size), "a": f"{mode & 0o7777:o}", "n": p, "Y": str(mtime), "f": f"{mode:x}",
                "F": "directory" if st.S_ISDIR(mode) else "regular file", "%": "%"}
        io.out(re.sub(r"%(.)", lambda m: subs.get(m.group(1), m.group(0)), fmt) + "\n")
    return status


@builtin("df")
def _df(sh: Shell, argv, io, stdin) -> int:
    total, used, free = sh.box.usage()
    k = lambda b: (b + 1023) // 1024  # noqa: E731
    pct = (100 * used + total - 1) // total if total else 0
    io.out("Filesystem      1K-blocks    Used Available Use% Mounted on\n"
           f"/dev/block/dm-7 {k(total):>9} {k(used):>7} {k(free):>9} {pct:>3}% /data\n")
    return 0


@builtin("getprop")
def _getprop(sh: Shell, argv, io, stdin) -> int:
    props = sh.phone.props
    if len(argv) == 1:
        io.out("".join(f"[{k}]: [{v}]\n" for k, v in sorted(props.items())))
    else:
        io.out(props.get(argv[1], argv[2] if len(argv) > 2 else "") + "\n")
    return 0


@builtin("grep")
def _grep(sh: Shell, argv, io, stdin) -> int:
    flags, args = _flags(argv, "sHhqvicEFnl")
    if not args:
        io.err("grep: Need 1 argument\n")
        return 2
    pattern, files = args[0], args[1:]
    try:
        rx = re.compile(re.escape(pattern) if "F" in flags else pattern, re.I if "i" in flags else 0)
    except re.error:
        io.err(f"grep: bad regex '{pattern}'\n")
        return 2
    show_name = "H" in flags or (len(files) > 1 and "h" not in flags)
    found, errors = False, False
    for f in files or ["-"]:
        try:
            data = stdin if f == "-" else sh.box.read(sh.path(f))
        except FSError as e:
            errors = True
            if "s" not in flags:
                io.err(f"grep: {f}: {e.strerror}\n")
            continue
        count = 0
        for line in data.decode(errors="replace").splitlines():
            if bool(rx.search(line)) != ("v" in flags):
                count += 1
                found = True
                if not flags & {"q", "c", "l"}:
                    io.out((f"{f}:" if show_name else "") + line + "\n")
        if "c" in flags:
            io.out((f"{f}:" if show_name else "") + f"{count}\n")
        if "l" in flags and count:
            io.out(f"{f}\n")
    return 0 if found else (2 if errors else 1)


@builtin("uname")
def _uname(sh: Shell, argv, io, stdin) -> int:
    flags, _ = _flags(argv, "asrmno")
    ident = sh.phone.identity
    parts = {"s": "Linux", "n": "localhost", "r": ident.kernel, "m": "aarch64"}
    keys = "snrm" if "a" in flags else [c for c in "snrm" if c in flags] or ["s"]
    io.out(" ".join(parts[c] for c in keys) + "\n")
    return 0


@builtin("id")
def _id(sh: Shell, argv, io, stdin) -> int:
    io.out("uid=2000(shell) gid=2000(shell) groups=2000(shell),1007(log),1011(adb),1015(sdcard_rw),3003(inet)"
           " context=u:r:shell:s0\n")
    return 0


@builtin("whoami")
def _whoami(sh: Shell, argv, io, stdin) -> int:
    io.out("shell\n")
    return 0


@builtin("nproc")
def _nproc(sh: Shell, argv, io, stdin) -> int:
    io.out(f"{sh.phone.identity.cpu_count}\n")
    return 0


@builtin("sleep")
def _sleep(sh: Shell, argv, io, stdin) -> int:
    try:
        seconds = float(argv[1])
    except (IndexError, ValueError):
        io.err("sleep: bad argument\n")
        return 1
    sh.flush()
    if sh.cancelled.wait(min(seconds, 3600)):
        raise Cancelled()
    return 0


@builtin("test", "[")
def _test(sh: Shell, argv, io, stdin) -> int:
    args = argv[1:-1] if argv[0] == "[" and argv[-1:] == ["]"] else argv[1:]
    negate = bool(args) and args[0] == "!"
    args = args[1:] if negate else args
    result = False
    if len(args) == 2 and args[0] in ("-e", "-f", "-d", "-x", "-s", "-r", "-w"):
        try:
            mode, size, _ = sh.box.stat(sh.path(args[1]))
            result = {"-e": True, "-r": True, "-w": True, "-f": st.S_ISREG(mode), "-d": st.S_ISDIR(mode),
                      "-x": bool(mode & 0o111), "-s": size > 0}[args[0]]
        except FSError:
            result = False
    elif len(args) == 2 and args[0] in ("-n", "-z"):
        result = (args[1] != "") == (args[0] == "-n")
    elif len(args) == 3 and args[1] in ("=", "!="):
        result = (args[0] == args[2]) == (args[1] == "=")
    elif len(args) == 1:
        result = args[0] != ""
    return 0 if result != negate else 1


@builtin("taskset")
def _taskset(sh: Shell, argv, io, stdin) -> int:
    if len(argv) < 3 or argv[1].startswith("-"):
        io.err("taskset: usage: taskset MASK COMMAND [ARGS...]\n")
        return 1
    try:
        mask = int(argv[1], 16)
    except ValueError:
        io.err(f"taskset: bad mask '{argv[1]}'\n")
        return 1
    if not mask or mask >> sh.phone.identity.cpu_count:
        io.err("taskset: sched_setaffinity: Invalid argument\n")
        return 1
    return sh.execute(argv[2:], io, stdin)


@builtin("kill")
def _kill(sh: Shell, argv, io, stdin) -> int:
    return 0


@builtin("pkill")
def _pkill(sh: Shell, argv, io, stdin) -> int:
    """Only benchmark_model runs are processes here: ``pkill [-x] benchmark_model`` cancels them."""
    _, names = _flags(argv, "xf")
    if names != ["benchmark_model"] or not sh.phone.running:
        return 1
    for cancel in list(sh.phone.running):
        cancel.set()
    return 0


@builtin("export")
def _export(sh: Shell, argv, io, stdin) -> int:
    for a in argv[1:]:
        name, sep, value = a.partition("=")
        if sep:
            sh.env[name] = value
    return 0


# --- benchmark_model -------------------------------------------------------------------------

INT_FLAGS = {"num_runs", "warmup_runs", "num_threads", "max_profiling_buffer_entries",
             "memory_footprint_check_interval_ms", "gpu_invoke_loop_times"}
FLOAT_FLAGS = {"min_secs", "max_secs", "warmup_min_secs", "run_delay", "run_frequency"}
BOOL_FLAGS = {"use_xnnpack", "use_gpu", "use_nnapi", "use_hexagon", "enable_op_profiling", "verbose", "dry_run",
              "allow_fp16", "report_peak_memory_footprint", "use_caching", "require_full_delegation"}
STR_FLAGS = {"graph", "input_layer", "input_layer_shape", "benchmark_name", "output_prefix", "signature_to_run_for"}


def benchmark_model(sh: Shell, argv: list[str], io: IO) -> int:
    """TFLite's benchmark_model, timed for real by the worker; output as benchmark_main prints it."""
    info = lambda s: io.out(f"INFO: {s}\n")  # noqa: E731
    error = lambda s: io.err(f"ERROR: {s}\n")  # noqa: E731
    info("STARTING!")
    flags, unconsumed = {}, []
    for a in argv[1:]:
        m = re.fullmatch(r"--([A-Za-z0-9_]+)=(.*)", a, re.S)
        if not m or m.group(1) not in INT_FLAGS | FLOAT_FLAGS | BOOL_FLAGS | STR_FLAGS:
            unconsumed.append(a)
            continue
        key, value = m.groups()
        try:
            if key in INT_FLAGS:
                int(value)
            elif key in FLOAT_FLAGS:
                float(value)
            elif key in BOOL_FLAGS and value not in ("true", "false", "1", "0"):
                raise ValueError(value)
        except ValueError:
            error(f"Couldn't parse the value of --{key}: '{value}'")
            error("Benchmarking failed.")
            return 1
        flags[key] = value
    if unconsumed:
        io.out(f"WARN: Unconsumed cmdline flags: {' '.join(unconsumed)}\n")
    graph = flags.get("graph", "")
    for line in bm_output.format_params(flags, graph):
        info(line)
    if not graph:
        error("Please specify the name of your TF Lite input file with --graph")
        error("Benchmarking failed.")
        return 1
    on = lambda k: flags.get(k) in ("true", "1")  # noqa: E731
    for key, name in (("use_gpu", "GPU"), ("use_nnapi", "NNAPI"), ("use_hexagon", "Hexagon")):
        if on(key):
            info(f"Loaded model {graph}")
            error(f"Failed to apply {name} delegate (the virtual phone has only a CPU).")
            error("Benchmarking failed.")
            return 1
    try:
        device_path = sh.path(graph)
        if sh.box.is_virtual(device_path) or not st.S_ISREG(sh.box.stat(device_path)[0]):
            raise FSError(errno.ENOENT, device_path)
        host = str(sh.box.host(device_path))
    except FSError:
        error(f"Could not open '{graph}'.")
        error(f"Failed to mmap model {graph}")
        error("Benchmarking failed.")
        return 1
    xnnpack = flags.get("use_xnnpack", "true") in ("true", "1")
    req = bm_output.bench_request(flags, host)
    sh.flush()  # the parameters reach the host while the model runs, as from the real binary
    sh.phone.busy.set()
    sh.phone.thermal.busy(True)
    sh.phone.running.add(sh.cancelled)
    try:
        resp = sh.phone.worker.run(req, sh.cancelled)
    finally:
        sh.phone.running.discard(sh.cancelled)
        sh.phone.busy.clear()
        sh.phone.thermal.busy(False)
    if not resp.get("ok"):
        if resp.get("crashed"):
            io.err(f"{SH}: {argv[0]}: Segmentation fault\n")
            return 139
        error(resp.get("error", "unknown error"))
        error(f"Failed to mmap model {graph}")
        error("Benchmarking failed.")
        return 1
    for line in bm_output.answer_lines(req, resp, graph=graph, xnnpack=xnnpack):
        info(line)
    return 0
