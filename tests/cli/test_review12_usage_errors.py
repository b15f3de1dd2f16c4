"""Review of issue 12 ("errors are one line with the fix"): a command line the parser
refuses (unknown option or command, missing argument, bad value) was drawn as a box of
five lines or more; it is now one line naming what is wrong and the command's --help, exit
2 as before. `flux` alone still shows the help; --help and --version still exit 0."""

from __future__ import annotations

import pytest
from cli_helpers import flux


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (
            ("admin", "queue", "hold", "--to", "x"),
            ("No such option: --to", "flux admin queue hold --help"),
        ),
        (("read",), ("Missing argument 'ID'", "flux read --help")),
        (("inbox", "--limit", "0"), ("--limit", "flux inbox --help")),
        (("nosuch",), ("No such command 'nosuch'", "flux --help")),
        (("inbox", "--server", "ftp://x"), ("http:// or https://", "flux inbox --help")),
        (("send", "fx1abc"), ("Missing argument", "flux send --help")),
    ],
)
def test_a_refused_command_line_is_one_line(args, words):
    result = flux(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "╭" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_help_version_and_no_arguments():
    assert flux("--version").returncode == 0
    helped = flux("inbox", "--help")
    assert helped.returncode == 0 and "--limit" in helped.stdout
    bare = flux()
    assert bare.returncode == 2 and "Commands" in bare.stdout and "error" not in bare.stderr


def test_end_of_input_at_a_prompt_is_aborted_in_one_line():
    result = flux("account", "login", "bob", "--server", "127.0.0.1:9", stdin="")
    assert result.returncode == 130 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "aborted"
