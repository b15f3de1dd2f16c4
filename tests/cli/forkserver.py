"""A `python -m flux` whose imports are already done: each command a fork of this process.

Run by cli_helpers.py, once per test process: `python forkserver.py SOCKET`. Every `flux`
command in the CLI tests used to be a new interpreter that spent most of its time (~0.6 s
of ~0.7 s on a 2-core machine) importing typer, rich, aiohttp, cryptography and FLUX
before doing anything. This process pays that once; a command is then a fork of it, so it
is still a process of its own (its own environment, working directory, stdin, stdout and
stderr file descriptors, signals and exit status, nothing shared with the test or with
another command) and runs `python -m flux`'s own code (`runpy`, as `-m` does) from there.

What a fork does not repeat is the interpreter's start-up and those imports, with one
exception: `flux.cli` is imported again in each command, after its environment is set,
because its module-level consoles read COLUMNS, TERM and NO_COLOR when they are built (the
rest of `flux` reads no environment at import). The start-up itself (what a command
imports, Ctrl-C at a terminal, `dev.py run`) is tested with real interpreters, in
test_startup.py, test_ctrl_c.py and the pty tests.

The exchange, on a SOCK_SEQPACKET Unix socket, one connection per command: the test sends
one JSON message {"argv", "env", "cwd"} with three file descriptors (stdin, stdout,
stderr); it receives {"pid"} when the command has started, then {"status"} when it has
ended (os.waitstatus_to_exitcode: negative for a signal, like subprocess's returncode).
Each connection is served by a forked handler that forks the command and waits for it, so
commands run side by side. This process ends when its stdin (a pipe from the test
process) closes.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pkgutil
import runpy
import selectors
import signal
import socket
import sys


def preload() -> None:
    """Import all of `flux` (and so everything it imports), then forget `flux.cli`."""
    import flux

    for module in pkgutil.walk_packages(flux.__path__, "flux."):
        if module.name == "flux.__main__":  # `-m flux` runs it, in each command
            continue
        # an optional extra not installed: a command would not load it either
        with contextlib.suppress(ImportError):
            importlib.import_module(module.name)
    for name in [m for m in sys.modules if m == "flux.cli" or m.startswith("flux.cli.")]:
        del sys.modules[name]
    del flux.cli


def run_command(request: dict, fds: list[int]) -> None:
    """In the command's process: become `python -m flux ARGV`. Never returns: the command's
    SystemExit (or uncaught exception, or Ctrl-C) ends this interpreter as it would end
    one started for the command."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    sys.argv = ["flux", *request["argv"]]
    sys.path[0] = request["cwd"]  # as `python -m` has it (here it is this file's directory)
    runpy.run_module("flux", run_name="__main__", alter_sys=True)
    sys.exit(0)


def send(conn: socket.socket, **message: int) -> None:
    conn.send(json.dumps(message).encode())


def serve_one(conn: socket.socket) -> None:
    """In a handler process: start the command it asks for, report its pid and status."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # waitpid needs its children kept
    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
    request = json.loads(data)
    pid = os.fork()
    if pid == 0:
        conn.close()
        run_command(request, fds)
    for fd in fds:
        os.close(fd)
    send(conn, pid=pid)
    _, status = os.waitpid(pid, 0)
    send(conn, status=os.waitstatus_to_exitcode(status))


def main(path: str) -> None:
    preload()
    # Ctrl-C typed at the terminal running pytest is for pytest, not for this server; the
    # handlers are reaped as they end
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(0, selectors.EVENT_READ)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    # No try/finally or `with` below: a forked command's SystemExit unwinds this stack, and
    # must run none of this process's clean-up
    while True:
        for key, _ in selector.select():
            if key.fileobj == 0:
                if not os.read(0, 4096):  # the test process is gone
                    os._exit(0)
                continue
            conn, _ = listener.accept()
            if os.fork() == 0:
                selector.close()
                listener.close()
                serve_one(conn)
                os._exit(0)
            conn.close()


if __name__ == "__main__":
    main(sys.argv[1])
