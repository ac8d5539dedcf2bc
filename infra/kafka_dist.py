"""The Apache Kafka distribution Parley runs: Java, and the broker's jars fetched by Maven.

``infra/kafka/pom.xml`` pins the broker (``org.apache.kafka:kafka_2.13``), its
runtime dependencies and a log4j2 backend. :func:`install_kafka` asks Maven to copy
them into ``<home>/libs`` with a Maven repository of its own (``<home>/m2``), so
nothing lands in the user's home directory and ``make clean`` removes it all. The
home is ``PARLEY_KAFKA_HOME`` or ``.parley/kafka`` beside the checkout (the
current directory for an installed package).

Every check here runs before anything starts and fails with what is missing and
how to get it: no Java, a Java older than 17, no Maven, Maven Central unreachable.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from kernel.errors import BinaryNotFoundError, InfraError

__all__ = [
    "KAFKA_VERSION",
    "MIN_JAVA",
    "KafkaDist",
    "install_kafka",
    "java_version",
    "kafka_home",
    "parse_java_version",
    "resolve_kafka",
]

logger = logging.getLogger(__name__)

_POM_DIR = Path(__file__).parent / "kafka"
POM = _POM_DIR / "pom.xml"
LOG4J_CONFIG = _POM_DIR / "log4j2.yaml"
MIN_JAVA = 17
#: Read from the pom, so the pom stays the one place the version is written.
KAFKA_VERSION = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())[1]  # type: ignore[index]
_MAIN_JAR = f"kafka_2.13-{KAFKA_VERSION}.jar"
_JAVA_HINT = "install OpenJDK 17 or newer (Debian: apt-get install openjdk-17-jre-headless)"
_MAVEN_HINT = "install Maven (Debian: apt-get install maven)"


@dataclass(frozen=True)
class KafkaDist:
    """A Java runtime and the broker's class path: what a node is started with."""

    java: str
    libs: Path
    log4j_config: Path = LOG4J_CONFIG

    @property
    def classpath(self) -> str:
        return str(self.libs / "*")


def kafka_home() -> Path:
    """``PARLEY_KAFKA_HOME``, else ``.parley/kafka`` in the checkout (or current directory)."""
    configured = os.environ.get("PARLEY_KAFKA_HOME", "").strip()
    if configured:
        return Path(configured).absolute()
    checkout = Path(__file__).resolve().parent.parent
    root = checkout if (checkout / "pyproject.toml").is_file() else Path.cwd()
    return root / ".parley" / "kafka"


def parse_java_version(output: str) -> int | None:
    """The major version in ``java -version``'s output (``"17.0.15"`` → 17, ``"1.8.0"`` → 8)."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', output)
    if match is None:
        return None
    major = int(match[1])
    return int(match[2] or 0) if major == 1 else major


def java_version(java: str) -> int | None:
    try:
        done = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_java_version(done.stderr + done.stdout)


def _find_java() -> str:
    """``$JAVA_HOME/bin/java``, else ``java`` on PATH; at least :data:`MIN_JAVA`."""
    java_home = os.environ.get("JAVA_HOME", "").strip()
    candidate = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    where = "$JAVA_HOME/bin/java" if java_home else "java on PATH"
    if candidate is None or not Path(candidate).is_file():
        raise BinaryNotFoundError("java", f"{where} (not found); {_JAVA_HINT}")
    version = java_version(candidate)
    if version is None or version < MIN_JAVA:
        found = "an unreadable version" if version is None else f"Java {version}"
        raise InfraError(
            f"Apache Kafka {KAFKA_VERSION} needs Java {MIN_JAVA} or newer; {candidate} is "
            f"{found}: {_JAVA_HINT}, or point JAVA_HOME at one"
        )
    return candidate


def resolve_kafka(home: Path | None = None, *, install: bool = True) -> KafkaDist:
    """Java and the broker's jars, fetching the jars first if they are missing and
    ``install`` is true. Raises with what is missing before anything starts."""
    java = _find_java()
    libs = (home or kafka_home()) / "libs"
    if not (libs / _MAIN_JAR).is_file():
        if not install:
            raise BinaryNotFoundError(
                "Apache Kafka", f"{libs / _MAIN_JAR} (not fetched yet: run `parley infra install`)"
            )
        install_kafka(home)
    return KafkaDist(java, libs)


def install_kafka(home: Path | None = None, *, timeout: float = 900) -> Path:
    """Fetch the broker's jars with Maven into ``<home>/libs``; returns that folder.

    Idempotent: jars already there are kept, and a finished install is detected by
    the main jar. A failed fetch leaves no half-filled ``libs``.
    """
    home = home or kafka_home()
    libs = home / "libs"
    if (libs / _MAIN_JAR).is_file():
        return libs
    _find_java()
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BinaryNotFoundError("mvn", f"mvn on PATH (not found); {_MAVEN_HINT}")
    staging = home / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    argv = [
        mvn, "-B", "-q", "-f", str(POM),
        f"-Dmaven.repo.local={home / 'm2'}",
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={staging}",
    ]  # fmt: skip
    logger.info("infra.kafka.install version=%s into=%s", KAFKA_VERSION, libs)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise InfraError(
            f"fetching Apache Kafka {KAFKA_VERSION} with Maven took over {timeout:.0f} s; "
            "is Maven Central (https://repo.maven.apache.org) reachable from here?"
        ) from exc
    if done.returncode != 0 or not (staging / _MAIN_JAR).is_file():
        output = (done.stdout + done.stderr).strip().splitlines()
        unreachable = any(
            "Could not transfer" in line or "Unknown host" in line or "Connect" in line
            for line in output
        )
        hint = (
            "Maven Central (https://repo.maven.apache.org) is unreachable from this machine; "
            "fix the network or Maven's proxy settings (~/.m2/settings.xml)"
            if unreachable
            else "see Maven's output above"
        )
        tail = "\n".join(output[-15:])
        raise InfraError(
            f"could not fetch Apache Kafka {KAFKA_VERSION} with Maven (exit {done.returncode}): "
            f"{hint}\n{tail}"
        )
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    return libs
