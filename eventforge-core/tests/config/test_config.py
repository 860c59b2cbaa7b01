"""Configuration by name: kwargs, environment, TOML/JSON files, validation, secrets, connect()."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import eventforge
import pytest
from eventforge.config import Settings, configure, connect, load_settings, mask_secrets
from eventforge.config import _settings as config
from eventforge.errors import ConfigurationError, PluginNotFoundError
from eventforge.plugins._registry import reset_registry
from eventforge.service import Service
from eventforge.testing.distributions import write_distribution
from eventforge.testing.waiting import wait_until
from eventforge.transports.memory import MemoryTransport


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in (
        "EVENTFORGE_TRANSPORT",
        "EVENTFORGE_SERIALIZER",
        "EVENTFORGE_STARTUP",
        "EVENTFORGE_CONFIG",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(config, "_current", None)
    reset_registry()
    yield
    reset_registry()


def test_defaults_and_keyword_arguments() -> None:
    assert load_settings() == Settings(transport="memory", serializer="json")
    settings = load_settings(transport="mem", serializer="msgpack", options={"max_queue_size": 4})
    assert (settings.transport, settings.serializer) == ("mem", "msgpack")
    assert settings.options == {"max_queue_size": 4}


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTFORGE_TRANSPORT", "memory://?max_queue_size=7")
    monkeypatch.setenv("EVENTFORGE_SERIALIZER", "pickle")
    settings = load_settings()
    assert settings.transport == "memory://?max_queue_size=7"
    assert settings.serializer == "pickle"
    # keyword arguments win over the environment
    assert load_settings(serializer="json").serializer == "json"


def test_unknown_transport_from_env_names_the_key_and_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EVENTFORGE_TRANSPORT", "memroy")
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    text = str(info.value)
    assert text.startswith(
        "invalid setting 'transport' (from environment variable EVENTFORGE_TRANSPORT): "
        "Unknown transport 'memroy'. Did you mean 'memory'"
    )
    assert text.endswith("Run `eventforge plugins` for details.")
    assert info.value.key == "transport"
    assert isinstance(info.value.__cause__, PluginNotFoundError)


def test_unknown_serializer_is_refused_at_configuration_time() -> None:
    with pytest.raises(ConfigurationError) as info:
        load_settings(serializer="jsn")
    assert str(info.value) == (
        "invalid setting 'serializer' (from keyword arguments): Unknown serializer 'jsn'. "
        "Did you mean 'json'? Installed: bytes, json, msgpack, pickle. Run `eventforge plugins` for "
        "details."
    )


def test_unknown_key_and_wrong_type_name_the_key() -> None:
    with pytest.raises(ConfigurationError) as info:
        load_settings(tranport="memory")
    assert str(info.value) == (
        "unknown setting 'tranport' (from keyword arguments). Did you mean 'transport'? "
        "Known settings: transport, serializer, options, plugins, startup, logging"
    )
    with pytest.raises(ConfigurationError) as info:
        load_settings(options=["max_queue_size"])
    assert info.value.key == "options"
    assert (
        "invalid setting 'options' (from keyword arguments): Input should be a valid dictionary"
        in str(info.value)
    )


def test_unknown_transport_option_is_refused_with_a_suggestion() -> None:
    with pytest.raises(ConfigurationError) as info:
        load_settings(options={"max_queue": 3})
    assert str(info.value) == (
        "invalid setting 'options.max_queue': transport 'memory' does not accept an option "
        "'max_queue'. Did you mean 'max_queue_size'? Accepted: max_queue_size, overflow"
    )
    assert info.value.key == "options.max_queue"


def test_toml_file_with_substitution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EF_TEST_SIZE_URL", "memory://?max_queue_size=9")
    monkeypatch.delenv("EF_TEST_UNSET", raising=False)
    path = tmp_path / "eventforge.toml"
    path.write_text(
        'transport = "${EF_TEST_SIZE_URL}"\n'
        'serializer = "${EF_TEST_UNSET:-json}"\n'
        "[plugins.acme]\n"
        'greeting = "costs $$5 for ${EF_TEST_UNSET:-nobody}"\n',
        encoding="utf-8",
    )
    settings = load_settings(path)
    assert settings.transport == "memory://?max_queue_size=9"
    assert settings.serializer == "json"
    assert settings.plugins == {"acme": {"greeting": "costs $5 for nobody"}}


def test_pyproject_tool_table_and_env_config_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text('[project]\nname = "x"\n[tool.eventforge]\nserializer = "msgpack"\n', "utf-8")
    monkeypatch.setenv("EVENTFORGE_CONFIG", str(path))
    assert load_settings().serializer == "msgpack"
    # the environment overrides the file
    monkeypatch.setenv("EVENTFORGE_SERIALIZER", "pickle")
    assert load_settings().serializer == "pickle"


def test_json_file_and_unset_variable_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EF_TEST_MISSING", raising=False)
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"options": {"max_queue_size": 3}}), encoding="utf-8")
    assert load_settings(path).options == {"max_queue_size": 3}
    path.write_text(json.dumps({"plugins": {"acme": {"url": "${EF_TEST_MISSING}"}}}), "utf-8")
    with pytest.raises(ConfigurationError) as info:
        load_settings(path)
    assert str(info.value) == (
        f"setting 'plugins.acme.url' in {str(path)!r} uses ${{EF_TEST_MISSING}}, but the "
        "environment variable EF_TEST_MISSING is not set; set it, or give a default: "
        "${EF_TEST_MISSING:-default}"
    )
    assert info.value.key == "plugins.acme.url"


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read configuration file"):
        load_settings(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("transport = \n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="is malformed"):
        load_settings(bad)
    other = tmp_path / "settings.yaml"
    other.write_text("transport: memory\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"must end in \.toml, \.json or \.jsonp"):
        load_settings(other)
    array = tmp_path / "array.json"
    array.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="must hold a table/object"):
        load_settings(array)


def test_secrets_are_masked_in_repr_str_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(
        transport="memory://user:hunter2@localhost",
        plugins={"acme": {"password": "hunter2", "api_token": "t0k3n", "port": 1}},
    )
    for shown in (repr(settings), str(settings)):
        assert "hunter2" not in shown
        assert "t0k3n" not in shown
        assert "user:***@localhost" in shown
        assert "'port': 1" in shown
    assert settings.plugins["acme"]["password"] == "hunter2"  # the real value is kept
    assert mask_secrets({"url": "redis://:pw@h:6379/0?token=abc&db=1"}) == {
        "url": "redis://:***@h:6379/0?token=***&db=1"
    }
    with caplog.at_level(logging.INFO, logger="eventforge.config"):
        configure(plugins={"acme": {"secret": "s3cr3t-value"}})
    assert "eventforge configured" in caplog.text
    assert "s3cr3t-value" not in caplog.text


def test_connect_by_url_name_and_options() -> None:
    with connect("memory://?max_queue_size=10&overflow=drop_newest") as transport:
        assert isinstance(transport, MemoryTransport)
        assert (transport.max_queue_size, transport.overflow) == (10, "drop_newest")
    with connect("mem", max_queue_size=5) as transport:
        assert isinstance(transport, MemoryTransport)
        assert transport.max_queue_size == 5
    with eventforge.connect() as transport:
        assert isinstance(transport, MemoryTransport)
        assert transport.max_queue_size == 1000
    with connect("memory://?max_queue_size=2", max_queue_size=3) as transport:
        assert isinstance(transport, MemoryTransport)
        assert transport.max_queue_size == 3  # keyword options override the query


def test_connect_errors() -> None:
    with pytest.raises(ConfigurationError, match="Unknown transport URL scheme 'memroy://'"):
        connect("memroy://")
    with pytest.raises(ConfigurationError, match="unknown option 'size' in URL 'memory://"):
        connect("memory://?size=1")
    with pytest.raises(ConfigurationError, match="option max_queue_size='x' in URL"):
        connect("memory://?max_queue_size=x")
    with pytest.raises(ConfigurationError, match="name no host or path"):
        connect("memory://somehost")
    with pytest.raises(ConfigurationError, match="does not accept an option 'colour'"):
        connect("memory", colour="red")
    with pytest.raises(ConfigurationError, match="does not accept an option 'colour'"):
        connect("memory://", colour="red")  # from_url(**options) forwards to the class
    with pytest.raises(ConfigurationError) as info:
        connect("memory://admin:hunter2@somehost")
    assert "hunter2" not in str(info.value)


def test_configure_sets_the_default_and_reaches_plugins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    write_distribution(
        site,
        "acme-conf",
        entry_points={"acmeconf": "acme_conf_cfg"},
        modules={
            "acme_conf_cfg": """
                from eventforge import hookimpl
                seen = []

                @hookimpl
                def eventforge_configure(config):
                    seen.append(config)
            """
        },
    )
    monkeypatch.syspath_prepend(str(site))
    reset_registry(search_path=[str(site)])
    settings = configure(
        transport="memory", options={"max_queue_size": 12}, plugins={"acmeconf": {"a": 1}}
    )
    assert config.current_settings() == settings
    import acme_conf_cfg  # type: ignore[import-not-found]

    assert acme_conf_cfg.seen == [settings.model_dump()]
    with connect() as transport:
        assert isinstance(transport, MemoryTransport)
        assert transport.max_queue_size == 12


def test_connect_checks_what_the_plugin_produces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    write_distribution(
        site,
        "acme-odd",
        entry_points={"odd": "acme_odd_plugin"},
        modules={
            "acme_odd_plugin": """
                from eventforge import hookimpl
                from eventforge.plugins import TransportSpec

                class NotATransport:
                    def __init__(self, **options):
                        self.options = options

                @hookimpl
                def eventforge_transports():
                    return [TransportSpec(name="odd", target="acme_odd_plugin:NotATransport",
                                          schemes=("odd",))]
            """
        },
    )
    monkeypatch.syspath_prepend(str(site))
    reset_registry(search_path=[str(site)])
    with pytest.raises(ConfigurationError, match="produced NotATransport, not an eventforge"):
        connect("odd")
    with pytest.raises(ConfigurationError, match="does not read URLs"):
        connect("odd://host:1")


def test_startup_policy_from_keyword_arguments() -> None:
    from eventforge.queue.rendezvous import Barrier, FixedDelay, NoWait, PolicyChain

    assert load_settings().startup == "none"
    assert isinstance(load_settings().startup_policy(), NoWait)
    settings = load_settings(
        startup=["delay:0.25", {"policy": "barrier", "requires": {"worker": 3}, "timeout": 5}]
    )
    policy = settings.startup_policy()
    assert isinstance(policy, PolicyChain)
    delay, barrier = policy.policies
    assert isinstance(delay, FixedDelay)
    assert delay.seconds == 0.25
    assert isinstance(barrier, Barrier)
    assert (barrier.requires, barrier.timeout) == ({"worker": 3}, 5.0)


def test_startup_policy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from eventforge.queue.rendezvous import Barrier, FixedDelay

    monkeypatch.setenv("EVENTFORGE_STARTUP", "delay:1.5")
    policy = load_settings().startup_policy()
    assert isinstance(policy, FixedDelay)
    assert policy.seconds == 1.5
    # a barrier or a chain is written as JSON
    monkeypatch.setenv(
        "EVENTFORGE_STARTUP", '{"policy": "barrier", "roles": ["worker"], "requires": {"db": 1}}'
    )
    policy = load_settings().startup_policy()
    assert isinstance(policy, Barrier)
    assert (policy.roles, policy.requires) == (["worker"], {"db": 1})
    # keyword arguments win over the environment
    assert load_settings(startup="none").startup == "none"
    monkeypatch.setenv("EVENTFORGE_STARTUP", '{"policy": "barrier", ')
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert info.value.key == "startup"
    assert "(from environment variable EVENTFORGE_STARTUP): not valid JSON" in str(info.value)


def test_startup_policy_from_toml_and_json_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eventforge.queue.rendezvous import Barrier, NoWait, PolicyChain

    monkeypatch.setenv("EF_TEST_WORKERS_TIMEOUT", "12")
    path = tmp_path / "settings.toml"
    path.write_text(
        "[eventforge]\n"
        'transport = "memory"\n'
        "[eventforge.startup]\n"
        'policy = "barrier"\n'
        "requires = { worker = 3 }\n"
        'roles = ["controller"]\n',
        encoding="utf-8",
    )
    policy = load_settings(path).startup_policy()
    assert isinstance(policy, Barrier)
    assert (policy.requires, policy.roles) == ({"worker": 3}, ["controller"])
    json_path = tmp_path / "settings.json"
    json_path.write_text(json.dumps({"startup": ["none", "delay:${EF_TEST_WORKERS_TIMEOUT}"]}))
    monkeypatch.setenv("EVENTFORGE_CONFIG", str(json_path))
    chain = load_settings().startup_policy()
    assert isinstance(chain, PolicyChain)
    assert isinstance(chain.policies[0], NoWait)
    assert chain.policies[1].seconds == 12.0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("wait", "startup policy 'wait' is not valid"),
        ("delay:soon", "startup policy 'delay:soon' is not valid"),
        ("delay:-1", "delay must be a finite number of seconds >= 0"),
        ({"policy": "barrier"}, "a barrier needs 'requires'"),
        ({"policy": "barrier", "requires": {"worker": "3"}}, "maps role names to counts"),
        ({"policy": "barrier", "roles": "worker"}, "'roles' is a list of role names"),
        ({"policy": "barrier", "roles": ["w"], "timeout": "soon"}, "'timeout' is a number"),
        ({"policy": "barier", "roles": ["w"]}, "unknown startup policy 'barier'"),
        ({"policy": "chain"}, "a chain is {'policy': 'chain', 'steps': [...]}"),
        (["none", 3], "startup policy must be a name, a dict or a list, got int"),
    ],
)
def test_a_bad_startup_policy_is_refused_at_configuration_time(spec: object, expected: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_settings(startup=spec)
    assert info.value.key == "startup"
    assert str(info.value).startswith("invalid setting 'startup' (from keyword arguments): ")
    assert expected in str(info.value)


def test_a_bad_startup_policy_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "eventforge.toml"
    path.write_text('startup = "delay:later"\n', encoding="utf-8")
    with pytest.raises(ConfigurationError) as info:
        configure(path)
    assert info.value.key == "startup"
    assert f"invalid setting 'startup' (from {str(path)!r}): " in str(info.value)
    assert config.current_settings() is None  # nothing was configured


def test_the_configured_startup_policies_run_on_queues() -> None:
    from eventforge import MessageQueue

    worker_settings = load_settings(startup=["none", {"policy": "barrier", "roles": ["worker"]}])
    controller_settings = configure(
        startup={"policy": "barrier", "requires": {"worker": 1}, "timeout": 10}
    )
    impatient = load_settings(
        startup={"policy": "barrier", "requires": {"worker": 2}, "timeout": 0}
    )
    transport = MemoryTransport()
    try:
        with (
            MessageQueue(transport, close_transport=False) as worker,
            MessageQueue(transport, close_transport=False) as controller,
        ):
            assert worker_settings.startup_policy().run(worker) is True
            assert controller_settings.startup_policy().run(controller) is True
            assert impatient.startup_policy().run(controller) is False  # one worker of two
    finally:
        transport.close()


# -- objects that pick a transport themselves honour the configuration ------------------------


def test_message_queue_without_a_transport_uses_the_environment_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EVENTFORGE_TRANSPORT", "memory://?max_queue_size=7")
    with eventforge.MessageQueue() as queue:
        assert isinstance(queue.transport, MemoryTransport)
        assert queue.transport.max_queue_size == 7, "EVENTFORGE_TRANSPORT was ignored"


def test_service_without_a_transport_uses_the_environment_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EVENTFORGE_TRANSPORT", "memory://?max_queue_size=13")
    seen: list[object] = []
    svc = Service("billing")

    @svc.on("invoices.*")
    def record(message: eventforge.Message) -> None:
        seen.append(message.payload)

    with svc:
        assert isinstance(svc.queue.transport, MemoryTransport)
        assert svc.queue.transport.max_queue_size == 13, "EVENTFORGE_TRANSPORT was ignored"
        svc.queue.publish("invoices.paid", 1)
        assert wait_until(lambda: seen == [1])
    monkeypatch.setenv("EVENTFORGE_TRANSPORT", "memroy")
    with pytest.raises(ConfigurationError, match="EVENTFORGE_TRANSPORT"):
        Service("billing").start()  # never falls back to in-process delivery


def test_message_queue_without_a_transport_uses_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "eventforge.json"
    path.write_text(json.dumps({"transport": "memory", "options": {"max_queue_size": 9}}))
    monkeypatch.setenv("EVENTFORGE_CONFIG", str(path))
    with eventforge.MessageQueue() as queue:
        assert queue.transport.max_queue_size == 9  # type: ignore[attr-defined]


def test_message_queue_and_work_queue_use_what_configure_set() -> None:
    configure(transport="memory", options={"max_queue_size": 11})
    with eventforge.MessageQueue() as queue:
        assert queue.transport.max_queue_size == 11  # type: ignore[attr-defined]
    with eventforge.WorkQueue("jobs") as jobs:
        jobs.put("x")  # a configured memory transport keeps the in-process backend
        assert jobs.backend.__class__.__name__ == "MemoryWorkQueueBackend"


def test_with_nothing_configured_the_default_is_a_fresh_memory_transport() -> None:
    assert config.configured_transport() is None
    with eventforge.MessageQueue() as first, eventforge.MessageQueue() as second:
        assert isinstance(first.transport, MemoryTransport)
        assert first.transport is not second.transport
        assert first.transport.max_queue_size == MemoryTransport().max_queue_size


def test_a_bad_environment_transport_fails_the_queue_instead_of_going_in_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EVENTFORGE_TRANSPORT", "memroy")
    with pytest.raises(ConfigurationError, match="EVENTFORGE_TRANSPORT"):
        eventforge.MessageQueue()
    with pytest.raises(ConfigurationError, match="EVENTFORGE_TRANSPORT"):
        eventforge.WorkQueue("jobs")
