"""The Celery app. In the embedded mode nothing talks to a broker: see reviewq/dispatch.py."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reviewq.settings")

app = Celery("reviewq")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
