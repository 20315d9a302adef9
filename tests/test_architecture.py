"""Model shapes are found where users keep them: a local checkpoint, the Hugging Face cache,
the hub, then the catalogue (no real network: a fake cache and a local stand-in for the hub)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from serve_app.config import architecture
from serve_app.config.architecture import KNOWN_ARCHITECTURES, from_hf_config, resolve_architecture

# Published config.json fields of the recipes' models (Qwen3 and OPT model cards).
QWEN3_8B = {
    "model_type": "qwen3",
    "num_hidden_layers": 36,
    "hidden_size": 4096,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "intermediate_size": 12288,
    "vocab_size": 151936,
    "tie_word_embeddings": False,
}
QWEN3_06B = {**QWEN3_8B, "num_hidden_layers": 28, "hidden_size": 1024, "num_attention_heads": 16}
QWEN3_06B |= {"intermediate_size": 3072, "tie_word_embeddings": True}
OPT_6_7B = {
    "model_type": "opt",
    "num_hidden_layers": 32,
    "hidden_size": 4096,
    "num_attention_heads": 32,
    "ffn_dim": 16384,
    "vocab_size": 50272,
    "word_embed_proj_dim": 4096,
}


def fake_cache(root: Path, repo_id: str, config: dict) -> None:
    """The layout huggingface_hub writes: refs/main names the snapshot holding the files."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text(json.dumps(config))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")


@pytest.fixture
def hub(monkeypatch):
    """A stand-in for the hub that serves config.json of the repos in `configs` and counts asks."""
    configs: dict[str, dict] = {}
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server name
            asked.append(self.path)
            repo = self.path.removeprefix("/").removesuffix("/resolve/main/config.json")
            body = json.dumps(configs[repo]).encode() if repo in configs else b"{}"
            self.send_response(200 if repo in configs else 404)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(architecture, "_hub_unreachable", False)
    monkeypatch.setattr(architecture, "_hub_answers", {})
    yield configs, asked
    server.shutdown()


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf-cache"


def test_a_model_in_the_local_hugging_face_cache_needs_no_architecture(empty_cache):
    fake_cache(empty_cache, "Qwen/Qwen3-8B", QWEN3_8B)
    arch = resolve_architecture("Qwen/Qwen3-8B")
    assert (arch.num_layers, arch.hidden_size, arch.head_dim, arch.vocab_size) == (36, 4096, 128, 151936)
    assert arch.param_count() == pytest.approx(8.19e9, rel=0.01)  # Qwen3-8B: 8.2B


def test_the_hub_is_asked_when_nothing_local_has_the_config(hub):
    configs, asked = hub
    configs["Qwen/Qwen3-0.6B"] = QWEN3_06B
    arch = resolve_architecture("Qwen/Qwen3-0.6B")
    assert arch.tie_word_embeddings and arch.num_layers == 28
    assert arch.param_count() == pytest.approx(0.596e9, rel=0.02)  # Qwen3-0.6B: 0.6B with tied embeddings
    assert asked == ["/Qwen/Qwen3-0.6B/resolve/main/config.json"]
    assert resolve_architecture("someorg/unknown-model") is None  # the hub's 404: no shape
    # Asked once per repo, whatever its answer: every later lookup is from the first.
    assert resolve_architecture("Qwen/Qwen3-0.6B") == arch and resolve_architecture("someorg/unknown-model") is None
    assert len(asked) == 2


def test_the_cache_answers_before_the_hub(hub, empty_cache):
    configs, asked = hub
    fake_cache(empty_cache, "Qwen/Qwen3-8B", QWEN3_8B)
    assert resolve_architecture("Qwen/Qwen3-8B").num_layers == 36
    assert asked == []


def test_an_unreachable_hub_falls_back_to_the_catalogue_and_is_not_asked_again(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(architecture, "_hub_unreachable", False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    llama = "meta-llama/Llama-3.1-8B-Instruct"
    assert resolve_architecture(llama) == KNOWN_ARCHITECTURES[llama]
    assert architecture._hub_unreachable


def test_offline_validation_uses_the_catalogue_without_asking(hub, monkeypatch):
    configs, asked = hub
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    llama = "meta-llama/Llama-3.3-70B-Instruct"
    assert resolve_architecture(llama) == KNOWN_ARCHITECTURES[llama] and asked == []


def test_opt_configs_name_their_mlp_differently_and_do_not_gate_it():
    arch = from_hf_config(OPT_6_7B)
    assert arch.intermediate_size == 16384 and not arch.gated_mlp and arch.tie_word_embeddings
    assert arch.param_count() == pytest.approx(6.66e9, rel=0.02)  # OPT-6.7B
