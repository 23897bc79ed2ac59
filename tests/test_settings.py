"""The Setting table's keys are declared once, with their types: an unknown
key or a value of the wrong type is refused at the call, on a real database."""

import pytest

from agent.store import settings
from agent.config import load_config
from agent.store.db import Setting
from agent.store.schema import open_db
from tests.helpers import Box


@pytest.fixture
def config(tmp_path):
    cfg = load_config(Box(tmp_path, "http://127.0.0.1:9",
                          extra="[schedule]\nenabled = no\ntime_utc = 04:45\n\n"
                                                          "[sync]\ndirection = both\n").config)
    open_db(cfg.agent.database)
    return cfg


def test_defaults_come_from_the_declaration_and_the_config(config):
    assert settings.preferences(config) == {
        "sync_enabled": True, "schedule_enabled": False, "schedule_time_utc": "04:45",
        "notify_enabled": False, "notify_email": None, "force_next": False,
        "sync_direction": "both"}
    assert settings.state(config) == {
        "token_rejected": False, "site_name": None, "site_url": None, "moodle_release": None,
        "rights_refused": None, "server_rights": None, "box_rights": None, "box_site_name": None, "box_reachable": None, "box_down_since": None,
        "schedule_last_slot": None, "agent_process": None}
    assert settings.get(config, "password_hash") is None


def test_stored_values_are_read_back_by_kind(config):
    settings.put(schedule_time_utc="21:15", site_name="School", agent_process=[123, 1.5e9],
                 password_hash="pbkdf2$x")
    assert settings.preferences(config)["schedule_time_utc"] == "21:15"
    assert settings.state(config)["site_name"] == "School"
    assert settings.get(config, "agent_process") == [123, 1.5e9]
    # The hash is neither a preference nor state: the page's values never carry it.
    assert "password_hash" not in settings.preferences(config) | settings.state(config)
    assert settings.get(config, "password_hash") == "pbkdf2$x"


def test_unknown_key_is_an_error_not_none(config):
    with pytest.raises(KeyError, match="sync_enabeld"):
        settings.get(config, "sync_enabeld")
    with pytest.raises(KeyError, match="sync_enabeld"):
        settings.put(notify_enabled=True, sync_enabeld=False)
    assert Setting.select().count() == 0  # nothing of the refused call was stored


@pytest.mark.parametrize("values", [
    {"sync_enabled": "yes"},
    {"sync_enabled": 1},  # a number is not a flag
    {"token_rejected": None},  # a flag is never unset
    {"schedule_time_utc": None},
    {"notify_email": 5},
    {"site_name": True},
    {"agent_process": "123"},
])
def test_value_of_the_wrong_type_is_refused(config, values):
    (key,) = values
    with pytest.raises(TypeError, match=key):
        settings.put(force_next=True, **values)
    assert Setting.select().count() == 0


def test_none_clears_an_optional_value(config):
    settings.put(notify_email="head@school.example")
    settings.put(notify_email=None)
    assert settings.get(config, "notify_email") is None
