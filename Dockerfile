# Production image. The same image runs the portal (gunicorn, the default command),
# the Celery worker and Celery beat: docker-compose.yml only changes the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system app \
 && useradd --system --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app

WORKDIR /app

# WeasyPrint (the monthly report's PDF) lays out text with Pango and HarfBuzz; DejaVu
# is the PDF's font.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
    libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/*

# Dependencies before the code, so that a code change does not reinstall them.
COPY requirements.lock .
RUN pip install -r requirements.lock

COPY . .

# Static files are collected into the image (whitenoise serves them). Settings refuse to
# start in production without a secret, so this one step gets a dummy one; it is set on
# the command line only and never reaches the image's environment. The code stays owned
# by root: the app user can read it but not change it.
RUN DJANGO_SECRET_KEY=build-only-dummy-never-used-at-run-time DJANGO_DEBUG=false \
    python manage.py collectstatic --noinput

# The uploads volume takes this folder's ownership when compose first creates it.
RUN mkdir -p /app/media && chown app:app /app/media

USER app

EXPOSE 8000

# No curl in slim images; urlopen raises (exit 1) on any non-2xx answer or timeout.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

# /dev/shm for the worker heartbeat files: the container's /tmp is disk-backed overlay,
# where gunicorn's heartbeat can stall a worker (gunicorn FAQ).
CMD ["gunicorn", "spendtracker.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--worker-tmp-dir", "/dev/shm", "--access-logfile", "-"]
