"""The FLUX server: one aiohttp application per server, its state passed in.

config = ServerConfig.from_env(os.environ, port=0)
server = await start_server(config)     # RunningServer: .url, .port, .app, .stop()
run_server(config)                      # blocking, uvloop, graceful on SIGTERM/SIGINT
"""

from .app import create_app
from .config import Backend, Registration, ServerConfig
from .keys import ServerKey, load_or_create
from .runner import RunningServer, run_server, start_server

__all__ = [
    "Backend", "Registration", "RunningServer", "ServerConfig", "ServerKey", "create_app",
    "load_or_create", "run_server", "start_server",
]  # fmt: skip
