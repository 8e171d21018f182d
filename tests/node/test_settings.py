"""settings.toml: the shipped file is valid, overrides work, and every mistake names its key and file."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from node.settings import SettingsError, load_settings, mask_url

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_settings_file_is_valid_and_matches_model_defaults() -> None:
    """The commented settings.toml in the repo loads and equals the built-in defaults."""
    from node.settings import Settings

    loaded = load_settings(REPO / "settings.toml", environ={})
    assert loaded.node.ae_title == "MYONODE" and loaded.node.port == 11112
    defaults = Settings()
    assert loaded.protocol == defaults.protocol
    assert loaded.visits == defaults.visits
    assert loaded.storage.database_url == f"sqlite:///{REPO / 'var' / 'myonode.db'}"


def test_the_shipped_settings_process_visits_only_in_worker_processes_never_in_serves_threads() -> None:
    """Processing in threads of serve held the GIL the listener, the indexer and the console need (#27)."""
    for path in (REPO / "settings.toml", REPO / "deploy" / "production.settings.toml"):
        queue = tomllib.loads(path.read_text())["queue"]
        assert queue["workers"] == 0 and queue["processes"] >= 1, path


def test_relative_paths_resolve_against_settings_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Paths and SQLite URLs do not depend on the working directory."""
    path = _write(tmp_path, '[storage]\nroot = "data"\ndatabase_url = "sqlite:///db/x.db"\n[report]\nout = "rep"\n')
    monkeypatch.chdir("/")
    s = load_settings(path, environ={})
    assert s.storage.root == tmp_path / "data"
    assert s.storage.database_url == f"sqlite:///{tmp_path / 'db' / 'x.db'}"
    assert s.report.out == tmp_path / "rep"
    assert s.queue.url == f"sqlite:///{tmp_path / 'var' / 'queue.db'}"


def test_environment_overrides_any_key(tmp_path: Path) -> None:
    """MYONODE_<SECTION>__<KEY> overrides the file; values are typed like TOML."""
    path = _write(tmp_path, "[node]\nport = 104\n")
    env = {
        "MYONODE_NODE__PORT": "11113",
        "MYONODE_NODE__ALLOWED_CALLING_AE_TITLES": '["PHILIPS_MR", "STORESCU"]',
        "MYONODE_NODE__TLS_VERIFY_CLIENT": "false",
        "MYONODE_QUEUE__BACKEND": "redis",
        "MYONODE_QUEUE__URL": "redis://127.0.0.1:6379/0",
        "MYONODE_PROTOCOL__STABLE_AGE_S": "5",
        "OTHER_VARIABLE": "ignored",
    }
    s = load_settings(path, environ=env)
    assert s.node.port == 11113
    assert s.node.allowed_calling_ae_titles == ["PHILIPS_MR", "STORESCU"]
    assert s.queue.backend == "redis" and s.protocol.stable_age_s == 5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[node]\nport = 70000\n", r"\[node\] port: Input should be less than or equal to 65535 \(got 70000\)"),
        ("[node]\nprot = 11112\n", r"\[node\] prot: unknown key"),
        ("[nodes]\nport = 1\n", r"\[nodes\]: unknown section"),
        ('[node]\nae_title = "A_TITLE_LONGER_THAN_16"\n', r"\[node\] ae_title: String should have at most 16"),
        ('[node]\nallowed_hosts = ["10.0.0.0/8", "scanner.local"]\n', r"allowed_hosts: .*'scanner.local' is not an IP"),
        ('[node]\ntls_cert = "a.pem"\n', r"tls_cert and tls_key must be given together"),
        ('[queue]\nbackend = "rabbit"\n', r"\[queue\] backend: Input should be 'sqlite' or 'redis'"),
        ('[queue]\nbackend = "redis"\n', r"backend 'redis' needs a URL starting with redis://"),
        ('[schedule]\ncohort_report = "every night"\n', r"cohort_report: .*not a 5-field cron"),
        ('[[protocol.rules]]\nkind = "t2"\ndescription = "(unclosed"\n', r"description: .*invalid regular expression"),
        ('[storage]\ndatabase_url = "not a url"\n', r"database_url: .*not a database URL"),
        (
            '[[visits.windows]]\nlabel = "baseline"\nmin_days = 0\nmax_days = 10\n'
            '[[visits.windows]]\nlabel = "m4"\nmin_days = 5\nmax_days = 100\n',
            r"visits 'baseline' and 'm4' overlap",
        ),
    ],
)
def test_bad_value_names_key_and_file(tmp_path: Path, text: str, expected: str) -> None:
    """A wrong key or value fails at load with the file path and the key in the message."""
    path = _write(tmp_path, text)
    with pytest.raises(SettingsError) as info:
        load_settings(path, environ={})
    message = str(info.value)
    assert str(path) in message
    assert re.search(expected, message), message


def test_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    path = _write(tmp_path, "")
    with pytest.raises(SettingsError, match=r"environment variable MYONODE_NODE__MAX_ASSOCIATIONS: \[node\] max_associations"):
        load_settings(path, environ={"MYONODE_NODE__MAX_ASSOCIATIONS": "many"})
    with pytest.raises(SettingsError, match=r"MYONODE_PORT: expected MYONODE_<SECTION>__<KEY>"):
        load_settings(path, environ={"MYONODE_PORT": "1"})


def test_broken_toml_and_missing_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "[node\nport = 1\n")
    with pytest.raises(SettingsError, match=rf"{path}: not valid TOML"):
        load_settings(path, environ={})
    with pytest.raises(SettingsError, match="settings file not found"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_secrets_masked() -> None:
    assert mask_url("postgresql+psycopg://myonode:s3cret@db:5432/x") == "postgresql+psycopg://myonode:***@db:5432/x"
    assert mask_url("redis://:pw@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert mask_url("sqlite:////var/x.db") == "sqlite:////var/x.db"


def test_masked_effective_settings_hide_database_password(tmp_path: Path) -> None:
    path = _write(tmp_path, '[storage]\ndatabase_url = "postgresql+psycopg://u:topsecret@h/db"\n')
    shown = load_settings(path, environ={}).masked()
    assert "topsecret" not in repr(shown) and shown["storage"]["database_url"].endswith("u:***@h/db")


def test_host_allow_list_matches_networks_and_addresses(tmp_path: Path) -> None:
    """Allow-lists match networks and single addresses; anything else is refused."""
    s = load_settings(_write(tmp_path, '[node]\nallowed_hosts = ["10.1.0.0/16", "127.0.0.1"]\n'), environ={})
    assert s.node.host_allowed("10.1.2.3") and s.node.host_allowed("127.0.0.1")
    assert not s.node.host_allowed("10.2.0.1")


def test_accept_takes_all_or_named_sop_classes_and_refuses_unknown_names(tmp_path: Path) -> None:
    """[node] accept: "all" by default; keywords resolve to UIDs; an unknown name is refused naming it."""
    assert load_settings(_write(tmp_path, ""), environ={}).node.accept == "all"
    strict = load_settings(_write(tmp_path, '[node]\naccept = ["MRImageStorage", "1.2.840.10008.5.1.4.1.1.4.1"]\n'),
                           environ={})
    assert strict.node.accept == ["1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.4.1"]
    with pytest.raises(SettingsError, match="NotAStorageClass"):
        load_settings(_write(tmp_path, '[node]\naccept = ["NotAStorageClass"]\n'), environ={})


def test_visit_assignment_from_days_and_time_point(tmp_path: Path) -> None:
    """Days since baseline map to the group's visit window; Clinical Trial Time Point IDs map by name."""
    v = load_settings(REPO / "settings.toml", environ={}).visits
    assert v.baseline == "baseline"
    assert v.label_for_days(0, "patient") == "baseline"
    assert v.label_for_days(133, "patient") == "m4"  # the paper's median 19 weeks
    assert v.label_for_days(385, "patient") == "m12"  # 55 weeks
    assert v.label_for_days(203, "control") == "m6"  # 29 weeks
    assert v.label_for_days(203, "patient") is None  # between windows: not guessed
    assert v.label_for_days(133, "control") == "m6"
    assert v.label_for_time_point("m12") == "m12" and v.label_for_time_point(" V1 ") == "m4"
    assert v.label_for_time_point("screening") is None


def test_example_production_settings_are_valid() -> None:
    """deploy/production.settings.toml stays loadable as the settings model evolves."""
    s = load_settings(REPO / "deploy" / "production.settings.toml", environ={})
    assert s.queue.backend == "redis" and s.node.tls_verify_client
    assert s.storage.database_url.startswith("postgresql+psycopg://")
    assert [d.ae_title for d in s.qr.move_destinations] == ["PACS", "RESEARCH_WS"]


def test_test_suite_variables_are_not_settings(tmp_path: Path) -> None:
    """MYONODE_TEST_* (used by `make test`) never reach the settings; other stray MYONODE_ names fail."""
    path = _write(tmp_path, "")
    s = load_settings(path, environ={"MYONODE_TEST_REQUIRE": "postgres,redis", "MYONODE_TEST_POSTGRES_URL": "x"})
    assert s.node.port == 11112
