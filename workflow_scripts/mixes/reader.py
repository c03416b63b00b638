"""Reading mix artifacts: the one module other stages import from mixes.

``blend.json``: the mix artifact's contract with the training stage (light: pydantic only).

Prefixes are paths to Megatron ``.bin``/``.idx`` pairs without the suffix, relative to the directory the
pipeline runs in (the repository root) unless absolute. ``weights`` are normalised shares of the budget
(= share of Megatron samples, since every sample has ``seq_length`` tokens). ``sources`` repeats, per blend
entry, the numbers of ``sources.parquet`` plus the content hashes of its files (so caches can be keyed by
content, not by path). ``valid``, when present, is the held-out real data to validate on.

Megatron-core datasets from a mix's ``blend.json``: what the pre-training stage calls.

:func:`build_gpt_datasets` checks the blend against what the caller expects (tokenizer identity, sequence
length, number of samples), then builds ``GPTDataset`` per prefix and a ``BlendedDataset`` over them with
``BlendedMegatronDatasetBuilder``. Megatron's index cache is keyed by path, not content (FACTS.md), so each
blend gets its own cache folder named by the content hash of its files, weights and budget.

Megatron needs ``torch.distributed`` initialised (world size 1 is fine); :func:`single_process_group`
does that for scripts and tests that run without torchrun. Torch and Megatron are imported only inside
the functions.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from workflow_scripts.core.artifacts import MANIFEST, ArtifactError, verify_files
from workflow_scripts.core.hashing import hash_value
from workflow_scripts.tokenization.reader import TokenizerInfo, check_tokenizer

BLEND_FILE = "blend.json"
BLEND_FORMAT = 1


class BlendTokenizer(TokenizerInfo):
    path: str | None = Field(None, description="the tokenizer folder when it is a local directory")


class BlendSource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    origin: str
    prefix: str
    documents: int
    unique_tokens: int
    effective_tokens: int
    epochs: float
    share: float
    bin_sha256: str
    idx_sha256: str


class ValidBlend(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prefixes: list[str] = Field(..., min_length=1)
    weights: list[float] = Field(..., min_length=1)
    content: list[str] = Field(default_factory=list, description="sha256 of each prefix's .bin + .idx")


class BlendFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: int = BLEND_FORMAT
    experiment: str | None = None
    prefixes: list[str] = Field(..., min_length=1)
    weights: list[float] = Field(..., min_length=1)
    total_tokens: int = Field(..., gt=0)
    num_samples: int = Field(..., gt=0, description="ceil(total_tokens / seq_length): training sequences")
    seq_length: int = Field(..., gt=0)
    tokenizer: BlendTokenizer
    sources: list[BlendSource]
    valid: ValidBlend | None = None

    @model_validator(mode="after")
    def _aligned(self) -> "BlendFile":
        if len(self.prefixes) != len(self.weights) or len(self.sources) != len(self.prefixes):
            raise ValueError("prefixes, weights and sources must have the same length")
        if any(w <= 0 for w in self.weights) or not math.isclose(sum(self.weights), 1.0, rel_tol=1e-9):
            raise ValueError("weights must be > 0 and sum to 1")
        if self.valid is not None and len(self.valid.prefixes) != len(self.valid.weights):
            raise ValueError("valid prefixes and weights must have the same length")
        return self

    def content_hash(self) -> str:
        """Identity of what the blend reads: files' content, weights, budget (not where the files are)."""
        return hash_value(
            {
                "sources": [(s.bin_sha256, s.idx_sha256) for s in self.sources],
                "weights": self.weights,
                "total_tokens": self.total_tokens,
                "seq_length": self.seq_length,
                "tokenizer": self.tokenizer.hash,
                "valid": None if self.valid is None else (self.valid.content, self.valid.weights),
            }
        )


