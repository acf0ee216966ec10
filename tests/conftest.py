from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import ServerProcess  # noqa: E402


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    """The built-in demo configuration on its own free ports (one per test module)."""
    server = ServerProcess(tmp_path_factory.mktemp("server")).start()
    yield server
    server.stop()


@pytest.fixture
def make_server(tmp_path):
    """Start servers with a config text of the test's own; all stopped at the end."""
    started: list[ServerProcess] = []

    def start(config_text: str | None = None, **kwargs) -> ServerProcess:
        server = ServerProcess(tmp_path, config_text=config_text, **kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
