"""Foundry distillation, fine-tuning and evaluation on any data the readers take.

Modules: `engine` (the shared loop: TrainConfig, fit), `distill`, `finetune`, `evaluate`, `report`, `data`.
Torch is imported inside functions, so importing these modules stays cheap.
"""
