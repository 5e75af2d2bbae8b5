"""Retrieve another view of the scene (another camera, an earlier frame) kept in the sample."""
from __future__ import annotations

from typing import Any

from vlmagent.images import load_image
from vlmagent.tools.base import Tool, ToolEnv
from vlmagent.types import ToolResult


class RetrieveViewTool(Tool):
    """Bring a named view of the sample into the conversation as a new image."""

    name = "retrieve_view"
    description = ("Retrieve another view of the scene by name, e.g. another camera or an earlier "
                   "frame. The view is added to the conversation as a new image.")
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {"view": {"type": "string", "minLength": 1,
                                "description": "name of the view to retrieve"}},
        "required": ["view"],
        "additionalProperties": False,
    }

    def run(self, args: dict[str, Any], env: ToolEnv) -> ToolResult:
        view = args["view"]
        if view not in env.views:
            have = ", ".join(env.views) or "none (this sample has no other views)"
            return ToolResult(error=f"{self.name}: unknown view {view!r}; available views: {have}")
        try:
            image = load_image(env.views[view])
        except OSError as e:
            return ToolResult(error=f"{self.name}: view {view!r} could not be loaded: {e}")
        out = env.add_image(image)
        w, h = env.images[out].seen
        return ToolResult(text=f"view {view!r}: new image {out!r}, {w}x{h} as you see it.",
                          images=[image])


class FullResolutionTool(Tool):
    """VisionThink's request: the same image again, at the full pixel budget (self-routing)."""

    name = "full_resolution"
    description = ("See an image again at full resolution, when the one you have is too coarse "
                   "to answer. Costs about four times the visual tokens.")
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {"image": {"type": "string",
                                 "description": "name of the image (default: the first one)"}},
        "required": [],
        "additionalProperties": False,
    }

    def run(self, args: dict[str, Any], env: ToolEnv) -> ToolResult:
        got = self.image_arg(args, env, newest=False)
        if isinstance(got, ToolResult):
            return got
        name, ref = got
        if ref.level == 0:
            return ToolResult(error=f"{self.name}: image {name!r} is already at full resolution "
                                    f"({ref.seen[0]}x{ref.seen[1]}); answer from it")
        out = env.add_image(ref.image, full=True)
        w, h = env.images[out].seen
        return ToolResult(text=f"image {name!r} at full resolution: new image {out!r}, {w}x{h} "
                               "as you see it.", images=[ref.image])
