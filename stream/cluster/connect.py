"""Starting or joining Ray, and leaving nothing behind that this run started.

A Ray started here serves this run alone: every process of it listens on loopback only (`loopback_only`),
and Ray (2.52 and later) protects it with a token of its own. A cluster is set up by its operator
(README, running a cluster safely: a private network, a firewall, RAY_AUTH_MODE=token on every node).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from stream.cluster.ledger import NAMESPACE
from stream.errors import UserError

REACH_TIMEOUT_S = 3.0
DIRECT_BYTES = 4 * 2**20
SINGLE_NODE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # Ray's switch for machines where clusters are off


@dataclass(frozen=True)
class Cluster:
    address: str  # what the run joined: "local" for a Ray started here
    started_here: bool  # ray.shutdown() then stops every process of it
    serve_started_here: bool = False


def reachable(address: str) -> None:
    """A HOST:PORT that answers nothing fails in seconds, not after ray.init's minutes of retries."""
    if address == "auto" or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=REACH_TIMEOUT_S):
            pass
    except (OSError, ValueError) as exc:
        raise UserError(f"--ray-address {address}: no Ray cluster answers there ({exc}); start one with "
                        "`ray start --head`, or leave --ray-address out to run Ray on this machine") from None


def connect(address: str | None) -> Cluster:
    import ray

    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # its INFO lines would bury the run's own output
    quiet = dict(include_dashboard=False, logging_level=logging.ERROR, namespace=NAMESPACE,
                 log_to_driver=bool(os.environ.get("STREAM_DEBUG")))
    if address is None:
        # A request's pixels (150-300 KB) go with the call, not through the object store: measured on 2 cores,
        # the store's extra round trips cost more than the copy.
        with loopback_only():
            ray.init(_node_ip_address="127.0.0.1", _system_config={"max_direct_call_object_size": DIRECT_BYTES},
                     dashboard_host="127.0.0.1", **quiet)
        return Cluster("local", True)
    reachable(address)
    try:
        ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UserError(f"--ray-address {address}: cannot join that Ray cluster ({str(exc).splitlines()[0]})") from None
    return Cluster(address, False)


@contextmanager
def loopback_only() -> Iterator[None]:
    """While Ray starts here: its GCS, raylet, workers and agents bind 127.0.0.1, not every interface.

    On Linux ray.init turns a 127.0.0.1 node address into the machine's routable one, so that other nodes could
    join, and its servers then listened on 0.0.0.0 and :: (Ray 2.60, measured: GCS, raylet, workers, dashboard
    agent); unauthenticated before 2.52. It keeps loopback where it believes clusters are off, as on Windows and
    macOS. The switch is read from the environment when ray is imported, so it is set on the module too; the
    processes started meanwhile inherit the environment."""
    from ray._private import ray_constants

    saved_env, saved = os.environ.get(SINGLE_NODE), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[SINGLE_NODE] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved
        if saved_env is None:
            os.environ.pop(SINGLE_NODE, None)
        else:
            os.environ[SINGLE_NODE] = saved_env


def start_serve() -> bool:
    """Serve without its HTTP proxy (the streams call the deployment's handle); whether it was started here."""
    import ray
    from ray import serve
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    try:
        ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        existed = True
    except ValueError:
        existed = False
    logging.disable(logging.INFO)  # serve.start sets up its own INFO logging, and uses it at once
    try:
        serve.start(proxy_location="Disabled")
    finally:
        logging.disable(logging.NOTSET)
    for handler in logging.getLogger("ray.serve").handlers:
        handler.setLevel(logging.WARNING)
    return not existed


def leave(cluster: Cluster, app: str | None) -> None:
    """Delete this run's application, stop what this run started; every step tried whatever failed before."""
    import ray
    from ray import serve

    steps = []
    if app is not None:
        steps.append(lambda: serve.delete(app))
    if cluster.serve_started_here and not cluster.started_here:
        steps.append(serve.shutdown)
    steps.append(ray.shutdown)  # a Ray started here stops with it; a joined one is only left
    for step in steps:
        try:
            step()
        except Exception:  # noqa: BLE001, S110 - teardown goes on; nothing here can be fixed by the user
            pass
