"""Tools the policy can call. Registry: a plain dict, name -> Tool class."""
from __future__ import annotations

from collections.abc import Iterable

from vlmagent.tools.base import ImageRef, Tool, ToolEnv, validate
from vlmagent.tools.image import CropTool, ZoomTool
from vlmagent.tools.render import RenderHtmlTool
from vlmagent.tools.views import RetrieveViewTool

TOOLS: dict[str, type[Tool]] = {
    "crop": CropTool,
    "zoom": ZoomTool,
    "render_html": RenderHtmlTool,
    "retrieve_view": RetrieveViewTool,
}


def make_tools(names: Iterable[str]) -> dict[str, Tool]:
    """Fresh tool instances by name, in the given order; an unknown name lists the valid ones."""
    names = list(names)
    unknown = [n for n in names if n not in TOOLS]
    if unknown:
        raise ValueError(f"unknown tool {unknown[0]!r} (valid: {', '.join(TOOLS)})")
    return {n: TOOLS[n]() for n in names}


__all__ = ["TOOLS", "CropTool", "ImageRef", "RenderHtmlTool", "RetrieveViewTool", "Tool",
           "ToolEnv", "ZoomTool", "make_tools", "validate"]
