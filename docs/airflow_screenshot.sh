#!/usr/bin/env bash
# Regenerates docs/airflow_dags.png: the DAG list of the project's Airflow in headless
# Chromium (Debian package chromium-headless-shell). It starts a throw-away Airflow
# (own state dir and port, every visitor admin so no login page is in the way), takes
# the screenshot and stops it. Usage: docs/airflow_screenshot.sh [port]
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${1:-28090}"
STATE="$(mktemp -d /tmp/txmon-airflow-docs.XXXXXX)"
export TXMON_STATE_DIR="$STATE" TXMON_AIRFLOW__PORT="$PORT" AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True
trap '.venv/bin/txmon airflow down; rm -rf "$STATE"' EXIT
.venv/bin/txmon airflow up
# The DAG processor registers the DAG files shortly after start-up.
for _ in $(seq 60); do
  .venv/bin/txmon airflow status | grep -q alert_dispatch && break
  sleep 3
done
chromium-headless-shell --no-sandbox --hide-scrollbars --window-size=1440,900 \
  --virtual-time-budget=20000 --screenshot=docs/airflow_dags.png "http://127.0.0.1:$PORT/dags"
echo "wrote docs/airflow_dags.png"
