"""`python -m hack.podrunner`: run the local pod runner until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from urllib.parse import urlparse

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from hack.podrunner.kube import Kube
from hack.podrunner.runner import PodRunner

DEFAULT_SELECTOR = "app.kubernetes.io/part-of=deltaforge"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.podrunner", description=__doc__)
    parser.add_argument("--kubeconfig", required=True, help="admin kubeconfig of the local control plane")
    parser.add_argument("--work-dir", required=True, type=Path, help="per-pod directories, volumes and logs")
    parser.add_argument("--node", default="deltaforge-local", help="name of the Node the runner registers")
    parser.add_argument("--selector", default=DEFAULT_SELECTOR, help="label selector of the pods it runs")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between passes")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s podrunner %(levelname)s %(message)s", stream=sys.stdout
    )

    kube = Kube(args.kubeconfig)
    server = urlparse(kube.api_client.configuration.host)
    runner = PodRunner(
        kube,
        node=args.node,
        selector=args.selector,
        work_dir=args.work_dir,
        api_host=server.hostname or "127.0.0.1",
        api_port=server.port or 443,
    )
    stopping = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        logging.info("signal %d: stopping every container", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    runner.register_node()
    try:
        while not stopping.is_set():
            started = time.monotonic()
            try:
                runner.tick()
            except (ApiException, HTTPError, OSError) as error:
                logging.warning("pass failed, retrying: %s", error)
            stopping.wait(max(args.interval - (time.monotonic() - started), 0.05))
    finally:
        runner.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
