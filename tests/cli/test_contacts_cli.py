"""`flux contacts`: names remembered on first use, keys of verified mail, and the warning
when a domain later hands out another key for a name (trust on first use, as ssh's
known_hosts). The change is real: the domain's server is replaced by one where another key
claimed the name. Also shell completion for bash."""

from __future__ import annotations

import json
import re

from cli_helpers import Running, flux, free_port, make_key


def _server(tmp_path, port, data):
    server = Running(
        "server", "--host", "127.0.0.1", "--port", str(port), "--backend", "sqlite",
        "--data-dir", str(tmp_path / data), "--hosted", "--domain", f"127.0.0.1:{port}",
        forked=True,
    )  # fmt: skip
    server.wait_for(r"FLUX server for \S+ at http://127")
    return server


def _stop(server):
    assert server.interrupt() == 0, server.output


def test_a_changed_key_for_a_name_is_refused_and_warned_about(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cfg = {"XDG_CONFIG_HOME": str(tmp_path / "bob-cfg"), "FLUX_SERVER": url}
    keys = {who: tmp_path / f"{who}.json" for who in ("alice", "mallory", "bob")}
    alice, mallory, bob = (make_key(k) for k in keys.values())
    # each person has their own config (sessions, contacts); bob's is `cfg`
    own = {who: {**cfg, "XDG_CONFIG_HOME": str(tmp_path / f"{who}-cfg")} for who in keys}
    name = f"alice@127.0.0.1:{port}"

    first = _server(tmp_path, port, "one")
    try:
        for who in ("alice", "bob"):
            assert flux("register", FLUX_KEY=str(keys[who]), **own[who]).returncode == 0
        assert flux("claim", "alice", FLUX_KEY=str(keys["alice"]), **own["alice"]).returncode == 0
        sent = flux("send", name, "hello", FLUX_KEY=str(keys["bob"]), **cfg)
        assert sent.returncode == 0, sent.stderr
    finally:
        _stop(first)
    listed = flux("contacts", **cfg)
    assert listed.returncode == 0 and name in listed.stdout and alice in listed.stdout
    assert "warning" not in listed.stderr

    second = _server(tmp_path, port, "two")  # the domain now answers for another key
    try:
        for who in ("mallory", "bob"):
            assert flux("register", FLUX_KEY=str(keys[who]), **own[who]).returncode == 0
        claimed = flux("claim", "alice", FLUX_KEY=str(keys["mallory"]), **own["mallory"])
        assert claimed.returncode == 0
        refused = flux("send", name, "hello again", FLUX_KEY=str(keys["bob"]), **cfg)
        assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
        assert "flux contacts" in refused.stderr
    finally:
        _stop(second)

    shown = flux("contacts", **cfg)
    assert shown.returncode == 0 and alice in shown.stdout
    assert "warning" in shown.stderr and mallory in shown.stderr and name in shown.stderr
    data = json.loads(flux("contacts", "--json", **cfg).stdout)
    assert data["names"][name]["address"] == alice
    assert [c["address"] for c in data["names"][name]["changed"]] == [mallory]

    accepted = flux("contacts", "--accept", name, **cfg)
    assert accepted.returncode == 0 and mallory in accepted.stdout
    assert json.loads(flux("contacts", "--json", **cfg).stdout)["names"][name]["address"] == mallory
    assert "warning" not in flux("contacts", **cfg).stderr
    again = flux("contacts", "--accept", name, **cfg)
    assert again.returncode != 0 and "no changed key" in again.stderr
    assert bob not in json.dumps(data)  # bob's own key is not a contact


def test_keys_of_read_mail_are_listed(tmp_path, live_server):
    cfg = {"XDG_CONFIG_HOME": str(tmp_path / "cfg"), "FLUX_SERVER": live_server}
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    alice, bob = make_key(a), make_key(b)
    assert "no contacts yet" in flux("contacts", **cfg).stdout
    assert json.loads(flux("contacts", "--json", **cfg).stdout) == {"names": {}, "keys": {}}
    for key in (a, b):
        assert flux("register", FLUX_KEY=str(key), **cfg).returncode == 0
    sent = flux("send", bob, "hi", FLUX_KEY=str(a), **cfg)
    message_id = re.search(r"sent ([0-9a-f]{32})", sent.stdout).group(1)
    assert flux("read", message_id, FLUX_KEY=str(b), **cfg).returncode == 0
    data = json.loads(flux("contacts", "--json", **cfg).stdout)
    assert list(data["keys"]) == [alice] and data["keys"][alice]["pub"]
    assert alice in flux("contacts", **cfg).stdout


def test_bash_completion():
    script = flux("--show-completion", "bash")
    assert script.returncode == 0
    assert "complete -o default -F _flux_completion flux" in script.stdout
    assert "_FLUX_COMPLETE=complete_bash" in script.stdout
    words = flux(_FLUX_COMPLETE="complete_bash", COMP_WORDS="flux inb", COMP_CWORD="1")
    assert words.stdout.split() == ["inbox"]
    options = flux(_FLUX_COMPLETE="complete_bash", COMP_WORDS="flux export --ou", COMP_CWORD="2")
    assert options.stdout.split() == ["--output"]
