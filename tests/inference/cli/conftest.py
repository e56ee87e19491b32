"""The quick (untrained) NLA on disk, as CLI arguments."""

from __future__ import annotations

import pytest

from tests.inference.conftest import quick_nla_dirs, text  # noqa: F401  (reused fixtures)


@pytest.fixture(scope="session")
def model_args(quick_nla_dirs, target_dir) -> list[str]:  # noqa: F811
    av, ar = quick_nla_dirs
    return ["--av", str(av), "--ar", str(ar), "--target", str(target_dir)]


@pytest.fixture(scope="session")
def tokens(nla, text) -> list[str]:  # noqa: F811
    """The text's tokens as the NLA splits them."""
    return nla.token_strings(nla.encode(text)[0])
