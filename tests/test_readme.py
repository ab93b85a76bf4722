"""The README's commands exist as written: every `make` target, every `hf-ingest` subcommand and option,
every `prefect` command it shows. (The stack block itself is run by hand on a fresh clone; the suite
runs the same steps through `deployments/stack.py` in test_trigger_e2e.py.)"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[1]
README = (CHECKOUT / "README.md").read_text()
BIN = Path(sys.executable).parent


def _commands() -> list[str]:
    """Shell lines of the README's sh code blocks and of its inline code, continuation lines joined."""
    lines: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", README, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    lines += re.findall(r"`((?:\.venv/bin/)?(?:hf-ingest|prefect|make) [^`]+)`", README)
    return lines


def _words(command: str) -> list[str]:
    words = shlex.split(command.replace("<", "").replace(">", ""))
    while words and "=" in words[0] and not words[0].startswith("-"):  # VAR=value prefixes
        words.pop(0)
    return words


def test_every_make_target_the_readme_names_exists() -> None:
    targets = set(re.findall(r"^([a-z][a-z-]*):", (CHECKOUT / "Makefile").read_text(), flags=re.M))
    named = {_words(c)[1] for c in _commands() if _words(c)[:1] == ["make"] and len(_words(c)) > 1}
    assert {"demo", "test", "up", "down"} <= named
    assert named <= targets, named - targets


def test_every_hf_ingest_command_and_option_the_readme_shows_is_accepted() -> None:
    shown = [_words(c) for c in _commands() if c.startswith((".venv/bin/hf-ingest ", "hf-ingest "))]
    assert any(w[1] == "run" for w in shown) and any(w[1] == "setup-prefect" for w in shown)
    for words in shown:
        subcommand = words[1]
        helped = subprocess.run([str(BIN / "hf-ingest"), subcommand, "--help"], capture_output=True, text=True)
        assert helped.returncode == 0, (words, helped.stderr)
        for option in (w.strip("[]") for w in words[2:] if w.strip("[]").startswith("--")):
            assert option in helped.stdout, (option, words)


@pytest.mark.parametrize("command", sorted({c for c in _commands() if c.startswith((".venv/bin/prefect", "prefect"))}))
def test_every_prefect_command_the_readme_shows_exists(command: str) -> None:
    words = _words(command)
    verbs = [w for w in words[1:3] if not w.startswith("-") and not w.startswith("'")]
    helped = subprocess.run([str(BIN / "prefect"), *verbs, "--help"], capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0, (command, helped.stderr[-500:])
    for option in (w.split("=")[0] for w in words if w.startswith("--")):
        assert option in helped.stdout, (option, command)
