"""The pod status the runner reports, computed from its containers' observed states. Pure logic."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]


@dataclass
class ContainerState:
    """What the runner observed of one container, in the terms of `v1.ContainerStatus`."""

    name: str
    image: str
    state: str = "waiting"  # waiting | running | terminated
    reason: str = "ContainerCreating"
    message: str = ""
    exit_code: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    ready: bool = False
    restart_count: int = 0
    pid: int | None = None
    last_terminated: Json | None = field(default=None)

    def as_status(self) -> Json:
        if self.state == "running":
            state: Json = {"running": {"startedAt": self.started_at}}
        elif self.state == "terminated":
            state = {"terminated": self.terminated()}
        else:
            state = {
                "waiting": {"reason": self.reason, **({"message": self.message} if self.message else {})}
            }
        return {
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "containerID": f"podrunner://{self.pid}" if self.pid else None,
            "ready": self.ready,
            "started": self.state == "running",
            "restartCount": self.restart_count,
            "state": state,
            "lastState": {"terminated": self.last_terminated} if self.last_terminated else {},
        }

    def terminated(self) -> Json:
        return {
            "exitCode": self.exit_code if self.exit_code is not None else -1,
            "reason": self.reason,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            **({"message": self.message} if self.message else {}),
        }


def phase(containers: list[ContainerState], restart_policy: str) -> str:
    if any(container.state == "running" for container in containers):
        return "Running"
    if containers and all(container.state == "terminated" for container in containers):
        if restart_policy == "Never" or (
            restart_policy == "OnFailure" and all(container.exit_code == 0 for container in containers)
        ):
            return "Succeeded" if all(container.exit_code == 0 for container in containers) else "Failed"
        return "Running"
    return "Pending"


def _condition(previous: list[Json], kind: str, true: bool, now: str, reason: str = "") -> Json:
    status = "True" if true else "False"
    earlier = next((c for c in previous if c.get("type") == kind), None)
    unchanged = earlier is not None and earlier.get("status") == status
    condition: Json = {
        "type": kind,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": earlier.get("lastTransitionTime") if unchanged and earlier else now,
    }
    if reason and not true:
        condition["reason"] = reason
    return condition


def pod_status(
    previous: Json,
    containers: list[ContainerState],
    *,
    restart_policy: str,
    pod_ip: str,
    host_ip: str,
    start_time: str,
    now: str,
) -> Json:
    """The full `status` of a pod; transition times survive while a condition keeps its value."""
    earlier = previous.get("conditions") or []
    all_ready = bool(containers) and all(container.ready for container in containers)
    not_ready_reason = "ContainersNotReady"
    return {
        "phase": phase(containers, restart_policy),
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": start_time,
        "conditions": [
            _condition(earlier, "PodScheduled", True, now),
            _condition(earlier, "Initialized", True, now),
            _condition(earlier, "ContainersReady", all_ready, now, not_ready_reason),
            _condition(earlier, "Ready", all_ready, now, not_ready_reason),
        ],
        "containerStatuses": [container.as_status() for container in containers],
    }
