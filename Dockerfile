FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY stream_app ./stream_app
COPY features ./features
COPY models ./models
COPY configs ./configs
RUN pip install --no-cache-dir .
ENV STREAM_DATA_DIR=/var/lib/stream-app
CMD ["stream-app", "worker"]
