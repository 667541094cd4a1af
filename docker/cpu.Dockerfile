# tbseg service on a plain CPU: Python 3.11, the service's dependencies only (no TensorFlow, no training code),
# run as a non-root user.
#   docker build -f docker/cpu.Dockerfile -t tbseg:cpu .
#   docker run -p 8000:8000 -v tbseg-data:/data tbseg:cpu
# BASE_IMAGE is any image with Python 3.11 and its venv module: the public python:3.11-slim by default; the test
# suite builds this same file on a Debian bookworm base made from Debian's packages (tests/test_containers.py).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TBSEG_HOST=0.0.0.0 TBSEG_PORT=8000 TBSEG_MODELS_DIR=/app/models TBSEG_LABS_DIR=/app/labs \
    TBSEG_DATA_DIR=/data TBSEG_PROVIDERS=CPUExecutionProvider

# A virtual environment, so the install is the same on every base (Debian's own Python has no pip of its own).
RUN python3 -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required")' \
    && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /app
# Only the service package is copied, so the wheel built from pyproject.toml holds no training code.
COPY pyproject.toml constraints.txt README.md ./
COPY service ./service
RUN pip install -c constraints.txt ".[service]" && rm -rf /root/.cache /app/build
COPY models ./models
COPY labs ./labs

# slides and jobs (SQLite and job files) live in /data: mount a volume there to keep them across containers
RUN useradd --create-home --uid 10001 tbseg && mkdir /data && chown tbseg:tbseg /data
VOLUME /data
USER tbseg
EXPOSE 8000
# SIGTERM lets in-flight fields finish (TBSEG_SHUTDOWN_GRACE_S, 120 s); give `docker stop -t` / compose's
# stop_grace_period more than that.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('TBSEG_PORT', '8000') + '/readyz', timeout=4).status != 200)"]
CMD ["python", "-m", "service", "serve"]
