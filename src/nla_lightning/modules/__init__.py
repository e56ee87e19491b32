"""LightningModules: target pretraining (toy world), AV and AR warm start."""
