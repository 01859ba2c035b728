"""The README's first example runs and prints what it says it prints."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)


def block_with(text: str) -> str:
    """The README's one Python block that contains ``text``."""
    (block,) = [block for block in python_blocks() if text in block]
    return block


def run_python(source: str) -> list[str]:
    """Run ``source`` in a fresh interpreter, as a user pasting it would; return its lines."""
    done = subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_first_example_runs() -> None:
    """The first Python block of the README runs as a script and prints the joke twice, with
    the progress event and the stop event streamed in between."""
    assert run_python(python_blocks()[0]) == [
        "A JOKE ABOUT TRIO",
        "Progress(value=0.5)",
        "StopEvent(result='A JOKE ABOUT TRIO')",
        "A JOKE ABOUT TRIO",
    ]


def test_human_in_the_loop_example_runs() -> None:
    """The README's Interview example asks, takes the matching reply, and returns it."""
    driver = """
import trio

async def main():
    async with Interview().start(user="ada") as handler:
        async for ev in handler.stream_events():
            print(ev)
            if isinstance(ev, Ask):
                await handler.send_event(Reply(user="ada", text="Ada Lovelace"))
        print(await handler.result())

trio.run(main)
"""
    assert run_python(python_blocks()[1] + driver) == [
        "Ask(question='your name?')",
        "StopEvent(result='Ada Lovelace')",
        "Ada Lovelace",
    ]


def test_serving_example_streams_a_run_over_http() -> None:
    """The README's embedded-server example serves on a free port, starts a research run over
    HTTP and prints its NDJSON envelopes as they come, ending with the stop event."""
    lines = run_python(block_with("application/x-ndjson"))
    kinds = [line.split()[1] for line in lines]
    assert [line.split()[0] for line in lines] == [str(seq) for seq in range(1, len(lines) + 1)]
    assert kinds[0] == "Progress"
    assert "Token" in kinds
    assert kinds[-1] == "StopEvent"
    assert "'answer': 'trio keeps every task" in lines[-1]


def test_testing_example_passes_under_pytest(tmp_path: Path) -> None:
    """The README's "Testing your workflows" example is a test file that passes."""
    (tmp_path / "test_example.py").write_text(block_with("from trioflow.testing import"))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "trio", "-o", "trio_mode=true",
         "-p", "no:cacheprovider", str(tmp_path / "test_example.py")],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout


def test_client_example_streams_and_returns_the_result() -> None:
    """The README's client example serves on a free port, follows a research run with
    trioflow.client and prints its envelopes, then the result."""
    lines = run_python(block_with("async with Client(binds[0]) as client"))
    assert [line.split()[0] for line in lines[:-1]] == [str(seq) for seq in range(1, len(lines))]
    assert lines[-2].split()[1] == "StopEvent"
    assert lines[-1].startswith("{'answer': 'trio keeps every task")


def test_llama_client_example_answers_the_approval_run() -> None:
    """The README's LlamaIndex client example, against ``trioflow serve --llama-compat``: it
    streams the approval run, answers its question, and prints the result."""
    from _http import serve_process

    example = block_with("from llama_agents.client import WorkflowClient")
    with serve_process("trioflow.examples:WORKFLOWS", "--llama-compat") as (_, url):
        lines = run_python(example.replace("http://127.0.0.1:8000", url))
    types = [line.split()[0] for line in lines[:-1]]
    assert "ApprovalRequired" in types
    assert types[-1] == "StopEvent"
    assert "'done': True" in lines[-1]


def test_open_store_example_runs(tmp_path: Path) -> None:
    """The README's `open_store` example streams a run kept in a file, then, in a second
    block (as after a restart), goes on from that run's context."""
    done = subprocess.run(
        [sys.executable, "-c", block_with("open_store(")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["StopEvent(result='turn 1: hello')", "turn 2: again"]
    assert (tmp_path / "chat.db").exists()
