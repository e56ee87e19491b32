"""What a run prints: the libraries' own chatter off unless asked for (`verbose=true`).

Off by default: Lightning's device lines and product tips at every fit, its checkpoint-loading
notices, transformers' weight-loading and shard-writing bars, bitsandbytes' optional-kernel
notice, and deprecation warnings of the libraries about each other. Warnings about this run's
own data and settings are ours and stay."""

from __future__ import annotations

import logging
import warnings

# Loggers whose INFO lines describe the libraries, not the run.
LIBRARY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "bitsandbytes")
# Warnings one library raises about another (torch about Lightning's use of its pytree API).
LIBRARY_WARNINGS = (r".*isinstance\(treespec, LeafSpec\).*",)


def quiet_libraries(verbose: bool = False) -> None:
    """Silence (or with `verbose`, restore) the libraries' console output."""
    from transformers.utils import logging as hf_logging

    if verbose:
        for name in LIBRARY_LOGGERS:
            logging.getLogger(name).setLevel(logging.INFO)
        hf_logging.set_verbosity_warning()
        hf_logging.enable_progress_bar()
        return
    for name in LIBRARY_LOGGERS:
        # bitsandbytes logs a missing optional kernel as an error it then works around.
        level = logging.CRITICAL if name == "bitsandbytes" else logging.WARNING
        logging.getLogger(name).setLevel(level)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    for message in LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
