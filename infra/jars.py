"""JVM artifacts from Maven Central: fetch once, then locate them.

``infra/maven`` declares the artifacts; Maven copies each service's runtime classpath
to ``<jars_dir>/<module>/``. A fingerprint of the pom files is stored beside them, so a
second fetch does nothing (and needs no network) while the poms are unchanged.
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from infra.errors import JarsMissingError, TxmonError
from infra.settings import PROJECT_ROOT, Settings

MAVEN_DIR = PROJECT_ROOT / "infra" / "maven"
MODULES = ("kafka", "cassandra", "spark-kafka")
_FINGERPRINT = ".fingerprint"


def _pom_fingerprint() -> str:
    digest = hashlib.sha256()
    for pom in sorted(MAVEN_DIR.rglob("pom.xml")):
        digest.update(pom.relative_to(MAVEN_DIR).as_posix().encode())
        digest.update(pom.read_bytes())
    return digest.hexdigest()


def jars_current(settings: Settings) -> bool:
    marker = settings.jars_path / _FINGERPRINT
    if not marker.is_file() or marker.read_text().strip() != _pom_fingerprint():
        return False
    return all(any((settings.jars_path / m).glob("*.jar")) for m in MODULES)


def fetch(settings: Settings, force: bool = False) -> bool:
    """Fetch every module's jars with Maven. Returns False when already current."""
    if not force and jars_current(settings):
        return False
    mvn = shutil.which("mvn")
    if mvn is None:
        raise TxmonError("mvn not found: install Maven 3.8+ (e.g. `apt-get install maven`)")
    target = settings.jars_path
    for module in MODULES:  # stale jars of an older version must not linger on the classpath
        shutil.rmtree(target / module, ignore_errors=True)
    cmd = [mvn, "-B", "-q", "-f", str(MAVEN_DIR / "pom.xml"), "generate-resources",
           f"-Dtxmon.jars.dir={target}"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
        raise TxmonError(f"Maven could not fetch the JVM artifacts (exit {result.returncode}):\n{tail}")
    (target / _FINGERPRINT).write_text(_pom_fingerprint())
    return True


def classpath(settings: Settings, module: str) -> list[Path]:
    """The jars of one module, or a JarsMissingError that says how to get them."""
    jars = sorted((settings.jars_path / module).glob("*.jar"))
    if not jars:
        raise JarsMissingError(
            f"no {module} jars in {settings.jars_path / module}: run `txmon infra fetch` "
            "(needs Maven and access to Maven Central once)"
        )
    return jars
