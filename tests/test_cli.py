"""The command line, run as a user runs it: in a subprocess."""

from __future__ import annotations

import importlib.metadata
import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from _http import serve_process


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trioflow", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )


def test_demo_streams_events_and_prints_the_result() -> None:
    """`trioflow demo` prints progress, tokens, the stop event, then the result; exit 0."""
    done = run_cli("demo", "--pace", "0", "--topic", "trio")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    kinds = [line.split()[1] for line in lines if line[:8].strip().endswith("s")]
    assert kinds[0] == "Progress"
    assert kinds.count("Progress") == 13
    assert "Token" in kinds
    assert kinds[-1] == "StopEvent"
    assert lines[-1].startswith("result: {'answer': 'trio keeps every task")


def test_demo_rejects_negative_pace() -> None:
    """A bad option gives a one-line usage error and exit code 2, not a traceback."""
    done = run_cli("demo", "--pace", "-1")
    assert done.returncode == 2
    assert "--pace must be >= 0" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_serve_prints_the_dashboard_address_and_stops_gracefully(signum: int) -> None:
    """`trioflow serve` serves the examples and prints where; on SIGINT or SIGTERM an open
    stream ends with its run's WorkflowCancelledEvent and the process exits with 0."""
    process = subprocess.Popen(
        [sys.executable, "-m", "trioflow", "serve", "trioflow.examples:WORKFLOWS", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "trioflow: serving research, approval, flaky\n"
        line = process.stdout.readline()
        address = re.fullmatch(r"trioflow: dashboard at (http://127\.0\.0\.1:\d+)/  .*\n", line)
        assert address, line
        with httpx.Client(base_url=address[1], timeout=30) as client:
            started = client.post("/workflows/approval/runs", json={"pace": 0})
            assert started.status_code == 201
            run_id = started.json()["run_id"]
            ndjson = {"accept": "application/x-ndjson"}
            with client.stream("GET", f"/runs/{run_id}/events", headers=ndjson) as events:
                types = []
                for line in events.iter_lines():
                    types.append(json.loads(line)["type"])
                    if types[-1] == "ApprovalRequired":
                        process.send_signal(signum)  # the run now waits for an answer
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert types[-2:] == ["ApprovalRequired", "WorkflowCancelledEvent"]
    assert process.returncode == 0, err
    assert out.endswith("trioflow: stopped\n")
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("nowhere.at.all:X", "no module named 'nowhere'"),
        ("trioflow.examples:Nope", "module 'trioflow.examples' has no attribute 'Nope'"),
        ("trioflow.examples:Progress", "not a Workflow or a mapping of names to workflows"),
        ("trioflow.examples", "expected module:attribute"),
    ],
)
def test_serve_reports_a_bad_target_in_one_line(target: str, message: str) -> None:
    """A missing module or attribute, or one that is no workflow: one line, exit code 2."""
    done = run_cli("serve", target, "--port", "0")
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_serve_rejects_bad_options() -> None:
    """Out-of-range options are refused before anything listens."""
    done = run_cli("serve", "trioflow.examples:WORKFLOWS", "--retain", "0")
    assert done.returncode == 2
    assert "retain must be an int >= 1" in done.stderr
    for port in ("99999", "-1"):
        done = run_cli("serve", "trioflow.examples:WORKFLOWS", "--port", port)
        assert done.returncode == 2
        assert f"invalid port value: '{port}'" in done.stderr
        assert "Traceback" not in done.stderr


def test_run_shows_an_int_too_long_for_json_as_the_servers_marker() -> None:
    """An event or a result holding an int of 5,000 digits prints as the server sends it
    (a marker in its place), not as a crash of the printer."""
    for flags in ((), ("--ndjson",)):
        done = run_in_tests("run", "_cli_flows:HugeFlow", *flags)
        assert done.returncode == 0, done.stderr
        assert "<an integer of more than 4300 digits, too long to encode>" in done.stdout


# -- run, draw, validate --

TESTS = Path(__file__).resolve().parent


