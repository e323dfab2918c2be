"""Security end to end (issue 13): real `callpulse worker` processes against endpoints that enforce
TLS, client certificates and SASL.

- TLS: stunnel (Debian's stunnel4) in front of Tansu, with certificates made for the test by
  `openssl`; Tansu advertises the stunnel port, so the reconnections to the advertised broker go
  through TLS as well. With `verify = 2` stunnel requires a client certificate from the test CA.
- SASL: Tansu 0.6.0 with ``--authentication`` refuses every request but ApiVersions and SASL until a
  client has logged in with SCRAM, and offers no PLAIN. No user can be given to it: ``tansu user
  create`` needs a login itself there, and without ``--authentication`` it answers success but its
  stores (memory; S3, tried with moto) keep nothing, and memory is lost on the restart anyway. So no
  login can succeed: the SASL tests here are the refusals. No reachable registry (PyPI, npm,
  Debian) has a broker that accepts a SASL PLAIN or SCRAM-SHA-512 login; the client side of a
  successful login is checked down to the arguments aiokafka receives
  (test_sasl_settings_reach_aiokafka_unchanged).

Every refusal must stop the worker within 30 s with a message naming the setting to fix, and
the SASL password must never appear in its output.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from secure_broker import SecureBroker, make_pki, require, spawn

from callpulse.tools.broker import free_port
from harness import LOGS, Pipeline, value, wait_for
from helpers import call, event

pytestmark = pytest.mark.e2e

PASSWORD = "Zq7-not-in-any-log-4e1f"
STOP_WITHIN_SECONDS = 30


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    require("openssl")
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def brokers(pki, tmp_path_factory):
    """Five secured endpoints, each a Tansu of its own (memory only, ready in milliseconds)."""
    require("stunnel")
    LOGS.mkdir(parents=True, exist_ok=True)
    directory = LOGS / "security"
    started = {
        "tls": SecureBroker(directory, "tls", tls=pki.server),
        "mtls": SecureBroker(directory, "mtls", tls=pki.server, client_ca=pki.ca.cert),
        "wrong_host": SecureBroker(directory, "wrong-host", tls=pki.wrong_host),
        "sasl": SecureBroker(directory, "sasl", authentication=True),
        "sasl_ssl": SecureBroker(directory, "sasl-ssl", tls=pki.server, authentication=True),
    }
    try:
        for broker in started.values():
            broker.start()
        yield started
    finally:
        for broker in started.values():
            broker.stop()


class SecurePipeline(Pipeline):
    """The harness's pipeline, with the test's own producer using the security settings too."""

    async def _produce(self, values: list[bytes]) -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(**self.config.kafka.client_kwargs(), linger_ms=5)
        await producer.start()
        try:
            for n, v in enumerate(values):
                await producer.send(self.config.kafka.topic_events, v, key=str(n).encode())
            await producer.flush()
        finally:
            await producer.stop()


def tls_env(pki, cafile: Path | None = None, client=None) -> dict[str, str]:
    env = {"CALLPULSE_KAFKA_SECURITY_PROTOCOL": "SSL", "CALLPULSE_KAFKA_SSL_CAFILE": str(cafile or pki.ca.cert)}
    if client is not None:
        env.update(CALLPULSE_KAFKA_SSL_CERTFILE=str(client.cert), CALLPULSE_KAFKA_SSL_KEYFILE=str(client.key))
    return env


def sasl_env(mechanism: str, protocol: str = "SASL_PLAINTEXT") -> dict[str, str]:
    return {"CALLPULSE_KAFKA_SECURITY_PROTOCOL": protocol, "CALLPULSE_KAFKA_SASL_MECHANISM": mechanism,
            "CALLPULSE_KAFKA_SASL_USERNAME": "callpulse", "CALLPULSE_KAFKA_SASL_PASSWORD": PASSWORD}


def scenario(base: float) -> list[dict]:
    """Five calls in 'support': three answered (waits 4, 12, 25), one abandoned, one waiting."""
    evs = []
    evs += call("support", "s1", base + 0, "answered", base + 4)
    evs += call("support", "s2", base + 1, "answered", base + 13)
    evs += call("support", "s3", base + 2, "abandoned", base + 40)
    evs += call("support", "s4", base + 3, "answered", base + 28)
    evs.append(event("call.offered", base + 30, queue="support", call_id="s5"))
    return sorted(evs, key=lambda e: e["time"])


def assert_counts_through(broker: SecureBroker, name: str, env: dict[str, str]) -> None:
    pipeline = SecurePipeline(broker, name, partitions=2, **env)  # creates the topics through TLS
    try:
        worker = pipeline.start_worker()
        pipeline.produce(scenario(time.time() - 100))
        s = wait_for(lambda: (s := worker.samples()) and value(s, "callcenter_calls_offered_total", queue="support") == 5 and s,
                     timeout=60, message="5 offered calls in support")
        assert value(s, "callcenter_calls_answered_total", queue="support") == 3
        assert value(s, "callcenter_calls_abandoned_total", queue="support") == 1
        assert value(s, "callcenter_calls_answered_within_threshold_total", queue="support", threshold="10") == 1
        assert value(s, "callcenter_calls_answered_within_threshold_total", queue="support", threshold="20") == 2
        assert value(s, "callcenter_answer_wait_seconds_sum", queue="support") == pytest.approx(41)
        assert value(s, "callcenter_calls_waiting", queue="support") == 1
        assert value(s, "callcenter_events_total", type="call.offered") == 5
        snapshot = orjson.loads(worker.get("/api/queues"))
        assert snapshot["queues"]["support"]["windows"]["5m"]["service_level"] == {"10": 0.25, "20": 0.5}
    finally:
        pipeline.stop()
    # All of it went through the TLS terminator: the bootstrap connections and those to the
    # broker Tansu advertises (the same port).
    stunnel_log = broker.stunnel.log.read_text()
    assert stunnel_log.count("TLS accepted") >= 3, stunnel_log[-3000:]


def run_worker_until_it_stops(name: str, bootstrap: str, env: dict[str, str]) -> tuple[int, str, float]:
    """Start `callpulse worker` and wait for it to exit by itself; (exit code, its output, seconds)."""
    log = LOGS / f"security-{name}.log"
    full = dict(os.environ, CALLPULSE_KAFKA_BOOTSTRAP_SERVERS=bootstrap, CALLPULSE_APP_ID=f"cp-sec-{name}",
                CALLPULSE_TOPIC_EVENTS=f"sec-{name}-events", CALLPULSE_WEB_HOST="127.0.0.1",
                CALLPULSE_WEB_PORT=str(free_port()), CALLPULSE_DATA_DIR=str(LOGS / f"security-{name}"),
                PYTHONUNBUFFERED="1", **env)
    started = time.monotonic()
    with open(log, "wb") as out:
        process = spawn([sys.executable, "-m", "callpulse", "worker", "--loglevel", "info"],
                        env=full, stdout=out, stderr=subprocess.STDOUT)
        try:
            code = process.wait(STOP_WITHIN_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(f"the worker still ran after {STOP_WITHIN_SECONDS} s; see {log}:\n{log.read_text()[-3000:]}")
    return code, log.read_text(errors="replace"), time.monotonic() - started


def assert_stops_naming(name: str, bootstrap: str, env: dict[str, str], *expected: str) -> str:
    code, output, seconds = run_worker_until_it_stops(name, bootstrap, env)
    assert code != 0, output[-3000:]
    lines = [line for line in output.splitlines() if line.startswith("callpulse: config error: ")]
    assert len(lines) == 1, output[-3000:]
    for text in expected:
        assert text in lines[0], lines[0]
    assert "Traceback" not in output, output[-3000:]
    assert PASSWORD not in output
    assert seconds < STOP_WITHIN_SECONDS
    return lines[0]


# ---- TLS that works: a worker counts exactly through the terminator -----------------------------

def test_worker_counts_events_over_tls_with_server_verification(brokers, pki):
    assert_counts_through(brokers["tls"], "tls-server", tls_env(pki))


def test_worker_counts_events_over_tls_with_a_client_certificate(brokers, pki):
    assert_counts_through(brokers["mtls"], "tls-client-cert", tls_env(pki, client=pki.client))


# ---- TLS refusals: the worker stops and names the setting ----------------------------------------

def test_broker_certificate_from_an_untrusted_ca_stops_the_worker(brokers, pki):
    assert_stops_naming("untrusted-ca", brokers["tls"].bootstrap, tls_env(pki, cafile=pki.other_ca.cert),
                        "kafka.ssl_cafile: cannot verify the certificate of broker " + brokers["tls"].bootstrap,
                        f"kafka.ssl_cafile ({pki.other_ca.cert}) does not hold the certificate authority")


def test_system_cas_do_not_trust_a_private_ca(brokers, pki):
    env = {"CALLPULSE_KAFKA_SECURITY_PROTOCOL": "SSL"}  # no ssl_cafile: the system's CAs
    assert_stops_naming("system-cas", brokers["tls"].bootstrap, env,
                        "kafka.ssl_cafile: cannot verify", "kafka.ssl_cafile is not set")


def test_broker_certificate_for_another_host_stops_the_worker(brokers, pki):
    bootstrap = brokers["wrong_host"].bootstrap
    assert_stops_naming("wrong-host", bootstrap, tls_env(pki),
                        f"kafka.bootstrap_servers: broker {bootstrap} presented a certificate that is "
                        "not valid for '127.0.0.1'")


def test_client_certificate_from_an_untrusted_ca_stops_the_worker(brokers, pki):
    assert_stops_naming("untrusted-client", brokers["mtls"].bootstrap, tls_env(pki, client=pki.other_client),
                        "kafka.ssl_certfile: broker", f"rejected the client certificate {pki.other_client.cert}",
                        "TLSV1_ALERT_UNKNOWN_CA")


def test_missing_client_certificate_stops_the_worker(brokers, pki):
    assert_stops_naming("no-client-cert", brokers["mtls"].bootstrap, tls_env(pki),
                        "kafka.ssl_certfile: broker", "requires a client certificate",
                        "set kafka.ssl_certfile and kafka.ssl_keyfile")


def test_plaintext_client_on_the_tls_port_stops_the_worker(brokers):
    env = sasl_env("SCRAM-SHA-512")  # SASL_PLAINTEXT against the TLS port
    assert_stops_naming("plaintext-on-tls", brokers["sasl_ssl"].bootstrap, env,
                        "kafka.security_protocol: broker", "kafka.security_protocol must be SASL_SSL")


# ---- SASL refusals ------------------------------------------------------------------------------

def test_rejected_scram_sha_512_login_stops_the_worker(brokers):
    assert_stops_naming("scram-rejected", brokers["sasl"].bootstrap, sasl_env("SCRAM-SHA-512"),
                        "kafka.sasl_password: broker", "rejected the SASL SCRAM-SHA-512 login of user 'callpulse'",
                        "kafka.sasl_username or kafka.sasl_password is wrong")


def test_rejected_scram_sha_512_login_over_tls_stops_the_worker(brokers, pki):
    env = {**sasl_env("SCRAM-SHA-512", protocol="SASL_SSL"), "CALLPULSE_KAFKA_SSL_CAFILE": str(pki.ca.cert)}
    assert_stops_naming("scram-rejected-tls", brokers["sasl_ssl"].bootstrap, env,
                        "kafka.sasl_password: broker", "rejected the SASL SCRAM-SHA-512 login")


def test_plain_on_a_broker_without_plain_stops_the_worker(brokers):
    assert_stops_naming("plain-refused", brokers["sasl"].bootstrap, sasl_env("PLAIN"),
                        "kafka.sasl_mechanism: broker", "during the SASL PLAIN login of user 'callpulse'",
                        "kafka.sasl_username / kafka.sasl_password")


def test_the_endpoints_enforce_what_the_tests_rely_on(brokers, pki):
    """The refusals above come from the servers, not from callpulse: plain aiokafka clients are
    refused the same way (SASL) and cannot talk to the TLS ports without TLS."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaConnectionError

    async def list_topics(bootstrap: str, **kwargs) -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000, **kwargs)
        try:
            await asyncio.wait_for(admin.start(), 15)
            return await admin.list_topics()
        finally:
            await admin.close()

    for bootstrap in (brokers["tls"].bootstrap, brokers["mtls"].bootstrap):
        with pytest.raises(KafkaConnectionError):  # plaintext to a TLS listener
            asyncio.run(list_topics(bootstrap))
    # Tansu with --authentication: no request but ApiVersions and SASL before a login.
    with pytest.raises(KafkaConnectionError):
        asyncio.run(list_topics(brokers["sasl"].bootstrap))
    # ... and `tansu user create` is refused, so credentials cannot be given to it.
    from callpulse.tools.broker import tansu_binary
    created = subprocess.run([tansu_binary(), "user", "create", "--broker", f"tcp://{brokers['sasl'].bootstrap}",
                              "callpulse", PASSWORD, "--mechanism", "scram512"], capture_output=True, timeout=30,
                             check=False)
    assert created.returncode != 0


