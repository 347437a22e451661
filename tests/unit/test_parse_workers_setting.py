"""`[daemon] parse_workers` pins the parse pool's size, from a real config file to the pool commands use."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.errors import ConfigError
from config.settings import load_settings
from mailsync.cli.app import State
from mailsync.cli.capture import _pipeline
from mailsync.mail.parse_worker import ParsePool, configured_pool, default_size
from storage.repo import Repo
from tests.conftest import write_config

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "mailsync.example.toml"


def _workers_of_the_command_pipeline(config: Path) -> int:
    """How many parse workers `mailsync sync --once` / `import` would parse with (none is started)."""
    state = State(config=config, log_json=False, verbose=False)
    repo = Repo(state.settings().database_url)
    try:
        repo.upgrade()
    finally:
        repo.dispose()
    try:
        with _pipeline(state) as pipeline:
            assert isinstance(pipeline.parser, ParsePool)
            return len(pipeline.parser.workers)
    finally:
        state.close()


def test_the_setting_in_the_file_reaches_the_pool_the_commands_build(tmp_path: Path) -> None:
    (tmp_path / "var").mkdir()
    config = write_config(tmp_path, "\n[daemon]\nparse_workers = 1\n")
    assert _workers_of_the_command_pipeline(config) == 1


def test_unset_it_is_the_default_size_and_the_environment_overrides_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unset = load_settings(write_config(tmp_path))
    assert unset.daemon.parse_workers is None
    with configured_pool(unset) as pool:
        assert len(pool.workers) == default_size()
    monkeypatch.setenv("MAILSYNC_DAEMON__PARSE_WORKERS", "3")
    with configured_pool(load_settings(write_config(tmp_path, "\n[daemon]\nparse_workers = 1\n"))) as pool:
        assert len(pool.workers) == 3


def test_zero_workers_is_refused_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="parse_workers"):
        load_settings(write_config(tmp_path, "\n[daemon]\nparse_workers = 0\n"))


def test_the_example_config_documents_it() -> None:
    assert "# parse_workers = 1" in EXAMPLE.read_text(encoding="utf-8")


@pytest.mark.parametrize(("cores", "workers"), [(None, 1), (1, 1), (2, 1), (3, 2), (4, 3), (16, 4)])
def test_by_default_a_worker_per_core_the_main_process_leaves_free(
    cores: int | None, workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # matching in the main process is the slower stage: on 2 cores a second worker would only take
    # turns with it for the CPU while holding its own memory
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    assert default_size() == workers
