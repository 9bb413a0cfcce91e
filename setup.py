"""txmon: real-time transaction monitoring for banks and UPI switches."""
from setuptools import find_packages, setup

# Exact pins that co-install (resolved together into requirements.lock).
# pyspark must equal <spark.version> in infra/maven/pom.xml (the Kafka connector jar).
INSTALL_REQUIRES = [
    "pyspark==4.2.0",
    "pandas==2.3.3",  # pyspark 4.2 does not yet support pandas 3
    "pyarrow==26.0.1",
    "numpy==2.4.6",
    "kafka-python==3.0.12",
    "cassandra-driver==3.30.1",
    "river==0.26.1",
    "scikit-learn==1.9.1",
    "faker==40.54.0",
    "pydantic==2.14.3",
    "pydantic-settings==2.16.3",
    "typer==0.29.1",
    "pyyaml==6.0.3",
    "jinja2==3.1.6",
    "tenacity==9.2.1",
    "psutil==7.2.2",
    "tqdm==4.70.1",
    "lz4==4.4.5",  # Kafka producer compression
    # kafka-python checksums every record batch with CRC-32C: in pure Python unless this C
    # implementation is installed. With it the producer ran 2.0-2.2x faster at half the CPU.
    "crc32c==2.9.post0",
    "matplotlib==3.11.2",
    "apache-airflow==3.3.2",
]
TEST_REQUIRES = ["pytest==9.2.0", "aiosmtpd==1.4.6", "hypothesis==6.170.15"]

setup(
    name="txmon",
    version="0.1.0",
    description="Real-time transaction fraud monitoring: Kafka, Spark Structured Streaming, Cassandra",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["ingestion*", "spark_jobs*", "models*", "alerting*", "infra*", "bench*"]),
    package_data={"infra": ["schema.cql"], "alerting": ["templates/*.j2"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES},
    entry_points={"console_scripts": ["txmon=infra.cli:main"]},
)