# ---- the client side of a SASL login that cannot be shown end to end here -----------------------

@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
def test_sasl_settings_reach_aiokafka_unchanged(monkeypatch, pki, protocol, mechanism):
    """What Faust's consumers and producers (broker_credentials) and callpulse's own clients
    (client_kwargs) hand to aiokafka: the configured mechanism, user and password, and TLS
    verification with the configured CA for SASL_SSL."""
    import ssl

    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    import callpulse.config as config_module
    import callpulse.pipeline.app as app_module

    env = {**sasl_env(mechanism, protocol), "CALLPULSE_KAFKA_SSL_CAFILE": str(pki.ca.cert)}
    kafka = config_module.load_config(None, env).kafka
    checked = []
    monkeypatch.setattr(config_module, "check_broker_access", lambda k: checked.append(k) or "checked")
    faust_side = credentials_to_aiokafka_auth(app_module.broker_credentials(kafka))
    assert checked == [kafka]
    own_side = kafka.client_kwargs()
    for kwargs in (faust_side, own_side):
        assert kwargs["security_protocol"] == protocol
        assert kwargs["sasl_mechanism"] == mechanism
        assert kwargs["sasl_plain_username"] == "callpulse"
        assert kwargs["sasl_plain_password"] == PASSWORD
        context = kwargs.get("ssl_context")
        if protocol == "SASL_SSL":
            assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
            assert len(context.get_ca_certs()) == 1
        else:
            assert context is None
    assert PASSWORD not in repr(app_module.broker_credentials(kafka))
