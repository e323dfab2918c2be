"""Tests for callpulse.config: defaults, the example file, inheritance, env overrides, errors."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import pickle
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
try:
    import callpulse  # noqa: F401  (installed, or put on the path by a conftest)
except ImportError:  # running from a plain checkout
    sys.path.insert(0, str(ROOT / "streams"))

from callpulse.config import (  # noqa: E402
    ENV_OVERRIDES,
    FORMULAS,
    Config,
    ConfigError,
    KafkaConfig,
    QueueConfig,
    StreamConfig,
    load_config,
)

EXAMPLE = ROOT / "deploy" / "callpulse.example.toml"


def write(tmp_path: Path, text: str, name: str = "callpulse.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    return load_config(write(tmp_path, text), env=env or {})


# ---------------------------------------------------------------------------------------------
# Defaults
# ---------------------------------------------------------------------------------------------


def test_defaults_without_file():
    cfg = load_config(env={})
    assert cfg == Config()
    assert cfg.kafka == KafkaConfig()
    assert cfg.kafka.bootstrap_servers == "localhost:9092"
    assert cfg.kafka.security_protocol == "PLAINTEXT"
    assert cfg.kafka.sasl_mechanism is None
    assert (cfg.kafka.topic_events, cfg.kafka.topic_batches, cfg.kafka.topic_dead_letter) == (
        "callpulse-events",
        "callpulse-queue-batches",
        "callpulse-dead-letter",
    )
    assert (cfg.kafka.partitions, cfg.kafka.replication_factor) == (4, 1)
    assert cfg.stream == StreamConfig()
    assert cfg.stream.app_id == "callpulse"
    assert (cfg.stream.web_host, cfg.stream.web_port) == ("0.0.0.0", 6066)
    assert cfg.stream.lateness_seconds == 60.0
    assert cfg.stream.max_future_seconds == 300.0
    assert (cfg.stream.batch_max_events, cfg.stream.batch_max_seconds) == (1000, 0.05)
    assert cfg.stream.snapshot_interval_seconds == 30.0
    assert cfg.stream.data_dir == "var/callpulse"

    d = cfg.queue_defaults
    assert (d.name, d.label) == ("*", "*")
    assert d.thresholds_seconds == (10.0, 20.0)
    assert d.targets == (0.8, 0.8)
    assert d.formula == "SL-C"
    assert d.short_abandon_seconds == 5.0
    assert d.timezone == "UTC"
    assert d.business_day_start == datetime.time(0, 0)
    assert d.orphan_after_seconds == 3600.0
    assert dict(cfg.queues) == {}


def test_unconfigured_queue_is_defaults_with_its_name_and_is_cached():
    cfg = load_config(env={})
    q = cfg.queue("support")
    assert (q.name, q.label) == ("support", "support")
    assert dataclasses.replace(q, name="*", label="*") == cfg.queue_defaults
    assert cfg.queue("support") is q


def test_config_objects_are_frozen_and_queues_read_only():
    cfg = load_config(EXAMPLE, env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.stream.web_port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.queues["new"] = cfg.queue_defaults  # type: ignore[index]
    with pytest.raises(TypeError):
        cfg.queues.pop("sales")  # type: ignore[attr-defined]


def test_config_survives_pickle_deepcopy_and_asdict():
    cfg = load_config(EXAMPLE, env={})
    cfg.queue("unlisted")  # fill the cache: it must not leak into copies or comparisons
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert copy.deepcopy(cfg) == cfg
    data = dataclasses.asdict(cfg)
    assert set(data) == {"kafka", "stream", "queue_defaults", "queues", "agents"}
    assert data["queues"]["sales"]["label"] == "Продажи"
    changed = dataclasses.replace(cfg, stream=StreamConfig(web_port=1))
    assert changed.queue("sales").formula == "SL-B"


def test_queue_config_constructed_directly_is_normalized_and_validated():
    q = QueueConfig(name="q", thresholds_seconds=[5, 15, 30], business_day_start="6:30")
    assert q.label == "q"
    assert q.thresholds_seconds == (5.0, 15.0, 30.0)
    assert q.targets == (0.8, 0.8, 0.8)
    assert q.business_day_start == datetime.time(6, 30)
    assert q.tzinfo.key == "UTC"
    assert hash(q) == hash(QueueConfig(name="q", thresholds_seconds=(5.0, 15.0, 30.0),
                                       business_day_start=datetime.time(6, 30)))
    with pytest.raises(ConfigError, match=r"^queues\.q\.thresholds_seconds\[1\]: must be > 0"):
        QueueConfig(name="q", thresholds_seconds=(10, -5))
    with pytest.raises(ConfigError, match=r"^queues\.q\.targets: must have one target per"):
        QueueConfig(name="q", thresholds_seconds=(10, 20, 30), targets=(0.8, 0.8))


def test_target_for():
    q = QueueConfig(name="q", thresholds_seconds=(10, 20, 30), targets=(0.7, 0.8, 0.9))
    assert q.target_for(10) == 0.7
    assert q.target_for(20.0) == 0.8
    assert q.target_for(30) == 0.9
    with pytest.raises(KeyError, match="no threshold 15"):
        q.target_for(15)


# ---------------------------------------------------------------------------------------------
# The example file
# ---------------------------------------------------------------------------------------------


def test_example_file_loads_with_expected_queues():
    cfg = load_config(EXAMPLE, env={})
    assert list(cfg.queues) == ["sales", "客服"]

    sales = cfg.queue("sales")
    assert sales is cfg.queues["sales"]
    assert sales.label == "Продажи"
    assert sales.timezone == "Europe/Moscow"
    assert sales.thresholds_seconds == (10.0, 20.0, 30.0)
    assert sales.targets == (0.7, 0.8, 0.9)
    assert sales.formula == "SL-B"
    assert sales.business_day_start == datetime.time(0, 0)  # inherited
    assert sales.short_abandon_seconds == 5.0  # inherited

    cs = cfg.queue("客服")
    assert cs.label == "客户服务"
    assert cs.timezone == "Asia/Shanghai"
    assert cs.business_day_start == datetime.time(8, 0)
    assert cs.thresholds_seconds == (10.0, 20.0)  # inherited
    assert cs.targets == (0.8, 0.8)
    assert cs.formula == "SL-C"
    assert cs.tzinfo.utcoffset(datetime.datetime(2024, 1, 1)) == datetime.timedelta(hours=8)

    assert cfg.all_thresholds() == (5.0, 10.0, 20.0, 30.0)


def test_example_file_shows_every_key_at_its_default():
    cfg = load_config(EXAMPLE, env={})
    assert cfg.kafka == KafkaConfig()
    assert cfg.stream == StreamConfig()
    assert cfg.queue_defaults == QueueConfig(name="*")

    text = EXAMPLE.read_text(encoding="utf-8")
    data = tomllib.loads(text)
    assert set(data["stream"]) == {f.name for f in dataclasses.fields(StreamConfig)}
    queue_keys = {f.name for f in dataclasses.fields(QueueConfig)} - {"name", "label"}
    assert set(data["queue_defaults"]) == queue_keys
    # Keys without a default value (None) are shown commented out.
    for f in dataclasses.fields(KafkaConfig):
        if f.default is None:
            assert re.search(rf"^# {f.name} = ", text, re.M), f.name
        else:
            assert f.name in data["kafka"], f.name
    # Every formula is explained in one line, every env override is mentioned.
    for formula in FORMULAS:
        assert re.search(rf"^#\s+{formula}\s+\S", text, re.M), formula
    for env_name in ENV_OVERRIDES:
        assert env_name in text, env_name
    assert "CALLPULSE_CONFIG" in text


def test_config_path_from_env_and_path_argument_wins(tmp_path):
    other = write(tmp_path, "[stream]\nweb_port = 7000\n", "other.toml")
    cfg = load_config(env={"CALLPULSE_CONFIG": str(EXAMPLE)})
    assert "sales" in cfg.queues
    cfg = load_config(other, env={"CALLPULSE_CONFIG": str(EXAMPLE)})
    assert cfg.stream.web_port == 7000
    assert dict(cfg.queues) == {}
    assert load_config(env={"CALLPULSE_CONFIG": "  "}) == Config()


def test_accepts_pathlike_bom_and_native_toml_time(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf[queue_defaults]\nbusiness_day_start = 06:15:00\n")
    cfg = load_config(path, env={})
    assert cfg.queue_defaults.business_day_start == datetime.time(6, 15)


# ---------------------------------------------------------------------------------------------
# Inheritance and targets
# ---------------------------------------------------------------------------------------------

INHERIT = """
[queue_defaults]
thresholds_seconds = [15, 30]
targets = 0.9
formula = "SL-A"
short_abandon_seconds = 3
timezone = "Europe/Berlin"
business_day_start = "06:00"
orphan_after_seconds = 7200

