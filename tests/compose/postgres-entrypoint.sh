#!/bin/sh
# On an empty data folder: initdb with POSTGRES_USER as superuser and POSTGRES_PASSWORD (read from
# a file, never on a command line), password logins over TCP, POSTGRES_DB created, then every
# /docker-entrypoint-initdb.d/*.sql run once. Then PostgreSQL in the foreground on every address.
set -eu
: "${POSTGRES_USER:?}" "${POSTGRES_PASSWORD:?}"
POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb --pgdata "$PGDATA" --username "$POSTGRES_USER" --pwfile "$pwfile" \
        --auth-local trust --auth-host scram-sha-256 --encoding UTF8 --locale C.UTF-8 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    # Set up over the socket only, so nobody connects before the init scripts have run.
    pg_ctl --pgdata "$PGDATA" --wait --silent -o "-c listen_addresses=''" start
    if [ "$POSTGRES_DB" != postgres ]; then
        psql --quiet -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
            -c "CREATE DATABASE \"$POSTGRES_DB\""
    fi
    for script in /docker-entrypoint-initdb.d/*.sql; do
        [ -e "$script" ] || continue
        echo "running $script"
        psql --quiet -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
            --file "$script"
    done
    pg_ctl --pgdata "$PGDATA" --wait --silent --mode fast stop
fi
exec postgres -c listen_addresses='*'
