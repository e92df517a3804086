# The shared TensorBoard: TensorBoard without TensorFlow, plus gcsfs and adlfs so it reads gs://
# and az:// log roots (without TensorFlow, TensorBoard's file layer goes through fsspec for every
# scheme but s3://, which its boto3 reader serves). It runs the
# Python loader (--load_fast=false) by default: gcsfs reads real GCS (Workload Identity,
# GOOGLE_APPLICATION_CREDENTIALS) and an emulator (STORAGE_EMULATOR_HOST) alike. TensorBoard's
# native data server is faster but has a GCS client of its own (gcloud, metadata server or the
# user's ADC file; no emulator): pass --load_fast=true to use it, e.g. on GKE with Workload
# Identity (deploy/tensorboard does) or for a large local log root. The last value wins.
# tensorboard-plugin-profile serves the Profile tab (--profile-batch's TensorFlow profiles,
# {step}/plugins/profile/) without TensorFlow, its own converter reading the .xplane.pb files.
#
#   tbpipe build-images --variant tensorboard
#   docker build -f docker/tensorboard.Dockerfile -t localhost/tbpipe:0.1.0-tensorboard .
#   docker run -p 6006:6006 -v "$PWD/tbpipe-runs/logs:/logs:ro" localhost/tbpipe:0.1.0-tensorboard
#   docker run -p 6006:6006 localhost/tbpipe:0.1.0-tensorboard --logdir gs://bucket/logs
#
# Arguments replace the default `--logdir /logs`; the server listens on 0.0.0.0:6006.
# A run being written shows up while it grows (gcsfs listings are not cached).
# Build args and extra CA certificates: as in docker/Dockerfile.
ARG BASE_IMAGE=python:3.11.13-slim-bookworm

FROM ${BASE_IMAGE}
ARG PIP_INDEX_URL=
ARG PIP_EXTRA_INDEX_URL=
ARG PIP_TRUSTED_HOST=
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    FSSPEC_GS='{"use_listings_cache": false}' \
    FSSPEC_AZ='{"use_listings_cache": false}'
USER root
COPY docker/ca-certificates/ /usr/local/share/ca-certificates/tbpipe/
COPY docker/constraints.txt /opt/tbpipe/constraints.txt
RUN set -eu; \
    if ls /usr/local/share/ca-certificates/tbpipe/*.crt >/dev/null 2>&1; then \
        update-ca-certificates >/dev/null; \
    fi; \
    python3 -m venv /opt/venv; \
    pip install --progress-bar off -c /opt/tbpipe/constraints.txt --upgrade pip; \
    pip install --progress-bar off -c /opt/tbpipe/constraints.txt tensorboard \
        tensorboard-plugin-profile gcsfs adlfs boto3; \
    pip check; \
    useradd --uid 1000 --user-group --create-home --shell /bin/sh tbpipe; \
    mkdir -p /logs
USER tbpipe
WORKDIR /home/tbpipe
EXPOSE 6006
ENTRYPOINT ["tensorboard", "--host", "0.0.0.0", "--port", "6006", "--load_fast=false"]
CMD ["--logdir", "/logs"]
