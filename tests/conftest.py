"""Suite-wide settings: the torch thread count under test, and the test order's seed in the summary.

``SSMVLM_TEST_THREADS=N`` calls ``torch.set_num_threads(N)`` before any test runs, so the suite can be checked
under the thread counts of other machines (results that must be bitwise identical must not depend on it).
pytest-randomly shuffles the order; its seed is printed in the summary as well as the header, because ``-q``
(the project's default) hides the header and a failing order must be reproducible with ``-p randomly
--randomly-seed=N``.
"""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    threads = os.environ.get("SSMVLM_TEST_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    seed = getattr(config.option, "randomly_seed", None)
    threads = os.environ.get("SSMVLM_TEST_THREADS", "default")
    if seed is not None:
        terminalreporter.write_line(f"test order: random, --randomly-seed={seed}; torch threads: {threads}")
    else:
        terminalreporter.write_line(f"test order: as written; torch threads: {threads}")
