"""Review of issue 12: `flux folders` lists the folders a person can name in `flux inbox
--inbox` and `flux move` (the issue's "folders"; before, only the wide inbox table showed
them), with a key or a password account, as a table and as --json. Real server."""

from __future__ import annotations

import json
import re

from cli_helpers import flux, make_key, user_env


def test_folders_with_a_key_and_with_an_account(tmp_path, live_server):
    env = user_env(tmp_path, live_server, FLUX_PASSWORD="correct horse battery")
    assert flux("account", "register", "fern", **env).returncode == 0
    empty = flux("folders", **env)
    assert empty.returncode == 0 and "no mail yet" in empty.stdout, empty.stdout
    key = tmp_path / "k.json"
    make_key(key)
    assert flux("register", "--key", str(key), **env).returncode == 0
    fern = json.loads(flux("account", "whoami", "--json", **env).stdout)["address"]
    ids = []
    for n in range(3):
        sent = flux("send", fern, f"m{n}", **env, FLUX_KEY=str(key))
        assert sent.returncode == 0, sent.stderr
        ids.append(re.search(r"sent ([0-9a-f]{32})", sent.stdout).group(1))
    assert flux("move", ids[0][:8], "work", **env).returncode == 0
    assert flux("mark", ids[1][:8], **env).returncode == 0
    assert flux("delete", ids[2][:8], **env).returncode == 0

    counts = json.loads(flux("folders", "--json", **env).stdout)
    assert set(counts) == {"inbox", "work"}
    assert counts["inbox"].get("read") == 1 and counts["work"].get("read", 0) == 0
    table = flux("folders", **env)
    rows = {line.split()[0]: line.split()[1:] for line in table.stdout.splitlines()
            if line.strip().startswith(("inbox", "work"))}  # fmt: skip
    assert rows == {"inbox": ["0", "1"], "work": ["1", "0"]}, table.stdout

    mine = flux("folders", "--json", "--key", str(key), **env)
    assert mine.returncode == 0 and json.loads(mine.stdout) == {}
