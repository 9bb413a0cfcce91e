#!/usr/bin/env bash
# System packages txmon needs besides Python: a JDK 17+ and Maven. Installs them with
# apt when missing (the only step that needs root); a no-op when already present.
set -euo pipefail
need=()
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jdk-headless)
command -v javac >/dev/null 2>&1 || need+=(openjdk-17-jdk-headless)  # builds the JVM scorer (infra/jars.py)
command -v mvn  >/dev/null 2>&1 || need+=(maven)
command -v python3.11 >/dev/null 2>&1 || need+=(python3.11 python3.11-venv)
# The web console's browser tests drive Debian's Chromium through its own chromedriver.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing system packages: ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
