#!/usr/bin/env bash
# Makes sure a Java 17+ runtime is there for Spark (the scale-out tests and benchmark):
# Debian's openjdk-17-jre-headless, installed with apt if `java` is missing or older.
set -euo pipefail
version() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1; }
if command -v java >/dev/null && [ "$(version)" -ge 17 ]; then
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
$sudo apt-get update -qq >&2
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >&2
