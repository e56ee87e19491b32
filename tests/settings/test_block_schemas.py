"""The model, writer and trainer blocks are handed on as dicts, but every key passes a typed
schema first: a bad value or an unknown key is refused by name before any model loads, and
each schema is held to what reads it (the writers' constructors, Qwen2Config, Lightning)."""

from __future__ import annotations

import inspect
import typing
from dataclasses import MISSING, asdict, fields

import pytest

from nla_lightning.errors import NLAConfigError
from nla_lightning.settings import validate
from nla_lightning.settings.model import ArchitectureSettings, FinetuneSettings, PretrainSettings
from nla_lightning.settings.trainer import (
    ACCELERATORS,
    PRECISIONS,
    REFUSED_TRAINER_KEYS,
    STAGE_TRAINER_KEYS,
    TrainerSettings,
)
from nla_lightning.settings.writer import (
    INSTRUCTION_NAMES,
    WRITER_SETTINGS,
    AnthropicWriterSettings,
    LocalWriterSettings,
    OpenAIWriterSettings,
    TemplateWriterSettings,
)
from tests.conftest import plain

CORPUS = ["data=corpus", "data.builtin=python_reference"]
OPENAI = [*CORPUS, "writer=openai"]
ANTHROPIC = [*CORPUS, "writer=anthropic"]
LOCAL = [*CORPUS, "writer=local"]

