"""A local pod runner for tests and the demo: a stand-in kubelet that runs pods as local processes.

Test tooling, not product. It binds Pending pods that carry a chosen label to a Node of its own,
starts each container's command with the pod's environment and volumes, gives every pod its own
loopback address as `status.podIP`, runs the HTTP/TCP probes and writes the real results into the
pod's status, restarts containers per `restartPolicy`, and stops them when the pod goes away.
"""
