"""Suite-wide settings, applied before any test module imports torch."""

import os
from collections.abc import Callable
from pathlib import Path

import pytest

# On a machine shared with other jobs, spinning OpenMP threads made small torch and
# scikit-learn steps 3-9x slower (measured: an in-process `run` test took 102 s with the
# default policy, 32 s with PASSIVE). The CLI sets the same default.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


class Payload:
    """Unpickling it runs a shell command that creates ``marker``: a real code-execution payload."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[[str], int], tuple[str]]:
        return (os.system, (f"touch {self.marker}",))

    def assert_runs_under(self, unsafe_load: Callable[[], object]) -> None:
        """Check the payload is live: ``unsafe_load`` (a plain unpickling of it) runs it."""
        unsafe_load()
        assert self.marker.is_file(), "the payload did not run under an unsafe load"
        self.marker.unlink()

    def ran(self) -> bool:
        return self.marker.exists()


@pytest.fixture
def payload(tmp_path: Path) -> Payload:
    """A :class:`Payload` whose marker is ``tmp_path / "payload-ran"``."""
    return Payload(tmp_path / "payload-ran")
