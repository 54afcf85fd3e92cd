"""`babelsearch serve`: binds to loopback by default, clear one-line errors."""

from __future__ import annotations

import socket
from pathlib import Path

from click.testing import CliRunner

from babelsearch.cli import cli


class FakeServer:
    effective_port = 4321
    calls: list[dict] = []

    def __init__(self, app, **kwargs) -> None:
        FakeServer.calls.append({"app": app, **kwargs})

    def run(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_serve_defaults_to_loopback_and_prints_its_url(colour_index: Path, monkeypatch):
    monkeypatch.setattr("waitress.create_server", FakeServer)
    result = CliRunner().invoke(cli, ["serve", str(colour_index)])
    assert result.exit_code == 0, result.output
    assert "at http://127.0.0.1:4321/" in result.output and "warning" not in result.output
    call = FakeServer.calls[-1]
    assert call["host"] == "127.0.0.1" and call["port"] == 8000 and call["threads"] == 8
    client = call["app"].test_client()
    assert client.get("/api/health").get_json()["images"] == 12

    # the limits that keep idle and slow clients from starving it (webui.server)
    assert call["connection_limit"] == 1000 and call["channel_timeout"] == 30 and call["asyncore_use_poll"]
    assert call["max_request_body_size"] == 4 * call["app"].config["MAX_CONTENT_LENGTH"]
    # and the server follows the index: new generations are picked up
    assert call["app"].extensions["babelsearch"].index_dir == colour_index

    result = CliRunner().invoke(cli, ["serve", str(colour_index), "--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code == 0 and "warning: listening on 0.0.0.0" in result.output


def test_serve_limits_can_be_set(colour_index: Path, monkeypatch):
    monkeypatch.setattr("waitress.create_server", FakeServer)
    args = ["serve", str(colour_index), "--connection-limit", "200", "--channel-timeout", "5"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    call = FakeServer.calls[-1]
    assert call["connection_limit"] == 200 and call["channel_timeout"] == 5 and call["cleanup_interval"] == 1
    result = CliRunner().invoke(cli, ["serve", str(colour_index), "--channel-timeout", "0"])
    assert result.exit_code == 2 and "--channel-timeout" in result.output


def test_serve_errors_are_one_line(colour_index: Path, tmp_path: Path):
    result = CliRunner().invoke(cli, ["serve", str(tmp_path / "absent")])
    assert result.exit_code == 1 and "no index at" in result.output and "Traceback" not in result.output
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(cli, ["serve", str(colour_index), "--port", str(port)])
    assert result.exit_code == 1 and f"cannot listen on 127.0.0.1:{port}" in result.output
    assert len(result.output.strip().splitlines()) == 1
