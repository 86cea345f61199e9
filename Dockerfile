# fedrisk: one image for every role of one institution (`fedrisk party`, `fedrisk serve`, ...).
#
#   docker build -t fedrisk:0.1.0 .
#   docker run --rm fedrisk:0.1.0 --version
#
# Two stages: the build stage compiles the crypto kernel (fedrisk/crypto/_montgomery.c over GMP)
# and fails if it did not compile (setup.py treats it as optional; a production image must not
# silently fall back to the slower gmpy2 kernels); the runtime stage carries only the virtualenv
# and GMP's shared library, and runs as an unprivileged user. Deployment example: deploy/.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev libgmp-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY fedrisk ./fedrisk
RUN python -m venv /opt/fedrisk \
 && /opt/fedrisk/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/fedrisk/bin/pip install --no-cache-dir . \
 && /opt/fedrisk/bin/python -m fedrisk.crypto.montgomery \
 && /opt/fedrisk/bin/python -m fedrisk.crypto.montgomery | grep -q "compiled kernel"

FROM python:${PYTHON_VERSION}-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgmp10 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 fedrisk \
 && useradd --system --uid 10001 --gid fedrisk --home-dir /var/lib/fedrisk --create-home \
            --shell /usr/sbin/nologin fedrisk
COPY --from=build /opt/fedrisk /opt/fedrisk
ENV PATH=/opt/fedrisk/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# the compiled kernel must load in the final image too (libgmp10 present, same Python)
RUN python -m fedrisk.crypto.montgomery | grep -q "compiled kernel" && fedrisk --version
# /etc/fedrisk: job spec + certificates (read-only mount); /var/lib/fedrisk: run directories,
# models, logs, ledgers (a volume); the party's data files are mounted where its job spec says
VOLUME ["/var/lib/fedrisk"]
WORKDIR /var/lib/fedrisk
USER 10001:10001
# the party's gRPC port as in its job spec (50272 in deploy/compose); the health port stays on loopback
EXPOSE 50272
ENTRYPOINT ["fedrisk"]
CMD ["--help"]
