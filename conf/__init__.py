"""The Hydra config tree of dfmx (shipped in the wheel as dfmx.conf)."""
