"""Service credentials: generated once into a private file, the environment always wins,
and every Kafka client gets its security settings from one place."""

from __future__ import annotations

import stat

import pytest

from txmon.infra import credentials
from txmon.infra.errors import ConfigError
from txmon.infra.kafka_client import client_config, spark_kafka_options
from txmon.infra.settings import load_settings
from txmon.infra.settings import settings as process_settings


@pytest.fixture
def state(tmp_path, monkeypatch):
    """Own state dir, no credential variables inherited from the caller, a fresh loader."""
    monkeypatch.setenv("TXMON_STATE_DIR", str(tmp_path))
    for name in credentials.VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(credentials, "_loaded", False)
    process_settings.cache_clear()  # the loader falls back to the process's settings
    yield load_settings()
    process_settings.cache_clear()


def test_first_run_writes_random_passwords_to_a_file_only_its_owner_can_read(state):
    path = credentials.ensure(state)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    values = credentials.read_file(path)
    assert set(values) == set(credentials.VARIABLES)
    passwords = [v for k, v in values.items() if k.endswith("PASSWORD")]
    assert len(set(passwords)) == 4 and all(len(p) >= 32 for p in passwords)
    assert credentials.kafka().user == "txmon" and credentials.cassandra(admin=True).user == "txmon_admin"


def test_a_second_run_keeps_the_passwords_the_services_were_created_with(state, monkeypatch):
    first = credentials.read_file(credentials.ensure(state))
    for name in credentials.VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert credentials.read_file(credentials.ensure(state)) == first


def test_the_environment_wins_over_the_file(state, monkeypatch):
    monkeypatch.setenv("TXMON_CASSANDRA_PASSWORD", "from-the-secret-manager")
    path = credentials.ensure(state)
    # Chosen before the first start: written as given, so the role is created with it.
    assert credentials.read_file(path)["TXMON_CASSANDRA_PASSWORD"] == "from-the-secret-manager"
    monkeypatch.setenv("TXMON_CASSANDRA_PASSWORD", "rotated")
    credentials.load(state, force=True)
    assert credentials.cassandra().password == "rotated"


def test_a_process_without_the_variables_loads_them_from_its_state_dir(state, monkeypatch):
    written = credentials.read_file(credentials.ensure(state))
    for name in credentials.VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(credentials, "_loaded", False)
    assert credentials.kafka(admin=True).password == written["TXMON_KAFKA_ADMIN_PASSWORD"]


def test_no_password_anywhere_names_the_fix(state):
    with pytest.raises(ConfigError, match=r"TXMON_KAFKA_PASSWORD.*txmon infra up"):
        credentials.kafka()


def test_a_password_never_shows_in_repr(state):
    credentials.ensure(state)
    cred = credentials.cassandra()
    assert cred.password not in repr(cred) and cred.password not in str(cred)


def test_kafka_clients_authenticate_with_scram_as_the_application_or_the_admin(state):
    credentials.ensure(state)
    app, admin = client_config(state), client_config(state, admin=True)
    assert app["security_protocol"] == "SASL_PLAINTEXT" and app["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (app["sasl_plain_username"], app["sasl_plain_password"]) == (
        credentials.kafka().user,
        credentials.kafka().password,
    )
    assert admin["sasl_plain_username"] == "txmon_admin"
    spark = spark_kafka_options(state)
    assert spark["kafka.security.protocol"] == "SASL_PLAINTEXT"
    assert spark["kafka.sasl.jaas.config"] == (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="txmon" password="{credentials.kafka().password}";'
    )


def test_sasl_ssl_clients_trust_the_configured_ca(state, monkeypatch, tmp_path):
    monkeypatch.setenv("TXMON_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("TXMON_KAFKA__SSL_CAFILE", str(tmp_path / "ca.pem"))
    credentials.ensure(state)
    tls = load_settings()
    assert client_config(tls)["ssl_cafile"] == str(tmp_path / "ca.pem")
    options = spark_kafka_options(tls)
    assert options["kafka.security.protocol"] == "SASL_SSL"
    assert options["kafka.ssl.truststore.location"] == str(tmp_path / "ca.pem")