[queues.only_label]
label = "Nur ein Name"

[queues.new_thresholds]
thresholds_seconds = [5, 10, 60]

[queues.new_targets]
targets = [0.5, 0.95]

[queues.table_targets]
thresholds_seconds = [10, 20]
targets = { "20" = 0.85, "10.0" = 0.75 }

[queues.no_short]
short_abandon_seconds = 0
formula = "sl-g"
"""


def test_queues_inherit_unset_keys_from_queue_defaults(tmp_path):
    cfg = load_text(tmp_path, INHERIT)
    d = cfg.queue_defaults
    assert d.thresholds_seconds == (15.0, 30.0)
    assert d.targets == (0.9, 0.9)

    q = cfg.queue("only_label")
    assert q.label == "Nur ein Name"
    assert q.thresholds_seconds == (15.0, 30.0)
    assert q.targets == (0.9, 0.9)
    assert q.formula == "SL-A"
    assert q.short_abandon_seconds == 3.0
    assert q.timezone == "Europe/Berlin"
    assert q.business_day_start == datetime.time(6, 0)
    assert q.orphan_after_seconds == 7200.0

    q = cfg.queue("new_thresholds")
    assert q.label == "new_thresholds"
    assert q.thresholds_seconds == (5.0, 10.0, 60.0)
    assert q.targets == (0.8, 0.8, 0.8)  # thresholds overridden, targets not: 0.8 each
    assert q.formula == "SL-A"

    q = cfg.queue("new_targets")
    assert q.thresholds_seconds == (15.0, 30.0)
    assert q.targets == (0.5, 0.95)
    assert q.target_for(30) == 0.95

    q = cfg.queue("table_targets")
    assert q.targets == (0.75, 0.85)

    q = cfg.queue("no_short")
    assert q.formula == "SL-G"
    assert q.short_abandon_seconds == 0.0

    unknown = cfg.queue("not-in-file")
    assert unknown.formula == "SL-A"
    assert unknown.timezone == "Europe/Berlin"


def test_all_thresholds_is_sorted_union_with_short_abandons(tmp_path):
    cfg = load_text(tmp_path, INHERIT)
    # 15, 30 (defaults); 5, 10, 60; 10, 20; short abandons 3 (0 is left out: no bucket at 0 s)
    assert cfg.all_thresholds() == (3.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0)
    assert load_config(env={}).all_thresholds() == (5.0, 10.0, 20.0)


# ---------------------------------------------------------------------------------------------
# Environment overrides
# ---------------------------------------------------------------------------------------------

FILE_FOR_ENV = """
[kafka]
bootstrap_servers = "file:9092"
topic_events = "file-events"
partitions = 2

