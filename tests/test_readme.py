"""The README stays true: its configuration table is the settings object, no more, no less."""

from __future__ import annotations

import re
from pathlib import Path

from stream_app.cli import build_parser
from stream_app.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_documented_and_every_documented_variable_exists() -> None:
    documented = set(re.findall(r"^\| `(STREAM_[A-Z_]+)`", README, flags=re.M))
    fields = {f"STREAM_{name.upper()}" for name in Settings.model_fields} - {"STREAM_CONFIG_FILE"}
    fields.add("STREAM_CONFIG")
    assert documented == fields


def test_quick_start_commands_exist_and_are_executable() -> None:
    quick = README.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^(\./scripts/\w+)", quick, flags=re.M)
    assert commands == ["./scripts/demo", "./scripts/test"]
    root = Path(__file__).resolve().parents[1]
    for cmd in commands:
        path = root / cmd
        assert path.exists() and path.stat().st_mode & 0o111


def test_every_cli_command_is_in_the_readme() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in sub.choices:  # type: ignore[union-attr]
        assert f"stream-app {name}" in README
