#!/usr/bin/env bash
# Fetches the Kafka broker jars (tools/kafka/pom.xml) from Maven Central into
# .cache/kafka/libs (or $KAFKA_LIBS_DIR). Idempotent: does nothing when the jars for the
# current pom are already there.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
pom="$root/tools/kafka/pom.xml"
libs="${KAFKA_LIBS_DIR:-$root/.cache/kafka/libs}"
stamp="$libs/.pom-sha256"
want="$(sha256sum "$pom" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
command -v mvn >/dev/null || { echo "fetch_kafka.sh: Maven (mvn) is required: apt-get install -y maven" >&2; exit 1; }
command -v java >/dev/null || { echo "fetch_kafka.sh: Java 17 is required: apt-get install -y openjdk-17-jre-headless" >&2; exit 1; }
echo "fetching Kafka jars into $libs …" >&2
rm -rf "$libs"
mkdir -p "$libs"
if ! mvn -q -B -f "$pom" dependency:copy-dependencies -DincludeScope=runtime \
     -DoutputDirectory="$libs" >&2; then
  echo "fetch_kafka.sh: Maven could not fetch the Kafka jars (see above)" >&2
  exit 1
fi
echo "$want" > "$stamp"
