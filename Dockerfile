# WorldStudio's runtime image: the studio on 0.0.0.0:7860 as a non-root user, for any Docker host (or a Space
# switched to `sdk: docker`, README "Run with Docker"). Runtime packages only: the tests' pytest and Playwright
# are in requirements-dev.txt, and .dockerignore leaves tests/, .venv and outputs out of the build context.
FROM python:3.11-slim

# Debian packages from packages.txt, the list a Gradio Space installs too (open3d's libusb/libGL/libEGL, ffmpeg).
COPY packages.txt /tmp/packages.txt
RUN apt-get update \
    && xargs apt-get install -y --no-install-recommends < /tmp/packages.txt \
    && rm -rf /var/lib/apt/lists/* /tmp/packages.txt

# The Space convention: uid 1000, home-based caches.
RUN useradd --create-home --uid 1000 user
USER user
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    HF_HOME=/home/user/.cache/huggingface \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860
WORKDIR /home/user/app

# torch first (PyPI's build has CUDA; --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu for a small
# CPU-only image), then everything else held to it by constraints.txt.
ARG TORCH_INDEX=https://pypi.org/simple
COPY --chown=user requirements.txt constraints.txt ./
RUN pip install --no-cache-dir --user --index-url "$TORCH_INDEX" torch==2.13.0 \
    && pip install --no-cache-dir --user -r requirements.txt -c constraints.txt

COPY --chown=user . .
EXPOSE 7860
CMD ["python", "app.py"]