def run_in_tests(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI run from tests/, where `_cli_flows` is importable (the current directory is)."""
    return run_cli(*args, cwd=TESTS)


def test_run_streams_readable_lines_and_prints_the_result() -> None:
    """`trioflow run` types -p values by the start event's fields and ends with the result."""
    done = run_in_tests("run", "_cli_flows:FLOWS", "--name", "count", "-p", "n=2", "-p", "label=7")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[1] for line in lines[:-1]] == [
        "Tick", "Progress", "Tick", "Progress", "StopEvent",
    ]  # fmt: skip
    assert 'label="7"' in lines[0]  # a str field keeps "7" as text
    assert lines[-1] == 'result: {"counted": 2, "label": "7"}'


def test_run_ndjson_and_input_from_a_file(tmp_path: Path) -> None:
    """--ndjson prints nothing but envelopes, one per line, the result in the stop event's;
    --input @file gives the start fields."""
    fields = tmp_path / "start.json"
    fields.write_text('{"n": 1}')
    done = run_in_tests("run", "_cli_flows:CountFlow", "--input", f"@{fields}", "--ndjson")
    assert done.returncode == 0, done.stderr
    envelopes = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(e["seq"], e["type"]) for e in envelopes] == [
        (1, "Tick"),
        (2, "Progress"),
        (3, "StopEvent"),
    ]
    assert envelopes[0]["data"] == {"i": 1, "label": "tick"}
    assert envelopes[-1]["data"] == {"result": {"counted": 1, "label": "tick"}}


def test_run_reports_a_failure_with_its_step_in_one_line() -> None:
    """With --no-traceback, a failed run exits 1 with one line naming the error and the
    failed step, after its terminal event."""
    done = run_in_tests("run", "_cli_flows:FailFlow", "--no-traceback")
    assert done.returncode == 1
    assert "WorkflowFailedEvent" in done.stdout
    assert done.stderr == "trioflow run: Boom in step 'explode': kaboom\n"


def test_run_prints_a_failed_steps_traceback() -> None:
    """By default a step's failure shows its traceback from the step's own frame (trioflow's
    frames left out) with its note, then the one line."""
    done = run_in_tests("run", "_cli_flows:FailFlow")
    assert done.returncode == 1
    traceback, _, last = done.stderr.rstrip("\n").rpartition("\n")
    assert last == "trioflow run: Boom in step 'explode': kaboom"
    source = (TESTS / "_cli_flows.py").read_text().splitlines()
    line = source.index('        raise Boom("kaboom")') + 1
    assert traceback.splitlines() == [
        "Traceback (most recent call last):",
        f'  File "{TESTS / "_cli_flows.py"}", line {line}, in explode',
        '    raise Boom("kaboom")',
        "_cli_flows.Boom: kaboom",
        "trioflow: raised in step 'explode' of FailFlow",
    ]


def test_run_names_where_a_failure_re_raised_by_an_error_handler_began() -> None:
    """An error handler that re-raises the failure it was given: the traceback shows both
    steps, and the error line names the handler, the step and the attempt it handled."""
    done = run_in_tests(
        "run", "trioflow.examples:WORKFLOWS", "--name", "flaky",
        "-p", "failures=3", "-p", "recover=false", "-p", "pace=0",
    )  # fmt: skip
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[-1] == (
        "trioflow run: FlakyError in step 'recover' (handling the failure of step 'attempt', "
        "attempt 3): attempt 3 of 3 planned failures"
    )
    assert lines[0] == "Traceback (most recent call last):"
    assert "    raise ev.exception" in lines  # in the handler
    assert '    raise FlakyError(f"attempt {tries} of {ev.failures} planned failures")' in lines
    assert "trioflow: raised in step 'attempt' of FlakyFlow" in lines
    note = "trioflow: raised in step 'recover' of FlakyFlow while handling the failure of step"
    assert f"{note} 'attempt'" in lines
    assert "_core" not in done.stderr  # no frame of trioflow's machinery


