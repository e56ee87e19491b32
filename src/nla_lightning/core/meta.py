"""NLAMeta: everything that ties an NLA to its target model, stored as `nla_meta.yaml`.

The file layout (every spelling read, the release's written) lives in `sidecar.py`; this module
holds the fields, the tokenisation protocol they pin down, and the checks against live objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nla_lightning.core.layers import check_layer
from nla_lightning.core.templates import REFERENCE_ACTOR_TEMPLATE, REFERENCE_CRITIC_TEMPLATE
from nla_lightning.errors import NLAConfigError

META_FILENAME = "nla_meta.yaml"

# The release's rule: the first code point of this block that encodes to one (known) token.
INJECTION_RANGE = (0x3200, 0x33FF)


@dataclass(frozen=True)
class NLAMeta:
    """Prompts, injection token, scales, layer and d_model of one NLA.

    `injection_scale` is None where the file does not record it (an AR or a dataset: only the
    AV injects); `critic_suffix_ids` is the tokenised text after `{explanation}` without its
    first id (that id can merge with the explanation's last character), None where unknown."""

    base_model: str
    d_model: int
    layer: int
    injection_scale: float | None
    mse_scale: float
    injection_char: str
    injection_token_id: int
    left_neighbour_id: int
    right_neighbour_id: int
    critic_suffix_ids: tuple[int, ...] | None
    actor_template: str = REFERENCE_ACTOR_TEMPLATE
    critic_template: str = REFERENCE_CRITIC_TEMPLATE
    # Known when built from a live config; no release file records it.
    num_layers: int | None = field(default=None, compare=False)
    # Other keys of the file (trained_on, training, stage, ...), kept when it is rewritten.
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        check_layer(self.layer, self.num_layers, self.base_model)
        scales = {"mse_scale": self.mse_scale, "injection_scale": self.injection_scale}
        for name, value in scales.items():
            if value is None and name == "injection_scale":
                continue
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise NLAConfigError(f"{name} must be a positive finite number, got {value!r}")
        _check_template(self.actor_template, "injection_char", "actor (AV)")
        _check_template(self.critic_template, "explanation", "critic (AR)")

    # ---- prompts -------------------------------------------------------------------------
    def actor_message(self) -> str:
        """The AV's user message with the injection character in place."""
        return self.actor_template.format(injection_char=self.injection_char)

    def critic_text(self, explanation: str) -> str:
        """The AR's whole input string for one explanation (no chat template)."""
        return self.critic_template.format(explanation=explanation)

    def require_injection_scale(self, where: str) -> float:
        """The injection scale, or a clear error where the metadata lacks it (an AR's file)."""
        if self.injection_scale is None:
            raise NLAConfigError(
                f"{where} needs extraction.injection_scale, which this metadata lacks (an AR's "
                "or a dataset's nla_meta.yaml has none): load the AV's nla_meta.yaml, or pass "
                "model.injection_scale"
            )
        return float(self.injection_scale)

    # ---- yaml ----------------------------------------------------------------------------
    def to_dict(self, kind: str, role: str | None = None, **fields: Any) -> dict[str, Any]:
        """The release's layout: kind nla_model (role av / ar) or nla_dataset."""
        from nla_lightning.core.sidecar import dataset_sidecar, model_sidecar

        if kind == "nla_model":
            if role not in ("av", "ar"):
                raise ValueError(f"a model sidecar needs role 'av' or 'ar', got {role!r}")
            return model_sidecar(self, role, **fields)
        if kind == "nla_dataset":
            return dataset_sidecar(self, **fields)
        raise ValueError(f"unknown sidecar kind {kind!r}: use 'nla_model' or 'nla_dataset'")

    def save(self, path: str | Path, kind: str, role: str | None = None, **fields: Any) -> Path:
        """Write to `path` (a file, or a directory that gets nla_meta.yaml) atomically.
        `fields`: stage, row_count, dataset_id, trained_on, training (see sidecar.py)."""
        from nla_lightning.core.sidecar import write_yaml

        path = Path(path)
        if path.is_dir():
            path = path / META_FILENAME
        return write_yaml(self.to_dict(kind, role, **fields), path)

    @classmethod
    def load(cls, path: str | Path, partner: str | Path | None = None) -> NLAMeta:
        """Read a meta file (or a directory's nla_meta.yaml) in any known spelling; fields
        the file lacks (an AV's layer, an AR's injection scale) come from `partner`'s file."""
        from nla_lightning.core.sidecar import read_meta

        return read_meta(path, partner)

    def with_updates(self, **changes: Any) -> NLAMeta:
        return replace(self, **changes)

    # ---- checks against live objects ------------------------------------------------------
    def check_compatible(self, other: NLAMeta, what: str = "data") -> None:
        """Fail if `other` (data or another checkpoint) belongs to a different model or layer."""
        names = ["d_model", "layer", "injection_char", "injection_token_id", "critic_template"]
        names += ["actor_template", "left_neighbour_id", "right_neighbour_id", "mse_scale"]
        if self.critic_suffix_ids is not None and other.critic_suffix_ids is not None:
            names.append("critic_suffix_ids")
        for name in names:
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                raise NLAConfigError(
                    f"{what} does not match this NLA: {name} is {theirs!r} there but {mine!r} "
                    f"here (base model {other.base_model!r} vs {self.base_model!r}); use data "
                    "and checkpoints made for the same model and layer"
                )

    def check_model(self, config: Any) -> None:
        """Fail if a transformers config does not have this meta's width and enough layers."""
        from nla_lightning.core.families import text_config

        config = text_config(config)
        hidden = getattr(config, "hidden_size", None)
        if hidden != self.d_model:
            raise NLAConfigError(
                f"d_model mismatch: the NLA metadata says d_model={self.d_model} but the model "
                f"has hidden_size={hidden}; load the checkpoint of {self.base_model!r}"
            )
        check_layer(self.layer, getattr(config, "num_hidden_layers", None), self.base_model)

    def check_tokenizer(self, tokenizer: Any, config: Any = None) -> None:
        """Fail if the tokenizer does not give the recorded injection and suffix token ids, or
        (given the model's config) has more tokens than the model has embedding rows."""
        if config is not None:
            from nla_lightning.core.families import text_config

            rows = getattr(text_config(config), "vocab_size", None)
            if rows is not None and len(tokenizer) > rows:
                raise NLAConfigError(
                    f"the tokenizer has {len(tokenizer)} tokens but the model's embedding has "
                    f"{rows} rows: this tokenizer belongs to another model; load the tokenizer "
                    "saved with the checkpoint"
                )
        ids = tokenizer.encode(self.injection_char, add_special_tokens=False)
        if ids != [self.injection_token_id] or ids[0] == tokenizer.unk_token_id:
            raise NLAConfigError(
                f"the tokenizer encodes the injection character {self.injection_char!r} as "
                f"{ids}, but the NLA metadata expects [{self.injection_token_id}]: this "
                "tokenizer belongs to another model"
            )
        if self.critic_suffix_ids is None:
            return
        suffix = critic_suffix_ids(tokenizer, self.critic_template)
        if tuple(suffix) != self.critic_suffix_ids:
            raise NLAConfigError(
                f"the tokenizer gives critic suffix ids {suffix}, the metadata expects "
                f"{list(self.critic_suffix_ids)}: this tokenizer belongs to another model"
            )


def _check_template(template: Any, name: str, what: str) -> None:
    """One `{name}` field and nothing else str.format would trip over."""
    if not isinstance(template, str) or template.count("{" + name + "}") != 1:
        raise NLAConfigError(
            f"the {what} prompt template must contain '{{{name}}}' exactly once, got {template!r}"
        )
    try:
        template.format(**{name: ""})
    except (KeyError, IndexError, ValueError) as err:
        raise NLAConfigError(
            f"the {what} prompt template {template!r} has another replacement field ({err}); "
            "double any literal braces ({{ and }})"
        ) from err


def render_actor_prompt(tokenizer: Any, message: str) -> list[int]:
    """Token ids of the chat-templated AV prompt, ending with the assistant turn's opening:
    one user message, templated and tokenised in one step (so no second BOS)."""
    from nla_lightning.core.families import chat_prompt_ids

    return chat_prompt_ids(tokenizer, message)


def critic_suffix_ids(tokenizer: Any, critic_template: str) -> list[int]:
    """The stable tail of the AR input: the text after `{explanation}` tokenised alone, without
    its first id, which can merge with the explanation's last character (`.` + `</` -> `.</`)."""
    suffix = critic_template.split("{explanation}", 1)[1]
    ids = tokenizer(suffix, add_special_tokens=False)["input_ids"]
    if len(ids) < 2:
        raise NLAConfigError(
            f"the critic template's suffix {suffix!r} is {len(ids)} token(s); it needs at least "
            "2 so that a stable tail remains after its first token: lengthen it"
        )
    return ids[1:]


def _single_token(tokenizer: Any, char: str) -> int | None:
    ids = tokenizer.encode(char, add_special_tokens=False)
    if len(ids) != 1 or ids[0] == getattr(tokenizer, "unk_token_id", None):
        return None
    return ids[0]


def choose_injection_token(
    tokenizer: Any, actor_template: str, injection_char: str | None = None
) -> tuple[str, int, int, int]:
    """The injection character, its id and its neighbours in the AV prompt.

    Without `injection_char`: the first code point in U+3200..U+33FF that encodes to exactly
    one known token, as the release picks it. Returns (char, token_id, left_id, right_id)."""
    if injection_char is not None:
        token = _single_token(tokenizer, injection_char)
        if token is None:
            ids = tokenizer.encode(injection_char, add_special_tokens=False)
            raise NLAConfigError(
                f"no injection character: {injection_char!r} -> {ids} is not one known token; "
                "pass model.injection_char=<a rare single-token character>, or null for the "
                "first single-token character of U+3200..U+33FF"
            )
        char = injection_char
    else:
        lo, hi = INJECTION_RANGE
        found = ((chr(c), _single_token(tokenizer, chr(c))) for c in range(lo, hi + 1))
        char, token = next(((c, t) for c, t in found if t is not None), (None, None))
        if char is None:
            raise NLAConfigError(
                f"no injection character: no code point in U+{lo:04X}..U+{hi:04X} is a single "
                "known token of this tokenizer; pass model.injection_char=<a rare single-token "
                "character>"
            )
    prompt = render_actor_prompt(tokenizer, actor_template.format(injection_char=char))
    positions = [i for i, t in enumerate(prompt) if t == token]
    if len(positions) != 1 or positions[0] in (0, len(prompt) - 1):
        raise NLAConfigError(
            f"no injection character: {char!r} found {len(positions)} times in the AV prompt "
            "(it must appear exactly once, inside the prompt): fix the actor template or pass "
            "model.injection_char=<another character>"
        )
    pos = positions[0]
    return char, token, prompt[pos - 1], prompt[pos + 1]


def build_meta(
    tokenizer: Any,
    config: Any,
    base_model: str,
    layer: int,
    injection_scale: float | None,
    mse_scale: float | None = None,
    actor_template: str = REFERENCE_ACTOR_TEMPLATE,
    critic_template: str = REFERENCE_CRITIC_TEMPLATE,
    injection_char: str | None = None,
) -> NLAMeta:
    """Make the metadata of a new NLA from a live tokenizer and model config (`injection_scale`
    None: not known yet, e.g. until the activations it is taken from are extracted)."""
    from nla_lightning.core.families import text_config

    config = text_config(config)
    d_model = int(config.hidden_size)
    _check_template(actor_template, "injection_char", "actor (AV)")
    _check_template(critic_template, "explanation", "critic (AR)")
    char, token_id, left, right = choose_injection_token(tokenizer, actor_template, injection_char)
    return NLAMeta(
        base_model=base_model,
        d_model=d_model,
        layer=int(layer),
        num_layers=int(config.num_hidden_layers),
        injection_scale=None if injection_scale is None else float(injection_scale),
        mse_scale=float(mse_scale if mse_scale is not None else math.sqrt(d_model)),
        injection_char=char,
        injection_token_id=token_id,
        left_neighbour_id=left,
        right_neighbour_id=right,
        critic_suffix_ids=tuple(critic_suffix_ids(tokenizer, critic_template)),
        actor_template=actor_template,
        critic_template=critic_template,
    )