def read_blend(path: Path | str) -> BlendFile:
    """Read ``blend.json`` (or a mix artifact directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / BLEND_FILE
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist: expected the blend.json of a mix artifact")
    try:
        return BlendFile.model_validate(json.loads(path.read_text()))
    except (ValidationError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{path} is not a valid blend: {error}") from None


log = logging.getLogger(__name__)

BUDGET_TOLERANCE = 0.01  # relative difference between asked and planned samples before the epochs are wrong


class MegatronTokenizer:
    """The facts ``GPTDatasetConfig`` reads from a tokenizer.

    ``pad`` is -1, Megatron's 'no pad token' id: Hugging Face tokenizers often reuse EOD as pad, and Megatron
    would then mask the loss on every document boundary.
    """

    def __init__(self, info: TokenizerInfo) -> None:
        self.vocab_size = info.vocab_size
        self.eod = info.eod_id
        self.pad = -1
        self.unique_identifiers = {
            "class": "MegatronTokenizer",
            "hash": info.hash,
            "vocab_size": info.vocab_size,
            "eod": info.eod_id,
        }


def resolve_prefix(prefix: str, root: Path | None = None) -> str:
    """An absolute prefix as is; a relative one against ``root`` (default: the working directory)."""
    path = Path(prefix)
    if not path.is_absolute():
        path = (root or Path.cwd()) / path
    for suffix in (".bin", ".idx"):
        if not Path(f"{path}{suffix}").is_file():
            raise ArtifactError(
                f"blend prefix {prefix!r}: {path}{suffix} does not exist (run from the directory "
                "the mix was built in, or pass root=)"
            )
    return str(path)


def enclosing_artifact(path: Path) -> Path | None:
    """The artifact directory (the nearest folder with a manifest) a file belongs to."""
    for folder in Path(path).parents:
        if (folder / MANIFEST).is_file():
            return folder
    return None


def verify_blend_files(blend: BlendFile, root: Path | None = None) -> dict[str, float | int]:
    """Check every ``.bin``/``.idx`` the blend reads against the manifest of the tokenize artifact holding it
    (size, then a streaming sha256; :func:`workflow_scripts.core.artifacts.verify_files`), and against the
    hashes the blend recorded. A truncated or overwritten token file is named in one line before Megatron
    opens it. Returns the cost (files, bytes, seconds)."""
    total: dict[str, float | int] = {"files": 0, "bytes": 0, "seconds": 0.0}
    expected = {source.prefix: (source.bin_sha256, source.idx_sha256) for source in blend.sources}
    prefixes = [*blend.prefixes, *(blend.valid.prefixes if blend.valid is not None else [])]
    for prefix in dict.fromkeys(prefixes):
        resolved = Path(resolve_prefix(prefix, root))
        owner = enclosing_artifact(resolved)
        if owner is None:
            raise ArtifactError(f"blend prefix {prefix!r}: {resolved} is not inside an artifact (no {MANIFEST} "
                                "above it); rebuild the mix from tokenize artifacts")
        cost = verify_files(owner)
        for key in total:
            total[key] += cost[key]
        if prefix in expected:
            manifest_files = json.loads((owner / MANIFEST).read_text())["files"]
            for suffix, digest in zip((".bin", ".idx"), expected[prefix]):
                rel = Path(f"{resolved}{suffix}").relative_to(owner).as_posix()
                if manifest_files.get(rel) != digest:
                    raise ArtifactError(f"{resolved}{suffix} is not the file the mix was built from (its hash "
                                        "differs from blend.json's); rebuild the mix")
    total["seconds"] = round(total["seconds"], 3)
    log.info("verified the blend's token files: %d files (%.1f MB) in %.2f s", total["files"],
             total["bytes"] / 1e6, total["seconds"])
    return total


@contextmanager
def single_process_group() -> Iterator[None]:
    """Initialise a one-process gloo group if none exists (Megatron's builders need one); undo it after."""
    import torch.distributed as dist

    if dist.is_initialized():
        yield
        return
    with tempfile.TemporaryDirectory(prefix="gloo-") as folder:
        dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=0, world_size=1)
        try:
            yield
        finally:
            dist.destroy_process_group()


def check_blend(
    blend: BlendFile,
    *,
    where: str,
    tokenizer_info: TokenizerInfo | Mapping[str, Any] | None,
    seq_length: int | None,
    num_samples: int | None,
    strict_budget: bool,
) -> tuple[int, int]:
    """Refuse a blend made for another tokenizer or sequence length; return (seq_length, num_samples)."""
    if tokenizer_info is not None:
        check_tokenizer(blend.tokenizer, tokenizer_info, where=where)
    if seq_length is not None and seq_length != blend.seq_length:
        raise ArtifactError(
            f"{where}: the mix was planned for sequences of {blend.seq_length} tokens, the caller "
            f"uses {seq_length}; set mixes.seq_length to the training sequence length"
        )
    samples = blend.num_samples if num_samples is None else num_samples
    if abs(samples - blend.num_samples) > BUDGET_TOLERANCE * blend.num_samples:
        message = (
            f"{where}: the mix was planned for {blend.num_samples} samples ({blend.total_tokens} tokens) "
            f"but {samples} are asked for, so every source's epochs would differ from sources.md by a "
            f"factor {samples / blend.num_samples:.3f}; set the mix budget (mixes.total_tokens) to the "
            "training budget"
        )
        if strict_budget:
            raise ArtifactError(message)
        log.warning("%s", message)
    return blend.seq_length, samples


