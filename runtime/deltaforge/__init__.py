"""DeltaForge runtime: the shared package every worker pod (and `deltaforge run`) executes."""

__version__ = "0.1.0"
