"""Valid Pipeline manifests shared by the spec tests."""

from __future__ import annotations

from typing import Any

FULL_MANIFEST = """
apiVersion: deltaforge.io/v1alpha1
kind: Pipeline
metadata:
  name: orders-cdc
  namespace: shop
  labels: {team: payments}
  uid: 6f1c2f7e-1111-4a8e-9d0e-5d2b9c0f0a11
  resourceVersion: "81234"
  generation: 3
  creationTimestamp: 2024-05-01T10:00:00Z
  managedFields: [{manager: kubectl, operation: Apply}]
spec:
  source:
    postgres:
      host: pg.shop.svc
      database: shop
      user: {secretKeyRef: {name: pg-cdc, key: username}}
      password: s3cret-Literal-pw
      sslMode: require
      tables: ["public.orders", "public.order_*", "inventory.*"]
      slot: {reclaimPolicy: Delete}
      heartbeat: {interval: 0s}
  processors:
    - filter: {ops: [c, u, d], tables: ["public.orders"]}
    - select: {tables: ["public.orders"], exclude: [internal_note]}
    - mask: {columns: [email], salt: "${MASK_SALT}"}
  sinks:
    - name: events
      kafka:
        bootstrapServers: kafka-0:9092, kafka-1:9092
        topic: "shop.${source.table}"
        envelope: debezium
        compression: zstd
        maxRequestSize: 2Mi
    - name: cache
      required: false
      redis: {url: "redis://:${REDIS_PASSWORD}@redis:6379/0", stream: "cdc:${source.table}", maxLen: 100000}
    - name: console
      stdout: {pretty: true}
  checkpoint:
    kubernetes: {}
"""

MINIMAL: dict[str, Any] = {
    "apiVersion": "deltaforge.io/v1alpha1",
    "kind": "Pipeline",
    "metadata": {"name": "orders-cdc", "namespace": "shop"},
    "spec": {
        "source": {
            "postgres": {
                "host": "pg",
                "database": "shop",
                "user": "deltaforge",
                "password": "hunter2-literal",
                "tables": ["public.orders"],
            }
        },
        "sinks": [{"name": "events", "kafka": {"bootstrapServers": "kafka:9092"}}],
    },
}
