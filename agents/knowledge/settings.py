"""Settings of the knowledge component (``PARLEY_KB_*``, ``PARLEY_LLM_*``).

Same conventions as :mod:`kernel.settings`: every setting has an environment
variable, a default and a help text; a malformed value stops the process at
start-up with the variable's name and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass

from kernel.errors import ConfigError
from kernel.settings import EnvSettings, setting

__all__ = ["KnowledgeSettings"]


@dataclass(frozen=True)
class KnowledgeSettings(EnvSettings):
    """Knobs of retrieval, caching and LLM answering. Build with :meth:`from_env`."""

    # --- retrieval --------------------------------------------------------
    index_dir: str = setting("", "PARLEY_KB_INDEX", "Knowledge index folder (parley kb ingest).")
    top_k: int = setting(5, "PARLEY_KB_TOP_K", "Passages retrieved per question.")
    min_confidence: float = setting(
        0.01,
        "PARLEY_KB_MIN_CONFIDENCE",
        "Below this retrieval confidence (0-1) the answer is a refusal, not a guess.",
    )
    # --- caches ----------------------------------------------------------
    cache_enabled: bool = setting(True, "PARLEY_KB_CACHE", "Answer caches in Redis Cluster.")
    cache_ttl_s: int = setting(3600, "PARLEY_KB_CACHE_TTL_S", "Lifetime of a cached answer.")
    semantic_cache_threshold: float = setting(
        0.95,
        "PARLEY_KB_SEMANTIC_CACHE_THRESHOLD",
        "Cosine similarity (0-1) from which two questions share a cached answer; above 1: off.",
    )
    semantic_cache_entries: int = setting(
        128,
        "PARLEY_KB_SEMANTIC_CACHE_ENTRIES",
        "Recent questions per tenant the semantic cache keeps.",
    )
    # --- LLM ---------------------------------------------------------------
    llm_url: str = setting(
        "",
        "PARLEY_LLM_URL",
        "OpenAI-compatible API base URL (…/v1). Empty: extractive answers only.",
    )
    llm_api_key: str = setting("", "PARLEY_LLM_API_KEY", "Bearer token for the LLM endpoint.")
    llm_model_small: str = setting(
        "", "PARLEY_LLM_MODEL_SMALL", "Model for short, simple questions (empty: the large one)."
    )
    llm_model_large: str = setting(
        "", "PARLEY_LLM_MODEL_LARGE", "Model for everything else; required with PARLEY_LLM_URL."
    )
    llm_timeout_s: float = setting(
        15.0, "PARLEY_LLM_TIMEOUT_S", "Whole-request timeout of one completion, in seconds."
    )
    llm_connect_timeout_s: float = setting(
        2.0, "PARLEY_LLM_CONNECT_TIMEOUT_S", "Connect timeout to the LLM endpoint, in seconds."
    )
    llm_max_output_tokens: int = setting(
        350, "PARLEY_LLM_MAX_OUTPUT_TOKENS", "Largest answer the model may write, in tokens."
    )
    llm_context_tokens: int = setting(
        1500, "PARLEY_LLM_CONTEXT_TOKENS", "Token budget of the passages put into a prompt."
    )
    llm_small_max_words: int = setting(
        14, "PARLEY_LLM_SMALL_MAX_WORDS", "Questions up to this many words may use the small model."
    )
    breaker_failures: int = setting(
        3, "PARLEY_LLM_BREAKER_FAILURES", "Consecutive LLM failures that open the circuit."
    )
    breaker_reset_s: float = setting(
        30.0, "PARLEY_LLM_BREAKER_RESET_S", "Seconds the circuit stays open before one trial call."
    )

    def __post_init__(self) -> None:
        if self.llm_url and not (self.llm_model_large or self.llm_model_small):
            raise ConfigError(
                "PARLEY_LLM_MODEL_LARGE", "", "a model name when PARLEY_LLM_URL is set"
            )
        if self.llm_url and not self.llm_url.startswith(("http://", "https://")):
            raise ConfigError("PARLEY_LLM_URL", self.llm_url, "an http:// or https:// URL")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ConfigError("PARLEY_KB_MIN_CONFIDENCE", str(self.min_confidence),
                              "a confidence between 0 and 1")
        if self.semantic_cache_threshold < 0.0:
            raise ConfigError("PARLEY_KB_SEMANTIC_CACHE_THRESHOLD",
                              str(self.semantic_cache_threshold),
                              "a cosine between 0 and 1, or above 1 to turn the semantic cache off")
        if self.top_k < 1:
            raise ConfigError("PARLEY_KB_TOP_K", str(self.top_k), "a positive number")
        for env, seconds in (
            ("PARLEY_LLM_TIMEOUT_S", self.llm_timeout_s),
            ("PARLEY_LLM_CONNECT_TIMEOUT_S", self.llm_connect_timeout_s),
            ("PARLEY_LLM_BREAKER_RESET_S", self.breaker_reset_s),
        ):
            if seconds <= 0:
                raise ConfigError(env, str(seconds), "seconds > 0")
        if self.breaker_failures < 1:
            raise ConfigError(
                "PARLEY_LLM_BREAKER_FAILURES", str(self.breaker_failures), "at least 1 failure"
            )

    @property
    def llm_enabled(self) -> bool:
        return bool(self.llm_url)
