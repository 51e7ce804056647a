"""The libFuzzer driver shared by the atheris harnesses in fuzz/.

Imported as ``_common`` (the harnesses run as ``python fuzz/fuzz_x.py``, so fuzz/ is on
``sys.path``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

import atheris


def run(argv: list[str], test_one_input: Callable[[bytes], None]) -> None:
    """Run libFuzzer on ``test_one_input`` with ``argv`` (the harness's command line).

    Adds ``-print_final_stats=1`` and an ``-artifact_prefix`` under the temporary directory
    (crash inputs land in ``$TMPDIR/structcore-fuzz-artifacts/``, not the working directory)
    unless ``argv`` sets them; never returns when libFuzzer stops the process.
    """
    argv = list(argv)
    if "-print_final_stats=1" not in argv:
        argv.append("-print_final_stats=1")
    if not any(a.startswith("-artifact_prefix=") for a in argv):
        artifacts = os.path.join(tempfile.gettempdir(), "structcore-fuzz-artifacts", "")
        os.makedirs(artifacts, exist_ok=True)
        argv.append(f"-artifact_prefix={artifacts}")
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()
