"""Small Llama-architecture target and draft models built from the Python standard library.

No model hub is reachable, so the project trains its own pair: a target whose function is
that of a small trained model but whose cost is that of a much larger one (function-preserving
expansion), and a draft distilled on the target's own outputs.
"""
