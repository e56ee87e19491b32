"""nla_lightning: Natural Language Autoencoders for open models with PyTorch Lightning."""

from nla_lightning.errors import NLAConfigError
from nla_lightning.meta import NLAMeta

__all__ = ["NLAConfigError", "NLAMeta"]
__version__ = "0.1.0"
