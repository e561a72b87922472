"""The compact trainer: scorers as rewards, GRPO advantages and loss, rollouts, warm-up.

Modules are imported on demand (``from interleave_bench.train.grpo import grpo_loss``) so that
``import interleave_bench`` never pulls in torch: ``rewards`` needs no torch, ``grpo`` does.
"""
