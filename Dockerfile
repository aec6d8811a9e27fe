# WorldStudio on a Hugging Face Docker Space (or any Docker host): the studio on 0.0.0.0:7860 as a non-root user.
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends libusb-1.0-0 ffmpeg libgl1 libgomp1 \
    && rm -rf /var/lib/apt/lists/*

# The Space convention: uid 1000, home-based caches.
RUN useradd --create-home --uid 1000 user
USER user
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    HF_HOME=/home/user/.cache/huggingface \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860
WORKDIR /home/user/app

# torch first, then everything else held to it (constraints.txt).
COPY --chown=user requirements.txt constraints.txt ./
RUN pip install --no-cache-dir --user torch==2.13.0 \
    && pip install --no-cache-dir --user -r requirements.txt -c constraints.txt

COPY --chown=user . .
EXPOSE 7860
CMD ["python", "app.py"]
