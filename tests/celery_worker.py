"""The project's Celery app as the worker tests start it, in processes of their own.

Every task such a worker queues (an evaluation queues the sending of its emails) goes
to the test's own queue, named in TEST_CELERY_QUEUE, never to the default queue that
the rest of the test run shares on the same Redis database. Remote control is off, so
the workers leave no broadcast queues behind.
"""

import os

from spendtracker.celery import app

app.conf.task_default_queue = os.environ["TEST_CELERY_QUEUE"]
app.conf.worker_enable_remote_control = False
