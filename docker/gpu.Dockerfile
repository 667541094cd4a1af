# tbseg service on an NVIDIA GPU: CUDA 13 + cuDNN 9 runtime base (what onnxruntime-gpu 1.31 is built for),
# Python 3.11, onnxruntime-gpu instead of onnxruntime, non-root. Needs the NVIDIA container toolkit on the host.
#   docker build -f docker/gpu.Dockerfile -t tbseg:gpu .
#   docker run --gpus all -p 8000:8000 -v tbseg-gpu-data:/data tbseg:gpu
# As a Ray worker image for slide archives (python -m service batch-ray; README, "Slide archives on Ray"):
#   docker build -f docker/gpu.Dockerfile --build-arg WITH_RAY=1 -t tbseg:gpu-ray .
#   docker run --gpus all --network host --shm-size=8g tbseg:gpu-ray ray start --address=HEAD:6379 --block
# CUDA_IMAGE is the base: Ubuntu 24.04 has no Python 3.11, so it comes from the deadsnakes archive there; a base
# whose own archive has python3.11 (Debian bookworm: the test suite builds this file on one, CUDA aside) takes it
# from there.
ARG CUDA_IMAGE=nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04
FROM ${CUDA_IMAGE}
ARG WITH_RAY=""

ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TBSEG_HOST=0.0.0.0 TBSEG_PORT=8000 TBSEG_MODELS_DIR=/app/models TBSEG_LABS_DIR=/app/labs \
    TBSEG_DATA_DIR=/data TBSEG_PROVIDERS=CUDAExecutionProvider,CPUExecutionProvider

RUN apt-get update \
    && if ! apt-cache show python3.11-venv >/dev/null 2>&1; then \
         apt-get install -y --no-install-recommends software-properties-common gpg-agent \
         && add-apt-repository -y ppa:deadsnakes/ppa \
         && apt-get purge -y software-properties-common gpg-agent && apt-get autoremove -y; \
       fi \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY service ./service
# The base image provides CUDA and cuDNN, so onnxruntime-gpu is installed without its pip CUDA libraries.
RUN pip install -c constraints.txt ".[api]" "onnxruntime-gpu==1.31.1" \
    && if [ -n "$WITH_RAY" ]; then pip install -c constraints.txt "ray[data]==2.60.0"; fi \
    && rm -rf /root/.cache /app/build
COPY models ./models
COPY labs ./labs

# slides and jobs (SQLite and job files) live in /data: mount a volume there to keep them across containers
RUN useradd --create-home --uid 10001 tbseg && mkdir /data && chown tbseg:tbseg /data
VOLUME /data
USER tbseg
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('TBSEG_PORT', '8000') + '/readyz', timeout=4).status != 200)"]
CMD ["python", "-m", "service", "serve"]
