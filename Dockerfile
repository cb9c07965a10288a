# The base serving image: slim Python + model_server, non-root, port 8080.
# mlshift's image builder appends the model's requirements and the bundle (at
# /opt/mlshift/model) as layers on top of this image; no rebuild of the base is needed.
FROM python:3.11-slim

# Libraries most bundles need; the builder adds whatever mlshift.json's requirements list.
ARG EXTRA_PACKAGES="scikit-learn"
ARG VERSION=0.1.0

LABEL org.opencontainers.image.title="mlshift-model-server" \
      org.opencontainers.image.description="Serves an mlshift model bundle over OIP v2 and KServe v1 with /metrics" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/mlshift/mlshift"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/opt/mlshift/lib \
    MLSHIFT_MODEL_DIR=/opt/mlshift/model \
    HOST=0.0.0.0 \
    PORT=8080

# model_server's runtime dependencies only (not the mlshift SDK: images never import it).
RUN pip install \
        "numpy>=1.24" "pandas>=2.0" "orjson>=3.9" "uvicorn[standard]>=0.30" \
        "prometheus-client>=0.20" "cloudpickle>=3.0" "skops>=0.10" ${EXTRA_PACKAGES} \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin mlshift \
    && mkdir -p /opt/mlshift/model

COPY model_server /opt/mlshift/lib/model_server

USER 10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=2s --start-period=20s \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/v2/health/ready', timeout=1)"]
ENTRYPOINT ["python", "-m", "model_server"]