def build_gpt_datasets(
    blend_json: Path | str,
    *,
    cache_dir: Path | str,
    seq_length: int | None = None,
    num_samples: int | None = None,
    seed: int = 1234,
    tokenizer_info: TokenizerInfo | Mapping[str, Any] | None = None,
    valid_samples: int | None = None,
    root: Path | str | None = None,
    strict_budget: bool = True,
    is_built_on_rank: Callable[[], bool] | None = None,
    verify: bool = True,
    **gpt_config: Any,
) -> tuple[Any, Any, Any]:
    """(train, valid, test) Megatron datasets for a mix; ``test`` is always None.

    - ``blend_json``: the mix artifact directory or its ``blend.json``.
    - ``cache_dir``: where Megatron caches its indices; a subfolder per blend content is used.
    - ``seq_length`` / ``num_samples``: default to the blend's; a different sequence length, or a sample count
      more than 1 % away from the planned one, is refused (``strict_budget=False``: warn instead).
    - ``tokenizer_info``: what the model expects (a :class:`TokenizerInfo` or a partial mapping with hash /
      vocab_size / eod_id / dtype); a blend made with another tokenizer is refused.
    - ``valid_samples``: size of the validation blend over the held-out real data (None: one full pass of it;
      no held-out data: ``valid`` is None).
    - ``root``: directory relative prefixes are resolved against (default: the working directory).
    - ``verify``: first check every token file against its tokenize artifact's manifest
      (:func:`verify_blend_files`: a streaming hash of every byte, cost logged).
    - ``gpt_config``: extra ``GPTDatasetConfig`` fields (defaults: no position/attention-mask reset, no EOD
      loss mask, ``create_attention_mask=False``).

    Requires ``torch.distributed`` to be initialised (see :func:`single_process_group`).
    """
    import torch.distributed as dist
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    blend = read_blend(blend_json)
    where = str(blend_json)
    seq_length, samples = check_blend(
        blend,
        where=where,
        tokenizer_info=tokenizer_info,
        seq_length=seq_length,
        num_samples=num_samples,
        strict_budget=strict_budget,
    )
    if not dist.is_initialized():
        raise RuntimeError(
            "build_gpt_datasets needs torch.distributed initialised (world size 1 is fine): "
            "use torchrun, or wrap the call in workflow_scripts.mixes.reader.single_process_group()"
        )
    root = Path(root) if root is not None else None
    if verify:
        verify_blend_files(blend, root)
    train_blend = ([resolve_prefix(p, root) for p in blend.prefixes], list(blend.weights))
    valid_blend = None
    if blend.valid is not None:
        valid_blend = (
            [resolve_prefix(p, root) for p in blend.valid.prefixes],
            list(blend.valid.weights) if valid_samples is not None else None,
        )
    cache = Path(cache_dir) / f"blend-{blend.content_hash()[:16]}"
    cache.mkdir(parents=True, exist_ok=True)
    options = dict(
        reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=False, create_attention_mask=False
    )
    options.update(gpt_config)
    config = GPTDatasetConfig(
        random_seed=seed,
        sequence_length=seq_length,
        blend_per_split=[train_blend, valid_blend, None],
        path_to_cache=str(cache),
        tokenizer=MegatronTokenizer(blend.tokenizer),
        mid_level_dataset_surplus=0.005,
        **options,
    )
    rank_builds = is_built_on_rank or (lambda: True)
    train, valid, test = BlendedMegatronDatasetBuilder(
        GPTDataset, [samples, valid_samples, None], rank_builds, config
    ).build()
    if train is not None and len(train) < samples:
        raise ArtifactError(
            f"{where}: Megatron built {len(train)} training samples, {samples} were asked for"
        )
    log.info("blend %s: %d training samples of %d tokens (cache %s)", where, samples, seq_length, cache)
    return train, valid, test


def planned_samples(blend: BlendFile) -> list[int]:
    """Samples Megatron draws from each prefix for the planned budget (its own rounding)."""
    return [math.ceil(blend.num_samples * w) for w in blend.weights]

