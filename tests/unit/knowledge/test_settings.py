from __future__ import annotations

import pytest

from agents.knowledge.settings import KnowledgeSettings
from kernel.errors import ConfigError


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
        ({"PARLEY_KB_SEMANTIC_CACHE_THRESHOLD": "-0.5"}, "PARLEY_KB_SEMANTIC_CACHE_THRESHOLD"),
        ({"PARLEY_KB_TOP_K": "0"}, "PARLEY_KB_TOP_K"),
        ({"PARLEY_LLM_TIMEOUT_S": "0"}, "PARLEY_LLM_TIMEOUT_S"),
        ({"PARLEY_LLM_CONNECT_TIMEOUT_S": "0"}, "PARLEY_LLM_CONNECT_TIMEOUT_S"),
        ({"PARLEY_LLM_BREAKER_FAILURES": "0"}, "PARLEY_LLM_BREAKER_FAILURES"),
        ({"PARLEY_LLM_BREAKER_RESET_S": "0"}, "PARLEY_LLM_BREAKER_RESET_S"),
    ],
)
def test_misconfiguration_names_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError) as info:
        KnowledgeSettings.from_env(env)
    assert info.value.name == name and name in str(info.value)


@pytest.mark.parametrize("threshold", ["1.5", "2", "1000"])
def test_a_semantic_cache_threshold_above_1_turns_it_off(threshold: str) -> None:
    settings = KnowledgeSettings.from_env({"PARLEY_KB_SEMANTIC_CACHE_THRESHOLD": threshold})
    assert settings.semantic_cache_threshold == float(threshold)
    help_text = {env: text for env, _, text in KnowledgeSettings.describe()}
    assert "above 1: off" in help_text["PARLEY_KB_SEMANTIC_CACHE_THRESHOLD"]
    with pytest.raises(ConfigError, match="above 1 to turn the semantic cache off"):
        KnowledgeSettings.from_env({"PARLEY_KB_SEMANTIC_CACHE_THRESHOLD": "-1"})


def test_every_setting_is_described() -> None:
    described = KnowledgeSettings.describe()
    assert all(env.startswith("PARLEY_") and help_text for env, _, help_text in described)
