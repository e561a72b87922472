"""`python -m interleave_bench ...` is `ibench ...` (what torchrun and accelerate launch -m run)."""

from .cli import main

main()
