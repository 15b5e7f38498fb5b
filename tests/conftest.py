"""Shared pytest set-up.

The tests use tiny tensors: with several intra-op threads on a busy machine (CI runners, a shared
2-core box), thread hand-offs dominate and a small supernet step was measured 100x slower than with one
thread (30 s vs 0.3 s). One thread is also the deterministic choice. Override with
FAIRDARTS_TEST_THREADS=N. The processes the tests start (the CLI, the GPU script's dry run and workers) get
as many threads through ``OMP_NUM_THREADS``: with torch's default of one per core, the GPU script's small
retraining worker took 90 s on the busy CI machine instead of 5.
"""
import os

THREADS = os.environ.get("FAIRDARTS_TEST_THREADS", "1")
os.environ["OMP_NUM_THREADS"] = THREADS

import torch  # noqa: E402  (after OMP_NUM_THREADS)

torch.set_num_threads(int(THREADS))
