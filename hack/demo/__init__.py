"""`make demo` (`python -m hack.demo`): the README's main job, on the local real stack.

What a user does on a cluster, done on the local control plane: install the Helm chart, let the
operator run, create Secrets and apply the Pipelines in examples/ (PostgreSQL into Kafka and Redis,
MariaDB into Kafka), watch `kubectl get pipelines` turn Ready, write rows and see the change events
arrive. The local pod runner stands in for a kubelet: it runs the operator's and the workers' pods
as processes of this machine. Everything stays up to look around afterwards.

    python -m hack.demo [up]          install and run (again: reuses what runs)
    python -m hack.demo down          remove it: Pipelines, release, pod runner, the demo's slot
    python -m hack.demo events TOPIC  print the change events of a Kafka topic
"""
