"""What the Helm chart tests share: where the chart and its local values are."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deltaforge_operator.crd import CRD_NAME

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "deltaforge"
LOCAL_VALUES = REPO / "hack" / "podrunner" / "chart-values.yaml"
CRD_FILE = REPO / "crds" / f"{CRD_NAME}.yaml"
PIPELINES = "pipelines.deltaforge.io"
PART_OF = "app.kubernetes.io/part-of"
Manifest = dict[str, Any]