def test_run_logs_retries_at_log_level_info() -> None:
    """`--log-level info` shows trioflow's INFO records on stderr (a retried attempt)."""
    flaky = ["trioflow.examples:WORKFLOWS", "--name", "flaky", "-p", "pace=0"]
    quiet = run_in_tests("run", *flaky)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    done = run_in_tests("run", *flaky, "--log-level", "info")
    assert done.returncode == 0, done.stderr
    [line] = done.stderr.splitlines()
    assert re.fullmatch(
        r"\S+ \S+ INFO trioflow: step 'attempt' of FlakyFlow \(run [0-9a-f]{32}\) failed, "
        r"attempt 1 of 3, retrying in 0\.3 s: FlakyError: attempt 1 of 1 planned failures",
        line,
    ), line


SLEEPY = """
import time
from trioflow import StartEvent, StopEvent, Workflow, step

class Sleepy(Workflow):
    @step
    async def nap(self, ev: StartEvent) -> StopEvent:
        time.sleep(0.3)  # blocks the event loop: what the detector reports
        return StopEvent(result="rested")
"""


def test_run_reports_a_blocked_loop_once(tmp_path: Path) -> None:
    """The loop-blocking detector's report shows once, as a log line (not also as the
    warning that says the same)."""
    (tmp_path / "sleepy.py").write_text(SLEEPY)
    done = run_cli("run", "sleepy:Sleepy", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [line] = done.stderr.splitlines()
    assert " WARNING trioflow: " in line
    assert "step 'nap' of workflow 'Sleepy' held the trio event loop" in line


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_run_is_cancelled_cleanly_by_ctrl_c(signum: int, code: int) -> None:
    """Ctrl-C (or SIGTERM) cancels the run: the cancel event is shown, exit code 128 + the
    signal, no traceback."""
    process = subprocess.Popen(
        [sys.executable, "-m", "trioflow", "run", "_cli_flows:ForeverFlow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=TESTS,
    )
    try:
        assert process.stdout is not None
        assert "Waiting" in process.stdout.readline()
        process.send_signal(signum)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == code, err
    assert "WorkflowCancelledEvent" in out
    assert "Traceback" not in err
    assert "WorkflowCancelledError" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["_cli_flows:FLOWS"], "holds 3 workflows: pass --name (one of count, fail, forever)"),
        (["_cli_flows:CountFlow", "-p", "n=many"], "field 'n': expected int"),
        (["_cli_flows:CountFlow", "-p", "colour=red"], "unknown field 'colour'"),
        (["_cli_flows:CountFlow", "-p", "n"], "-p takes key=value"),
        (["_cli_flows:CountFlow", "--input", "[1]"], "--input must be a JSON object"),
        (["_cli_flows:CountFlow", "--input", "@/nonexistent.json"], "cannot read"),
        (["_cli_flows:NOT_A_WORKFLOW"], "is int, not a Workflow"),
        (["nowhere:Flow"], "no module named 'nowhere'"),
    ],
)
def test_run_reports_bad_input_in_one_line(args: list[str], message: str) -> None:
    """Bad targets and fields: one line naming the problem, exit code 2."""
    done = run_in_tests("run", *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_draw_json_is_the_servers_graph() -> None:
    """--format json prints what GET /workflows/{name} serves."""
    done = run_in_tests("draw", "_cli_flows:ShapesFlow", "--format", "json")
    assert done.returncode == 0, done.stderr
    graph = json.loads(done.stdout)
    from trioflow._wire import describe_workflow

    sys.path.insert(0, str(TESTS))
    import _cli_flows

    assert graph == describe_workflow("ShapesFlow", _cli_flows.ShapesFlow())


def test_draw_mermaid_survives_reserved_words_and_shows_every_kind() -> None:
    """Mermaid ids are prefixed (a step called `end` stays valid); the cycle, the union, the
    human-in-the-loop events and the error handler are all drawn."""
    done = run_in_tests("draw", "_cli_flows:ShapesFlow")
    assert done.returncode == 0, done.stderr
    lines = [line.strip() for line in done.stdout.splitlines()]
    assert lines[0] == "flowchart TD"
    assert 'step_end["end"]' in lines
    assert not any(line.startswith("end") for line in lines)
    assert "step_loop --> event_Again" in lines  # the cycle
    assert {"event_Left --> step_end", "event_Right --> step_end"} <= set(lines)  # the union
    assert "event_Ask --> caller_caller" in lines  # asked of the caller
    assert "caller_caller --> event_Answer" in lines
    assert "event_Answer -.-> step_end" in lines  # awaited in the step's code
    assert "step_loop -. fails .-> event_StepFailedEvent" in lines
    assert 'step_rescue["rescue (error handler)"]' in lines


def test_draw_dot() -> None:
    """--format dot is a Graphviz digraph with quoted ids."""
    done = run_in_tests("draw", "_cli_flows:ShapesFlow", "--format", "dot")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('digraph "ShapesFlow" {')
    assert '"step:end" [label="end", shape=box];' in done.stdout
    assert '"step:loop" -> "event:Again";' in done.stdout
    assert done.stdout.rstrip().endswith("}")


def test_validate_lists_every_problem() -> None:
    """validate prints ok for good workflows, every problem of a bad one, and exits 1."""
    done = run_in_tests("validate", "_cli_flows:CLASSES")
    assert done.returncode == 1
    assert done.stdout == "shapes: ok (4 steps, 6 event types)\n"
    assert "broken: 4 problem(s)" in done.stderr
    assert "[terminal_event] step 'begin' returns Orphan, but no step accepts it" in done.stderr
    assert "[reachability] unreachable step 'finish'" in done.stderr
    assert "[dead_end] dead-end step 'begin'" in done.stderr
    assert "no step returns it" in done.stderr
    good = run_in_tests("validate", "_cli_flows:FLOWS")
    assert good.returncode == 0, good.stderr


@pytest.mark.parametrize("name", ["research", "approval", "flaky"])
def test_draw_the_examples(name: str) -> None:
    """Every example draws: each step and each event type of its graph is a node."""
    graph = json.loads(
        run_in_tests(
            "draw", "trioflow.examples:WORKFLOWS", "--name", name, "--format", "json"
        ).stdout
    )
    mermaid = run_in_tests("draw", "trioflow.examples:WORKFLOWS", "--name", name).stdout
    for step_ in graph["steps"]:
        assert f'step_{step_["name"]}["' in mermaid
    for event in graph["events"]:
        assert f"event_{event['name']}" in mermaid
    if name == "approval":
        assert "event_ApprovalRequired --> caller_caller" in mermaid
        assert "caller_caller --> event_Approval" in mermaid


@pytest.mark.parametrize(("code", "exit_code"), [(3, 3), (None, 130)])
def test_a_steps_system_exit_ends_serve_with_its_code(code: int | None, exit_code: int) -> None:
    """A step's sys.exit(3) stops the server gracefully, and `trioflow serve` exits with 3; a
    step's KeyboardInterrupt with 130, as an interrupted program. No traceback."""
    with serve_process("_cli_flows:SERVED") as (process, url):
        with httpx.Client(base_url=url, timeout=30) as client:
            started = client.post("/workflows/exit/runs", json={"code": code})
            assert started.status_code == 201
        _, err = process.communicate(timeout=30)
    assert process.returncode == exit_code, err
    assert "Traceback" not in err


def test_a_second_signal_stops_serve_at_once() -> None:
    """While the shutdown waits for a `def` step that cannot be interrupted, a second SIGINT
    exits at once, with 130."""
    with serve_process("_cli_flows:SERVED", "--shutdown-grace", "60") as (process, url):
        with httpx.Client(base_url=url, timeout=30) as client:
            run_id = client.post("/workflows/stuck/runs", json={}).json()["run_id"]
            ndjson = {"accept": "application/x-ndjson"}
            with client.stream("GET", f"/runs/{run_id}/events", headers=ndjson) as events:
                assert json.loads(next(events.iter_lines()))["type"] == "Waiting"
        process.send_signal(signal.SIGINT)
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=0.5)  # still waiting for the thread
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=10)
    assert process.returncode == 130
    assert "trioflow serve: interrupted again, exiting now" in err


