from __future__ import annotations

import pytest

from agents.knowledge.settings import KnowledgeSettings
from parley.errors import ConfigError


def test_defaults_have_no_llm() -> None:
    settings = KnowledgeSettings.from_env({})
    assert not settings.llm_enabled and settings.top_k == 5


def test_reads_the_environment() -> None:
    settings = KnowledgeSettings.from_env({
        "PARLEY_LLM_URL": "http://127.0.0.1:9/v1", "PARLEY_LLM_MODEL_LARGE": "big",
        "PARLEY_LLM_MODEL_SMALL": "small", "PARLEY_LLM_TIMEOUT_S": "2.5",
        "PARLEY_KB_CACHE": "off",
    })
    assert settings.llm_enabled and settings.llm_timeout_s == 2.5
    assert settings.llm_model_small == "small" and not settings.cache_enabled


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"PARLEY_LLM_URL": "http://x/v1"}, "PARLEY_LLM_MODEL_LARGE"),
        ({"PARLEY_LLM_URL": "ftp://x", "PARLEY_LLM_MODEL_LARGE": "m"}, "PARLEY_LLM_URL"),
        ({"PARLEY_LLM_TIMEOUT_S": "soon"}, "PARLEY_LLM_TIMEOUT_S"),
        ({"PARLEY_KB_CACHE": "maybe"}, "PARLEY_KB_CACHE"),
        ({"PARLEY_KB_MIN_CONFIDENCE": "3"}, "PARLEY_KB_MIN_CONFIDENCE"),
        ({"PARLEY_KB_TOP_K": "0"}, "PARLEY_KB_TOP_K"),
    ],
)
def test_misconfiguration_names_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError) as info:
        KnowledgeSettings.from_env(env)
    assert info.value.name == name and name in str(info.value)


def test_every_setting_is_described() -> None:
    described = KnowledgeSettings.describe()
    assert all(env.startswith("PARLEY_") and help_text for env, _, help_text in described)
