# An optional, prebuilt serving base: slim Python + model_server and its packages, non-root,
# port 8080. You do not need it: by default mlshift builds on the official python:3.X-slim and
# adds model_server and its packages as layers itself. This base saves those layers per image.
#
#   docker build -t registry.example.com/ml/serving-base:py3.11 .
#   (or any daemonless builder: buildah, kaniko, ...)
#   then base="registry.example.com/ml/serving-base:py3.11" or MLSHIFT_BASE_IMAGE=...
#
# mlshift's daemonless image builder appends the model's extra requirements and the bundle
# (at /opt/mlshift/model) as layers on top of this image; the base is never rebuilt per
# model. The io.mlshift.* labels tell the builder what the base already has, so a bundle that
# needs exactly these versions adds only its own layer.
FROM python:3.11-slim

ARG VERSION=0.1.0
# Pinned, so the label below says exactly what is installed.
ARG PACKAGES="numpy==2.4.6 pandas==3.1.1 orjson==3.13.0 uvicorn==0.54.0 httptools==0.9.0 uvloop==0.23.0 prometheus-client==0.26.0 packaging==26.4 cloudpickle==3.1.3 skops==0.16.0 scikit-learn==1.9.1 scipy==1.17.1 joblib==1.6.0"

LABEL org.opencontainers.image.title="mlshift-model-server" \
      org.opencontainers.image.description="Serves an mlshift model bundle over OIP v2 and KServe v1 with /metrics" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.mlshift.python="3.11" \
      io.mlshift.python-executable="python3" \
      io.mlshift.python-packages="${PACKAGES}" \
      io.mlshift.model-server="${VERSION}"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/opt/mlshift/lib \
    MLSHIFT_MODEL_DIR=/opt/mlshift/model \
    HOST=0.0.0.0 \
    PORT=8080

# model_server's runtime only (images never import the mlshift SDK). The uid matches the
# Deployment's runAsUser and the daemonless builder's image config.
RUN pip install ${PACKAGES} \
    && groupadd --gid 65532 mlshift \
    && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin mlshift \
    && mkdir -p /opt/mlshift/model

COPY model_server /opt/mlshift/lib/model_server

USER 65532:65532
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=2s --start-period=20s \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/v2/health/ready', timeout=1)"]
ENTRYPOINT ["python3", "-m", "model_server"]
