"""JVM artifacts: from Maven Central (fetched once), and txmon's own scorer jar (built here).

``infra/maven`` declares the artifacts; Maven copies each service's runtime classpath
to ``<jars_dir>/<module>/``. A fingerprint of the pom files is stored beside them, so a
second fetch does nothing (and needs no network) while the poms are unchanged.

txmon's JVM code (``spark_jobs/jvm``: the model scorer, and the checkpoint manager for
local checkpoints, spark_jobs/session.checkpoint_location) is compiled with the JDK's ``javac``
against the jars of the installed pyspark (no Maven needed: the Spark API it uses ships
with pyspark), into ``<jars_dir>/txmon-scoring/``; rebuilt when its sources change.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

from txmon.infra.errors import JarsMissingError, TxmonError
from txmon.infra.settings import PROJECT_ROOT, Settings

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
    """Fetch every module's jars with Maven and build the scorer jar. Returns False when
    everything was already current."""
    built = scoring_jar(settings, force=force)[1]
    if not force and jars_current(settings):
        return built
    mvn = shutil.which("mvn")
    if mvn is None:
        raise TxmonError("mvn not found: install Maven 3.8+ (e.g. `apt-get install maven`)")
    target = settings.jars_path
    for module in MODULES:  # stale jars of an older version must not linger on the classpath
        shutil.rmtree(target / module, ignore_errors=True)
    cmd = [mvn, "-B", "-q", "-f", str(MAVEN_DIR / "pom.xml"), "generate-resources", f"-Dtxmon.jars.dir={target}"]
    result = subprocess.run(cmd, check=False, capture_output=True, text=True)
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


SCORING_SOURCES = PROJECT_ROOT / "spark_jobs" / "jvm"
SCORING_MODULE = "txmon-scoring"


def _scoring_fingerprint() -> str:
    # pyspark only to find its jars: every txmon command imports this module.
    import pyspark

    digest = hashlib.sha256(pyspark.__version__.encode())
    for source in sorted(SCORING_SOURCES.rglob("*.java")):
        digest.update(source.relative_to(SCORING_SOURCES).as_posix().encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def scoring_jar(settings: Settings, force: bool = False) -> tuple[Path, bool]:
    """(path of txmon's scorer jar, whether it was built now). Compiles it when missing
    or when the sources or the pyspark version changed; the name carries the sources'
    fingerprint, so a running job never sees its jar replaced."""
    # lazy: pyspark (755 ms to import); txmon.infra.services.cassandra imports this module without it
    import pyspark

    fingerprint = _scoring_fingerprint()
    directory = settings.jars_path / SCORING_MODULE
    jar = directory / f"txmon-scoring-{fingerprint}.jar"
    if jar.is_file() and not force:
        return jar, False
    javac = shutil.which("javac")
    if javac is None:
        raise TxmonError(
            "javac not found: txmon's JVM scorer needs a JDK 17 (e.g. `apt-get install openjdk-17-jdk-headless`)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    spark_jars = Path(pyspark.__file__).parent / "jars"
    sources = sorted(str(p) for p in SCORING_SOURCES.rglob("*.java"))
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        classes = Path(tmp) / "classes"
        result = subprocess.run(
            [javac, "--release", "17", "-nowarn", "-d", str(classes), "-cp", str(spark_jars / "*"), *sources],
            check=False,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
            raise TxmonError(
                f"javac could not build the scorer jar from {SCORING_SOURCES} (exit {result.returncode}):\n{tail}"
            )
        staged = Path(tmp) / jar.name
        with zipfile.ZipFile(staged, "w", zipfile.ZIP_DEFLATED) as out:
            out.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\nCreated-By: txmon infra/jars.py\n")
            for path in sorted(classes.rglob("*.class")):
                out.write(path, path.relative_to(classes).as_posix())
        os.replace(staged, jar)  # atomic: a concurrent build or a reader sees a whole jar
    for old in directory.glob("txmon-scoring-*.jar"):
        if old != jar:
            old.unlink(missing_ok=True)
    return jar, True
