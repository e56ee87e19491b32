"""Every setting of a run, typed, with its one default, checked before any model loads.

The dataclasses here are the source of the defaults: Hydra's config groups `sft/`, `rl/`,
`eval/` and `data/` build on them (`register_configs`), and Python users get the same values
from `RLSettings()` and friends. `validate(cfg)` checks a composed config as a whole.
"""

from nla_lightning.settings.data import CorpusDataSettings, ToyDataSettings
from nla_lightning.settings.evaluation import EvalSettings
from nla_lightning.settings.rl import RLSettings
from nla_lightning.settings.run import RunSettings, validate
from nla_lightning.settings.sft import SFTSettings, WarmStartSettings

__all__ = [
    "CorpusDataSettings",
    "EvalSettings",
    "RLSettings",
    "RunSettings",
    "SFTSettings",
    "ToyDataSettings",
    "WarmStartSettings",
    "register_configs",
    "validate",
]


def register_configs() -> None:
    """Put the schemas into Hydra's ConfigStore, where `conf/<group>/*.yaml` extend them
    (`defaults: [schema]`): a wrong type fails when the config is composed."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(group="rl", name="schema", node=RLSettings)
    store.store(group="sft", name="schema", node=WarmStartSettings)
    store.store(group="eval", name="schema", node=EvalSettings)
    store.store(group="data", name="toy_schema", node=ToyDataSettings)
    store.store(group="data", name="corpus_schema", node=CorpusDataSettings)
