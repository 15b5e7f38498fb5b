"""Shared pytest set-up.

The tests use tiny tensors: with several intra-op threads on a busy machine (CI runners, a shared
2-core box), thread hand-offs dominate and a small supernet step was measured 100x slower than with one
thread (30 s vs 0.3 s). One thread is also the deterministic choice. Override with
FAIRDARTS_TEST_THREADS=N.
"""
import os

import torch

torch.set_num_threads(int(os.environ.get("FAIRDARTS_TEST_THREADS", "1")))
