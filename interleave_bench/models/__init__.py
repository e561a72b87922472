"""Model adapters: unified models (Janus, Emu3), integrated pipelines, replays of other tools."""
