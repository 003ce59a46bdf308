# The mlrepo image: one image for both the API (`mlrepo serve`) and the workers (`mlrepo worker`).
# Built by docker-compose.yml; needs Docker Hub and PyPI access.
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    MLREPO_DATA_DIR=/data

# bubblewrap: the sandbox for code packages where no Docker engine is reachable;
# docker.io (client only is used): the worker drives the host's engine through its socket.
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap docker.io python3-numpy \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# torch first, CPU build, pinned: sentence-transformers would otherwise pull a multi-GB CUDA build.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY api ./api
COPY catalog ./catalog
COPY search ./search
COPY ranking ./ranking
COPY executor ./executor
COPY infra ./infra
RUN pip install --no-cache-dir .

VOLUME /data
EXPOSE 8000
CMD ["mlrepo", "serve", "--host", "0.0.0.0", "--port", "8000"]
