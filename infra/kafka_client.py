"""How every Kafka client of txmon authenticates: the one place that builds client security.

The broker accepts clients only over SASL (SCRAM) on its client listener
(infra/services/kafka.py): ``SASL_PLAINTEXT`` on loopback for the local stack, or
``SASL_SSL`` against a broker with TLS (docs/security.md). Every client, in the product
and in the tests, takes its settings from here:

- :func:`client_config` for kafka-python (``KafkaProducer(**client_config(settings), ...)``);
- :func:`spark_kafka_options` for Spark's Kafka source and sink (``.options(**...)``).

Credentials come from the environment (infra/credentials.py). The application principal
reads and writes topics; ``admin=True`` is for the few places that create topics and ACLs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from txmon.infra import credentials
from txmon.infra.settings import settings as process_settings

if TYPE_CHECKING:
    from txmon.infra.settings import Settings


def _settings(settings: Settings | None) -> Settings:
    if settings is not None:
        return settings

    return process_settings()


def client_config(settings: Settings | None = None, *, admin: bool = False) -> dict[str, Any]:
    """kafka-python keyword arguments for security (protocol, SASL mechanism, user,
    password, and the CA file under SASL_SSL). ``settings`` defaults to the process's
    (code inside Spark tasks passes none)."""
    k = _settings(settings).kafka
    cred = credentials.kafka(admin)
    if k.security_protocol == "SASL_PLAINTEXT":
        # kafka-python warns "Exchanging credentials in the clear" on every SCRAM connection
        # without TLS; SCRAM sends a salted proof, never the password, so the warning only
        # buries real ones (the listener is on loopback; TLS is SASL_SSL).
        logging.getLogger("kafka.net.sasl.scram").setLevel(logging.ERROR)
    config: dict[str, Any] = {
        "security_protocol": k.security_protocol,
        "sasl_mechanism": k.sasl_mechanism,
        "sasl_plain_username": cred.user,
        "sasl_plain_password": cred.password,
    }
    if k.security_protocol == "SASL_SSL" and k.ssl_cafile is not None:
        config["ssl_cafile"] = str(k.ssl_cafile)
    return config


def jaas_config(module: str, user: str, password: str) -> str:
    """A JAAS line as Kafka's Java clients and broker read it (quotes escaped).

    >>> jaas_config("org.apache.kafka.common.security.scram.ScramLoginModule", "txmon", 'p"w')
    'org.apache.kafka.common.security.scram.ScramLoginModule required username="txmon" password="p\\\\"w";'
    """

    def quoted(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return f"{module} required username={quoted(user)} password={quoted(password)};"


SCRAM_LOGIN_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"


def spark_kafka_options(settings: Settings | None = None, *, admin: bool = False) -> dict[str, str]:
    """Options for ``spark.read(Stream).format("kafka")``: the Java client's security
    settings under the ``kafka.`` prefix. Spark redacts option values that contain
    ``password`` (``spark.redaction.regex``) from plans and the UI."""
    k = _settings(settings).kafka
    cred = credentials.kafka(admin)
    options = {
        "kafka.security.protocol": k.security_protocol,
        "kafka.sasl.mechanism": k.sasl_mechanism,
        "kafka.sasl.jaas.config": jaas_config(SCRAM_LOGIN_MODULE, cred.user, cred.password),
    }
    if k.security_protocol == "SASL_SSL" and k.ssl_cafile is not None:
        options["kafka.ssl.truststore.type"] = "PEM"
        options["kafka.ssl.truststore.location"] = str(k.ssl_cafile)
    return options
