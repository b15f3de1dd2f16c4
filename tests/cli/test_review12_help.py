"""Review of issue 12 ("defaults and environment variable names shown in --help"): every
option of `flux server` names its environment variable and its default, and what the help
says is what the server does (the variable is one `ServerConfig.from_env` reads, the
default is the dataclass's)."""

from __future__ import annotations

import dataclasses
import inspect
import re

from flux.cli.server import server
from flux.server.config import ENV_VARS, ServerConfig

#: options whose default is shown in words, not as the value
SHOWN = {"open_mode": {False: "--hosted"}, "legacy_tokens": {False: "no"},
         "access_log": {False: "no"}}  # fmt: skip
NO_DEFAULT = {"tls_cert", "tls_key", "config", "db"}  # no value by default (db: derived)


def test_every_server_option_names_its_variable_and_default():
    defaults = {f.name: f.default for f in dataclasses.fields(ServerConfig)}
    for name, parameter in inspect.signature(server).parameters.items():
        text = parameter.default.help
        if name == "config":
            continue
        variables = re.findall(r"\$(FLUX_[A-Z_]+)", text)
        assert variables, f"--{name}: no environment variable in {text!r}"
        for variable in variables:
            assert variable in ENV_VARS, (name, variable)
        if name in NO_DEFAULT:
            continue
        said = re.search(r"default ([^\]]+)\]", text)
        assert said, f"--{name}: no default in {text!r}"
        value = defaults[name]
        expected = SHOWN.get(name, {}).get(value, str(getattr(value, "value", value)))
        assert said.group(1).removeprefix("./") == expected, (name, said.group(1), expected)
