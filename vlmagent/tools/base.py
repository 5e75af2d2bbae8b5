"""Tool protocol, the episode's tool environment and a small JSON-schema checker.

Tools get model-written arguments, so every bad input must come back as readable text in a
ToolResult(error=...), never as an exception: the model reads the error and can try again.
The image rule the environment applies (what size the model sees an image at) belongs to
vlmagent/images.py; the environment is handed that rule by whoever knows the model.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from vlmagent.images import SeenSize, Size, load_image
from vlmagent.types import Sample, ToolResult


# ---------------------------------------------------------------- episode state
@dataclass
class ImageRef:
    """An image in the conversation: the ORIGINAL pixels, and the size the model saw them at."""

    image: Image.Image
    seen: Size  # (width, height) after the processor's resize
    level: int = 0  # the router's pixel budget level (0 = full; vlmagent/router)

    @property
    def size(self) -> Size:
        return self.image.size


@dataclass
class ToolEnv:
    """What tools may touch during one episode. Images keep insertion order (last = newest).

    `seen_size` is the model's resize rule (policy.seen_size under the pixel budget, or
    images.Budget.seen_size). It has no default: a guessed rule would put tool boxes in the
    wrong frame for a model with another patch size, so adding an image without it fails.
    """

    images: dict[str, ImageRef] = field(default_factory=dict)
    views: dict[str, Any] = field(default_factory=dict)  # name -> path or PIL image
    renderer: Any = None  # has screenshot_html(html, width, height) -> PNG bytes
    workdir: str | None = None  # root that render_html's "path" must stay inside
    seen_size: SeenSize | None = None
    sample: Sample | None = None  # the episode's sample (driving tools read meta["drive"])
    route: Any = None  # the router's rule, image -> (seen size, level); None: all at seen_size

    def add_image(self, image: Image.Image, name: str | None = None, full: bool = False) -> str:
        """Register an image (prompt or tool output) and return its name ("tool_N" by default).
        The router (if any) picks its budget level; `full` skips it (level 0, full budget)."""
        if name is None:
            n = 1 + sum(1 for k in self.images if k.startswith("tool_"))
            name = f"tool_{n}"
            while name in self.images:
                n += 1
                name = f"tool_{n}"
        if self.seen_size is None:
            raise ValueError("ToolEnv.seen_size is not set: pass the model's resize rule "
                             "(policy.seen_size or images.Budget.seen_size)")
        if self.route is not None and not full:
            seen, level = self.route(image)
            self.images[name] = ImageRef(image, tuple(seen), level)
        else:
            self.images[name] = ImageRef(image, tuple(self.seen_size(*image.size)))
        return name

    @classmethod
    def from_sample(cls, sample: Sample, shown: list[str] | None = None, **kw: Any) -> ToolEnv:
        """Env for a sample: `shown` images (default all) go in images, the rest are views.

        Extra views may also come from sample.meta["views"] (name -> path).
        """
        env = cls(**kw)
        env.sample = sample
        shown = list(sample.images) if shown is None else shown
        for name in shown:
            env.add_image(load_image(sample.images[name]), name)
        env.views = {k: v for k, v in sample.images.items() if k not in shown}
        env.views.update(sample.meta.get("views", {}))
        return env


# ---------------------------------------------------------------- JSON-schema subset
_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    # JSON Schema counts 2.0 as an integer; booleans are never numbers.
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool))
    or (isinstance(v, float) and v.is_integer()),
}


def _show(v: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object", type(None): "null"}.get(type(v), type(v).__name__)
    text = repr(v) if not isinstance(v, dict | list) else str(v)
    return f"{kind} {text[:40]}{'...' if len(text) > 40 else ''}"


def validate(value: Any, schema: dict[str, Any], where: str = "") -> str | None:
    """First violation of `schema` by `value` as a readable sentence, or None if it conforms.

    Covers type, required, enum, properties/additionalProperties false, items, min/maxItems,
    minimum/maximum, min/maxLength: enough for tool arguments, no dependency needed.
    """
    at = f"argument '{where}'" if where else "the arguments"
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        if not any(_TYPES[t](value) for t in types):
            return f"{at}: expected {' or '.join(types)}, got {_show(value)}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{at}: must be one of {schema['enum']}, got {_show(value)}"
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            return f"{at}: expected a finite number, got {value}"
        if "minimum" in schema and value < schema["minimum"]:
            return f"{at}: must be >= {schema['minimum']:g}, got {value:g}"
        if "maximum" in schema and value > schema["maximum"]:
            return f"{at}: must be <= {schema['maximum']:g}, got {value:g}"
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            return f"{at}: must have at least {schema['minLength']} characters"
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            return f"{at}: must have at most {schema['maxLength']} characters, got {len(value)}"
    if isinstance(value, list):
        n = len(value)
        if n < schema.get("minItems", 0) or n > schema.get("maxItems", n):
            lo, hi = schema.get("minItems", 0), schema.get("maxItems")
            want = f"exactly {lo}" if lo == hi else f"at least {lo}" if hi is None else \
                f"{lo} to {hi}"
            return f"{at}: expected {want} items, got {n}"
        if "items" in schema:
            for i, item in enumerate(value):
                err = validate(item, schema["items"], f"{where}[{i}]")
                if err:
                    return err
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                return f"missing required argument '{_join(where, key)}'"
        if schema.get("additionalProperties", True) is False:
            extra = [k for k in value if k not in props]
            if extra:
                return (f"unexpected argument '{_join(where, extra[0])}' (allowed: "
                        f"{', '.join(props) or 'none'})")
        for key, sub in props.items():
            if key in value:
                err = validate(value[key], sub, _join(where, key))
                if err:
                    return err
    return None


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


# ---------------------------------------------------------------- the Tool protocol
class Tool:
    """A tool the model can call: a name, a description, a JSON schema for its arguments.

    Subclasses implement `run` (arguments already validated) and may override `check` for
    constraints a schema cannot say (e.g. "exactly one of html or path").
    """

    name: str = ""
    description: str = ""
    # Pure-pixel tools may run in threads, one episode each; a browser-backed tool may not
    # (Playwright's sync API belongs to one thread).
    thread_safe: bool = True
    parameters: dict[str, Any] = {"type": "object", "properties": {},
                                  "additionalProperties": False}

    def check(self, args: dict[str, Any]) -> str | None:
        """Why `args` are invalid for this tool (schema + extra rules), or None."""
        return validate(args, self.parameters)

    def run(self, args: dict[str, Any], env: ToolEnv) -> ToolResult:
        raise NotImplementedError

    def image_arg(self, args: dict[str, Any], env: ToolEnv, newest: bool = True
                  ) -> tuple[str, ImageRef] | ToolResult:
        """The image named by args["image"] (default: the newest one, or the first), or the
        error result that says which images there are."""
        if not env.images:
            return ToolResult(error=f"{self.name}: there is no image to work on")
        name = args.get("image") or next(reversed(env.images) if newest else iter(env.images))
        if name not in env.images:
            return ToolResult(error=f"{self.name}: unknown image {name!r}; available images: "
                                    f"{', '.join(env.images)}")
        return name, env.images[name]

    def __call__(self, args: dict[str, Any], env: ToolEnv) -> ToolResult:
        """Validate then run; bad arguments and crashes come back as error results."""
        err = self.check(args)
        if err:
            return ToolResult(error=f"{self.name}: invalid arguments: {err}")
        try:
            return self.run(args, env)
        except Exception as e:  # a tool bug must not end the episode
            return ToolResult(error=f"{self.name} failed: {type(e).__name__}: {e}")

    def spec(self) -> dict[str, Any]:
        """OpenAI-style function spec, what chat templates expect in `tools=`."""
        return {"type": "function", "function": {"name": self.name,
                                                 "description": self.description,
                                                 "parameters": self.parameters}}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
