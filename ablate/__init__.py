"""ablate: ablation studies for transformer token classification, from a YAML study to a paper's tables."""

__version__ = "0.1.0"
