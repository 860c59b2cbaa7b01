"""Settings files as the seed writes them: JSON with comments and includes, per-option
environment variables, and logging configured from the settings file."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import eventforge
import pytest
from eventforge.config import configure, load_settings
from eventforge.errors import ConfigurationError
from eventforge.transports.memory import MemoryTransport

SEED_STYLE = """{
// ============== Transport ==============
"transport": "memory",   // in-process
/* a block comment, with "quotes" and // inside */
"options": {"max_queue_size": ${EF_TEST_QUEUE_SIZE:-25}},
"serializer": "json",
// Include other files
${include: "./env/${EF_TEST_ENVIRONMENT}.jsonp"}
}
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("EVENTFORGE_CONFIG", "EVENTFORGE_TRANSPORT", "EVENTFORGE_SERIALIZER"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def seed_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "dev.jsonp").write_text(
        '{\n  // dev overrides\n  "options": {"overflow": "drop_newest"},\n'
        '  "plugins": {"acme": {"region": "eu"}}\n}\n'
    )
    config = tmp_path / "config.jsonp"
    config.write_text(SEED_STYLE)
    monkeypatch.setenv("EF_TEST_ENVIRONMENT", "dev")
    return config


def test_jsonp_with_comments_variables_and_an_include(seed_files: Path) -> None:
    settings = load_settings(seed_files)
    assert settings.transport == "memory"
    # the unquoted ${VAR:-25} stays a number; the include merges its tables key by key
    assert settings.options == {"max_queue_size": 25, "overflow": "drop_newest"}
    assert settings.plugins == {"acme": {"region": "eu"}}


def test_comment_markers_inside_strings_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text('{"plugins": {"acme": {"url": "http://x//y", "note": "/* kept */"}}} // end')
    assert load_settings(path).plugins == {"acme": {"url": "http://x//y", "note": "/* kept */"}}


def test_variable_used_by_an_include_path_must_be_set(
    seed_files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EF_TEST_ENVIRONMENT")
    with pytest.raises(ConfigurationError, match=r"\$\{EF_TEST_ENVIRONMENT\}.*not set"):
        load_settings(seed_files)


def test_missing_included_file_names_the_including_file(seed_files: Path) -> None:
    (seed_files.parent / "env" / "dev.jsonp").unlink()
    with pytest.raises(ConfigurationError, match=r"dev\.jsonp.*included from .*config\.jsonp"):
        load_settings(seed_files)


def test_toml_include_key_is_overridden_by_the_including_file(tmp_path: Path) -> None:
    (tmp_path / "base.toml").write_text(
        '[eventforge]\nserializer = "msgpack"\n[eventforge.options]\nmax_queue_size = 5\n'
    )
    main = tmp_path / "main.toml"
    main.write_text(
        '[eventforge]\ninclude = "base.toml"\n[eventforge.options]\noverflow = "drop_newest"\n'
    )
    settings = load_settings(main)
    assert settings.serializer == "msgpack"
    assert settings.options == {"max_queue_size": 5, "overflow": "drop_newest"}


def test_files_including_each_other_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('{"include": "b.json"}')
    (tmp_path / "b.json").write_text('{"include": "a.json"}')
    with pytest.raises(ConfigurationError, match=r"include each other: .*a\.json -> .*b\.json"):
        load_settings(tmp_path / "a.json")


def test_per_option_environment_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        'transport = "memory"\n[options]\nmax_queue_size = 10\noverflow = "drop_oldest"\n'
    )
    monkeypatch.setenv("EVENTFORGE_OPTIONS__MAX_QUEUE_SIZE", "50")
    settings = load_settings(path)
    assert settings.options == {"max_queue_size": 50, "overflow": "drop_oldest"}
    transport = eventforge.connect(settings)
    assert isinstance(transport, MemoryTransport)
    assert transport.max_queue_size == 50
    transport.close()
    # keyword arguments still win over the environment
    assert load_settings(path, options={"max_queue_size": 3}).options == {"max_queue_size": 3}


def test_misspelt_option_variable_names_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTFORGE_OPTIONS__MAX_QUEUE", "50")
    with pytest.raises(
        ConfigurationError, match=r"'options\.max_queue'.*Did you mean 'max_queue_size'"
    ):
        load_settings()


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_logging_from_the_settings_file(tmp_path: Path, root_logging: None) -> None:
    log_file = tmp_path / "app.log"
    path = tmp_path / "s.json"
    path.write_text(
        json.dumps({"logging": {"level": "info", "format": "json", "file": str(log_file)}})
    )
    settings = configure(path)
    try:
        assert settings.logging is not None
        assert settings.logging.level == "INFO"
        logging.getLogger("myapp").info("ready")
    finally:
        configure({})
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    mine = [line for line in lines if line["logger"] == "myapp"]
    assert [(line["level"], line["message"]) for line in mine] == [("INFO", "ready")]


def test_logging_level_from_the_environment_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTFORGE_LOGGING__LEVEL", "LOUD")
    with pytest.raises(ConfigurationError, match="unknown log level 'LOUD'"):
        load_settings()
