"""The draft model inside the routed engine's worker: drafts for `local_draft` rows (and for
`ngram_or_draft` rows prompt lookup found nothing for) in the same step as the batch's other rows.

vLLM's in-engine `draft_model` needs a pool of its own, where every request gets the draft; here
a request gets it only when routed to it, so chat drafted by the model and code edits drafted by
prompt lookup share one target batch. Each request keeps a KV cache: a step feeds only the
tokens it gained since its last draft (the cache is cut back to the tokens the target kept),
then its k tokens greedily, every row of the step in one forward pass per draft position.

The forward pass is written here for Llama-architecture drafts (Llama 3.2 1B for Llama 3.1 70B,
the test draft) with the weights and rotary frequencies of the Hugging Face model: Hugging Face's
own forward cost 1.5 ms per token on this box's draft and ran one row at a time, which at four
rows cost a third of a target step.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from serve_app.proposer.request_spec import LOCAL_DRAFT_MODEL_TYPES


class _RequestCache:
    """Keys and values of one request's tokens, per layer; grown by doubling."""

    def __init__(self, layers: int, kv_heads: int, head_dim: int, dtype, device):
        self.k = torch.empty(layers, kv_heads, 0, head_dim, dtype=dtype, device=device)
        self.v = torch.empty_like(self.k)
        self.tokens = np.empty(0, dtype=np.int64)  # the tokens whose keys and values are held

    def reserve(self, length: int) -> None:
        if length > self.k.shape[2]:
            grown = max(length, 2 * self.k.shape[2], 64)
            k = self.k.new_empty(*self.k.shape[:2], grown, self.k.shape[3])
            v = torch.empty_like(k)
            held = len(self.tokens)
            k[:, :, :held], v[:, :, :held] = self.k[:, :, :held], self.v[:, :, :held]
            self.k, self.v = k, v


