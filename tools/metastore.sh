#!/usr/bin/env bash
# A PostgreSQL database for the Hive metastore (catalog.metastore: hive), on 127.0.0.1 only, its data
# under ./metastore. Debian's postgresql package is installed when it is missing (as root).
#
#   tools/metastore.sh start    # install if needed, create the database once, start the server
#   tools/metastore.sh stop
#   tools/metastore.sh status   # exit 0 while it answers
#   tools/metastore.sh url      # the JDBC URL to give catalog.metastore_url
#   tools/metastore.sh schema [JDBC_URL]   # create the metastore's tables (start does it once)
#
# SPARKREC_METASTORE_DIR (./metastore) and SPARKREC_METASTORE_PORT (5433) move it. A development
# metastore: connections from 127.0.0.1 are trusted; for a shared one, point catalog.metastore_url
# at your own server and give its password through ${ENV} (see docs/tables.md).
set -euo pipefail
cd "$(dirname "$0")/.."

dir=$(realpath -m "${SPARKREC_METASTORE_DIR:-metastore}")
data="$dir/pgdata"
port=${SPARKREC_METASTORE_PORT:-5433}
database=sparkrec_metastore
user=sparkrec

pg_bin() {
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  if [ -z "$found" ] && command -v pg_ctl >/dev/null; then found=$(dirname "$(command -v pg_ctl)"); fi
  echo "$found"
}

install_postgres() {
  if [ -n "$(pg_bin)" ]; then return; fi
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "PostgreSQL is not installed: apt-get install -y postgresql (as root), then run this again" >&2
    exit 1
  fi
  echo "[metastore] installing Debian's postgresql package"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null; }
}

# PostgreSQL refuses to run as root: as root, the server runs as the package's postgres user.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

running() { [ -n "$(pg_bin)" ] && [ -f "$data/PG_VERSION" ] && as_owner "$(pg_bin)/pg_ctl" -D "$data" status >/dev/null 2>&1; }

start() {
  install_postgres
  local bin; bin=$(pg_bin)
  mkdir -p "$dir"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$dir"
    runuser -u postgres -- test -w "$dir" || {
      echo "the postgres user cannot reach $dir (a parent folder is private): set SPARKREC_METASTORE_DIR" \
        "to a folder it can reach, e.g. SPARKREC_METASTORE_DIR=/var/tmp/sparkrec-metastore" >&2; exit 1; }
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    echo "[metastore] creating the database cluster in $data"
    as_owner "$bin/initdb" -D "$data" -U postgres -A trust -E UTF8 >/dev/null
  fi
  if running; then
    echo "[metastore] already running on 127.0.0.1:$port"
  else
    as_owner "$bin/pg_ctl" -D "$data" -l "$dir/postgres.log" -w -t 60 \
      -o "-p $port -c listen_addresses=127.0.0.1 -k $data" start >/dev/null \
      || { echo "PostgreSQL did not start; its log: $dir/postgres.log" >&2; tail -5 "$dir/postgres.log" >&2; exit 1; }
    echo "[metastore] PostgreSQL on 127.0.0.1:$port (data: $data)"
  fi
  local psql=("$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -qtAX)
  if [ -z "$("${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname = '$user'")" ]; then
    "${psql[@]}" -c "CREATE ROLE $user LOGIN"
  fi
  if [ -z "$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$database'")" ]; then
    "${psql[@]}" -c "CREATE DATABASE $database OWNER $user"
    echo "[metastore] created database $database"
  fi
  if [ -z "$("${psql[@]}" -d "$database" -c "SELECT 1 FROM pg_tables WHERE tablename = 'TBLS'")" ]; then
    schema "$(url)"
  fi
  echo "[metastore] catalog.metastore_url: $(url)"
}

# The Hive metastore's tables, created up front by DataNucleus's SchemaTool from the mapping that
# ships in pyspark's hive-metastore jar (created lazily instead, inside the metastore's own
# transactions, PostgreSQL deadlocks on the first CREATE TABLE).
schema() {
  local jdbc=$1 spark_home driver java
  [ -x .venv/bin/python ] || { echo "run make setup first" >&2; exit 1; }
  spark_home=$(.venv/bin/python -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
  driver=$(grep -s '/org.postgresql_postgresql-[^/]*\.jar$' .venv/spark-jars.txt | head -1 || true)
  if [ -z "$driver" ]; then
    .venv/bin/sparkrec doctor --quiet >/dev/null 2>&1   # resolves Delta's jars and the JDBC driver
    driver=$(grep '/org.postgresql_postgresql-[^/]*\.jar$' .venv/spark-jars.txt | head -1)
  fi
  java="$(tools/java_home.sh)/bin/java"
  local work; work=$(mktemp -d)
  unzip -q -o "$spark_home"/jars/hive-metastore-*.jar package.jdo -d "$work"
  cat > "$work/datanucleus.properties" <<PROPS
javax.jdo.option.ConnectionURL=$jdbc
javax.jdo.option.ConnectionDriverName=org.postgresql.Driver
datanucleus.storeManagerType=rdbms
datanucleus.identifierFactory=datanucleus1
datanucleus.rdbms.useLegacyNativeValueStrategy=true
PROPS
  "$java" -cp "$spark_home/jars/*:$driver" org.datanucleus.store.schema.SchemaTool \
    -create -api JDO -props "$work/datanucleus.properties" "$work/package.jdo" >"$work/schematool.log" 2>&1 \
    || { tail -20 "$work/schematool.log" >&2; rm -rf "$work"; exit 1; }
  rm -rf "$work"
  # The schema's version, as Hive's own schematool records it: clients that verify it accept it.
  local version
  version=$(basename "$spark_home"/jars/hive-metastore-*.jar | sed -E 's/hive-metastore-([0-9]+\.[0-9]+)\..*/\1.0/')
  "$(pg_bin)/psql" -qtAX -d "${jdbc#jdbc:}" -c "INSERT INTO \"VERSION\" VALUES (1, '$version', 'Hive release version $version')"
  echo "[metastore] created the metastore's tables (Hive schema $version)"
}

stop() {
  if running; then
    as_owner "$(pg_bin)/pg_ctl" -D "$data" -m fast -w stop >/dev/null
    echo "[metastore] stopped"
  else
    echo "[metastore] not running"
  fi
}

status() {
  if running; then echo "[metastore] running on 127.0.0.1:$port (data: $data)"; else echo "[metastore] not running"; return 3; fi
}

url() { echo "jdbc:postgresql://127.0.0.1:$port/$database?user=$user"; }

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  url) url ;;
  schema) schema "${2:-$(url)}" ;;
  *) echo "usage: tools/metastore.sh start|stop|status|url|schema [JDBC_URL]" >&2; exit 2 ;;
esac
