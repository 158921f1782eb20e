# The test stack's PostgreSQL (tests/compose/compose.override.yaml): Debian's postgresql-15 on the
# local Debian base, in place of the postgres image. postgres-entrypoint.sh does what compose.yaml
# asks of the official image: POSTGRES_USER / _PASSWORD / _DB, /docker-entrypoint-initdb.d/*.sql
# on an empty volume, data in /var/lib/postgresql/data, pg_isready for the health check.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}
# The user first, with the official image's uid (999), so USER names it by number. No "main"
# cluster from the package's postinst: the entrypoint makes the only one, on the volume.
# Not pinned: bookworm's security updates replace postgresql-15's version (pinned: a failed build).
# hadolint ignore=DL3008
RUN groupadd --system --gid 999 postgres \
    && useradd --system --uid 999 --gid 999 --home-dir /var/lib/postgresql --shell /bin/sh postgres \
    && mkdir -p /etc/postgresql-common/createcluster.d \
    && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/no-main.conf \
    && apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
    && install -d -o postgres -g postgres -m 700 /var/lib/postgresql/data \
    && install -d -o postgres -g postgres -m 2775 /var/run/postgresql \
    && install -d /docker-entrypoint-initdb.d
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
USER 999
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["/bin/sh", "/usr/local/bin/postgres-entrypoint.sh"]
