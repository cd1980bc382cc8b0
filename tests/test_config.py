"""NotifiedConfig: the environment is read at construction, explicit arguments win, bad values are named."""

from __future__ import annotations

import importlib

import pytest
import sqlalchemy as sa

from notified_sa import ConfigError, NotifiedConfig


def test_defaults() -> None:
    c = NotifiedConfig()
    assert (c.events_table, c.id_field, c.channel_select_timeout) == ("events", "id", 5.0)
    assert (c.pool_size, c.claim_batch_size, c.max_attempts) == (10, 100, 5)
    assert (c.backoff_base, c.backoff_cap, c.lease_seconds, c.shutdown_timeout, c.poll_only) == (
        1.0,
        300.0,
        30.0,
        30.0,
        False,
    )
    assert NotifiedConfig.defaults() == c


def test_environment_is_read_when_built_not_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    import notified_sa.config as config_module

    importlib.reload(config_module)  # importing with no variables set...
    monkeypatch.setenv("NOTIFIED_EVENTS_TABLE_NAME", "my_events")
    monkeypatch.setenv("NOTIFIED_ID_FIELD_NAME", "pk")
    monkeypatch.setenv("NOTIFIED_CHANNEL_SELECT_TIMEOUT", "10")
    monkeypatch.setenv("NOTIFIED_POOL_SIZE", "3")
    monkeypatch.setenv("NOTIFIED_CLAIM_BATCH_SIZE", "50")
    monkeypatch.setenv("NOTIFIED_MAX_ATTEMPTS", "7")
    monkeypatch.setenv("NOTIFIED_BACKOFF_BASE", "0.5")
    monkeypatch.setenv("NOTIFIED_BACKOFF_CAP", "60")
    monkeypatch.setenv("NOTIFIED_LEASE_SECONDS", "12.5")
    monkeypatch.setenv("NOTIFIED_SHUTDOWN_TIMEOUT", "4")
    monkeypatch.setenv("NOTIFIED_POLL_ONLY", "yes")
    monkeypatch.setenv("NOTIFIED_EVENTS_SCHEMA", "app")
    c = config_module.NotifiedConfig()  # ...then building: the variables count
    assert (c.events_table, c.id_field, c.channel_select_timeout, c.events_schema) == ("my_events", "pk", 10.0, "app")
    assert (c.pool_size, c.claim_batch_size, c.max_attempts) == (3, 50, 7)
    assert (c.backoff_base, c.backoff_cap, c.lease_seconds, c.shutdown_timeout, c.poll_only) == (
        0.5,
        60.0,
        12.5,
        4.0,
        True,
    )


def test_explicit_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFIED_EVENTS_TABLE_NAME", "from_env")
    monkeypatch.setenv("NOTIFIED_POOL_SIZE", "3")
    c = NotifiedConfig(events_table="explicit", pool_size=8)
    assert (c.events_table, c.pool_size) == ("explicit", 8)
    monkeypatch.setenv("NOTIFIED_POOL_SIZE", "not a number")
    assert NotifiedConfig(pool_size=2).pool_size == 2  # an explicit value means the variable is not even read


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("NOTIFIED_POOL_SIZE", "abc"),
        ("NOTIFIED_POOL_SIZE", "0"),
        ("NOTIFIED_CHANNEL_SELECT_TIMEOUT", "-1"),
        ("NOTIFIED_CHANNEL_SELECT_TIMEOUT", "nan"),
        ("NOTIFIED_MAX_ATTEMPTS", "2.5"),
        ("NOTIFIED_POLL_ONLY", "perhaps"),
        ("NOTIFIED_EVENTS_TABLE_NAME", "x" * 64),
        ("NOTIFIED_LEASE_SECONDS", "0"),
    ],
)
def test_invalid_environment_values_name_the_variable_and_value(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        NotifiedConfig()
    assert var in str(info.value) and repr(value) in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"pool_size": 0}, "pool_size"),
        ({"pool_size": True}, "pool_size"),
        ({"claim_batch_size": "10"}, "claim_batch_size"),
        ({"channel_select_timeout": 0}, "channel_select_timeout"),
        ({"backoff_base": 10.0, "backoff_cap": 1.0}, "backoff_cap"),
        ({"id_field": ""}, "id_field"),
        ({"shutdown_timeout": float("inf")}, "shutdown_timeout"),
    ],
)
def test_invalid_arguments_name_the_argument(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        NotifiedConfig(**kwargs)  # type: ignore[arg-type]


def test_replace_validates_and_config_is_immutable() -> None:
    c = NotifiedConfig()
    assert c.replace(pool_size=2).pool_size == 2
    with pytest.raises(ConfigError):
        c.replace(pool_size=-1)
    with pytest.raises(AttributeError):
        c.pool_size = 3  # type: ignore[misc]
    assert NotifiedConfig.environment_variables()["pool_size"] == "NOTIFIED_POOL_SIZE"


@pytest.mark.parametrize(
    ("kwargs", "rule"),
    [
        ({"lease_seconds": 1e13}, "a number of seconds from 0.1 to 604,800 (7 days)"),
        ({"pool_size": 10**20}, "a whole number from 1 to 10,000"),
        ({"claim_batch_size": 10_001}, "a whole number from 1 to 10,000"),
        ({"prefetch": -1}, "a whole number from 0 to 10,000"),
        ({"max_attempts": 2**31}, "a whole number from 1 to 2,147,483,647"),
        ({"backoff_base": 1e300, "backoff_cap": 1e300}, "a number of seconds from 0 to 31,536,000 (365 days)"),
        ({"backoff_cap": 1e12}, "to 31,536,000 (365 days), and >= backoff_base"),
        ({"channel_select_timeout": 1e9}, "a number of seconds more than 0 to 86,400 (1 day)"),
        ({"shutdown_timeout": 1e7}, "to 86,400 (1 day)"),
        ({"handler_grace": 1e10}, "to 31,536,000 (365 days)"),
        ({"succeeded_retention": 1e12}, "to 315,360,000 (3650 days)"),
    ],
)
def test_values_that_cannot_work_are_refused_with_the_rule(kwargs: dict[str, object], rule: str) -> None:
    """Upper bounds: what PostgreSQL cannot represent once added to now() (a lease of 1e13 s made every claim
    fail), what would not fit the attempts column, and thread or statement sizes that cannot work."""
    field = next(iter(kwargs))
    with pytest.raises(ConfigError) as info:
        NotifiedConfig(**kwargs)  # type: ignore[arg-type]
    assert f"NotifiedConfig({field}=" in str(info.value) and rule in str(info.value)


def test_the_largest_allowed_values_work_with_postgresql(engine: sa.Engine) -> None:
    """The bounds are ones PostgreSQL takes: the largest lease, backoff and retention added to now()."""
    conf = NotifiedConfig(lease_seconds=7 * 86_400, backoff_cap=365 * 86_400, succeeded_retention=3650 * 86_400)
    with engine.connect() as conn:
        for seconds in (conf.lease_seconds, conf.backoff_cap, conf.succeeded_retention):
            assert conn.execute(sa.text("SELECT now() + :s * interval '1 second' > now()"), {"s": seconds}).scalar()
    assert NotifiedConfig(max_attempts=2_147_483_647, prefetch=0).prefetch == 0
