# The shared TensorBoard: `tbpipe tensorboard` without TensorFlow. It installs tbpipe with its
# `tensorboard` extra only (pyproject.toml: TensorBoard with its native data server binary,
# tensorboard-plugin-profile, fsspec with gcsfs, s3fs and adlfs), so it serves the way
# `tbpipe tensorboard` does on a workstation, with its `auto` loader:
#   - a local folder (a mounted volume) and real gs://: TensorBoard's native data server;
#   - s3://, az:// and an emulator's gs://: the same data server on a local mirror of the root,
#     synced every reload interval (500 runs served in about the time of 50: docs/performance.md
#     section 8b). The mirror holds the root's event bytes: a temporary folder by default, or
#     `--mirror-dir DIR` (deploy/tensorboard gives it an emptyDir);
#   - `--loader python`: TensorBoard's Python loader reading the store itself (fsspec).
# tensorboard-plugin-profile serves the Profile tab (--profile-batch's TensorFlow profiles,
# {step}/plugins/profile/) without TensorFlow, its own converter reading the .xplane.pb files.
#
#   tbpipe build-images --variant tensorboard
#   docker build -f docker/tensorboard.Dockerfile -t localhost/tbpipe:0.1.0-tensorboard .
#   docker run -p 6006:6006 -v "$PWD/tbpipe-runs/logs:/logs:ro" localhost/tbpipe:0.1.0-tensorboard
#   docker run -p 6006:6006 localhost/tbpipe:0.1.0-tensorboard --log-root gs://bucket/logs
#   docker run -p 6006:6006 -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY -e AWS_ENDPOINT_URL \
#     localhost/tbpipe:0.1.0-tensorboard --log-root s3://bucket/logs --reload-interval 30 \
#     -- --samples_per_plugin=scalars=1000
#
# The entry point is `tbpipe tensorboard --host 0.0.0.0 --port 6006`; arguments are its flags
# and replace the default `--log-root /logs` (TensorBoard's own flags after `--`; the last
# value of a flag wins). Credentials come from the environment, as each store's library reads
# them (see README.md, "Storage").
# Build args and extra CA certificates: as in docker/Dockerfile.
ARG BASE_IMAGE=python:3.11.13-slim-bookworm

FROM ${BASE_IMAGE} AS base
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
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
USER root
WORKDIR /opt/tbpipe
COPY docker/ca-certificates/ /usr/local/share/ca-certificates/tbpipe/
COPY docker/constraints.txt ./
RUN set -eu; \
    if ls /usr/local/share/ca-certificates/tbpipe/*.crt >/dev/null 2>&1; then \
        update-ca-certificates >/dev/null; \
    fi; \
    python3 -m venv /opt/venv; \
    pip install --progress-bar off -c constraints.txt --upgrade pip; \
    useradd --uid 1000 --user-group --create-home --shell /bin/sh tbpipe; \
    mkdir -p /logs

# The requirements of the `tensorboard` extra (and tbpipe's own: kfp, PyYAML, packaging), a
# layer cached as long as they and docker/constraints.txt stay the same.
FROM base AS requirements
COPY pyproject.toml docker/requirements.py ./
RUN python3 requirements.py tensorboard > tensorboard.txt

# The project itself, without dependencies, into a staging prefix (as in docker/Dockerfile):
# a code change rebuilds only that layer.
FROM base AS project
COPY pyproject.toml README.m[d] ./
COPY components/ components/
COPY pipelines/ pipelines/
RUN pip install --progress-bar off --no-deps --no-warn-script-location --prefix /opt/project .

FROM base AS tensorboard
COPY --from=requirements /opt/tbpipe/tensorboard.txt ./
RUN pip install --progress-bar off -c constraints.txt -r tensorboard.txt
COPY --from=project /opt/project/ /opt/venv/
# No TensorFlow, the data server binary present, and the command it serves with importable.
RUN set -eu; pip check; cd /; \
    python3 -c "import importlib.util as u, sys; sys.exit(u.find_spec('tensorflow') is not None)"; \
    python3 -c "from tbpipe.pipelines.runners.tensorboard import data_server_available as a; \
import tbpipe.pipelines.runners.tensorboard_mirror, tbpipe.pipelines.cli.main, sys; \
sys.exit(not a())"
# Kubeflow's tensorboard-controller runs `/usr/local/bin/tensorboard --logdir=PATH --bind_all`
# in the cluster's TENSORBOARD_IMAGE: here that path is `tbpipe tensorboard`, which takes both
# flags (TensorBoard itself stays /opt/venv/bin/tensorboard, first on PATH).
RUN printf '#!/bin/sh\nexec tbpipe tensorboard --port 6006 "$@"\n' > /usr/local/bin/tensorboard; \
    chmod 755 /usr/local/bin/tensorboard
USER tbpipe
WORKDIR /home/tbpipe
EXPOSE 6006
ENTRYPOINT ["tbpipe", "tensorboard", "--host", "0.0.0.0", "--port", "6006"]
CMD ["--log-root", "/logs"]
