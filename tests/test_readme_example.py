"""The README's library example runs as written, piped, and leaves no TFF worker."""

import os
import re
import subprocess
import sys

from . import processes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _example(heading):
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    section = text[text.index(heading) :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _run_piped(command, **kwargs):
    return subprocess.run(
        command,
        shell=True,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        **kwargs,
    )


def test_readme_library_example_runs_piped_and_exits(tmp_path):
    script = tmp_path / "example.py"
    # The device example continues the library example.
    script.write_text(
        _example("## Using the library")
        + _example("## On the device")
        + "print('device round:', state.communication)\n"
    )
    before = processes.leaked_workers()
    # `python example.py | tail`: the pipe stays open while any child holds it.
    proc = _run_piped(f"{sys.executable} {script} | tail -n 3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "device round:" in proc.stdout, proc.stdout
    assert processes.leaked_workers() <= before


def test_program_context_worker_dies_with_python(tmp_path):
    script = tmp_path / "program.py"
    script.write_text(
        "import asyncio, tensorflow as tf, tensorflow_federated as tff\n"
        "import tff_fedpt\n"
        "context = tff.program.NativeFederatedContext(\n"
        "    tff.backends.native.create_async_local_cpp_execution_context())\n"
        "tff.framework.set_default_context(context)\n"
        "@tff.tensorflow.computation\n"
        "def one():\n"
        "    return tf.constant(1)\n"
        "async def main():\n"
        "    return await tff.program.materialize_value(one())\n"
        "print('value', asyncio.run(main()))\n"
    )
    before = processes.leaked_workers()
    proc = _run_piped(f"{sys.executable} {script} | cat")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "value 1" in proc.stdout
    assert processes.leaked_workers() <= before
