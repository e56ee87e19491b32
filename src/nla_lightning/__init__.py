"""nla_lightning: Natural Language Autoencoders for open models with PyTorch Lightning."""

from nla_lightning.core.meta import NLAMeta
from nla_lightning.errors import NLAConfigError

__all__ = ["NLAConfigError", "NLAMeta"]
__version__ = "0.1.0"
