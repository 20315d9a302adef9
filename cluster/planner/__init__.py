"""Projected speed of a config's pools on GPUs nobody here can run, from measured step costs.

`python -m cluster.planner CONFIG`: for each GPU pool, request class and method, the tokens per
second one request and one replica get by load, the best k at each load, the speedup over no
speculation, and warnings where a plan cannot pay. Step costs come from the calibration table
measured on an H200 (`cluster/calibration/`), scaled to other GPU kinds (`gpus.py`); the k
arithmetic is the spec tuner's own (`serve_app/tuner/goodput.py`).
"""