def test_serve_reports_an_address_in_use_in_one_line() -> None:
    """A port that is taken: one line naming the problem, exit code 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = run_cli("serve", "trioflow.examples:WORKFLOWS", "--port", port)
    assert done.returncode == 1
    assert done.stderr == f"trioflow serve: error: address 127.0.0.1:{port} is in use\n"


def test_serve_lists_a_workflows_problems() -> None:
    """`trioflow serve` on an invalid workflow lists its problems (exit 1), no traceback."""
    done = run_in_tests("serve", "_cli_flows:BrokenFlow", "--port", "0")
    assert done.returncode == 1
    assert "4 problem(s)" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_missing_dependency_of_the_users_module_is_shown_in_full(tmp_path: Path) -> None:
    """Only the named module being missing is a one-line usage error; an import error inside
    it is the user's to see, with its traceback."""
    (tmp_path / "needs_dep.py").write_text("import not_installed_anywhere\n")
    done = run_cli("run", "needs_dep:Flow", cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" in done.stderr
    assert "not_installed_anywhere" in done.stderr


def test_a_second_ctrl_c_exits_at_once() -> None:
    """While a cancelled run waits for a thread step that cannot be interrupted, a second
    Ctrl-C exits at once."""
    process = subprocess.Popen(
        [sys.executable, "-m", "trioflow", "run", "_cli_flows:StuckFlow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=TESTS,
    )
    try:
        assert process.stdout is not None
        assert "Waiting" in process.stdout.readline()
        process.send_signal(signal.SIGINT)
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=0.5)  # still waiting for the thread
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 130
    assert "interrupted again, exiting now" in err


def test_version() -> None:
    """`trioflow --version` prints the installed package's version."""
    done = run_cli("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"trioflow {importlib.metadata.version('trioflow')}\n"


def test_serve_logs_a_failed_runs_traceback() -> None:
    """`trioflow serve` logs a failed run once, at WARNING: its id, the step (an error handler
    that re-raised) and where the failure began, with the traceback; retried attempts (INFO)
    stay out at the default log level."""
    with serve_process("trioflow.examples:WORKFLOWS") as (process, url):
        with httpx.Client(base_url=url, timeout=30) as client:
            fields = {"failures": 3, "recover": False, "pace": 0}
            run_id = client.post("/workflows/flaky/runs", json=fields).json()["run_id"]
            deadline = time.monotonic() + 30  # only turns a hang into a failure
            while client.get(f"/runs/{run_id}").json()["status"] == "running":
                assert time.monotonic() < deadline
                time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    warning = re.compile(r"\S+ \S+ WARNING trioflow\.server: run (\w+) of flaky failed in (.*)")
    found = [warning.fullmatch(line) for line in err.splitlines()]
    [logged] = [match for match in found if match]
    assert logged[1] == run_id
    assert logged[2] == (
        "step 'recover' (handling the failure of step 'attempt', attempt 3): "
        "FlakyError: attempt 3 of 3 planned failures"
    )
    assert "Traceback (most recent call last):" in err
    assert "    raise ev.exception\n" in err
    assert "retrying" not in err


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (
            ["--store", "sqlite:///runs.db"],
            "a worker runs the runs of a store that processes share",
        ),
        ([], "give --store postgresql://"),
        (["--store", "postgresql://u@h/db", "--max-runs", "0"], "--max-runs must be >= 1"),
    ],
)
def test_a_worker_needs_a_shared_store_and_room(
    flags: list[str], said: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``trioflow worker`` on another store, or with no room for a run, says so in one line
    (exit 2) before it connects to anything."""
    from trioflow._cli._main import main

    monkeypatch.delenv("TRIOFLOW_STORE", raising=False)
    assert main(["worker", "trioflow.examples:WORKFLOWS", *flags]) == 2
    error = capsys.readouterr().err
    assert error.startswith("trioflow worker: error: ")
    assert said in error
    assert error.count("\n") == 1
