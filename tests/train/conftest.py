import subprocess
from pathlib import Path

import pytest


class SmallDisks:
    """Real tmpfs file systems of a given size, to fill up (mounting needs root)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.mounted: list[Path] = []

    def mount(self, size: int) -> Path:
        path = self.base / f"disk{len(self.mounted)}"
        path.mkdir()
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip()}): needs root")
        self.mounted.append(path)
        return path

    def resize(self, path: Path, size: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


@pytest.fixture
def small_disks(tmp_path):
    disks = SmallDisks(tmp_path)
    yield disks
    for path in disks.mounted:
        subprocess.run(["umount", str(path)], check=True)
