"""Pipelines: chains of listings whose connections the service checks, conditions and runs.

``PipelineService`` stores and edits them; ``search_context`` narrows a search to the open slot of a
pipeline; ``running`` plans and drives a run step by step; ``training`` turns a pre-training pipeline
into a post-training one; ``publishing`` lists a pipeline in the catalog.
"""

from catalog.pipelines.service import PipelineService
from catalog.pipelines.views import (
    Alternative,
    ConnectionStatus,
    ConnectionView,
    PipelineView,
    StepChange,
    StepRole,
    StepView,
)

__all__ = [
    "Alternative",
    "ConnectionStatus",
    "ConnectionView",
    "PipelineService",
    "PipelineView",
    "StepChange",
    "StepRole",
    "StepView",
]
