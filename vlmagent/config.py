"""Configs: dataclasses loaded from YAML that reject unknown keys, plus dotted overrides.

    cfg = load("configs/score.yaml", ["reward.weights.execution=0.5"])

Every error names the file and the dotted key path: a typo never silently becomes a default.
This module declares the sections; the loading machinery (strict keys and types, overrides,
errors) is configio.py's.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Re-exported: the rest of the code imports these from vlmagent.config.
from vlmagent.configio import ConfigError as ConfigError
from vlmagent.configio import apply_override as apply_override
from vlmagent.configio import from_dict, load_into, merge, to_dict


# ---------------------------------------------------------------- sections
@dataclass
class BrowserConfig:
    executable: str = ""  # empty: $VLMAGENT_CHROMIUM, then `chromium` / `chromium-browser` on PATH
    extra_args: list[str] = field(default_factory=list)
    viewport_width: int = 1280
    viewport_height: int = 800
    mobile_width: int = 375
    mobile_height: int = 812
    nav_timeout_s: float = 8.0  # one navigation (goto) including the load event
    action_timeout_s: float = 1.5  # one click / evaluate / screenshot
    page_budget_s: float = 15.0  # everything done on one page
    site_budget_s: float = 45.0  # everything done on one site
    settle_ms: int = 100  # wait after load or click before observing
    js_heap_mb: int = 256  # V8 old-space cap per renderer
    max_pages: int = 8
    max_clicks_per_page: int = 6
    max_forms_per_page: int = 2
    max_navigations_per_page: int = 10  # reload loops are cut off after this many
    max_screenshot_height: int = 3000
    cdn_mirror: bool = True  # answer known CDN URLs from the offline mirror (web/cdn.py)
    cdn_mirror_dir: str = ""  # its node_modules; empty: $VLMAGENT_CDN_MIRROR, then the set-up cache


@dataclass
class StructureConfig:
    max_files: int = 2000  # files scanned for references; the rest are counted, not parsed
    max_file_bytes: int = 2_000_000  # larger HTML/CSS files are not parsed for references


@dataclass
class ExecutionConfig:
    pass_threshold: float = 0.5  # execution score needed to pass (index must load and render too)
    fail_on_page_errors: bool = True  # an uncaught exception on the index page fails the stage
    screenshots: bool = True


@dataclass
class VlmJudgeConfig:
    """A local Qwen-VL checkpoint judging screenshots with a rubric (rewards/judges.py)."""

    path: str = ""  # local folder or hub id (hub ids need the model in the local HF cache)
    dtype: str = "float32"
    device: str = "auto"
    max_new_tokens: int = 64
    max_pixels: int = 448 * 448  # per screenshot shown to the model
    images: int = 2  # screenshots shown: index desktop, index mobile, then further pages


@dataclass
class OpenAIJudgeConfig:
    """Any OpenAI-compatible chat endpoint (vLLM, a hosted API) judging screenshots."""

    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = ""
    api_key_env: str = "OPENAI_API_KEY"  # name of the environment variable holding the key
    timeout_s: float = 60.0  # one request
    retries: int = 2  # extra attempts after a timeout, connection error, 429 or 5xx
    backoff_s: float = 1.0  # wait before retry k: backoff_s * 2**k
    concurrency: int = 4  # requests in flight at once from one process
    max_tokens: int = 256
    images: int = 2
    image_width: int = 768  # screenshots are scaled down to this width before sending


@dataclass
class AestheticsConfig:
    judge: str = "metrics"  # metrics | vlm | openai (rewards/judges.py JUDGES)
    # Overrides of the measure bands, name -> [lo, hi] (rewards/aesthetics.py SPECS).
    bands: dict[str, list[float]] = field(default_factory=dict)
    max_pages: int = 6  # visited pages measured (index first)
    pass_threshold: float = 0.0  # stage score needed to pass; 0: passes whenever it measured
    vlm: VlmJudgeConfig = field(default_factory=VlmJudgeConfig)
    openai: OpenAIJudgeConfig = field(default_factory=OpenAIJudgeConfig)


@dataclass
class RewardConfig:
    # WebGen-R1's cascade (docs/rewards.md, section 2): structure -> execution -> aesthetics.
    stages: list[str] = field(default_factory=lambda: ["structure", "execution", "aesthetics"])
    # Blend of stage scores inside a gate band; see rewards/cascade.py for the composition.
    weights: dict[str, float] = field(default_factory=lambda: {"structure": 1.0, "build": 1.0,
                                                               "execution": 2.0, "aesthetics": 2.0})
    # `build` only runs for scaffold projects (vite-react); webgen.build_timeout_s applies too.
    timeouts_s: dict[str, float] = field(
        default_factory=lambda: {"structure": 20.0, "build": 90.0, "execution": 60.0,
                                 "aesthetics": 60.0})
    cache_dir: str = ""  # empty: in-memory cache only
    structure: StructureConfig = field(default_factory=StructureConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    aesthetics: AestheticsConfig = field(default_factory=AestheticsConfig)


@dataclass
class RayConfig:
    """score.backend: ray (scoring/ray_backend.py): one Ray actor per worker."""

    address: str = ""  # empty: start a local cluster for the run; "auto", "HOST:6379": join one
    num_cpus: int = 0  # the local cluster's CPUs; 0: one per worker
    worker_cpus: float = 1.0  # CPUs each actor reserves on a joined cluster (its placement)


@dataclass
class ScoreConfig:
    workers: int = 2
    site_timeout_s: float = 150.0  # hard wall per site; the worker is killed and replaced after it
    worker_start_s: float = 120.0  # a worker (process or Ray actor) must be up, its Chromium
    # launched, within this; its first job fails if not (start-up is not the site's time)
    slowest: int = 5  # how many of the slowest sites the summary lists
    backend: str = "local"  # local (worker processes here) | ray (Ray actors; score.ray)
    ray: RayConfig = field(default_factory=RayConfig)


@dataclass
class WebgenConfig:
    """Model responses as projects (web/webgen.py) and their build (rewards/build.py)."""

    scaffold: str = "static"  # static | vite-react (vlmagent/scaffolds/<name>)
    max_files: int = 64  # files one response may write
    max_total_bytes: int = 400_000  # their total size (UTF-8); the response may be twice this
    build_timeout_s: float = 60.0  # one build; the cascade's reward.timeouts_s.build also applies
    build_log_bytes: int = 6000  # tail of the build log kept in the stage details
    node: str = ""  # empty: `node` on PATH
    node_modules: str = ""  # empty: $VLMAGENT_NODE_MODULES, then the set-up cache (lock hash)


# ---------------------------------------------------------------- loading
def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
         cls: type | None = None) -> Any:
    """Read YAML at `path` (or start from defaults), apply `key.path=value` overrides, build `cls`
    (default: Config).

    Overrides apply to the effective config (file over defaults), so `reward.weights.execution=0.5`
    changes one entry of the weights and keeps the others.
    """
    return load_into(cls or Config, path, overrides)


# ---------------------------------------------------------------- policy (model side)
@dataclass
class LoraSettings:
    """LoRA adapters via peft. `target_modules` are module-name suffixes inside the language
    model only; `train_vision` also puts adapters on every linear layer of the vision tower
    (otherwise the vision tower stays frozen)."""

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    train_vision: bool = False


@dataclass
class PlacementConfig:
    """Where the vision tower runs and its embedding cache (vlmagent/placement.py,
    docs/placement.md). The defaults are the plain in-process model, no cache."""

    vision: str = "same"  # same (with the LM) | device (vision_device, this process) | process
    # (its own process on vision_device, serving features by image content hash, prefetched)
    vision_device: str = ""  # device / process: where the vision tower runs; empty: LM's device
    cache_size: int = 0  # features of this many unique images kept (LRU) while the vision tower
    # is frozen; 0: none (each call encodes its images, identical ones once per call)


@dataclass
class PolicyConfig:
    path: str = ""  # local folder or hub id (hub ids need the model in the local HF cache here)
    dtype: str = "float32"  # float32 | bfloat16 | float16 | auto
    device: str = "auto"  # auto (cuda when present, else cpu) | cpu | cuda | cuda:N
    lora: LoraSettings | None = None  # None: full weights (no adapters)
    adapter: str | None = None  # a saved LoRA adapter folder to load on top of `path`
    gradient_checkpointing: bool = False  # recompute decoder layers in backward (non-reentrant)
    placement: PlacementConfig = field(default_factory=PlacementConfig)  # vision tower placement
    # Sampling and pixel budgets belong to the agent loop (AgentConfig), their only user.


@dataclass
class RouterConfig:
    """The visual-resolution router (vlmagent/router): a pixel budget level per image."""

    kind: str = "fixed"  # fixed | heuristic | learned (router.ROUTERS)
    levels: list[float] = field(default_factory=lambda: [1.0, 0.25])  # x agent.max_pixels
    fixed_level: int = 0  # fixed: the level of every image (0 = full budget)
    threshold: float = 6.0  # heuristic: grey levels of detail lost at the low level -> full
    path: str | None = None  # learned: the router head's folder
    percentile: float = 50.0  # router stage: r below this percentile of recent r -> low level
    window: int = 512  # router stage: the sliding window of loss ratios r


@dataclass
class AgentConfig:
    """The multi-turn rollout loop (agent.py)."""

    format: str = "hermes"  # tool-call wire format: hermes | drive (protocol.FORMATS)
    tools: list[str] = field(default_factory=lambda: ["crop", "zoom"])
    system_prompt: str = "You are a careful visual assistant. Look closer before you answer."
    force_mode: str = "none"  # tool | text | none: hint the thinking mode in the prompt
    image_position: str = "before"  # the user turn's images before or after its text
    max_turns: int = 4  # assistant turns per episode
    max_tool_calls: int = 3  # DriveAgent-R1's limit; further calls get an error observation
    max_new_tokens: int = 256  # per assistant turn
    max_total_tokens: int = 4096  # the whole episode, prompt and images included
    expert_hints: bool = False  # scripted experts (force_mode none): half of each mode's episodes
    # get that mode's hint in the prompt, as forced-mode RL stages (mode_groups) will give it
    tools_in_prompt: bool = True  # false: no tool descriptions in the system prompt (a tiny
    # model with a small vocabulary learns its calls from SFT; the specs would be ~2k tokens)
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    min_pixels: int = 28 * 28 * 4  # pixel budget per image (the router may narrow it)
    max_pixels: int = 448 * 448
    router: RouterConfig = field(default_factory=RouterConfig)


@dataclass
class RolloutConfig:
    """Where online RL samples its episodes (engines/, docs/rollout_server.md)."""

    engine: str = "local"  # local: the trainer's own policy | openai: a vLLM / SGLang server
    wire: str = "sglang"  # request shape: sglang (POST /generate: token ids + images) | vllm
    # (POST /v1/completions: token ids, no images)
    base_url: str = "http://127.0.0.1:30000"  # the server's root (no /v1)
    model: str = ""  # the served base model's name (vLLM's `model` field; --served-model-name)
    api_key_env: str = ""  # environment variable holding a bearer token; empty: no header
    timeout_s: float = 300.0  # one generation request
    retries: int = 2  # extra attempts after a timeout, connection error, 429 or 5xx
    max_concurrency: int = 32  # requests in flight at once from one rank
    weight_sync: str = "lora"  # after each optimiser step: lora (save the adapter, the server
    # loads it) | full (SGLang /update_weights_from_disk) | none (the server keeps its weights)
    sync_dir: str = ""  # folder the server can read the saved weights from (a shared
    # filesystem); empty: <stage folder>/rollout_weights


@dataclass
class DomainConfig:
    """Where samples come from (domains/): a synthetic generator or a data file."""

    name: str = "zoomqa"
    seed: int = 0
    kinds: list[str] = field(default_factory=lambda: ["digit", "color", "shape"])
    size: list[int] | None = None  # [width, height] of generated images; None: varied sizes
    data_dir: str = "out/data"  # generated images are written here
    options: dict[str, Any] = field(default_factory=dict)  # the domain's own settings (webgen:
    # expert: compact | full, the expert pages SFT learns from); unknown ones are errors
    dataroot: str | None = None  # a dataset folder the domain reads (driving: nuScenes layout)
    version: str | None = None  # the dataset version under dataroot (driving: v1.0-mini, ...)


@dataclass
class StageConfig:
    """One training stage. Unset (None) fields take their value from `train.defaults`."""

    name: str | None = None  # folder under train.output_dir; defaults to the kind
    kind: str | None = None  # sft | mpo | dpo | grpo | gspo | warmup | readout | vico | router
    domain: str | None = None  # the domain this stage trains on (domains.DOMAINS)
    steps: int | None = None  # optimiser steps
    lr: float | None = None
    warmup_steps: int | None = None
    schedule: str | None = None  # constant | cosine
    batch_size: int | None = None  # sequences (sft, mpo pairs) or prompts (grpo/gspo) per step
    group_size: int | None = None  # rollouts per prompt (grpo/gspo, mpo pair building)
    epochs_per_batch: int | None = None  # optimiser passes over each rollout batch (online)
    max_new_tokens: int | None = None
    temperature: float | None = None
    beta: float | None = None  # DPO/MPO temperature; also the KL coefficient's default scale
    kl_coef: float | None = None  # online: k3 KL to the reference (0 = no reference needed)
    eps_low: float | None = None
    eps_high: float | None = None
    token_level: bool | None = None  # DAPO token-level normalisation (grpo)
    drop_equal_groups: bool | None = None  # DAPO dynamic sampling
    mode_groups: bool | None = None  # half of each group forced into tool mode, half text
    tool_bonus: float | None = None  # added when the answer is right and a tool was called
    adaptive_mode: bool | None = None  # DriveAgent-R1 adaptive mode reward (rewards/episode.py)
    resolution_penalty: float | None = None  # VisionThink self-routing penalty (paper: 0.1)
    format_weight: float | None = None  # x the DriveAgent-R1 format score in [0, 1] (paper 0.2)
    tool_quality_weight: float | None = None  # x the mean call quality in [0, 1] of the episode
    checkpoint_every: int | None = None
    data: str | None = None  # a trajectory / pair JSONL; None: generated by the domain's experts
    n_train: int | None = None  # generated training samples
    eval_n: int | None = None  # held-out samples per domain evaluated after the stage
    until: float | None = None  # end once the probe's greedy accuracy >= this (0: run all steps)
    probe_every: int | None = None  # probe before step 1 and every this many steps
    probe_n: int | None = None  # probe samples: the stage's domain, disjoint from train and eval
    eval_temperature: float | None = None  # held-out evaluation: 0 greedy; 1 sampled (webgen)
    rollout_chunk: int | None = None  # prompts per generation call in online steps (0: all)
    overlap_scoring: bool | None = None  # slow rewards (webgen) scored while the rest generates
    freeze: list[str] | None = None  # parameter-name substrings kept fixed in this stage
    micro_batch_tokens: int | None = None  # padded tokens per forward/backward, gradients
    # accumulated to one optimiser step (0: the rank's whole batch in one pass)
    reference_offload: bool | None = None  # full fine-tunes: the frozen reference copy lives
    # on CPU and visits the accelerator only to score (LoRA uses the adapter-disabled policy)
    tis_cap: float | None = None  # online with a rollout server: truncated importance sampling
    # cap C on exp(train logp - rollout logp) (Yao et al. 2025); 0 = off (docs/rollout_server.md)
    resolution_threshold: float | None = None  # VisionThink: below this share of right direct
    # answers in a group, asking for full resolution is right (paper 0.2, open answers)
    what_pool: str | None = None  # warmup: how the zoom's tokens are pooled for the "what"
    # head: mean | max (max when the answer is a few pixels of one token: a far lamp)
    agent: dict[str, Any] | None = None  # agent settings for this stage only (router level,
    # force_mode, tools), over the config's agent section; unknown keys are errors


def _default_stage() -> StageConfig:
    return StageConfig(kind="sft", domain="zoomqa", steps=100, lr=1e-3, warmup_steps=0,
                       schedule="constant", batch_size=8, group_size=8, epochs_per_batch=1,
                       max_new_tokens=96, temperature=1.0, beta=0.1, kl_coef=0.0,
                       token_level=False, drop_equal_groups=True,
                       mode_groups=False, tool_bonus=0.0, adaptive_mode=False,
                       resolution_penalty=0.0, format_weight=0.0,
                       tool_quality_weight=0.0, checkpoint_every=25, n_train=512, eval_n=64,
                       until=0.0, probe_every=10, probe_n=64, eval_temperature=0.0,
                       rollout_chunk=0, overlap_scoring=True, freeze=[], micro_batch_tokens=0,
                       reference_offload=False,
                       resolution_threshold=0.2, tis_cap=2.0, what_pool="mean", agent={})
    # eps_low / eps_high stay unset here: they depend on the kind (KIND_DEFAULTS, then
    # GENERIC_DEFAULTS at resolve time), so a default TrainConfig() gives GSPO its own range


@dataclass
class TrainConfig:
    output_dir: str = "out/train"
    seed: int = 0
    defaults: StageConfig = field(default_factory=_default_stage)
    stages: list[StageConfig] = field(default_factory=list)
    log_every: int = 5


@dataclass
class Config:
    """One config for every command: each uses the sections it needs (score: browser, reward,
    score; rollout: policy, agent, domain). Unknown keys anywhere are errors."""

    browser: BrowserConfig = field(default_factory=BrowserConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    domain: DomainConfig = field(default_factory=DomainConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    webgen: WebgenConfig = field(default_factory=WebgenConfig)


# Built-in values that depend on the stage's kind: GSPO's sequence-level ratio needs the clip
# range its paper publishes (3e-4 / 4e-4), not GRPO's token-level 0.2 (docs/training.md).
KIND_DEFAULTS: dict[str, dict[str, Any]] = {"gspo": {"eps_low": 3e-4, "eps_high": 4e-4}}
# ... and for every other kind (GRPO's clip range). Values a config sets, in a stage or in
# train.defaults, win over both.
GENERIC_DEFAULTS: dict[str, Any] = {"eps_low": 0.2, "eps_high": 0.2}


def resolve_stage(defaults: StageConfig, stage: StageConfig) -> StageConfig:
    """The stage with every unset field taken from `defaults`, then from the built-in ones (for
    its kind, then in general). `defaults` is usually TrainConfig's (a YAML's train.defaults
    over _default_stage()), which leaves the kind-dependent fields unset."""
    kind = stage.kind if stage.kind is not None else defaults.kind
    builtin = dataclasses.replace(_default_stage(),
                                  **{**GENERIC_DEFAULTS, **KIND_DEFAULTS.get(kind or "", {})})

    def pick(name: str) -> Any:
        for src in (stage, defaults, builtin):
            if getattr(src, name) is not None:
                return getattr(src, name)
        return None

    merged = {f.name: pick(f.name) for f in dataclasses.fields(StageConfig)}
    merged["name"] = merged["name"] or merged["kind"]
    return StageConfig(**merged)


def stage_config(cfg: Config, stage: StageConfig) -> Config:
    """The config a stage runs with: its `agent` settings over the agent section (nested keys,
    e.g. {router: {fixed_level: 1}}, change only what they name; unknown keys are errors)."""
    if not stage.agent:
        return cfg
    merged = to_dict(cfg.agent)
    merge(merged, stage.agent)
    agent = from_dict(AgentConfig, merged, f"stage {stage.name}", "agent")
    return dataclasses.replace(cfg, agent=agent)

