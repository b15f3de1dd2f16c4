"""The FLUX server: one aiohttp application per server, its state passed in.

config = ServerConfig.from_env(os.environ, port=0)
server = await start_server(config)     # RunningServer: .url, .port, .app, .stop()
run_server(config)                      # blocking, uvloop, graceful on SIGTERM/SIGINT

`make_app` and `run_server` also take the prototype's arguments (`from flux.server import
make_app, run_server`, as its main.py does): see flux.compat.library.
"""

# The prototype's names (its main.py imports them from here), a translation onto FLUX's
# server; run_server(config) is FLUX's own call.
from .._lazy import lazy_attributes

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


__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = [
    "Backend", "Registration", "RunningServer", "ServerConfig", "ServerKey", "create_app",
    "load_or_create", "make_app", "run_server", "start_server",
]  # fmt: skip
