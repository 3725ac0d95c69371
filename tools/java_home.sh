#!/usr/bin/env bash
# Prints a JAVA_HOME for Java 17 or 21 (what Spark 4.2 supports), or fails.
set -u
is_ok() { "$1/bin/java" -version 2>&1 | grep -qE 'version "(17|21)[."]'; }
for candidate in "${JAVA_HOME:-}" $(dirname "$(dirname "$(readlink -f "$(command -v java 2>/dev/null || echo /nonexistent)")")") \
                 /usr/lib/jvm/java-17-openjdk-* /usr/lib/jvm/java-21-openjdk-* /usr/lib/jvm/temurin-17* /usr/lib/jvm/temurin-21*; do
  if [ -n "$candidate" ] && [ -x "$candidate/bin/java" ] && is_ok "$candidate"; then echo "$candidate"; exit 0; fi
done
exit 1
