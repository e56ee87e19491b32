"""Train an NLA: `python train.py` (toy world on CPU) or `python train.py model=qwen layer=18`."""

import sys

import hydra
from omegaconf import DictConfig, OmegaConf


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from nla_lightning.errors import NLAConfigError
    from nla_lightning.pipeline import run

    try:
        summary = run(OmegaConf.to_container(cfg, resolve=True))
    except NLAConfigError as err:
        print(f"\nerror: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    # Returned for sweepers (Optuna maximises the held-out FVE).
    return summary["stages"].get("ar_sft", {}).get("fve")


if __name__ == "__main__":
    main()
