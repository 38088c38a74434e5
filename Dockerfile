# One image for every service of docker-compose.yml; the command picks the role
# (`matchops migrate|api|worker|beat|flower`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first (read from pyproject.toml), so a code change does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

# Installed in place, so the migrations are found next to the code.
COPY . .
RUN pip install --no-deps -e . \
    && useradd --system --uid 10001 --home-dir /app matchops \
    && mkdir -p /var/lib/matchops \
    && chown matchops /var/lib/matchops

USER matchops
EXPOSE 8000 5555
CMD ["matchops", "--help"]
