"""The segmentation node's validated settings: what params.build_config returns.

Frozen dataclasses, no rclpy and no checking here: params.py turns parameter values into
these (or a ParameterError naming the parameter); the node, its worker, the ground outputs
and the pipeline factory read them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from seg_perception.choices import BACKEND_ALIASES
from seg_perception.ground.ego import EgoMask
from seg_perception.ground.grid import GridGeometry
from seg_perception.ground.projection import GroundPlane
from seg_perception.ros.camera_health import HealthThresholds


@dataclass(frozen=True)
class CameraConfig:
    """Where one camera's images come from."""

    name: str
    topic: str
    transport: str
    camera_info_topic: str
    ego: Optional[EgoMask] = None       # the ego-vehicle mask, if one is given


@dataclass(frozen=True)
class QosConfig:
    reliability: str
    depth: int


@dataclass(frozen=True)
class GroundConfig:
    """Ground-plane outputs: where the ground is, which outputs to make."""

    frame: str = 'base_footprint'
    plane: GroundPlane = GroundPlane(0.0, 40.0)
    transform_tolerance_s: float = 0.5
    publish_points: bool = False


@dataclass(frozen=True)
class GridConfig:
    """The fused bird's-eye drivable grid."""

    rate_hz: float = 5.0
    frame: str = 'odom'
    geometry: GridGeometry = GridGeometry()
    fusion: str = 'log_odds'
    decay_s: float = 2.0


@dataclass(frozen=True)
class NodeConfig:
    """Validated node settings."""

    cameras: Tuple[CameraConfig, ...]
    model_path: str
    backend: str
    precision: str
    engine_cache_dir: str
    threads: int
    output_resolution: str
    publish_drivable: bool
    publish_color: bool
    publish_confidence: bool
    drivable_classes: Optional[Tuple[Any, ...]]
    max_frame_age_ms: float
    input_qos: QosConfig
    output_qos: QosConfig
    min_rate_hz: float
    latency_budget_ms: float
    diagnostics_window_s: float
    ground: GroundConfig = GroundConfig()
    max_batch: int = 0
    grid: GridConfig = GridConfig()
    health: HealthThresholds = HealthThresholds()
    publish_probabilities: Tuple[str, ...] = ()

    @property
    def uses_ground(self) -> bool:
        """Whether any ground output is wanted (and tf must be listened to)."""
        return self.ground.publish_points or self.grid.rate_hz > 0

    @property
    def has_ego(self) -> bool:
        return any(c.ego is not None for c in self.cameras)

    def pipeline_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments for SegmentationPipeline."""
        backend = BACKEND_ALIASES.get(self.backend, self.backend)
        return dict(model_path=self.model_path, backend=backend, precision=self.precision,
                    output_resolution=self.output_resolution,
                    drivable_classes=list(self.drivable_classes) if self.drivable_classes
                    else None,
                    want_confidence=self.publish_confidence, want_color=self.publish_color,
                    threads=self.threads or None,
                    engine_cache_dir=self.engine_cache_dir or None)


def create_pipeline(config: NodeConfig):
    """The inference pipeline for ``config`` (imported late: it loads the backends)."""
    from seg_perception.runtime.pipeline import SegmentationPipeline
    return SegmentationPipeline(**config.pipeline_kwargs())
