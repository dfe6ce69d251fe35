# One image for the migrate, listener and web services of docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY cascade ./cascade
COPY handlers ./handlers
COPY providers ./providers
COPY samples ./samples
COPY maintenance ./maintenance
COPY schema ./schema
COPY triggers ./triggers
COPY listener.py web.py ./
# Editable, so that schema/ and triggers/ are read from /app where the code expects them.
RUN pip install --no-cache-dir -e .

RUN useradd --create-home --uid 10001 cascade
USER cascade
EXPOSE 8080
CMD ["cascade", "--help"]