[stream]
web_port = 7000
app_id = "from-file"
lateness_seconds = 30
"""


def test_env_beats_file(tmp_path):
    env = {
        "CALLPULSE_KAFKA_BOOTSTRAP_SERVERS": "k1:9093, k2:9093",
        "CALLPULSE_TOPIC_EVENTS": "env-events",
        "CALLPULSE_PARTITIONS": "12",
        "CALLPULSE_WEB_PORT": " 8000 ",
        "CALLPULSE_LATENESS_SECONDS": "90.5",
        "CALLPULSE_APP_ID": "",  # empty counts as unset
    }
    cfg = load_text(tmp_path, FILE_FOR_ENV, env)
    assert cfg.kafka.bootstrap_servers == "k1:9093,k2:9093"
    assert cfg.kafka.topic_events == "env-events"
    assert cfg.kafka.partitions == 12
    assert cfg.stream.web_port == 8000
    assert cfg.stream.lateness_seconds == 90.5
    assert cfg.stream.app_id == "from-file"


def test_every_env_override_reaches_its_field():
    env = {
        "CALLPULSE_KAFKA_BOOTSTRAP_SERVERS": "broker:9094",
        "CALLPULSE_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "CALLPULSE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "CALLPULSE_KAFKA_SASL_USERNAME": "cp",
        "CALLPULSE_KAFKA_SASL_PASSWORD": " s3cret ",
        "CALLPULSE_KAFKA_SSL_CAFILE": "/ca.pem",
        "CALLPULSE_KAFKA_SSL_CERTFILE": "/cert.pem",
        "CALLPULSE_KAFKA_SSL_KEYFILE": "/key.pem",
        "CALLPULSE_TOPIC_EVENTS": "ev",
        "CALLPULSE_TOPIC_BATCHES": "ba",
        "CALLPULSE_TOPIC_DEAD_LETTER": "dl",
        "CALLPULSE_TOPIC_INTERVALS": "iv",
        "CALLPULSE_TOPIC_AGENT_INTERVALS": "ai",
        "CALLPULSE_PARTITIONS": "8",
        "CALLPULSE_REPLICATION_FACTOR": "3",
        "CALLPULSE_APP_ID": "cp-prod",
        "CALLPULSE_WEB_HOST": "127.0.0.1",
        "CALLPULSE_WEB_PORT": "9100",
        "CALLPULSE_LATENESS_SECONDS": "120",
        "CALLPULSE_DEDUP_SECONDS": "900",
        "CALLPULSE_DATA_DIR": "/var/lib/callpulse",
        "CALLPULSE_FORECAST_FILE": "/etc/callpulse/forecast.csv",
        "CALLPULSE_DEAD_LETTER_MASK_CALLERS": "true",
        "CALLPULSE_EXPORT_AGENT_METRICS": "yes",
        "CALLPULSE_AGENT_METRICS_LIMIT": "50",
        "CALLPULSE_CALLER_HASH_KEY": "k3y-0123456789abcdef",
    }
    assert set(env) == set(ENV_OVERRIDES)
    cfg = load_config(env=env)
    k, s = cfg.kafka, cfg.stream
    assert k.bootstrap_servers == "broker:9094"
    assert k.security_protocol == "SASL_SSL"
    assert (k.sasl_mechanism, k.sasl_username) == ("SCRAM-SHA-512", "cp")
    assert k.sasl_password == " s3cret "  # secrets are taken verbatim, not stripped
    assert (k.ssl_cafile, k.ssl_certfile, k.ssl_keyfile) == ("/ca.pem", "/cert.pem", "/key.pem")
    assert (k.topic_events, k.topic_batches, k.topic_dead_letter, k.topic_intervals) == ("ev", "ba", "dl", "iv")
    assert k.topic_agent_intervals == "ai"
    assert s.caller_hash_key == "k3y-0123456789abcdef" and "k3y" not in repr(cfg)
    assert (k.partitions, k.replication_factor) == (8, 3)
    assert (s.app_id, s.web_host, s.web_port) == ("cp-prod", "127.0.0.1", 9100)
    assert s.lateness_seconds == 120.0
    assert s.dedup_seconds == 900.0
    assert s.data_dir == "/var/lib/callpulse"
    assert s.forecast_file == "/etc/callpulse/forecast.csv"
    assert s.dead_letter_mask_callers is True
    assert (s.export_agent_metrics, s.agent_metrics_limit) == (True, 50)


def test_dead_letter_masking_is_off_by_default_and_set_by_file_or_env(tmp_path):
    assert StreamConfig().dead_letter_mask_callers is False
    assert load_config(env={}).stream.dead_letter_mask_callers is False
    assert load_text(tmp_path, "[stream]\ndead_letter_mask_callers = true\n").stream.dead_letter_mask_callers is True
    for text, wanted in [("true", True), (" On ", True), ("YES", True), ("1", True),
                         ("false", False), ("off", False), ("No", False), ("0", False)]:
        env = {"CALLPULSE_DEAD_LETTER_MASK_CALLERS": text}
        assert load_config(env=env).stream.dead_letter_mask_callers is wanted, text
    # the environment beats the file, and empty counts as unset
    on = "[stream]\ndead_letter_mask_callers = true\n"
    assert load_text(tmp_path, on, {"CALLPULSE_DEAD_LETTER_MASK_CALLERS": "false"}).stream.dead_letter_mask_callers is False
    assert load_text(tmp_path, on, {"CALLPULSE_DEAD_LETTER_MASK_CALLERS": " "}).stream.dead_letter_mask_callers is True


def test_env_defaults_to_os_environ(monkeypatch):
    for name in [*ENV_OVERRIDES, "CALLPULSE_CONFIG"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CALLPULSE_WEB_PORT", "6100")
    assert load_config().stream.web_port == 6100


# ---------------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------------


def test_sasl_password_is_hidden_in_repr():
    cfg = load_config(
        env={
            "CALLPULSE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "CALLPULSE_KAFKA_SASL_MECHANISM": "PLAIN",
            "CALLPULSE_KAFKA_SASL_USERNAME": "cp",
            "CALLPULSE_KAFKA_SASL_PASSWORD": "hunter2-very-secret",
        }
    )
    assert cfg.kafka.sasl_password == "hunter2-very-secret"
    for text in (repr(cfg.kafka), str(cfg.kafka), repr(cfg), str(cfg)):
        assert "hunter2" not in text
        assert "sasl_password='***'" in text
        assert "sasl_username='cp'" in text
    assert "sasl_password=None" in repr(KafkaConfig())


def test_wrong_password_type_does_not_echo_it(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, "[kafka]\nsasl_password = 987654321\n")
    assert str(info.value).startswith("kafka.sasl_password: must be a string")
    assert "987654321" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# Errors: every message starts with the key path it is about
# ---------------------------------------------------------------------------------------------

ERRORS = [
    # unknown section / key, with a suggestion
    ("[kafak]\n", "kafak: unknown section (did you mean kafka?)"),
    ("x = 1\n", "x: unknown section; expected one of: kafka, stream, queue_defaults, queues"),
    ("[queue.sales]\nlabel = 'x'\n", "queue: unknown section (did you mean queues?)"),
    ("[kafka]\nbootstrap_server = 'x:1'\n",
     "kafka.bootstrap_server: unknown key (did you mean bootstrap_servers?)"),
    ("[stream]\nweb_prot = 1\n", "stream.web_prot: unknown key (did you mean web_port?)"),
    ("[stream]\nzzz = 1\n", "stream.zzz: unknown key; expected one of: app_id, "),
    ("[queues.sales]\ntreshold_seconds = [10]\n",
     "queues.sales.treshold_seconds: unknown key (did you mean thresholds_seconds?)"),
    ("[queue_defaults]\ntimezon = 'UTC'\n",
     "queue_defaults.timezon: unknown key (did you mean timezone?)"),
    ('[queues."客服"]\nlabl = "x"\n', 'queues."客服".labl: unknown key (did you mean label?)'),
    ("[queue_defaults]\nlabel = 'x'\n", "queue_defaults.label: labels are per queue"),
    ("[queues.sales]\nname = 'x'\n", "queues.sales.name: not a key"),
    # sections of the wrong shape
    ("kafka = 1\n", "kafka: must be a table ([kafka]), got 1"),
    ("[queues]\nsales = 'x'\n", "queues.sales: must be a table [queues.ID]"),
    ("[queues]\nformula = 'SL-A'\n", "queues.formula: must be a table [queues.ID] of per-queue "
     "settings, got 'SL-A' (did you mean [queue_defaults]?)"),
    ('[queues."*"]\nformula = "SL-A"\n', 'queues."*": \'*\' is reserved; use [queue_defaults]'),
    # wrong types; bool is not a number
    ("[stream]\nlateness_seconds = true\n", "stream.lateness_seconds: must be a number, got true"),
    ("[stream]\nlateness_seconds = '60'\n", "stream.lateness_seconds: must be a number, got '60'"),
    ("[stream]\nlateness_seconds = nan\n", "stream.lateness_seconds: must be a finite number"),
    ("[kafka]\npartitions = true\n", "kafka.partitions: must be an integer >= 1, got true"),
    ("[kafka]\npartitions = 4.0\n", "kafka.partitions: must be an integer >= 1, got 4.0"),
    ("[stream]\napp_id = 5\n", "stream.app_id: must be a string, got 5"),
    ("[stream]\ndead_letter_mask_callers = 'yes'\n",
     "stream.dead_letter_mask_callers: must be true or false, got 'yes'"),
    ("[stream]\ndead_letter_mask_callers = 1\n",
     "stream.dead_letter_mask_callers: must be true or false, got 1"),
    ("[stream]\ndata_dir = ''\n", "stream.data_dir: must not be empty"),
    ("[queue_defaults]\nthresholds_seconds = 10\n",
     "queue_defaults.thresholds_seconds: must be a list of seconds like [10, 20], got 10"),
    ("[queue_defaults]\nthresholds_seconds = [10, false]\n",
     "queue_defaults.thresholds_seconds[1]: must be a number, got false"),
    ("[queues.a]\nlabel = 1\n", "queues.a.label: must be a string, got 1"),
    # out of range
    ("[queues.sales]\nthresholds_seconds = [10, -5]\n",
     "queues.sales.thresholds_seconds[1]: must be > 0, got -5"),
    ("[queue_defaults]\nthresholds_seconds = []\n",
     "queue_defaults.thresholds_seconds: must list at least one threshold"),
    ("[stream]\nweb_port = 70000\n", "stream.web_port: must be an integer 1..65535, got 70000"),
    ("[stream]\nweb_port = 0\n", "stream.web_port: must be an integer 1..65535, got 0"),
    ("[stream]\nbatch_max_events = 0\n", "stream.batch_max_events: must be an integer >= 1, got 0"),
    ("[stream]\nbatch_max_seconds = 0\n", "stream.batch_max_seconds: must be > 0, got 0"),
    ("[stream]\nsnapshot_interval_seconds = -1\n",
     "stream.snapshot_interval_seconds: must be > 0, got -1"),
    ("[stream]\nmax_future_seconds = 0.0\n", "stream.max_future_seconds: must be > 0, got 0.0"),
    ("[kafka]\nreplication_factor = 0\n", "kafka.replication_factor: must be an integer >= 1"),
    ("[queue_defaults]\nshort_abandon_seconds = -1\n",
     "queue_defaults.short_abandon_seconds: must be >= 0, got -1"),
    ("[queues.x]\norphan_after_seconds = 0\n", "queues.x.orphan_after_seconds: must be > 0, got 0"),
    ("[queue_defaults]\ntargets = 80\n",
     "queue_defaults.targets: must be a ratio in (0, 1], got 80 (for 80 % write 0.8)"),
    ("[queue_defaults]\ntargets = [0.8, 0]\n",
     "queue_defaults.targets[1]: must be a ratio in (0, 1], got 0"),
    # time zone, HH:MM, formula
    ("[queues.sales]\ntimezone = 'Europe/Moskow'\n",
     "queues.sales.timezone: unknown time zone 'Europe/Moskow' (did you mean Europe/Moscow?)"),
    ("[queues.sales]\ntimezone = 'utc'\n",
     "queues.sales.timezone: unknown time zone 'utc' (did you mean UTC?)"),
    ("[queues.sales]\ntimezone = 'Mars/Olympus_Mons_Base'\n",
     "queues.sales.timezone: unknown time zone 'Mars/Olympus_Mons_Base'"),
    ("[queues.sales]\ntimezone = '../../etc/passwd'\n", "queues.sales.timezone: unknown time zone"),
    ("[queues.sales]\ntimezone = 'Europe'\n", "queues.sales.timezone: unknown time zone 'Europe'"),
    ('[queues."客服"]\nbusiness_day_start = "8 am"\n',
     'queues."客服".business_day_start: must be a time of day "HH:MM" (00:00 to 23:59), '
     "got '8 am'"),
    ("[queue_defaults]\nbusiness_day_start = '24:00'\n",
     "queue_defaults.business_day_start: must be a time of day"),
    ("[queue_defaults]\nbusiness_day_start = '06:60'\n",
     "queue_defaults.business_day_start: must be a time of day"),
    ("[queue_defaults]\nbusiness_day_start = 6\n",
     "queue_defaults.business_day_start: must be a time of day \"HH:MM\" (00:00 to 23:59), got 6"),
    ("[queues.sales]\nformula = 'SL-H'\n",
     "queues.sales.formula: unknown formula 'SL-H' (did you mean SL-"),
    ("[queues.sales]\nformula = 'erlang'\n",
     "queues.sales.formula: unknown formula 'erlang'; expected one of SL-A, SL-B, SL-C, SL-D, "
     "SL-E, SL-F, SL-G"),
    # thresholds ascending and unique
    ("[queue_defaults]\nthresholds_seconds = [20, 10]\n",
     "queue_defaults.thresholds_seconds[1]: thresholds must be ascending, got 10 after 20"),
    ("[queues.s]\nthresholds_seconds = [10, 20, 20]\n",
     "queues.s.thresholds_seconds[2]: duplicate threshold 20"),
    # targets
    ("[queues.sales]\nthresholds_seconds = [10, 20, 30]\ntargets = [0.8, 0.9]\n",
     "queues.sales.targets: must have one target per threshold: queues.sales.thresholds_seconds "
     "has 3 [10, 20, 30], got 2 targets [0.8, 0.9]"),
    ("[queues.sales]\ntargets = [0.8, 0.9, 0.95]\n",
     "queues.sales.targets: must have one target per threshold: queue_defaults.thresholds_seconds "
     "has 2 [10, 20], got 3"),
    ('[queues.sales]\ntargets = { "10" = 0.8, "15" = 0.9 }\n',
     "queues.sales.targets.15: no such threshold; queue_defaults.thresholds_seconds is [10, 20]"),
    ('[queues.sales]\ntargets = { "10" = 0.8 }\n',
     "queues.sales.targets: no target for threshold 20"),
    ('[queues.sales]\ntargets = { "ten" = 0.8 }\n',
     "queues.sales.targets.ten: keys must be thresholds in seconds"),
    ('[queues.sales]\ntargets = { "10" = 0.8, "10.0" = 0.7, "20" = 0.8 }\n',
     'queues.sales.targets."10.0": threshold 10 is given twice'),
    ('[queues.sales]\ntargets = { "10" = 1.5, "20" = 0.8 }\n',
     "queues.sales.targets.10: must be a ratio in (0, 1], got 1.5"),
    ("[queues.sales]\ntargets = 'high'\n", "queues.sales.targets: must be a ratio (0.8), a list"),
    # kafka choices and cross-field rules
    ("[kafka]\nsecurity_protocol = 'TLS'\n",
     "kafka.security_protocol: unknown security protocol 'TLS'; expected one of PLAINTEXT, SSL, "
     "SASL_PLAINTEXT, SASL_SSL"),
    ("[kafka]\nsecurity_protocol = 'SASL_SSL'\nsasl_mechanism = 'SCRAM-SHA-1'\n",
     "kafka.sasl_mechanism: unknown SASL mechanism 'SCRAM-SHA-1'"),
    ("[kafka]\nsecurity_protocol = 'SASL_SSL'\nsasl_username = 'u'\nsasl_password = 'p'\n",
     "kafka.sasl_mechanism: required when kafka.security_protocol is 'SASL_SSL' "
     "(set it in [kafka] or with CALLPULSE_KAFKA_SASL_MECHANISM)"),
    ("[kafka]\nsecurity_protocol = 'SASL_PLAINTEXT'\nsasl_mechanism = 'PLAIN'\n"
     "sasl_password = 'p'\n",
     "kafka.sasl_username: required when kafka.security_protocol is 'SASL_PLAINTEXT'"),
    ("[kafka]\nsecurity_protocol = 'SASL_SSL'\nsasl_mechanism = 'PLAIN'\nsasl_username = 'u'\n",
     "kafka.sasl_password: required when kafka.security_protocol is 'SASL_SSL' "
     "(set it in [kafka] or with CALLPULSE_KAFKA_SASL_PASSWORD)"),
    ("[kafka]\ntopic_dead_letter = 'callpulse-events'\n",
     "kafka.topic_dead_letter: must differ from kafka.topic_events (both are 'callpulse-events')"),
    ("[kafka]\ntopic_events = 'call events'\n", "kafka.topic_events: must be a Kafka topic name"),
    ("[kafka]\nbootstrap_servers = 'a:9092,,b:9092'\n",
     "kafka.bootstrap_servers: must be a comma-separated list of host:port"),
    ("[kafka]\nbootstrap_servers = 'a:port'\n",
     "kafka.bootstrap_servers: 'a:port' is not host:port with a port 1..65535"),
]


@pytest.mark.parametrize(("text", "message"), ERRORS, ids=[m.split(":")[0] for _, m in ERRORS])
def test_file_errors_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    assert str(info.value).startswith(message), str(info.value)
    assert info.value.key == message.split(": ")[0]
    assert isinstance(info.value, ValueError)


ENV_ERRORS = [
    ({"CALLPULSE_WEB_PORT": "abc"}, "CALLPULSE_WEB_PORT: must be an integer 1..65535, got 'abc'"),
    ({"CALLPULSE_WEB_PORT": "65536"}, "CALLPULSE_WEB_PORT: must be an integer 1..65535, got 65536"),
    ({"CALLPULSE_WEB_PORT": "80.0"}, "CALLPULSE_WEB_PORT: must be an integer 1..65535, got '80.0'"),
    ({"CALLPULSE_PARTITIONS": "0"}, "CALLPULSE_PARTITIONS: must be an integer >= 1, got 0"),
    ({"CALLPULSE_REPLICATION_FACTOR": "three"},
     "CALLPULSE_REPLICATION_FACTOR: must be an integer >= 1, got 'three'"),
    ({"CALLPULSE_LATENESS_SECONDS": "-1"}, "CALLPULSE_LATENESS_SECONDS: must be > 0, got -1.0"),
    ({"CALLPULSE_LATENESS_SECONDS": "1m"},
     "CALLPULSE_LATENESS_SECONDS: must be a number, got '1m'"),
    ({"CALLPULSE_LATENESS_SECONDS": "inf"}, "CALLPULSE_LATENESS_SECONDS: must be a finite number"),
    ({"CALLPULSE_KAFKA_SECURITY_PROTOCOL": "SASL"},
     "CALLPULSE_KAFKA_SECURITY_PROTOCOL: unknown security protocol 'SASL'"),
    ({"CALLPULSE_KAFKA_SASL_MECHANISM": "GSSAPI"},
     "CALLPULSE_KAFKA_SASL_MECHANISM: unknown SASL mechanism 'GSSAPI'"),
    ({"CALLPULSE_TOPIC_BATCHES": "a/b"}, "CALLPULSE_TOPIC_BATCHES: must be a Kafka topic name"),
    ({"CALLPULSE_DEAD_LETTER_MASK_CALLERS": "maybe"},
     "CALLPULSE_DEAD_LETTER_MASK_CALLERS: must be true or false, got 'maybe'"),
    ({"CALLPULSE_KAFKA_BOOTSTRAP_SERVERS": "host:0"},
     "CALLPULSE_KAFKA_BOOTSTRAP_SERVERS: 'host:0' is not host:port"),
    ({"CALLPULSE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
     "kafka.sasl_mechanism: required when kafka.security_protocol is 'SASL_SSL'"),
    ({"CALLPULSE_TOPIC_BATCHES": "callpulse-events"},
     "kafka.topic_batches: must differ from kafka.topic_events"),
]


@pytest.mark.parametrize(
    ("env", "message"), ENV_ERRORS, ids=[m.split(":")[0] for _, m in ENV_ERRORS]
)
def test_env_errors_name_the_variable(env, message):
    with pytest.raises(ConfigError) as info:
        load_config(env=env)
    assert str(info.value).startswith(message), str(info.value)


def test_env_error_wins_over_a_valid_file_value(tmp_path):
    with pytest.raises(ConfigError, match=r"^CALLPULSE_WEB_PORT: "):
        load_text(tmp_path, "[stream]\nweb_port = 7000\n", {"CALLPULSE_WEB_PORT": "x"})


def test_missing_config_file(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing, env={})
    assert str(info.value) == f"{missing}: config file not found: {missing}"
    with pytest.raises(ConfigError) as info:
        load_config(env={"CALLPULSE_CONFIG": str(missing)})
    assert str(info.value) == f"CALLPULSE_CONFIG: config file not found: {missing}"
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path, env={})


def test_toml_syntax_error_names_file_and_tomllib_message(tmp_path):
    path = write(tmp_path, "[stream]\nweb_port = \n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert message.startswith(f"{path}: TOML syntax error: ")
    try:
        tomllib.loads("[stream]\nweb_port = \n")
    except tomllib.TOMLDecodeError as exc:
        assert str(exc) in message
    assert "line 2" in message


def test_invalid_utf8_names_file(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('[queues.sales]\nlabel = "Vente été"\n'.encode("latin-1"))
    expected = rf"^{re.escape(str(path))}: config file is not valid UTF-8"
    with pytest.raises(ConfigError, match=expected):
        load_config(path, env={})


# ---------------------------------------------------------------------------------------------
# Security: TLS files, client settings, and the broker check's verdicts without a broker
# (the verdicts of real TLS and SASL endpoints are in tests/e2e/test_security.py)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    from secure_broker import make_pki  # tests/e2e: certificates made with openssl

    return make_pki(tmp_path_factory.mktemp("pki"))


def tls(protocol: str = "SSL", **files) -> KafkaConfig:
    return KafkaConfig(security_protocol=protocol, **{k: str(v) for k, v in files.items()},
                       **({"sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "cp", "sasl_password": "pw"}
                          if protocol.startswith("SASL_") else {}))


def config_error(make) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        make()
    return info.value


def test_ssl_context_verifies_the_broker_and_presents_the_client_certificate(pki):
    import ssl

    context = tls(ssl_cafile=pki.ca.cert, ssl_certfile=pki.client.cert, ssl_keyfile=pki.client.key).ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert [dict(c["subject"][0])["commonName"] for c in context.get_ca_certs()] == ["callpulse test ca"]
    assert tls("SASL_SSL", ssl_cafile=pki.ca.cert).ssl_context().verify_mode == ssl.CERT_REQUIRED
    for protocol in ("PLAINTEXT", "SASL_PLAINTEXT"):
        assert KafkaConfig(security_protocol=protocol, sasl_mechanism="PLAIN", sasl_username="u",
                           sasl_password="p").ssl_context() is None


def test_a_certificate_and_key_in_one_file_need_no_keyfile(pki, tmp_path):
    both = tmp_path / "both.pem"
    both.write_text(pki.client.cert.read_text() + pki.client.key.read_text())
    assert tls(ssl_cafile=pki.ca.cert, ssl_certfile=both).ssl_context() is not None


def test_unusable_tls_files_are_named(pki, tmp_path):
    import subprocess

    junk = write(tmp_path, "not a certificate\n", "junk.pem")
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(["openssl", "pkey", "-in", str(pki.client.key), "-out", str(encrypted), "-aes256",
                    "-passout", "pass:secret"], check=True, capture_output=True)
    missing = tmp_path / "missing.pem"
    cert, key = pki.client.cert, pki.client.key
    cases = [
        ({"ssl_cafile": missing}, f"kafka.ssl_cafile: file not found: {missing}"),
        ({"ssl_cafile": tmp_path}, f"kafka.ssl_cafile: not a file: {tmp_path}"),
        ({"ssl_cafile": junk},
         f"kafka.ssl_cafile: {junk} holds no PEM certificate a TLS library can load (NO_CERTIFICATE_OR_CRL_FOUND)"),
        ({"ssl_certfile": junk, "ssl_keyfile": key},
         f"kafka.ssl_certfile: {junk} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
        ({"ssl_certfile": cert}, f"kafka.ssl_keyfile: not set, and kafka.ssl_certfile ({cert}) holds no private key"),
        ({"ssl_certfile": cert, "ssl_keyfile": pki.server.key},
         f"kafka.ssl_keyfile: {pki.server.key} is not the private key of the certificate in kafka.ssl_certfile"),
        ({"ssl_certfile": cert, "ssl_keyfile": encrypted},
         f"kafka.ssl_keyfile: {encrypted} is encrypted with a passphrase"),
        ({"ssl_certfile": cert, "ssl_keyfile": junk}, f"kafka.ssl_keyfile: cannot load the private key from {junk}"),
    ]
    for files, expected in cases:
        error = config_error(lambda files=files: tls(**files).ssl_context())
        assert str(error).startswith(expected), (files, str(error))
        assert error.key == expected.split(":")[0]


def test_a_keyfile_without_a_certfile_is_an_error():
    error = config_error(lambda: KafkaConfig(security_protocol="SSL", ssl_keyfile="/client.key"))
    assert str(error) == ("kafka.ssl_keyfile: set without kafka.ssl_certfile: the key belongs to a client "
                          "certificate (set both, or neither)")


def test_client_kwargs_per_security_protocol(pki):
    import ssl

    assert KafkaConfig(bootstrap_servers="b:9092").client_kwargs() == {
        "bootstrap_servers": "b:9092", "security_protocol": "PLAINTEXT"}
    kwargs = tls(ssl_cafile=pki.ca.cert).client_kwargs()
    assert set(kwargs) == {"bootstrap_servers", "security_protocol", "ssl_context"}
    assert kwargs["security_protocol"] == "SSL" and isinstance(kwargs["ssl_context"], ssl.SSLContext)
    sasl = KafkaConfig(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="cp",
                       sasl_password="pw").client_kwargs()
    assert sasl == {"bootstrap_servers": "localhost:9092", "security_protocol": "SASL_PLAINTEXT",
                    "sasl_mechanism": "PLAIN", "sasl_plain_username": "cp", "sasl_plain_password": "pw"}
    sasl_ssl = tls("SASL_SSL", ssl_cafile=pki.ca.cert).client_kwargs()
    assert sasl_ssl["sasl_mechanism"] == "SCRAM-SHA-512"
    assert isinstance(sasl_ssl["ssl_context"], ssl.SSLContext)


def test_broker_check_skips_plaintext_and_unreachable_brokers(pki):
    import socket

    from callpulse.config import check_broker_access

    assert check_broker_access(KafkaConfig(bootstrap_servers="127.0.0.1:1")) is None  # PLAINTEXT: no check
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kafka = dataclasses.replace(tls(ssl_cafile=pki.ca.cert), bootstrap_servers=f"127.0.0.1:{port}")
    assert check_broker_access(kafka, timeout=2) is None
    # a TLS file problem is found before any connection
    error = config_error(lambda: check_broker_access(tls(ssl_cafile="/nonexistent/ca.pem")))
    assert error.key == "kafka.ssl_cafile"


def test_broker_check_recognizes_a_port_that_is_not_kafka():
    """A TCP listener that answers with something other than Kafka (here: an HTTP status line),
    and one that closes at once."""
    import socket
    import threading

    from callpulse.config import check_broker_access

    def serve(listener: socket.socket, answer: bytes) -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(1024)
            conn.sendall(answer)

    for answer, expected in [
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "kafka.bootstrap_servers: broker 127.0.0.1:{port} did not answer like a Kafka broker"),
        (b"", "kafka.security_protocol: broker 127.0.0.1:{port} did not answer a Kafka request"),
    ]:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            port = listener.getsockname()[1]
            thread = threading.Thread(target=serve, args=(listener, answer), daemon=True)
            thread.start()
            kafka = KafkaConfig(bootstrap_servers=f"127.0.0.1:{port}", security_protocol="SASL_PLAINTEXT",
                                sasl_mechanism="PLAIN", sasl_username="cp", sasl_password="hunter2")
            error = config_error(lambda kafka=kafka: check_broker_access(kafka, timeout=5))
            thread.join(5)
        assert str(error).startswith(expected.format(port=port)), str(error)
        assert "hunter2" not in str(error)
