"""The browser assets the orchestrator serves are third-party files vendored verbatim, pinned by checksum.

Each vendored directory keeps a VERSION (where the files came from) and a SHA256SUMS; an edit to a
vendored file, or a file added without its sum, fails here.
"""

import hashlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "services/orchestrator/src/orchestrator"
VENDORED = {
    STATIC / "api/static/swagger": {"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"},
    STATIC / "ui/static": {"htmx.min.js"},
}


@pytest.mark.parametrize("directory", list(VENDORED), ids=lambda d: str(d.relative_to(STATIC)))
def test_every_vendored_file_matches_its_recorded_checksum(directory: Path) -> None:
    recorded = {}
    for line in (directory / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        recorded[name] = digest
    assert set(recorded) == VENDORED[directory]
    for name, digest in recorded.items():
        assert hashlib.sha256((directory / name).read_bytes()).hexdigest() == digest, f"{name} was changed"
    assert (directory / "VERSION").read_text().strip()
