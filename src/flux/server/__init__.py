"""The FLUX server: one aiohttp application per server, its state passed in.

config = ServerConfig.from_env(os.environ, port=0)
server = await start_server(config)     # RunningServer: .url, .port, .app, .stop()
run_server(config)                      # blocking, uvloop, graceful on SIGTERM/SIGINT

`make_app` and `run_server` also take the prototype's arguments (`from flux.server import
make_app, run_server`, as its main.py does): see flux.compat.library.
"""

# The prototype's names (its main.py imports them from here), a translation onto FLUX's
# server; run_server(config) is FLUX's own call.
from typing import Any

_LAZY = {
    "make_app": "..compat.library",
    "run_server": "..compat.library",
    "create_app": ".app",
    "Backend": ".config",
    "Registration": ".config",
    "ServerConfig": ".config",
    "ServerKey": ".keys",
    "load_or_create": ".keys",
    "RunningServer": ".runner",
    "start_server": ".runner",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'flux.server' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module, __name__), name)


__all__ = [
    "Backend", "Registration", "RunningServer", "ServerConfig", "ServerKey", "create_app",
    "load_or_create", "make_app", "run_server", "start_server",
]  # fmt: skip
