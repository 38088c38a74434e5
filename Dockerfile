# One image for every service of docker-compose.yml; the command picks the role
# (`matchops migrate|api|worker|beat|flower`).
# A tag, not a digest: pin it as python:3.11-slim@sha256:... where the registry can be
# asked (`docker buildx imagetools inspect python:3.11-slim`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, exactly as locked (versions and hashes), so a code change does not
# reinstall them. The production lock leaves out the embedded servers of `make run`.
COPY requirements/prod.lock requirements/prod.lock
RUN pip install --require-hashes -r requirements/prod.lock

# Installed in place, so the migrations are found next to the code.
COPY . .
RUN pip install --no-deps -e . \
    && useradd --system --uid 10001 --home-dir /app matchops \
    && mkdir -p /var/lib/matchops \
    && chown matchops /var/lib/matchops

USER matchops
EXPOSE 8000 5555
CMD ["matchops", "--help"]
