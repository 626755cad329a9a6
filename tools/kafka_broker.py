"""A real single-node Apache Kafka broker (KRaft, combined broker + controller) on 127.0.0.1,
from the official jars (``tools/fetch_kafka.sh``), for tests, benchmarks and manual use.

    python -m tools.kafka_broker [--port 9092] [--data-dir var/kafka]

Storage is formatted once per data directory, so ``stop()`` + ``start()`` keeps the data and
the port: restart tests rely on both.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from shared.configtypes import KAFKA_TOPIC

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LIBS = ROOT / ".cache" / "kafka" / "libs"

_LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = info
logger.state.name = state.change.logger
logger.state.level = warn
logger.request.name = kafka.request.logger
logger.request.level = warn
"""


# librdkafka reports every refused connection while the broker boots; that is expected.
_quiet = logging.getLogger("tools.kafka_broker.rdkafka")
_quiet.setLevel(logging.CRITICAL)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class KafkaBrokerError(RuntimeError):
    pass


class KafkaBroker:
    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        controller_port: int | None = None,
        libs_dir: Path | None = None,
        log_file: Path | None = None,
        heap: str = "512m",
        extra_listener: tuple[str, int] | None = None,
    ) -> None:
        """``extra_listener``: (host, port) of a second plaintext listener, advertised as
        itself, for clients that cannot reach 127.0.0.1 (a process in a network namespace
        behind a veth pair); port 0 picks a free one. The host must be an address of this
        machine when the broker starts."""
        self.data_dir = data_dir.resolve()
        self.libs_dir = (libs_dir or Path(os.environ.get("KAFKA_LIBS_DIR", DEFAULT_LIBS))).resolve()
        self.log_file = log_file or self.data_dir / "broker.log"
        self.heap = heap
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ports_file = self.data_dir / "ports"
        if ports_file.exists() and port is None and controller_port is None:
            # Same data dir, same ports: clients configured before a restart keep working.
            saved = ports_file.read_text().split()
            port, controller_port = int(saved[0]), int(saved[1])
        self.port = port or _free_port()
        self.controller_port = controller_port or _free_port()
        ports_file.write_text(f"{self.port} {self.controller_port}\n")
        self.extra_listener: tuple[str, int] | None = None
        if extra_listener is not None:
            host, extra_port = extra_listener
            self.extra_listener = (host, extra_port or _free_port())
        self._proc: subprocess.Popen[bytes] | None = None
        atexit.register(self._cleanup)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def extra_bootstrap(self) -> str | None:
        """host:port of the extra listener, if one was asked for."""
        if self.extra_listener is None:
            return None
        return f"{self.extra_listener[0]}:{self.extra_listener[1]}"

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ----------------------------------------------------------------------
    def _classpath(self) -> str:
        if not self.libs_dir.is_dir() or not any(self.libs_dir.glob("kafka_2.13-*.jar")):
            raise KafkaBrokerError(
                f"Kafka jars not found in {self.libs_dir}; run: bash tools/fetch_kafka.sh"
            )
        return f"{self.libs_dir}/*"

    def _java(self, main_class: str, args: list[str], **popen: object) -> list[str]:
        return [
            "java",
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp",
            self._classpath(),
            main_class,
            *args,
        ]

    def _write_config(self) -> Path:
        logs = self.data_dir / "logs"
        listeners = f"PLAINTEXT://127.0.0.1:{self.port}"
        advertised = listeners
        protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        if self.extra_listener is not None:
            host, port = self.extra_listener
            listeners += f",EXTRA://{host}:{port}"
            advertised += f",EXTRA://{host}:{port}"
            protocols += ",EXTRA:PLAINTEXT"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"{listeners},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": advertised,
            "listener.security.protocol.map": protocols,
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(logs),
            "num.partitions": "3",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "3",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "auto.create.topics.enable": "false",
            "group.initial.rebalance.delay.ms": "0",
            "log.segment.bytes": str(64 * 1024 * 1024),
            "log.retention.hours": "24",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "1000",
        }
        path = self.data_dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.data_dir / "log4j2.properties").write_text(_LOG4J2)
        return path

    def _format_once(self, config: Path) -> None:
        if (self.data_dir / "logs" / "meta.properties").exists():
            return
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # "=" form: a random id may start with "-", which argparse would take for an option.
        cmd = self._java(
            "kafka.tools.StorageTool",
            ["format", f"--cluster-id={cluster_id}", f"--config={config}", "--ignore-formatted"],
        )
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise KafkaBrokerError(
                f"formatting Kafka storage failed:\n{result.stdout}\n{result.stderr}"
            )

    def start(self, timeout: float = 90) -> str:
        if self.is_running:
            return self.bootstrap
        config = self._write_config()
        self._format_once(config)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log_handle:
            self._proc = subprocess.Popen(
                self._java("kafka.Kafka", [str(config)]),
                stdout=log_handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        admin = AdminClient(
            {"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 2000}, logger=_quiet
        )
        while True:
            if self._proc.poll() is not None:
                raise KafkaBrokerError(
                    f"Kafka exited with {self._proc.returncode}; see {self.log_file}"
                )
            try:
                metadata = admin.list_topics(timeout=2)
                if metadata.brokers:
                    break
            except KafkaException:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise KafkaBrokerError(f"Kafka did not start in {timeout}s; see {self.log_file}")
            time.sleep(0.2)
        log.info("kafka broker ready at %s", self.bootstrap)
        return self.bootstrap

    def stop(self, timeout: float = 30) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        self._proc = None

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)
        self._proc = None

    def restart(self) -> str:
        self.stop()
        return self.start()

    def _cleanup(self) -> None:
        # The JVM runs in its own session; do not leave it behind when Python exits.
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()

    def __enter__(self) -> KafkaBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- admin --------------------------------------------------------------------------
    def create_topic(self, name: str, partitions: int = 3, replication: int = 1) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=replication)],
            operation_timeout=30,
        )
        try:
            futures[name].result(timeout=60)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        # Wait until the metadata shows every partition with a leader.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            topic = admin.list_topics(name, timeout=5).topics.get(name)
            if (
                topic
                and topic.error is None
                and len(topic.partitions) == partitions
                and all(p.leader >= 0 for p in topic.partitions.values())
            ):
                return
            time.sleep(0.1)
        raise KafkaBrokerError(f"topic {name} has no leaders after 30 s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a local single-node Kafka broker (KRaft).")
    parser.add_argument("--port", type=int, default=9092, help="client port (default 9092)")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "var" / "kafka")
    parser.add_argument("--topic", default=KAFKA_TOPIC, help="topic to create (3 partitions)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    fetch = subprocess.run(["bash", str(ROOT / "tools" / "fetch_kafka.sh")])
    if fetch.returncode != 0:
        return fetch.returncode
    broker = KafkaBroker(args.data_dir, port=args.port)
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    broker.start()
    broker.create_topic(args.topic, partitions=3)
    print(f"KAFKA_BOOTSTRAP={broker.bootstrap}", flush=True)
    print(f"logs: {broker.log_file}; Ctrl-C stops the broker", flush=True)
    while not stop and broker.is_running:
        time.sleep(0.5)
    broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
