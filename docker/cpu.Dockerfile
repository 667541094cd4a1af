# tbseg service on a plain CPU: python:3.11-slim, the service's dependencies only (no TensorFlow), non-root.
#   docker build -f docker/cpu.Dockerfile -t tbseg:cpu .
#   docker run -p 8000:8000 tbseg:cpu
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TBSEG_HOST=0.0.0.0 TBSEG_PORT=8000 TBSEG_MODELS_DIR=/app/models TBSEG_DATA_DIR=/data \
    TBSEG_PROVIDERS=CPUExecutionProvider

WORKDIR /app
# Only the service package is copied, so the wheel built from pyproject.toml holds no training code.
COPY pyproject.toml constraints.txt README.md ./
COPY service ./service
RUN pip install -c constraints.txt ".[service]" && rm -rf /root/.cache
COPY models ./models

# slides and jobs (SQLite and job files) live in /data: mount a volume there to keep them across containers
RUN useradd --create-home --uid 10001 tbseg && mkdir /data && chown tbseg:tbseg /data
VOLUME /data
USER tbseg
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4).status != 200)"]
CMD ["python", "-m", "service", "serve"]
