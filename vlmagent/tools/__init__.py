"""Tools the policy can call. Registry: a plain dict, name -> Tool class."""
from __future__ import annotations

from collections.abc import Iterable

from vlmagent.tools.base import ImageRef, Tool, ToolEnv, validate
from vlmagent.tools.drive import (
    DepthEstimationTool,
    Detect3DObjectsTool,
    GetViewWithFrameTool,
    RoIInspectionTool,
)
from vlmagent.tools.image import CropTool, ZoomTool
from vlmagent.tools.render import RenderHtmlTool
from vlmagent.tools.views import FullResolutionTool, RetrieveViewTool

TOOLS: dict[str, type[Tool]] = {
    "crop": CropTool,
    "zoom": ZoomTool,
    "render_html": RenderHtmlTool,
    "retrieve_view": RetrieveViewTool,
    "full_resolution": FullResolutionTool,  # self-routing (VisionThink), vlmagent/router
    # DriveAgent-R1's driving tools (need sample.meta["drive"]); names as in its prompts
    "get_view_with_frame": GetViewWithFrameTool,
    "RoI_Inspection": RoIInspectionTool,
    "depth_estimation": DepthEstimationTool,
    "detect_3d_objects": Detect3DObjectsTool,
}


def make_tools(names: Iterable[str]) -> dict[str, Tool]:
    """Fresh tool instances by name, in the given order; an unknown name lists the valid ones."""
    names = list(names)
    unknown = [n for n in names if n not in TOOLS]
    if unknown:
        raise ValueError(f"unknown tool {unknown[0]!r} (valid: {', '.join(TOOLS)})")
    return {n: TOOLS[n]() for n in names}


__all__ = ["TOOLS", "CropTool", "DepthEstimationTool", "Detect3DObjectsTool", "FullResolutionTool",
           "GetViewWithFrameTool", "ImageRef", "RenderHtmlTool", "RetrieveViewTool",
           "RoIInspectionTool", "Tool", "ToolEnv", "ZoomTool", "make_tools", "validate"]
