# mtango-bridge container: docker run -e TANGO_HOST=db:10000 -p 8000:8000 mtango-bridge
# Without TANGO_HOST it serves the embedded demo control system.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    MTANGO_VENV=/opt/mtango/venv \
    MTANGO_EXTRAS="" \
    MTANGO_HOST=0.0.0.0 \
    MTANGO_PORT=8000

RUN useradd --create-home --uid 1000 mtango
WORKDIR /app
COPY pyproject.toml README.md LICENSE main.py conf.py ./
COPY mtango ./mtango
COPY scripts ./scripts
# The same install recipe as the README and CI (scripts/setup.sh), without the test extras.
RUN bash scripts/setup.sh && chown -R mtango /app
USER mtango

EXPOSE 8000
# Liveness on the port the container was told to use (MTANGO_PORT), from the process itself.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD ["/opt/mtango/venv/bin/python", "-c", "import os,sys,urllib.request; port=os.environ.get('MTANGO_PORT','8000'); sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/health/live', timeout=4).status != 200)"]
CMD ["/opt/mtango/venv/bin/python", "main.py"]
