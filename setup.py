"""txmon: real-time transaction monitoring for banks and UPI switches.

Metadata and dependencies are in pyproject.toml. This file only maps the top-level folders
into one ``txmon`` namespace (``txmon.models`` -> ``models/``), so nothing named ``models``
or ``infra`` is installed into site-packages.
"""

from setuptools import find_packages, setup

FOLDERS = ("ingestion", "spark_jobs", "models", "alerting", "infra", "bench", "webapp")

packages: list[str] = []
package_dir: dict[str, str] = {}
for folder in FOLDERS:
    for package in find_packages(where=".", include=[folder, f"{folder}.*"]):
        name = f"txmon.{package}"
        packages.append(name)
        package_dir[name] = package.replace(".", "/")

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={
        "txmon.infra": ["schema.cql", "ensure-system.sh", "maven/**/*.xml"],
        "txmon.alerting": ["templates/*.j2"],
        "txmon.ingestion": ["samples/*.csv"],
        "txmon.spark_jobs": ["jvm/**/*.java"],
        "txmon.webapp.console": ["templates/*.html", "static/*.css", "static/*.js"],
    },
)
