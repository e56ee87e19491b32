"""NLAMeta: everything that ties an NLA to its target model, stored as `nla_meta.yaml`.

Field names follow the official checkpoint/dataset layout so files move between codebases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from nla_lightning.errors import NLAConfigError

META_FILENAME = "nla_meta.yaml"

REFERENCE_ACTOR_TEMPLATE = (
    "You are a meticulous AI researcher conducting an important investigation into activation "
    "vectors from a language model. Your overall task is to describe the semantic content of "
    "that activation vector.\n\n"
    "We will pass the vector enclosed in <concept> tags into your context. You must then "
    "produce an explanation for the vector, enclosed within <explanation> tags. The "
    "explanation consists of 2-3 text snippets describing that vector.\n\n"
    "Here is the vector:\n\n"
    "<concept>{injection_char}</concept>\n\n"
    "Please provide an explanation."
)
REFERENCE_CRITIC_TEMPLATE = "Summary of the following text: <text>{explanation}</text> <summary>"

# Rare single-token characters tried in order; the first that tokenises alone wins.
INJECTION_CANDIDATES = ("㊗", "㎡", "㊙", "㍿", "※", "¤")


@dataclass(frozen=True)
class NLAMeta:
    """Prompts, injection token, scales, layer and d_model of one NLA."""

    base_model: str
    d_model: int
    layer: int
    num_layers: int
    injection_scale: float
    mse_scale: float
    injection_char: str
    injection_token_id: int
    left_neighbour_id: int
    right_neighbour_id: int
    critic_suffix_ids: tuple[int, ...]
    vocab_size: int | None = None
    actor_template: str = REFERENCE_ACTOR_TEMPLATE
    critic_template: str = REFERENCE_CRITIC_TEMPLATE
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 <= self.layer < self.num_layers:
            raise NLAConfigError(
                f"layer {self.layer} is out of range for {self.base_model}, which has "
                f"{self.num_layers} layers: choose 0 <= layer <= {self.num_layers - 1}"
            )
        for name in ("injection_scale", "mse_scale"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise NLAConfigError(f"{name} must be a positive finite number, got {value}")
        if "{injection_char}" not in self.actor_template:
            raise NLAConfigError("the actor prompt template must contain '{injection_char}'")
        if "{explanation}" not in self.critic_template:
            raise NLAConfigError("the critic prompt template must contain '{explanation}'")

    # ---- prompts -------------------------------------------------------------------------
    def actor_message(self) -> str:
        """The AV's user message with the injection character in place."""
        return self.actor_template.replace("{injection_char}", self.injection_char)

    def critic_text(self, explanation: str) -> str:
        """The AR's input text for one explanation (no chat template)."""
        return self.critic_template.replace("{explanation}", explanation)

    # ---- yaml ----------------------------------------------------------------------------
    def to_dict(self, kind: str, role: str | None = None) -> dict[str, Any]:
        """The official nested layout; `kind` is nla_dataset or nla_model, role av or ar."""
        data: dict[str, Any] = {"kind": kind}
        if role is not None:
            data["role"] = role
        data.update(
            {
                "base_model": self.base_model,
                "d_model": self.d_model,
                "num_layers": self.num_layers,
                "extraction": {
                    "base_model": self.base_model,
                    "d_model": self.d_model,
                    "layer_index": self.layer,
                    "injection_scale": float(self.injection_scale),
                    "mse_scale": float(self.mse_scale),
                },
                "tokens": {
                    "injection_char": self.injection_char,
                    "injection_token_id": self.injection_token_id,
                    "left_neighbour_id": self.left_neighbour_id,
                    "right_neighbour_id": self.right_neighbour_id,
                    "critic_suffix_ids": list(self.critic_suffix_ids),
                    "vocab_size": self.vocab_size,
                },
                "prompt_templates": {
                    "actor": self.actor_template,
                    "critic": self.critic_template,
                },
            }
        )
        if role == "ar":
            data["critic"] = {"extraction_layer_index": self.layer}
        if self.extra:
            data["extra"] = dict(self.extra)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> NLAMeta:
        try:
            extraction = data["extraction"]
            tokens = data["tokens"]
            templates = data["prompt_templates"]
            layer = int(extraction["layer_index"])
            return cls(
                base_model=str(extraction.get("base_model", data.get("base_model", ""))),
                d_model=int(extraction.get("d_model", data.get("d_model"))),
                layer=layer,
                num_layers=int(data.get("num_layers", layer + 1)),
                injection_scale=float(extraction["injection_scale"]),
                mse_scale=float(extraction["mse_scale"]),
                injection_char=str(tokens["injection_char"]),
                injection_token_id=int(tokens["injection_token_id"]),
                left_neighbour_id=int(tokens["left_neighbour_id"]),
                right_neighbour_id=int(tokens["right_neighbour_id"]),
                critic_suffix_ids=tuple(int(i) for i in tokens["critic_suffix_ids"]),
                vocab_size=None if tokens.get("vocab_size") is None else int(tokens["vocab_size"]),
                actor_template=str(templates["actor"]),
                critic_template=str(templates["critic"]),
                extra=dict(data.get("extra") or {}),
            )
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, NLAConfigError):
                raise
            raise NLAConfigError(
                f"{source} is not a valid nla_meta file ({type(err).__name__}: {err}); expected "
                "the keys extraction{layer_index, d_model, injection_scale, mse_scale}, "
                "tokens{injection_char, injection_token_id, ...} and prompt_templates{actor, "
                "critic}"
            ) from err

    def save(self, path: str | Path, kind: str, role: str | None = None) -> Path:
        """Write to `path` (a file, or a directory that gets nla_meta.yaml) atomically."""
        path = Path(path)
        if path.is_dir():
            path = path / META_FILENAME
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(
            yaml.safe_dump(self.to_dict(kind, role), sort_keys=False, allow_unicode=True),
            encoding="utf-8",
        )
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> NLAMeta:
        """Read a meta file, or the nla_meta.yaml inside a directory."""
        data, path = read_meta_yaml(
            path,
            f"every NLA dataset and checkpoint needs its {META_FILENAME} sidecar; re-export it "
            "with nla_lightning",
        )
        return cls.from_dict(data, source=str(path))

    def with_updates(self, **changes: Any) -> NLAMeta:
        return replace(self, **changes)

    # ---- checks against live objects ------------------------------------------------------
    def check_compatible(self, other: NLAMeta, what: str = "data") -> None:
        """Fail if `other` (data or another checkpoint) belongs to a different model or layer."""
        for name in ("d_model", "layer", "injection_char", "critic_template", "actor_template"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                raise NLAConfigError(
                    f"{what} does not match this NLA: {name} is {theirs!r} there but {mine!r} "
                    f"here (base model {other.base_model!r} vs {self.base_model!r}); use data "
                    "and checkpoints made for the same model and layer"
                )

    def check_model(self, config: Any) -> None:
        """Fail if a transformers config does not have this meta's width and enough layers."""
        hidden = getattr(config, "hidden_size", None)
        if hidden != self.d_model:
            raise NLAConfigError(
                f"d_model mismatch: the NLA metadata says d_model={self.d_model} but the model "
                f"has hidden_size={hidden}; load the checkpoint of {self.base_model!r}"
            )
        n_layers = getattr(config, "num_hidden_layers", None)
        if n_layers is not None and n_layers <= self.layer:
            raise NLAConfigError(
                f"layer {self.layer} needs at least {self.layer + 1} blocks but the model has "
                f"{n_layers}"
            )

    def check_tokenizer(self, tokenizer: Any) -> None:
        """Fail if the tokenizer does not give the recorded injection and suffix token ids."""
        if self.vocab_size is not None and len(tokenizer) != self.vocab_size:
            raise NLAConfigError(
                f"the tokenizer has {len(tokenizer)} tokens but the NLA metadata records "
                f"{self.vocab_size}: this tokenizer belongs to another model"
            )
        ids = tokenizer.encode(self.injection_char, add_special_tokens=False)
        if ids != [self.injection_token_id]:
            raise NLAConfigError(
                f"the tokenizer encodes the injection character {self.injection_char!r} as "
                f"{ids}, but the NLA metadata expects [{self.injection_token_id}]: this "
                "tokenizer belongs to another model"
            )
        suffix = critic_suffix_ids(tokenizer, self.critic_template)
        if tuple(suffix) != self.critic_suffix_ids:
            raise NLAConfigError(
                f"the tokenizer gives critic suffix ids {suffix}, the metadata expects "
                f"{list(self.critic_suffix_ids)}: this tokenizer belongs to another model"
            )


def read_meta_yaml(path: str | Path, missing_hint: str) -> tuple[dict[str, Any], Path]:
    """The mapping in a meta file (or a directory's nla_meta.yaml) and the file's path."""
    path = Path(path)
    if path.is_dir():
        path = path / META_FILENAME
    if not path.exists():
        raise NLAConfigError(f"no NLA metadata at {path}: {missing_hint}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise NLAConfigError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise NLAConfigError(f"{path} does not hold a mapping of NLA metadata")
    return data, path


def render_actor_prompt(tokenizer: Any, message: str) -> list[int]:
    """Token ids of the chat-templated AV prompt, ending with the assistant turn's opening."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def critic_suffix_ids(tokenizer: Any, critic_template: str) -> list[int]:
    """Ids of the fixed text after the explanation; the AR reads the last of them."""
    suffix = critic_template.split("{explanation}", 1)[1]
    return tokenizer(suffix, add_special_tokens=False)["input_ids"]


def choose_injection_token(
    tokenizer: Any, actor_template: str, candidates: tuple[str, ...] = INJECTION_CANDIDATES
) -> tuple[str, int, int, int]:
    """Pick a rare single-token char that appears exactly once in the prompt.

    Returns (char, token_id, left_neighbour_id, right_neighbour_id).
    """
    tried = []
    for char in candidates:
        ids = tokenizer.encode(char, add_special_tokens=False)
        unk = getattr(tokenizer, "unk_token_id", None)
        if len(ids) != 1 or ids[0] == unk:
            tried.append(f"{char!r} -> {ids}")
            continue
        prompt = render_actor_prompt(tokenizer, actor_template.replace("{injection_char}", char))
        positions = [i for i, t in enumerate(prompt) if t == ids[0]]
        if len(positions) != 1 or positions[0] in (0, len(prompt) - 1):
            tried.append(f"{char!r} found {len(positions)} times in the prompt")
            continue
        pos = positions[0]
        return char, ids[0], prompt[pos - 1], prompt[pos + 1]
    raise NLAConfigError(
        "no injection character is a single token that appears exactly once in the AV prompt "
        f"({'; '.join(tried)}); pass model.injection_char=<a rare single-token character>"
    )


def build_meta(
    tokenizer: Any,
    config: Any,
    base_model: str,
    layer: int,
    injection_scale: float,
    mse_scale: float | None = None,
    actor_template: str = REFERENCE_ACTOR_TEMPLATE,
    critic_template: str = REFERENCE_CRITIC_TEMPLATE,
    injection_char: str | None = None,
) -> NLAMeta:
    """Make the metadata of a new NLA from a live tokenizer and model config."""
    d_model = int(config.hidden_size)
    candidates = (injection_char,) if injection_char else INJECTION_CANDIDATES
    char, token_id, left, right = choose_injection_token(tokenizer, actor_template, candidates)
    return NLAMeta(
        base_model=base_model,
        d_model=d_model,
        layer=int(layer),
        num_layers=int(config.num_hidden_layers),
        injection_scale=float(injection_scale),
        mse_scale=float(mse_scale if mse_scale is not None else math.sqrt(d_model)),
        injection_char=char,
        injection_token_id=token_id,
        left_neighbour_id=left,
        right_neighbour_id=right,
        critic_suffix_ids=tuple(critic_suffix_ids(tokenizer, critic_template)),
        vocab_size=len(tokenizer),
        actor_template=actor_template,
        critic_template=critic_template,
    )