class LocalDraftModel:
    def __init__(self, source: str, dtype: torch.dtype, device: torch.device | str):
        from transformers import AutoModelForCausalLM

        hf = AutoModelForCausalLM.from_pretrained(source, torch_dtype=dtype).to(device).eval()
        cfg = hf.config
        if cfg.model_type not in LOCAL_DRAFT_MODEL_TYPES:
            raise ValueError(
                f"local draft model {source}: model_type {cfg.model_type!r}; a routed pool runs "
                f"{', '.join(LOCAL_DRAFT_MODEL_TYPES)} drafts only; draft with a draft worker instead"
            )
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.eps = cfg.rms_norm_eps
        self.embed = hf.model.embed_tokens.weight
        self.layers = [
            (
                layer.input_layernorm.weight,
                torch.cat(
                    [layer.self_attn.q_proj.weight, layer.self_attn.k_proj.weight, layer.self_attn.v_proj.weight]
                ),
                layer.self_attn.o_proj.weight,
                layer.post_attention_layernorm.weight,
                torch.cat([layer.mlp.gate_proj.weight, layer.mlp.up_proj.weight]),
                layer.mlp.down_proj.weight,
            )
            for layer in hf.model.layers
        ]
        self.norm, self.lm_head = hf.model.norm.weight, hf.lm_head.weight
        # Hugging Face's frequencies carry the checkpoint's rope scaling (Llama 3's included).
        self.inv_freq = hf.model.rotary_emb.inv_freq.to(device)
        self.rope_scale = getattr(hf.model.rotary_emb, "attention_scaling", 1.0)
        self.dtype, self.device = dtype, device
        self._caches: dict[str, _RequestCache] = {}

    def propose(self, rows: list[tuple[str, np.ndarray, int]]) -> list[list[int]]:
        """For each (request id, its tokens so far, k): k greedy draft tokens after the tokens."""
        caches, feeds = [], []
        for req_id, context, _ in rows:
            cache = self._caches.get(req_id) or _RequestCache(
                len(self.layers), self.kv_heads, self.head_dim, self.dtype, self.device
            )
            self._caches[req_id] = cache
            n = min(len(cache.tokens), len(context) - 1)  # the last token must be fed: its logits draft
            mismatch = np.flatnonzero(cache.tokens[:n] != context[:n])
            kept = int(mismatch[0]) if mismatch.size else n
            cache.tokens = cache.tokens[:kept]
            caches.append(cache)
            feeds.append(context[kept:])
        drafts: list[list[int]] = [[] for _ in rows]
        live = list(range(len(rows)))
        while live:
            tokens = self._next_tokens([caches[i] for i in live], [feeds[i] for i in live])
            for i, token in zip(live, tokens):
                drafts[i].append(token)
                feeds[i] = np.array([token], dtype=np.int64)
            live = [i for i in live if len(drafts[i]) < rows[i][2]]
        return drafts

    def keep_only(self, req_ids: set[str]) -> None:
        """Forget requests the step did not schedule: a finished request leaves no other trace
        here, and these caches sit outside vLLM's KV budget, so they live only while their request
        runs (a preempted request re-feeds its tokens when it is back)."""
        for req_id in [r for r in self._caches if r not in req_ids]:
            del self._caches[req_id]

    @torch.inference_mode()
    def _next_tokens(self, caches: list[_RequestCache], feeds: list[np.ndarray]) -> list[int]:
        """Feed each row's tokens into its cache; the greedy next token of each row."""
        lengths = [len(f) for f in feeds]
        starts = [len(c.tokens) for c in caches]
        for cache, start, n in zip(caches, starts, lengths):
            cache.reserve(start + n)
        ids = torch.as_tensor(np.concatenate(feeds), device=self.device)
        positions = torch.as_tensor(
            np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lengths)]), device=self.device
        )
        angles = positions[:, None].to(self.inv_freq.dtype) * self.inv_freq[None, :]
        angles = torch.cat([angles, angles], dim=-1)
        cos = (angles.cos() * self.rope_scale).to(self.dtype)[:, None, :]
        sin = (angles.sin() * self.rope_scale).to(self.dtype)[:, None, :]
        q_size, kv_size = self.heads * self.head_dim, self.kv_heads * self.head_dim
        h = self.embed[ids]
        for layer, (w_in, w_qkv, w_o, w_post, w_gate_up, w_down) in enumerate(self.layers):
            q, k, v = F.linear(self._rms(h, w_in), w_qkv).split([q_size, kv_size, kv_size], dim=-1)
            q = _rotate(q.view(-1, self.heads, self.head_dim), cos, sin)
            k = _rotate(k.view(-1, self.kv_heads, self.head_dim), cos, sin)
            v = v.view(-1, self.kv_heads, self.head_dim)
            attended, offset = [], 0
            for cache, start, n in zip(caches, starts, lengths):
                end = start + n
                cache.k[layer, :, start:end] = k[offset : offset + n].transpose(0, 1)
                cache.v[layer, :, start:end] = v[offset : offset + n].transpose(0, 1)
                # Token i of the feed sits at start + i and sees the cache up to there.
                mask = None
                if n > 1 and start > 0:
                    mask = torch.ones(n, end, dtype=torch.bool, device=self.device).tril(diagonal=start)
                # Batched (4-D) inputs: with 3-D ones torch's CPU attention takes its slow math path.
                out = F.scaled_dot_product_attention(
                    q[None, offset : offset + n].transpose(1, 2),
                    cache.k[None, layer, :, :end],
                    cache.v[None, layer, :, :end],
                    attn_mask=mask,
                    is_causal=n > 1 and start == 0,
                    enable_gqa=self.heads != self.kv_heads,
                )
                attended.append(out[0].transpose(0, 1).reshape(n, q_size))
                offset += n
            h = h + F.linear(torch.cat(attended), w_o)
            gate, up = F.linear(self._rms(h, w_post), w_gate_up).chunk(2, dim=-1)
            h = h + F.linear(F.silu(gate) * up, w_down)
        for cache, feed in zip(caches, feeds):
            cache.tokens = np.concatenate([cache.tokens, feed])
        last = torch.as_tensor(np.cumsum(lengths) - 1, device=self.device)
        logits = F.linear(self._rms(h[last], self.norm), self.lm_head)
        return logits.argmax(dim=-1).tolist()

    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, weight.shape, weight, self.eps)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin
