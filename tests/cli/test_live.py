"""CLI commands against a real `flux server` process, and the demo."""

from __future__ import annotations

import json
import re

from cli_helpers import Running, flux, make_key


def _inbox(key, server, *extra):
    result = flux("inbox", "--json", *extra, FLUX_KEY=str(key), FLUX_SERVER=server)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_register_send_inbox_read(tmp_path, live_server):
    alice_key, bob_key = tmp_path / "alice.json", tmp_path / "bob.json"
    alice, bob = make_key(alice_key), make_key(bob_key)
    for key in (alice_key, bob_key):
        result = flux("register", "--key", str(key), "--server", live_server)
        assert result.returncode == 0, result.stderr
        assert "registered" in result.stdout

    sent = flux("send", bob, "Hello from the CLI", "--subject", "CLI test", "--tag", "demo",
                "--key", str(alice_key), "--server", live_server)  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    message_id = re.search(r"sent ([0-9a-f]{32})", sent.stdout).group(1)
    assert f"{bob}: stored" in sent.stdout

    secret = flux("send", bob, "-", "--subject", "Secret", "--encrypt",
                  "--key", str(alice_key), "--server", live_server,
                  stdin="for bob only")  # fmt: skip
    assert secret.returncode == 0, secret.stderr
    secret_id = re.search(r"sent ([0-9a-f]{32}) \(encrypted\)", secret.stdout).group(1)

    table = flux("inbox", FLUX_KEY=str(bob_key), FLUX_SERVER=live_server)
    assert table.returncode == 0, table.stderr
    for column in ("id", "from", "subject", "status", "time"):
        assert column in table.stdout
    assert "CLI test" in table.stdout and message_id in table.stdout
    assert "🔒 Secret" in table.stdout

    shown = flux("read", message_id, FLUX_KEY=str(bob_key), FLUX_SERVER=live_server)
    assert shown.returncode == 0, shown.stderr
    assert "Hello from the CLI" in shown.stdout
    assert "✓ signature verifies" in shown.stdout and "✓ integrity chain" in shown.stdout
    assert alice in shown.stdout

    decrypted = flux("read", secret_id, FLUX_KEY=str(bob_key), FLUX_SERVER=live_server)
    assert decrypted.returncode == 0, decrypted.stderr
    assert "for bob only" in decrypted.stdout and "encrypted" in decrypted.stdout

    statuses = {m["id"]: m["_status"] for m in _inbox(bob_key, live_server)}
    assert statuses == {message_id: "read", secret_id: "read"}
    assert _inbox(alice_key, live_server) == []


def test_reading_someone_elses_message_fails_in_one_line(tmp_path, live_server):
    key = tmp_path / "k.json"
    make_key(key)
    flux("register", FLUX_KEY=str(key), FLUX_SERVER=live_server)
    result = flux("read", "0" * 32, FLUX_KEY=str(key), FLUX_SERVER=live_server)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "404" in result.stderr and "Traceback" not in result.stderr


def test_watch_prints_mail_as_it_arrives_and_stops_on_ctrl_c(tmp_path, live_server):
    alice_key, bob_key = tmp_path / "alice.json", tmp_path / "bob.json"
    make_key(alice_key)
    bob = make_key(bob_key)
    for key in (alice_key, bob_key):
        assert flux("register", FLUX_KEY=str(key), FLUX_SERVER=live_server).returncode == 0
    watcher = Running("watch", FLUX_KEY=str(bob_key), FLUX_SERVER=live_server)
    try:
        watcher.wait_for(r"^watching fx1")
        sent = flux("send", bob, "ping over websocket", "--subject", "live",
                    FLUX_KEY=str(alice_key), FLUX_SERVER=live_server)  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        line = watcher.wait_for("ping over websocket").string
        assert line.startswith("✓") and "live" in line
        assert watcher.interrupt() == 0
        assert "stopped" in watcher.output and "Traceback" not in watcher.output
    finally:
        watcher.kill()


def test_demo_once():
    result = flux("demo", "--once")
    assert result.returncode == 0, result.stderr + result.stdout
    out = result.stdout
    for step in ("server running at http://127.0.0.1:", "fetched it over HTTP",
                 "connected by WebSocket", "got it pushed", "decrypted it",
                 "bob replied", "alice fetched, verified and decrypted", "exchange complete",
                 "north answered 'queued'", "carol got it by push", "2 sealed hops",
                 "carol decrypted it: 'Lunch on Friday?", "south refused it (bad_signature)",
                 "now even west's honest relaying is refused: quarantined",
                 "north counts 3 strikes against west, and against nobody else"):  # fmt: skip
        assert step in " ".join(out.split()), out
    assert out.count("✓") >= 12
    assert "Traceback" not in result.stderr
    assert "event=" not in out + result.stderr  # the narration is not interleaved with logs


def test_demo_keeps_running_until_ctrl_c():
    demo = Running("demo")
    try:
        demo.wait_for("the demo server keeps running")
        url = demo.wait_for(r"server:\s+(http://127\.0\.0\.1:\d+)").group(1)
        bob_key = demo.wait_for(r"bob:\s+(\S+\.json)").group(1)
        inbox = flux("inbox", "--json", FLUX_KEY=bob_key, FLUX_SERVER=url)
        assert inbox.returncode == 0, inbox.stderr
        assert len(json.loads(inbox.stdout)) == 2
        assert demo.interrupt() == 0
        assert "Traceback" not in demo.output
    finally:
        demo.kill()
