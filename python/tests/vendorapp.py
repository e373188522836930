"""The semaphore example of python/CELERY.md: at most 2 calls at once to a vendor's API,
however many Celery workers and threads run the task.

The worker imports it as ``celery -A vendorapp worker`` with ``PYLOCKS_TEST_REDIS_PORT`` set
to a server with the pylock module loaded (db 0: the lock store; db 4: broker; db 5: results)
and ``VENDOR_URL`` set to the vendor's endpoint (tests/vendor_server.py in the test).
"""

from __future__ import annotations

import json
import os
import urllib.request

import redis
from celery import Celery

from pylocks.blocking import RedisLockFactory
from pylocks.celery import LockedTask

PORT = int(os.environ["PYLOCKS_TEST_REDIS_PORT"])

celery_app = Celery("vendorapp", broker=f"redis://127.0.0.1:{PORT}/4",
                    backend=f"redis://127.0.0.1:{PORT}/5")
celery_app.conf.update(broker_connection_retry_on_startup=True, worker_prefetch_multiplier=1,
                       result_expires=600)

# One key per vendor: "vendor:<name>", a semaphore of 2 places (lock_limit below). A place is
# held for at most 30 s: a worker that dies holding one frees it then.
vendor_lock = RedisLockFactory(redis.Redis(host="127.0.0.1", port=PORT, db=0),
                               prefix="vendor", ttl=30, arity=1)


def post(vendor: str, order_id: str) -> dict:
    """The vendor's API call (about 0.5 s): the endpoint in ``VENDOR_URL``."""
    request = urllib.request.Request(f"{os.environ['VENDOR_URL']}/{vendor}/orders/{order_id}",
                                     method="POST", headers={"X-Worker": str(os.getpid())})
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.load(reply)


# lock_held="wait": a run that finds both places taken queues on the server (first come,
# first served) for up to lock_wait seconds, holding its worker thread meanwhile.
@celery_app.task(name="vendor.submit_order", base=LockedTask, bind=True, lock=vendor_lock,
                 lock_args=("vendor",), lock_limit=2, lock_held="wait", lock_wait=60)
def submit_order(self, vendor: str, order_id: str) -> dict:
    return post(vendor, order_id)


# lock_held="retry": a run that finds both places taken is retried 0.2 s later, freeing its
# worker thread (within max_retries).
@celery_app.task(name="vendor.submit_order_retrying", base=LockedTask, bind=True, lock=vendor_lock,
                 lock_args=("vendor",), lock_limit=2, lock_held="retry", lock_retry_countdown=0.2,
                 max_retries=200)
def submit_order_retrying(self, vendor: str, order_id: str) -> dict:
    return post(vendor, order_id)
