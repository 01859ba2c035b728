"""`ServerOptions`, the one definition of the server's options, and what is made from it: the
flags of ``trioflow serve`` and the README's table."""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest
from _http import CountFlow

from trioflow import ServerOptions
from trioflow._cli._main import _app, _parser
from trioflow._server._options import describe_default

README = Path(__file__).resolve().parent.parent / "README.md"
TABLE_HEADER = "| option (`WorkflowApp`, `serve`; CLI `--kebab-case`) | default | what it sets |"


def readme_table() -> dict[str, tuple[str, str]]:
    """The README's table of options: name -> (default, what it sets)."""
    lines = README.read_text().splitlines()
    start = lines.index(TABLE_HEADER) + 2  # after the header and its |---| line
    rows: dict[str, tuple[str, str]] = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        name, default, what = (cell.strip() for cell in line.strip("|").split(" | "))
        match = re.fullmatch(r"`(\w+)`", name)
        assert match, line
        rows[match[1]] = (default, what)
    return rows


def served_options(*argv: str) -> ServerOptions:
    """The options `trioflow serve` gives its app for these flags."""
    return _app(CountFlow(), _parser().parse_args(["serve", "x:y", *argv])).options


def test_the_readme_table_is_the_options_definition() -> None:
    """The README lists exactly the options of ServerOptions, in order, each with the default
    it has and its one-line help, so the two cannot drift apart."""
    expected = {
        option.name: (describe_default(option), option.metadata["help"])
        for option in attrs.fields(ServerOptions)
    }
    assert list(readme_table().items()) == list(expected.items())


@pytest.mark.parametrize(
    ("name", "shown"),
    [("retain", "1,024 events"), ("max_body", "1 MiB"), ("abandon_after", "never"),
     ("allowed_hosts", "localhost, 127.0.0.1, ::1"), ("ping_interval", "15 s"),
     ("retry_ms", "2,000 ms"), ("token", "none"), ("cors_origins", "none")],
)  # fmt: skip
def test_a_default_reads_as_the_value_it_is(name: str, shown: str) -> None:
    """describe_default shows the value itself, with its unit (the README's table uses it)."""
    assert describe_default(attrs.fields_dict(ServerOptions)[name]) == shown


def test_every_option_is_a_flag_of_trioflow_serve(capsys: pytest.CaptureFixture[str]) -> None:
    """`trioflow serve --help` shows a flag per option, with its help and default."""
    with pytest.raises(SystemExit):
        _parser().parse_args(["serve", "--help"])
    shown = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for option in attrs.fields(ServerOptions):
        flag = option.metadata.get("flag", "--" + option.name.replace("_", "-"))
        assert f"{flag} " in shown, flag
        assert option.metadata["help"] in shown
        env = option.metadata.get("env")
        default = describe_default(option)
        assert f"default: {f'${env}, else {default}' if env else default}" in shown


def test_flags_are_parsed_by_the_options_types() -> None:
    """Values are read as the options' types, repeated flags make tuples, and --allowed-host
    adds to the hosts serve() allows."""
    assert served_options(
        *("--retain", "7", "--ping-interval", "0.5", "--abandon-after", "2"),
        *("--cors-origin", "https://a.example", "--cors-origin", "https://b.example"),
        *("--token", "s3cret", "--max-body", "10", "--allowed-host", "*"),
    ) == ServerOptions(
        retain=7,
        ping_interval=0.5,
        abandon_after=2.0,
        cors_origins=("https://a.example", "https://b.example"),
        token="s3cret",
        max_body=10,
        allowed_hosts=("localhost", "127.0.0.1", "::1", "*"),  # added to serve()'s
    )


def test_flags_left_out_leave_the_options_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without flags every option keeps its own default (allowed_hosts gains the --host name,
    as with serve())."""
    monkeypatch.delenv("TRIOFLOW_TOKEN", raising=False)
    options = served_options("--host", "example.test")
    loopback = ServerOptions().allowed_hosts
    assert options.allowed_hosts == (*loopback, "example.test")
    assert attrs.evolve(options, allowed_hosts=loopback) == ServerOptions()


def test_the_token_flag_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """--token falls back to $TRIOFLOW_TOKEN; an empty one is no token."""
    monkeypatch.setenv("TRIOFLOW_TOKEN", "from-env")
    assert served_options().token == "from-env"
    assert served_options("--token", "given").token == "given"
    monkeypatch.setenv("TRIOFLOW_TOKEN", "")
    assert served_options().token is None


def test_one_name_is_a_tuple_of_one() -> None:
    """A single string given for a tuple of names is one name, not its characters."""
    assert ServerOptions(allowed_hosts="*", cors_origins="https://a.example") == ServerOptions(
        allowed_hosts=("*",), cors_origins=["https://a.example"]
    )