# (overrides, the key the message names, the value it names): one per kind of check.
BAD_MODEL = [
    (["model.source=cloud"], "model.source", "'cloud'"),
    (["model.name=''"], "model.name", "''"),
    (["model.templates=fancy"], "model.templates", "'fancy'"),
    (["model.dtype=float64"], "model.dtype", "'float64'"),
    (["model.injection_scale=median"], "model.injection_scale", "'median'"),
    (["model.mse_scale=0"], "model.mse_scale", "0"),
    (["model.injection_char=ab"], "model.injection_char", "'ab'"),
    (["model.num_layers=0"], "model.num_layers", "0"),
    (["model.num_layers=3"], "model.num_layers", "3"),
    (["model.default_layer=-1"], "model.default_layer", "-1"),
    (["model.default_layer=4"], "model.default_layer", "4"),
    (["model.path=''"], "model.path", "''"),
    (["model.train.dtype=int8"], "model.train.dtype", "'int8'"),
    (["model.train.av_mode=half"], "model.train.av_mode", "'half'"),
    (["model.train.ar_mode=half"], "model.train.ar_mode", "'half'"),
    (["model.train.reference=bf16"], "model.train.reference", "'bf16'"),
    (["model.train.reference=adapter"], "model.train.reference", "adapter"),
    (["model.train.lora_rank=0"], "model.train.lora_rank", "0"),
    (["model.train.lora_rank=1.5"], "model.train.lora_rank", "1.5"),
    (["model.train.gradient_checkpointing=maybe"], "model.train.gradient_checkpointing", "maybe"),
    (["model.train.estimate_memory=1"], "model.train.estimate_memory", "1"),
    (["model.pretrain.lr=-1"], "model.pretrain.lr", "-1"),
    (["model.pretrain.steps=0"], "model.pretrain.steps", "0"),
    (["model.pretrain.warmup_steps=-1"], "model.pretrain.warmup_steps", "-1"),
    (["model.pretrain.gradient_clip_val=0"], "model.pretrain.gradient_clip_val", "0"),
    (["model.pretrain.checkpoint_every=-1"], "model.pretrain.checkpoint_every", "-1"),
    (["~model.pretrain"], "model.pretrain", "source=toy"),
    (["model=qwen", "+model.pretrain.steps=1"], "model.pretrain", "source=hub"),
    (["model.architecture.hidden_size=0"], "model.architecture.hidden_size", "0"),
    (["model.architecture.num_attention_heads=3"], "model.architecture.num_attention_heads", "3"),
    (["model.architecture.num_key_value_heads=3"], "model.architecture.num_key_value_heads", "3"),
    (["model.train=full"], "model.train", "'full'"),
]
BAD_WRITER = [
    (["writer.p_attribute=2"], "writer.p_attribute", "2"),
    (["writer.p_unknown=-0.1"], "writer.p_unknown", "-0.1"),
    (["writer.name=gpt"], "writer.name", "'gpt'"),
    (["writer=openai"], "writer=template", "data=toy"),
    ([*CORPUS, "writer=template"], "writer=template", "data=corpus"),
    ([*OPENAI, "writer.concurrency=0"], "writer.concurrency", "0"),
    ([*OPENAI, "writer.concurrency=2.5"], "writer.concurrency", "2.5"),
    ([*OPENAI, "writer.max_retries=-1"], "writer.max_retries", "-1"),
    ([*OPENAI, "writer.timeout_s=0"], "writer.timeout_s", "0"),
    ([*OPENAI, "writer.backoff_s=-1"], "writer.backoff_s", "-1"),
    ([*OPENAI, "+writer.jitter=often"], "writer.jitter", "often"),
    ([*OPENAI, "writer.max_tokens=0"], "writer.max_tokens", "0"),
    ([*OPENAI, "+writer.min_features=0"], "writer.min_features", "0"),
    ([*OPENAI, "+writer.ending_words=-1"], "writer.ending_words", "-1"),
    ([*OPENAI, "writer.temperature=-0.5"], "writer.temperature", "-0.5"),
    ([*OPENAI, "writer.base_url=localhost:8000"], "writer.base_url", "'localhost:8000'"),
    ([*OPENAI, "writer.model=''"], "writer.model", "''"),
    ([*OPENAI, "~writer.base_url"], "writer=openai", "base_url"),
    ([*ANTHROPIC, "+writer.temperature=1.5"], "writer.temperature", "1.5"),
    ([*ANTHROPIC, "writer.api_key_env=''"], "writer.api_key_env", "''"),
    ([*LOCAL, "writer.batch_size=0"], "writer.batch_size", "0"),
    ([*LOCAL, "writer.max_new_tokens=0"], "writer.max_new_tokens", "0"),
    ([*LOCAL, "writer.device=gpu0"], "writer.device", "'gpu0'"),
    ([*LOCAL, "writer.dtype=float64"], "writer.dtype", "'float64'"),
    ([*LOCAL, "writer.repetition_penalty=0"], "writer.repetition_penalty", "0"),
    ([*LOCAL, "writer.instruction=long"], "writer.instruction", "'long'"),
    ([*LOCAL, "writer.sentence_rule=sometimes"], "writer.sentence_rule", "sometimes"),
    ([*LOCAL, "writer.answer_prefix=1"], "writer.answer_prefix", "1"),
    ([*LOCAL, "writer.cache_dir=''"], "writer.cache_dir", "''"),
]
BAD_TRAINER = [
    (["trainer.accelerator=quantum"], "trainer.accelerator", "'quantum'"),
    (["trainer.devices=0"], "trainer.devices", "0"),
    (["trainer.devices=[]"], "trainer.devices", "[]"),
    (["trainer.devices=some"], "trainer.devices", "'some'"),
    (["trainer.devices=[0,-1]"], "trainer.devices[1]", "-1"),
    (["trainer.devices=[1,1]"], "trainer.devices", "[1, 1]"),
    (["trainer.precision=8-mixed"], "trainer.precision", "'8-mixed'"),
    (["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps", "0"),
    (["trainer.enable_progress_bar=sometimes"], "trainer.enable_progress_bar", "sometimes"),
    (["+trainer.strategy=''"], "trainer.strategy", "''"),
    (["trainer.num_nodes=0"], "trainer.num_nodes", "0"),
    (["+trainer.logger=false"], "trainer.logger", "logger="),
    (["+trainer.default_root_dir=/tmp/x"], "trainer.default_root_dir", "hydra.run.dir"),
    (["+trainer.max_steps=null"], "trainer.max_steps", "rl.steps"),
]


@pytest.mark.parametrize(
    ("overrides", "key", "value"),
    [*BAD_MODEL, *BAD_WRITER, *BAD_TRAINER],
    ids=lambda case: " ".join(case) if isinstance(case, list) else None,
)
def test_each_bad_value_is_refused_naming_key_and_value(overrides, key, value, tmp_path):
    with pytest.raises(NLAConfigError) as err:
        validate(plain(overrides, tmp_path))
    message = str(err.value)
    assert key in message and value in message, message
    assert "\n" not in message
    assert not any(tmp_path.iterdir()), "validation must not write anything"


@pytest.mark.parametrize(
    ("overrides", "block", "known"),
    [
        (["+model.foo=1"], "model has", "injection_scale"),
        (["+model.train.foo=1"], "model.train has", "lora_rank"),
        (["+model.pretrain.foo=1"], "model.pretrain has", "block_size"),
        (["+model.architecture.rope_theta=1e6"], "model.architecture has", "hidden_size"),
        (["+writer.foo=1"], "writer=template has", "p_attribute"),
        ([*OPENAI, "+writer.foo=1"], "writer=openai has", "concurrency"),
        ([*ANTHROPIC, "+writer.foo=1"], "writer=anthropic has", "max_retries"),
        ([*LOCAL, "+writer.foo=1"], "writer=local has", "repetition_penalty"),
        # A local writer's key on an HTTP writer: the HTTP writers take no instruction.
        ([*OPENAI, "+writer.instruction=short"], "writer=openai has", "timeout_s"),
        (["+trainer.foo=1"], "trainer has", "log_every_n_steps"),
    ],
)
def test_an_unknown_key_is_refused_naming_the_blocks_keys(overrides, block, known, tmp_path):
    with pytest.raises(NLAConfigError) as err:
        validate(plain(overrides, tmp_path))
    message = str(err.value)
    unknown = overrides[-1].split("=")[0].rsplit(".", 1)[-1]
    assert f"{block} unknown keys ['{unknown}']" in message and known in message, message


def test_other_lightning_trainer_keys_are_handed_on(tmp_path):
    overrides = ["+trainer.deterministic=true", "+trainer.limit_val_batches=2"]
    settings = validate(plain(overrides, tmp_path))
    assert settings.trainer["deterministic"] is True and settings.trainer["limit_val_batches"] == 2


def test_the_blocks_are_handed_on_as_composed(tmp_path):
    cfg = plain([*LOCAL], tmp_path)
    settings = validate(cfg)
    assert (settings.model, settings.writer, settings.trainer) == (
        cfg["model"],
        cfg["writer"],
        cfg["trainer"],
    )


# ---- each schema held to what reads it ------------------------------------------------------


def constructor_parameters(cls: type) -> dict[str, object]:
    """Name -> default of every keyword a writer class takes, through its **kwargs to the
    parent constructors it hands them to."""
    params: dict[str, object] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        signature = inspect.signature(klass.__init__)
        variadic = (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
        for param in signature.parameters.values():
            if param.name != "self" and param.kind not in variadic:
                params.setdefault(param.name, param.default)
        if all(p.kind is not inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
            break
    return params


def schema_parameters(kind: type) -> dict[str, object]:
    """Name -> default of a schema's fields; `name` picks the writer and is not passed on."""
    return {
        f.name: inspect.Parameter.empty if f.default is MISSING else f.default
        for f in fields(kind)
        if f.name != "name"
    }


@pytest.mark.parametrize(
    ("schema", "writer"),
    [
        (OpenAIWriterSettings, "OpenAIWriter"),
        (AnthropicWriterSettings, "AnthropicWriter"),
        (LocalWriterSettings, "LocalWriter"),
    ],
)
def test_each_writer_schema_is_its_constructors_parameters(schema, writer):
    import nla_lightning.writers as writers

    assert schema_parameters(schema) == constructor_parameters(getattr(writers, writer))


def test_the_template_schema_is_write_explanations_parameters():
    from nla_lightning.toy.summaries import write_explanation

    params = inspect.signature(write_explanation).parameters.values()
    expected = {p.name: p.default for p in params if p.name not in ("snippet", "rng")}
    assert schema_parameters(TemplateWriterSettings) == expected


def test_the_writer_names_and_instructions_are_the_writers():
    from nla_lightning.writers import WRITERS
    from nla_lightning.writers.instruction import INSTRUCTIONS

    assert set(WRITER_SETTINGS) == {*WRITERS, "template"}
    for name, schema in WRITER_SETTINGS.items():
        assert schema.__dataclass_fields__["name"].default == name
    assert INSTRUCTION_NAMES == tuple(INSTRUCTIONS)


def test_the_architecture_keys_are_qwen2_config_fields_the_toy_target_does_not_set():
    from transformers import Qwen2Config

    config = Qwen2Config(**asdict(ArchitectureSettings()))
    own = {"vocab_size", "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id"}
    for key, value in asdict(ArchitectureSettings()).items():
        assert key in inspect.signature(Qwen2Config.__init__).parameters and key not in own
        assert getattr(config, key) == value, key


def test_the_tiny_preset_sets_the_model_schemas_defaults(tmp_path):
    model = plain([], tmp_path)["model"]
    assert model["architecture"] == asdict(ArchitectureSettings())
    assert model["pretrain"] == asdict(PretrainSettings())
    assert model["train"] == asdict(FinetuneSettings())  # conf/finetune/full.yaml


def test_the_trainer_schema_speaks_lightnings_names():
    from lightning.fabric.plugins.precision.precision import _PRECISION_INPUT
    from lightning.pytorch import Trainer
    from lightning.pytorch.accelerators import AcceleratorRegistry

    flat: list[object] = []
    for part in typing.get_args(_PRECISION_INPUT):
        flat.extend(typing.get_args(part))
    assert sorted(map(str, PRECISIONS)) == sorted(map(str, flat))
    assert set(AcceleratorRegistry.available_accelerators()) <= set(ACCELERATORS)
    parameters = set(inspect.signature(Trainer.__init__).parameters)
    for key in [f.name for f in fields(TrainerSettings)]:
        assert key in parameters, key
    for key in [*REFUSED_TRAINER_KEYS, *STAGE_TRAINER_KEYS]:
        assert key in parameters, key


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["+logger.flush_secs=5"], "logger has unknown keys ['flush_secs']: CSVLogger takes"),
        (["+logger.version=x"], "logger.version='x': each stage logs under its own version"),
        (
            ["logger._target_=lightning.pytorch.loggers.NoSuchLogger"],
            "logger._target_=lightning.pytorch.loggers.NoSuchLogger: cannot be imported",
        ),
        (["logger._target_=csv"], "logger._target_='csv': expected a logger class"),
    ],
)
def test_the_logger_block_is_held_to_its_class(overrides, expected, tmp_path):
    with pytest.raises(NLAConfigError) as refused:
        validate(plain(overrides, tmp_path))
    assert expected in str(refused.value) and "\n" not in str(refused.value)


def test_a_logger_that_takes_any_keyword_passes_them_on(tmp_path):
    # TensorBoardLogger(**kwargs) hands other keys to its writer: not ours to refuse.
    settings = validate(plain(["logger=tensorboard", "+logger.flush_secs=5"], tmp_path))
    assert settings.logger["flush_secs"] == 5
    assert validate(plain(["logger=none"], tmp_path)).logger is None
