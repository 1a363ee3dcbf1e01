# syntax=docker/dockerfile:1
# The MLflow tracking server image (infra/kubernetes/mlflow.yaml): MLflow at the version the
# project pins (requirements.txt), the PostgreSQL driver for --backend-store-uri postgresql://...
# and boto3 for --artifacts-destination s3://... No CUDA, no torch: a small image for a CPU node.
#
#   docker build -f infra/docker/mlflow.Dockerfile -t ghcr.io/example-org/elmo-mlflow:3.17.2 infra/docker
#
# The tag is the MLflow version (tests/test_infra_manifests.py checks both against requirements.txt).
FROM python:3.11-slim

ARG MLFLOW_VERSION=3.17.2
ARG BOTO3_VERSION=1.44.8
ARG PSYCOPG2_VERSION=2.9.13

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install "mlflow==${MLFLOW_VERSION}" "boto3==${BOTO3_VERSION}" "psycopg2-binary==${PSYCOPG2_VERSION}" \
 && mlflow --version

RUN useradd --create-home --uid 1000 mlflow
USER 1000
WORKDIR /home/mlflow
EXPOSE 5000
ENTRYPOINT ["mlflow"]
CMD ["server", "--host", "0.0.0.0", "--port", "5000"]
