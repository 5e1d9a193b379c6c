from __future__ import annotations

import pytest

from bridge.config import PlaceholderMode
from bridge.startup_checks import placeholder_mode_problem
from slurm_client import Capabilities

V38 = Capabilities(api_version="v0.0.38")
V42 = Capabilities(api_version="v0.0.42")
V43 = Capabilities(api_version="v0.0.43", supports_external_job=True)


@pytest.mark.parametrize(
    ("mode", "caps", "refused"),
    [
        pytest.param(PlaceholderMode.EXTERNAL, V38, True, id="external-v0.0.38-refused"),
        pytest.param(PlaceholderMode.EXTERNAL, V42, True, id="external-v0.0.42-refused"),
        pytest.param(PlaceholderMode.EXTERNAL, V43, False, id="external-v0.0.43-ok"),
        pytest.param(PlaceholderMode.BATCH, V38, False, id="batch-ok"),
        pytest.param(PlaceholderMode.AUTO, V42, False, id="auto-ok"),
    ],
)
def test_placeholder_mode_problem(mode: PlaceholderMode, caps: Capabilities, refused: bool) -> None:
    problem = placeholder_mode_problem(mode, caps)
    assert (problem is not None) is refused
    if problem is not None:
        assert "v0.0.43" in problem and caps.api_version in problem
