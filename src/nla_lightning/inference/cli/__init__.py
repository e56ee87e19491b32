"""Console scripts: nla-explain, nla-steer and nla-fidelity."""
